"""Weights in, networks out: our Lightning checkpoints and the authors' ``.pt`` state dicts.

Our checkpoints carry their network's record (``model_args``: class and constructor arguments,
as nanoGPT's checkpoints do) and the protocol of each validation set (``protocols``); the
network is rebuilt from that record and checked against the tensors. The authors' files (and
our checkpoints written before records existed) hold tensors only: their layout is read off the
shapes and ``res_scale``, which no shape shows, comes from the caller or from the preset with
those shapes, and the guess is printed.
"""

from __future__ import annotations

import glob
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sr_lightning.models.blocks import DIV2K_RGB_MEAN
from sr_lightning.models.catalogue import PRESETS, build_from_record, matching_preset, record

log = logging.getLogger(__name__)

LIGHTNING_PREFIX = "net."
RECORD_KEY, PROTOCOLS_KEY = "model_args", "protocols"
LAYOUT_FIELDS = ("arch", "scales", "n_resblocks", "n_feats", "norm", "rgb_range")
# what init_from must share with the network it initialises (the scales may differ: x2 -> x3)
BODY_FIELDS = ("arch", "n_resblocks", "n_feats", "norm", "rgb_range")
GLOB_CHARS = frozenset("*?[")


def find_checkpoint(pattern: str | Path) -> Path:
    """The one file ``pattern`` names: a path, or a glob matching exactly one file
    (``<run>/checkpoints/best-*.ckpt``), ``~`` expanded. What ``ckpt_path`` (``train.py``,
    ``eval.py``), ``model.init_from`` and ``--weights`` (``sr-upscale``, ``sr-export``) accept.

    No match is ``FileNotFoundError("checkpoint not found: <pattern>")``; several matches are
    a ``ValueError`` listing them (which one was meant is not guessed)."""
    path = Path(pattern).expanduser()
    if path.is_file() or not GLOB_CHARS & set(str(pattern)):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return path
    matches = sorted(Path(m) for m in glob.glob(str(path)) if Path(m).is_file())
    if not matches:
        raise FileNotFoundError(f"checkpoint not found: no file matches {str(path)!r}")
    if len(matches) > 1:
        raise ValueError(
            f"{str(path)!r} matches {len(matches)} files, not one: "
            + ", ".join(str(m) for m in matches)
            + ". Name the checkpoint you mean."
        )
    return matches[0]


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(network state_dict, record or None) of ``path`` (a file, or a glob matching one: see
    :func:`find_checkpoint`), loaded with ``weights_only=True`` (no arbitrary pickles).
    Accepts an authors' file (a bare state_dict with the reference key names) or a Lightning
    checkpoint of ours (``state_dict`` keys ``net.<name>``)."""
    path = find_checkpoint(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, not a torch file, or a refused pickle
        raise ValueError(
            f"{path}: not a checkpoint (only files written by torch.save with tensors and plain "
            f"containers are accepted; loading with weights_only=True failed: "
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
        ) from e
    rec = None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        rec = obj.get(RECORD_KEY)
        obj = {
            k[len(LIGHTNING_PREFIX) :]: v
            for k, v in obj["state_dict"].items()
            if k.startswith(LIGHTNING_PREFIX)
        }
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{path}: holds no network state_dict (expected a dict of tensors)")
    return obj, rec


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The network state_dict in ``path`` (see :func:`read_checkpoint`)."""
    return read_checkpoint(path)[0]


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


def layout(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the tensors show of the network: class, scales (in module order), depth, width,
    norm, and rgb_range (from the frozen mean shift's bias: -rgb_range x DIV2K mean)."""
    if "head.0.weight" not in state:
        raise ValueError("not an EDSR/MDSR state_dict: no 'head.0.weight'")
    n_feats = int(state["head.0.weight"].shape[0])
    out: dict[str, Any] = {"n_resblocks": _count(state, "body"), "n_feats": n_feats}
    if "pre_process.0.0.body.0.weight" in state:
        n_scales = len({k.split(".")[1] for k in state if k.startswith("upsample.")})
        scales = [_upsampler_scale(state, f"upsample.{i}.", n_feats) for i in range(n_scales)]
        out.update(arch="MDSR", scales=scales)
    else:
        out.update(arch="EDSR", scales=[_upsampler_scale(state, "tail.0.", n_feats)])
    out["norm"] = "batch" if any(k.endswith("running_mean") for k in state) else "none"
    if "sub_mean.bias" in state:
        out["rgb_range"] = round(-float(state["sub_mean.bias"][0]) / DIV2K_RGB_MEAN[0], 3)
    return out


def _check_record(path: Path, rec: dict[str, Any], shapes: dict[str, Any]) -> None:
    """A record that disagrees with the tensors is an error naming both."""
    wrong = []
    for key in LAYOUT_FIELDS:
        if key not in shapes:
            continue
        want, got = rec.get(key), shapes[key]
        if key == "rgb_range":
            agree = want is not None and abs(float(want) - got) < 1e-2
        else:
            agree = want == got
        if not agree:
            wrong.append(f"{key}: record {want!r}, tensors {got!r}")
    if wrong:
        raise ValueError(
            f"{path}: the network record (model_args) contradicts the tensors: "
            + "; ".join(wrong)
            + ". The file was edited or assembled from two runs: it cannot be trusted."
        )


def guess_res_scale(shapes: dict[str, Any]) -> tuple[float, str]:
    """``res_scale`` of record-less weights: the preset's with these shapes, else 1.0."""
    name = matching_preset(shapes["arch"], shapes["n_resblocks"], shapes["n_feats"])
    if name is not None:
        return PRESETS[name].res_scale, f"the {name} preset has these shapes"
    if shapes["arch"] == "EDSR" and shapes["n_feats"] >= 256:
        return 0.1, "256+ features: the paper's EDSR uses 0.1"
    return 1.0, "no preset has these shapes; 1.0 is the paper's value below 256 features"


def load_network(
    path: str | Path, res_scale: float | None = None, echo=None
) -> tuple[nn.Module, dict[str, Any]]:
    """(network with the weights of ``path``, its record), rebuilt from the file's record or,
    without one, from its shapes; ``res_scale`` is only for record-less files (given with a
    record, it must agree). ``echo`` prints the guess (default: to stderr)."""
    path = find_checkpoint(path)
    state, rec = read_checkpoint(path)
    shapes = layout(state)
    if rec is not None:
        _check_record(path, rec, shapes)
        if res_scale is not None and float(res_scale) != float(rec["res_scale"]):
            raise ValueError(
                f"res_scale={res_scale} contradicts {path}'s record (res_scale="
                f"{rec['res_scale']}, the value it was trained with): leave it out"
            )
        rec = dict(rec)
    else:
        guessed = res_scale is None
        if guessed:
            res_scale, why = guess_res_scale(shapes)
        rec = {**shapes, "rgb_range": shapes.get("rgb_range", 255.0), "res_scale": res_scale}
        if guessed:
            (echo or (lambda m: print(m, file=sys.stderr)))(
                f"{path.name}: no network record (an authors' file or an older checkpoint): "
                f"{rec['arch']} x{rec['scales']}, {rec['n_resblocks']} blocks of "
                f"{rec['n_feats']} features read off the shapes, res_scale={res_scale} guessed "
                f"({why}); set it with --res-scale (sr-upscale, sr-export) or res_scale= (eval.py)"
            )
    net = build_from_record(rec)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: the tensors do not form a consistent {rec['arch']}: {e}") from e
    return net, rec


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
            "Check model=, model.net.n_resblocks, model.net.n_feats and the scale."
        )
    model.load_state_dict(state, strict=True)
    return model


def _by_scale(state: dict[str, torch.Tensor], src_scales: list[int], dst_scales) -> dict:
    """MDSR's per-scale modules renamed from the source's module order to the target's, by
    scale (a (2, 3, 4) file into a (2, 4) MDSR: x4's ``upsample.2`` becomes ``upsample.1``);
    the source's scales that the target lacks are dropped."""
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in ("pre_process", "upsample"):
            index, _, tail = rest.partition(".")
            scale = src_scales[int(index)]
            if scale not in dst_scales:
                continue
            key = f"{head}.{list(dst_scales).index(scale)}.{tail}"
        out[key] = value
    return out


def _body_record(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in BODY_FIELDS if k in rec}


def _same_body(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    for key in set(ours) & set(theirs):
        a, b = ours[key], theirs[key]
        if key == "rgb_range":
            if abs(float(a) - float(b)) >= 1e-2:
                return False
        elif a != b:
            return False
    return True


def init_from_checkpoint(
    net: nn.Module, path: str | Path, allow_partial: bool = False
) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``path`` whose name and shape match; keep the rest as initialised.

    This is the paper's x2 -> x3/x4 initialisation (Sec. 4.1): head and body come from the x2
    model, the upsampler of the new scale starts anew. MDSR's per-scale modules are matched by
    scale, not by position. Returns (loaded, not loaded) names.

    The checkpoint's network (its record, or what its shapes show for a file without one)
    must be ``net``'s but for the scales: class, depth, width, norm and rgb_range. Another
    network would load a few tensors (the mean shift, a bias) and train the body from scratch
    under the name of an initialised run: that is a ``ValueError`` naming both records and
    the count of tensors that would load, unless ``allow_partial`` (``model.init_from_partial``)
    asks for exactly that.
    """
    path = find_checkpoint(path)
    state, rec = read_checkpoint(path)
    theirs = _body_record(rec if rec is not None else layout(state))
    if "pre_process.0.0.body.0.weight" in state and hasattr(net, "pre_process"):
        state = _by_scale(state, layout(state)["scales"], net.scales)
    own = net.state_dict()
    loaded = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    kept = [k for k in own if k not in loaded]
    try:
        ours = _body_record(record(net))
    except TypeError:  # not a catalogued network: nothing to compare
        ours = {}
    if not _same_body(ours, theirs):
        message = (
            f"model.init_from={path}: its network {theirs} is not this run's {ours}: only "
            f"{len(loaded)} of this network's {len(own)} tensors would load "
            f"({', '.join(loaded[:4]) or 'none'}{', ...' if len(loaded) > 4 else ''}), the "
            "body would train from scratch"
        )
        if not allow_partial:
            raise ValueError(
                message + ". Initialise from a checkpoint of the same network (the scales may "
                "differ: x2 -> x3/x4), set model.net.n_resblocks / n_feats / norm to the "
                "checkpoint's, or set model.init_from_partial=true to load those tensors anyway"
            )
        log.warning("%s (model.init_from_partial=true)", message)
    net.load_state_dict({k: state[k] for k in loaded}, strict=False)
    log.info("init_from %s: loaded %d tensors: %s", path, len(loaded), loaded)
    log.info("init_from %s: %d tensors keep their fresh init: %s", path, len(kept), kept)
    return loaded, kept
