"""Evaluate a model on the SR benchmarks: ``python eval.py model=bicubic data.root=DIR``."""

import sys

import hydra
from omegaconf import DictConfig

from sr_lightning.cli.eval import run_eval
from sr_lightning.config.rules import prepare_command_line


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_eval(cfg)


if __name__ == "__main__":
    sys.argv = prepare_command_line("eval", sys.argv)
    main()
