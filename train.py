"""Train EDSR / MDSR: ``python train.py model=mdsr trainer.devices=4``."""

import sys

import hydra
from omegaconf import DictConfig

import sr_lightning.cli


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation PSNR (for Hydra sweepers such as Optuna)."""
    metrics = sr_lightning.cli.run_train(cfg)
    return metrics.get("val/psnr")


if __name__ == "__main__":
    sys.argv = sr_lightning.cli.prepare_command_line("train", sys.argv)
    main()
