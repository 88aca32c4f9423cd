"""The model catalogue: every preset's network, scales and training recipe, in one place.

Sizes are the paper's Table 1 and Sec. 3.3; the recipes are the authors' code's (EDSR: x2 first,
300 epochs of 1000 updates; MDSR: x2, x3 and x4 in one network, 650 epochs). ``conf/model/*.yaml``
reads these numbers through the ``${sr_preset:<name>,<field>}`` resolver; the benchmark harness,
the exporter and the loader of record-less weights (the authors' ``.pt`` files) use them here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from sr_lightning.models.bicubic import Bicubic
from sr_lightning.models.edsr import EDSR
from sr_lightning.models.mdsr import MDSR

ARCHS: dict[str, type[nn.Module]] = {"EDSR": EDSR, "MDSR": MDSR, "Bicubic": Bicubic}


@dataclass(frozen=True)
class Preset:
    """A named network and its recipe."""

    arch: str  # a key of ARCHS
    n_resblocks: int
    n_feats: int
    res_scale: float
    scales: tuple[int, ...]  # trained (or, for bicubic, scored) unless data.scales is given
    epochs: int  # of data.updates_per_epoch (1000) updates


PRESETS: dict[str, Preset] = {
    "edsr_baseline": Preset("EDSR", 16, 64, 1.0, (2,), 300),
    "edsr": Preset("EDSR", 32, 256, 0.1, (2,), 300),
    "mdsr_baseline": Preset("MDSR", 16, 64, 1.0, (2, 3, 4), 650),
    "mdsr": Preset("MDSR", 80, 64, 1.0, (2, 3, 4), 650),
    "bicubic": Preset("Bicubic", 0, 0, 1.0, (2, 3, 4), 0),
}
FIELDS = tuple(f.name for f in fields(Preset))


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"model preset {name!r} is unknown; allowed values: {list(PRESETS)}")
    return PRESETS[name]


def preset_value(name: str, field: str) -> Any:
    """One number of a preset (the ``${sr_preset:name,field}`` resolver); tuples as lists."""
    if field not in FIELDS:
        raise ValueError(f"sr_preset: field {field!r} is unknown; allowed values: {list(FIELDS)}")
    value = getattr(get_preset(name), field)
    return list(value) if isinstance(value, tuple) else value


def build_net(
    preset: str,
    scales: Sequence[int] | None = None,
    n_resblocks: int | None = None,
    n_feats: int | None = None,
    res_scale: float | None = None,
    norm: str = "none",
    rgb_range: float = 255.0,
    fp32_output: bool = True,
) -> nn.Module:
    """The network of ``preset`` for ``scales`` (``None``: the preset's); ``None`` arguments
    take the preset's value. EDSR is single-scale: more than one scale is refused.
    ``fp32_output``: the last conv and mean add in fp32 under autocast (ResidualTrunk)."""
    p = get_preset(preset)
    scales = [int(s) for s in (scales if scales is not None else p.scales)]
    args = {
        "n_resblocks": p.n_resblocks if n_resblocks is None else n_resblocks,
        "n_feats": p.n_feats if n_feats is None else n_feats,
        "res_scale": p.res_scale if res_scale is None else res_scale,
        "norm": norm,
        "rgb_range": rgb_range,
    }
    net = build_from_record({"arch": p.arch, "scales": scales, **args})
    if hasattr(net, "reconstruct"):
        net.fp32_output = bool(fp32_output)
    return net


def record(net: nn.Module) -> dict[str, Any]:
    """What a checkpoint stores to rebuild ``net``: its class and constructor arguments."""
    arch = type(net).__name__
    if arch not in ARCHS or not hasattr(net, "model_args"):
        raise TypeError(f"{arch} is not a catalogued network ({list(ARCHS)})")
    args = dict(net.model_args)
    scales = [args.pop("scale")] if "scale" in args else list(args.pop("scales"))
    return {"arch": arch, "scales": scales, **args}


def build_from_record(rec: dict[str, Any]) -> nn.Module:
    """The inverse of :func:`record` (randomly initialised)."""
    rec = dict(rec)
    arch, scales = rec.pop("arch", None), [int(s) for s in rec.pop("scales", ())]
    if arch not in ARCHS:
        raise ValueError(f"network record names arch={arch!r}; allowed values: {list(ARCHS)}")
    if arch == "Bicubic":
        return Bicubic(scales, rec.get("rgb_range", 255.0))
    if arch == "EDSR":
        if len(scales) != 1:
            raise ValueError(
                f"data.scales={scales}: EDSR is single-scale (one scale per network); "
                "train one model per scale, or use model=mdsr_baseline / model=mdsr"
            )
        return EDSR(scales[0], **rec)
    return MDSR(scales, **rec)


def check_scales(net: nn.Module, scales: Sequence[int]) -> None:
    """Fail early, naming the keys, when ``net`` lacks a requested scale."""
    missing = [s for s in scales if s not in getattr(net, "scales", ())]
    if missing:
        raise ValueError(
            f"data.scales={list(scales)}: the model supports only x{list(net.scales)} "
            f"(missing {missing}); set model.net.scales / data.scales accordingly"
        )


def matching_preset(arch: str, n_resblocks: int, n_feats: int) -> str | None:
    """The preset with this class, depth and width, if any (to name record-less weights)."""
    for name, p in PRESETS.items():
        if (p.arch, p.n_resblocks, p.n_feats) == (arch, n_resblocks, n_feats):
            return name
    return None


def describe(rec: dict[str, Any]) -> str:
    """A network as a table names it: ``edsr_baseline`` for a preset's size, else ``edsr 4x32``
    (blocks x features, plus ``rs0.1`` / ``bn`` where they differ from 1 / none)."""
    arch = rec["arch"]
    if arch == "Bicubic":
        return "bicubic"
    name = matching_preset(arch, rec["n_resblocks"], rec["n_feats"])
    if name and PRESETS[name].res_scale == rec["res_scale"] and rec.get("norm") == "none":
        return name
    text = f"{arch.lower()} {rec['n_resblocks']}x{rec['n_feats']}"
    if rec["res_scale"] != 1:
        text += f" rs{rec['res_scale']:g}"
    if rec.get("norm", "none") != "none":
        text += f" {'bn' if rec['norm'] == 'batch' else rec['norm']}"
    return text
