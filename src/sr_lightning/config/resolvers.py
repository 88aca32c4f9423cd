"""The OmegaConf resolvers that ``conf/`` uses (``${sr_preset:...}``, ``${sr_data_root:}``, ...).

They are registered when Hydra initialises (``initialize_config_dir``, ``@hydra.main``): Hydra
imports every module of the ``hydra_plugins`` namespace package, and
``hydra_plugins.sr_lightning_resolvers`` calls :func:`register`. ``import sr_lightning``
registers them too. So a config composed from Python (a notebook, a script) resolves as under
``train.py``, with no import to know of and no environment variable to set. Nothing heavy is
imported until a resolver is evaluated.

Where things live by default (one answer for every entry point: ``train.py``, ``eval.py``,
``sr-bench``, ``sr-download``): the data root is ``$SR_DATA_ROOT``, else
``<project root>/data`` (:func:`data_root`); the decoded-image cache is
``$SR_LIGHTNING_CACHE``, else ``~/.cache/sr_lightning`` (``data/cache.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf

PACKAGE_CHECKOUT = Path(__file__).resolve().parents[3]  # src/sr_lightning/config/ -> the repo


def project_root() -> Path:
    """``$PROJECT_ROOT``, else the checkout this package runs from (it holds ``conf/``), else
    the current folder: where ``data/`` and ``outputs/`` live by default."""
    if os.environ.get("PROJECT_ROOT"):
        return Path(os.environ["PROJECT_ROOT"])
    return PACKAGE_CHECKOUT if (PACKAGE_CHECKOUT / "conf").is_dir() else Path.cwd()


def data_root() -> Path:
    """The default ``data.root`` (``paths.data_dir``): ``$SR_DATA_ROOT``, else
    ``<project root>/data``, where ``sr-download`` puts DIV2K and the benchmarks."""
    if os.environ.get("SR_DATA_ROOT"):
        return Path(os.environ["SR_DATA_ROOT"]).expanduser()
    return project_root() / "data"


def on_gpu() -> bool:
    """Whether this process trains on a GPU by default (the one place this is decided)."""
    from sr_lightning.core.inference import default_device

    return default_device() == "cuda"


def auto_precision() -> str:
    """bf16-mixed where a GPU runs it natively, fp32 elsewhere (CPU bf16 is 4-8x slower here)."""
    return "bf16-mixed" if on_gpu() else "32-true"


def preset_value(name: str, field: str) -> Any:
    """``${sr_preset:edsr,n_feats}``: one number of the model catalogue (lists as ListConfig,
    which ``OmegaConf.resolve`` can store in place)."""
    from sr_lightning.models.catalogue import preset_value as value

    out = value(name, field)
    return ListConfig(out) if isinstance(out, list) else out


def run_name(name: str) -> str:
    """``${sr_run:checkpoints}``: a file name of the run folder (``runs/folder.py`` NAMES)."""
    from sr_lightning.runs.folder import NAMES

    if name not in NAMES:
        raise ValueError(f"sr_run: {name!r} is unknown; allowed values: {list(NAMES)}")
    return NAMES[name]


def sweep_job(*, _root_: Any) -> str:
    """``${sr_sweep_job:}`` (``hydra.sweep.subdir``): the folder of a multirun job, the one that
    holds the job already or one named by its swept overrides (``norm-batch+seed-0``; see
    ``config/sweep_folders.py``)."""
    from sr_lightning.config.sweep_folders import sweep_job_folder

    return sweep_job_folder(_root_)


def parallel_jobs(spec: Any, trainer_devices: Any = 1) -> int:
    """``${sr_parallel_jobs:${sweep_devices},${trainer.devices}}``: jobs at once under
    ``hydra/launcher=parallel`` (``config/sweep_devices.py``)."""
    from sr_lightning.config.sweep_devices import parallel_jobs as jobs

    return jobs(spec, trainer_devices)


def wandb_mode() -> str:
    from sr_lightning.training.wandb_mode import wandb_mode as mode

    return mode()


RESOLVERS = {
    "sr_project_root": lambda: str(project_root()),
    "sr_data_root": lambda: str(data_root()),
    "sr_on_gpu": on_gpu,
    "sr_auto_precision": auto_precision,
    "sr_preset": preset_value,
    "sr_run": run_name,
    "sr_sweep_job": sweep_job,
    "sr_parallel_jobs": parallel_jobs,
    "sr_wandb_mode": wandb_mode,
}


def register() -> None:
    """Register every ``${sr_...:}`` resolver (again: the same functions, so idempotent)."""
    for name, fn in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)


register()
