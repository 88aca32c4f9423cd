"""The OmegaConf resolvers that ``conf/`` uses, registered by ``import sr_lightning``: a config
composed from Python (a notebook, a script) resolves as under ``train.py``, with no environment
variable to set. Nothing heavy is imported until a resolver is evaluated."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import ListConfig, OmegaConf


def project_root() -> str:
    """``$PROJECT_ROOT``, else the checkout this package runs from (it holds ``conf/``), else
    the current folder: where ``data/`` and ``outputs/`` live by default."""
    if os.environ.get("PROJECT_ROOT"):
        return os.environ["PROJECT_ROOT"]
    repo = Path(__file__).resolve().parents[2]
    return str(repo if (repo / "conf").is_dir() else Path.cwd())


def on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def auto_precision() -> str:
    """bf16-mixed where a GPU runs it natively, fp32 elsewhere (CPU bf16 is 4-8x slower here)."""
    return "bf16-mixed" if on_gpu() else "32-true"


def preset_value(name: str, field: str) -> Any:
    """``${sr_preset:edsr,n_feats}``: one number of the model catalogue (lists as ListConfig,
    which ``OmegaConf.resolve`` can store in place)."""
    from .models.catalogue import preset_value as value

    out = value(name, field)
    return ListConfig(out) if isinstance(out, list) else out


def wandb_mode() -> str:
    from .wandb_mode import wandb_mode as mode

    return mode()


RESOLVERS = {
    "sr_project_root": project_root,
    "sr_on_gpu": on_gpu,
    "sr_auto_precision": auto_precision,
    "sr_preset": preset_value,
    "sr_wandb_mode": wandb_mode,
}
for _name, _fn in RESOLVERS.items():
    OmegaConf.register_new_resolver(_name, _fn, replace=True)
