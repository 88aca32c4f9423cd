"""Train EDSR / MDSR: ``python train.py model=mdsr trainer.devices=4``."""

import sys

import hydra
from omegaconf import DictConfig

from sr_lightning.cli.train import run_train
from sr_lightning.config.rules import ConfigRuleError, prepare_command_line


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation PSNR (for Hydra sweepers such as Optuna)."""
    try:
        return run_train(cfg).get("val/psnr")
    except ConfigRuleError as e:  # its message names the key and what to do: no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.argv = prepare_command_line("train", sys.argv)
    main()
