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


def _count(state: dict, prefix: str) -> int:
    """Number of residual blocks ``<prefix>.{i}.body.0.weight``."""
    i = 0
    while f"{prefix}.{i}.body.0.weight" in state:
        i += 1
    return i


def _upsampler_scale(state: dict, prefix: str, n_feats: int) -> int:
    convs = [k for k in state if k.startswith(prefix) and k.endswith(".weight")]
    if len(convs) == 1 and state[convs[0]].shape[0] == 9 * n_feats:
        return 3
    return 2 ** len(convs)


def model_from_state_dict(state: dict[str, torch.Tensor]) -> nn.Module:
    """Build the EDSR or MDSR that ``state`` belongs to, from its key names and shapes.

    ``res_scale`` is not stored in a checkpoint: 0.1 is assumed for 256-feature models (the
    paper's EDSR) and 1.0 otherwise; it does not matter for inference with trained weights
    only if it matches training, so pass the config when it differs.
    """
    from .models import EDSR, MDSR

    if "head.0.weight" not in state:
        raise ValueError("not an EDSR/MDSR state_dict: no 'head.0.weight'")
    n_feats = state["head.0.weight"].shape[0]
    n_resblocks = _count(state, "body")
    norm = "batch" if any(k.endswith("running_mean") for k in state) else "none"
    res_scale = 0.1 if n_feats == 256 else 1.0
    if "pre_process.0.0.body.0.weight" in state:
        n_scales = len({k.split(".")[1] for k in state if k.startswith("upsample.")})
        scales = [_upsampler_scale(state, f"upsample.{i}.", n_feats) for i in range(n_scales)]
        model = MDSR(scales, n_resblocks, n_feats, res_scale, norm=norm)
    else:
        scale = _upsampler_scale(state, "tail.0.", n_feats)
        model = EDSR(scale, n_resblocks, n_feats, res_scale, norm=norm)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"the tensors do not form a consistent EDSR/MDSR: {e}") from e
    return model
