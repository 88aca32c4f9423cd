"""Evaluation data sets: whole-image LR/HR pairs (Set5, Set14, B100, Urban100, DIV2K val).

Layout (the reference code's, and that of ``../shared/datasets``)::

    <root>/benchmark/<Set>/HR/<stem>.png
    <root>/benchmark/<Set>/LR_bicubic/X<s>/<stem>x<s>.png
    <root>/DIV2K/DIV2K_train_HR/0801.png, DIV2K_train_LR_bicubic/X<s>/0801x<s>.png

Each set is scored with its own protocol (:func:`protocol_for`): the benchmarks on Y with a
border of ``scale`` (the paper's Table 3), DIV2K on RGB with a border of ``scale + 6`` (the
authors' code, behind the paper's DIV2K row). A missing LR file is generated from the HR
image with the MATLAB-exact degradation and cached. With ``data.degradation`` ``bd`` or ``dn``
(RDN's, ``degradation.py``) every LR image is generated from HR, the shipped (bicubic) LR files
ignored, and cached apart from the bicubic ones.
Items hold uint8 tensors; float conversion happens on the device, after any crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sr_lightning.core.protocol import Protocol
from sr_lightning.data.cache import cached_uint8
from sr_lightning.data.degradation import check_degradation, degrade
from sr_lightning.data.io import ImageError, list_images, load_image, to_rgb

BENCHMARKS = ("Set5", "Set14", "B100", "Urban100")
DIV2K_VAL = "DIV2K"
SAMPLE = "sample"
PROTOCOLS = ("auto", "benchmark", "div2k")  # data.protocol; auto: div2k for DIV2K only
# where data.root points unless told (config/resolvers.py data_root), said by every "not found"
DATA_ROOT_DEFAULT = "data.root defaults to $SR_DATA_ROOT, else <project>/data"


@dataclass(frozen=True)
class Pair:
    hr: Path
    lr: Path | None  # None: generate from hr by `degradation`
    degradation: str = "bicubic"


def degraded(pairs: list[Pair], degradation: str) -> list[Pair]:
    """``pairs`` under ``degradation`` (``data.degradation``): BD and DN drop the LR files, which
    are bicubic, so that every LR image is generated from its HR image."""
    check_degradation(degradation)
    if degradation == "bicubic":
        return pairs
    return [Pair(p.hr, None, degradation) for p in pairs]


def benchmark_pairs(root: str | Path, name: str, scale: int) -> list[Pair]:
    """HR/LR file pairs of benchmark ``name`` at ``scale`` (LR None where no file exists)."""
    if name not in BENCHMARKS:
        raise ValueError(
            f"unknown data set {name!r} (data.benchmarks / data.val_sets); allowed values: "
            f"{[*BENCHMARKS, DIV2K_VAL, SAMPLE]} or a folder of HR images"
        )
    set_dir = Path(root).expanduser() / "benchmark" / name
    hr_dir = set_dir / "HR"
    if not hr_dir.is_dir() or not list_images(hr_dir):
        raise FileNotFoundError(
            f"benchmark {name} not found: expected images in {hr_dir}/ "
            f"(and optionally {set_dir}/LR_bicubic/X{scale}/<stem>x{scale}.png). "
            f"Get it with `sr-download benchmark --root {root}`, "
            f"or set data.root to a folder with this layout ({DATA_ROOT_DEFAULT})."
        )
    lr_dir = set_dir / "LR_bicubic" / f"X{scale}"
    pairs = []
    for hr in list_images(hr_dir):
        lr = lr_dir / f"{hr.stem}x{scale}.png"
        pairs.append(Pair(hr, lr if lr.is_file() else None))
    return pairs


def div2k_pairs(root: str | Path, scale: int, first: int, last: int) -> list[Pair]:
    """DIV2K images ``first..last`` (1-based, inclusive) in the official archive layout.

    Images 0801-0900 are looked up in ``DIV2K_train_*`` (the authors' merged layout) and then in
    ``DIV2K_valid_*`` (the official zips).
    """
    base = Path(root).expanduser() / "DIV2K"
    pairs = []
    for i in range(first, last + 1):
        for split in ("train", "valid"):
            hr = base / f"DIV2K_{split}_HR" / f"{i:04d}.png"
            if hr.is_file():
                lr = base / f"DIV2K_{split}_LR_bicubic" / f"X{scale}" / f"{i:04d}x{scale}.png"
                pairs.append(Pair(hr, lr if lr.is_file() else None))
                break
        else:
            raise FileNotFoundError(
                f"DIV2K image {i:04d} not found in {base}/DIV2K_train_HR/ or DIV2K_valid_HR/. "
                f"Get DIV2K with `sr-download div2k --root {root}`, or set data.root to a "
                f"folder holding DIV2K/ ({DATA_ROOT_DEFAULT})."
            )
    return pairs


def folder_pairs(hr_dir: str | Path) -> list[Pair]:
    """Any folder of HR images; LR is generated with the MATLAB-exact imresize and cached."""
    hr_dir = Path(hr_dir).expanduser()
    if not hr_dir.is_dir():
        raise FileNotFoundError(f"image folder not found: {hr_dir}")
    images = list_images(hr_dir)
    if not images:
        raise FileNotFoundError(f"no images (png/bmp/jpg/tif/webp) in {hr_dir}")
    return [Pair(p, None) for p in images]


def load_hr(path: Path, cache_dir: Path | None = None) -> torch.Tensor:
    """Decoded HR image (C, H, W) uint8, C = 1 or 3, through the uint8 cache."""
    return cached_uint8([path], "img", lambda: load_image(path), cache_dir)


def load_lr(pair: Pair, scale: int, cache_dir: Path | None = None) -> torch.Tensor:
    """Decoded (or generated and cached) LR image of ``pair`` at ``scale``; generated ones are
    cached under ``lrx<s>`` (bicubic) or ``lrx<s>-<degradation>``, never mixed up."""
    bicubic = pair.degradation == "bicubic"
    if bicubic and pair.lr is not None:
        return cached_uint8([pair.lr], "img", lambda: load_image(pair.lr), cache_dir)
    return cached_uint8(
        [pair.hr],
        f"lrx{scale}" if bicubic else f"lrx{scale}-{pair.degradation}",
        lambda: degrade(load_hr(pair.hr, cache_dir), scale, pair.degradation, pair.hr.stem),
        cache_dir,
    )


def check_scale(hr: torch.Tensor, scale: int, label: object) -> None:
    """Refuse an HR image smaller than ``scale`` (it would give an empty LR image)."""
    if min(hr.shape[-2:]) < scale:
        raise ImageError(
            f"{label}: HR size {tuple(hr.shape[-2:])} is smaller than the scale x{scale}"
        )


def align(
    lr: torch.Tensor, hr: torch.Tensor, scale: int, lr_label: object, hr_label: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR cropped to exactly LR size x ``scale``, top-left), checked (also used by the
    sharded training sets, ``shards.py``)."""
    h, w = lr.shape[-2] * scale, lr.shape[-1] * scale
    if lr.shape[0] != hr.shape[0]:
        raise ImageError(f"{lr_label}: {lr.shape[0]} channels, but {hr_label} has {hr.shape[0]}")
    hr_h, hr_w = hr.shape[-2:]
    if not (h <= hr_h < h + scale and w <= hr_w < w + scale):
        raise ImageError(
            f"{lr_label}: LR size {tuple(lr.shape[-2:])} does not match HR {hr_label} "
            f"{tuple(hr.shape[-2:])} at x{scale} (expected floor(HR / {scale}))"
        )
    return lr, hr[..., :h, :w]


def aligned_pair(
    pair: Pair, scale: int, cache_dir: Path | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR) uint8 with HR cropped to exactly LR size x ``scale`` (top-left), checked."""
    hr = load_hr(pair.hr, cache_dir)
    check_scale(hr, scale, pair.hr)
    return align(load_lr(pair, scale, cache_dir), hr, scale, pair.lr, pair.hr)


def protocol_for(name: str, scale: int, pairs: list[Pair], protocol: str = "auto") -> Protocol:
    """How set ``name`` is scored at ``scale``: ``protocol`` (``data.protocol``) ``benchmark``
    (Y, border = scale), ``div2k`` (RGB, border = scale + 6) or ``auto`` (div2k for DIV2K,
    benchmark for every other set); ``lr_source`` says whether the LR images are files, and
    ``degradation`` is the pairs' (``data.degradation``, see :func:`degraded`)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"data.protocol={protocol!r}: allowed values are {list(PROTOCOLS)}")
    if protocol == "auto":
        protocol = "div2k" if name == DIV2K_VAL else "benchmark"
    degradations = sorted({p.degradation for p in pairs})
    if len(degradations) > 1:
        raise ValueError(f"{name} x{scale}: pairs of several degradations {degradations}")
    degradation = degradations[0] if degradations else "bicubic"
    files = sum(p.lr is not None for p in pairs)
    source = "file" if files == len(pairs) else "imresize" if files == 0 else "mixed"
    if degradation != "bicubic":
        source = "generated"
    if protocol == "div2k":
        return Protocol("rgb", scale + 6, source, degradation)
    return Protocol("y", scale, source, degradation)


class EvalDataset(Dataset):
    """Whole-image pairs of one set at one scale, and how they are scored (``protocol``);
    items are dicts of uint8 tensors.

    ``gray`` marks single-channel images (scored on the gray value, see ``metrics``); their
    LR/HR are replicated to RGB for the network.
    """

    def __init__(
        self,
        name: str,
        pairs: list[Pair],
        scale: int,
        cache_dir: Path | None = None,
        protocol: Protocol | None = None,
    ):
        self.name = name
        self.pairs = pairs
        self.scale = scale
        self.cache_dir = cache_dir
        self.protocol = protocol or protocol_for(name, scale, pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        lr, hr = aligned_pair(self.pairs[i], self.scale, self.cache_dir)
        gray = lr.shape[0] == 1
        return {
            "lr": to_rgb(lr),
            "hr": to_rgb(hr),
            "gray": gray,
            "name": self.pairs[i].hr.stem,
            "index": i,
            "scale": self.scale,
        }


def folder_under(root: str | Path, name: str) -> Path:
    """A folder data set (``data.train_set`` / ``data.val_sets``): an absolute path as it is,
    a relative one under ``data.root`` (not the working directory)."""
    path = Path(name).expanduser()
    return path if path.is_absolute() else Path(root).expanduser() / path


def resolve_pairs(
    root: str | Path,
    name: str,
    scale: int,
    cache_dir: Path | None = None,
    div2k_range: tuple[int, int] = (801, 810),
    split: str = "val",
    degradation: str = "bicubic",
) -> list[Pair]:
    """Image pairs of ``name``: a benchmark, ``DIV2K`` (images ``div2k_range``), ``sample``
    (the embedded photos, split ``split``) or a folder of HR images (a path), under
    ``degradation`` (:func:`degraded`)."""
    if name == DIV2K_VAL:
        pairs = div2k_pairs(root, scale, *div2k_range)
    elif name == SAMPLE:
        from sr_lightning.data.sample import sample_dir

        pairs = folder_pairs(sample_dir(cache_dir) / split)
    elif "/" in name or folder_under(root, name).is_dir():
        pairs = folder_pairs(folder_under(root, name))
    else:
        pairs = benchmark_pairs(root, name, scale)
    return degraded(pairs, degradation)


def eval_dataset(
    root: str | Path,
    name: str,
    scale: int,
    cache_dir: Path | None = None,
    div2k_range: tuple[int, int] = (801, 810),
    split: str = "val",
    protocol: str = "auto",
    degradation: str = "bicubic",
) -> EvalDataset:
    """The evaluation set ``name`` at ``scale`` under ``degradation`` (see
    :func:`resolve_pairs`), scored with :func:`protocol_for` ``(name, scale, protocol)``; a
    folder is named by its last part."""
    pairs = resolve_pairs(root, name, scale, cache_dir, div2k_range, split, degradation)
    label = Path(name).name if "/" in name else name
    return EvalDataset(label, pairs, scale, cache_dir, protocol_for(name, scale, pairs, protocol))
