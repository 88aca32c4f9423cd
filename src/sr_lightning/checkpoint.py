"""Loading weights safely: the authors' ``.pt`` state dicts and our Lightning checkpoints."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

LIGHTNING_PREFIX = "net."


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The network state_dict in ``path`` (``weights_only=True``: no arbitrary pickles).

    Accepts an authors' file (a bare state_dict with the reference key names) or a Lightning
    checkpoint of ours (``state_dict`` with keys ``net.<name>``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ValueError(
            f"{path}: not a loadable checkpoint (only tensors and plain containers are "
            f"accepted; weights_only=True refused or failed to read it): {e}"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = {
            k[len(LIGHTNING_PREFIX) :]: v
            for k, v in obj["state_dict"].items()
            if k.startswith(LIGHTNING_PREFIX)
        }
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path}: holds no network state_dict (expected a dict of tensors)")
    return obj


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` with strict key and shape matching, or say what differs."""
    state = load_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not fit this {type(model).__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(wrong)} with another shape (e.g. {wrong[:3]}). "
            "Check model=, model.n_resblocks, model.n_feats and the scale."
        )
    model.load_state_dict(state, strict=True)
    return model
