"""Train EDSR / MDSR: ``python train.py model=mdsr data.scales=[2,3,4] trainer.devices=4``."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
import sr_lightning.cli  # noqa: E402,F401  (registers the config resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation PSNR (for Hydra sweepers such as Optuna)."""
    metrics = sr_lightning.cli.run_train(cfg)
    return metrics.get("val/psnr")


if __name__ == "__main__":
    main()
