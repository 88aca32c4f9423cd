"""Evaluate a model on the SR benchmarks: ``python eval.py model=bicubic data.root=DIR``."""

import sys

import hydra
from omegaconf import DictConfig

import sr_lightning.cli


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    sr_lightning.cli.run_eval(cfg)


if __name__ == "__main__":
    sys.argv = sr_lightning.cli.prepare_command_line("eval", sys.argv)
    main()
