"""Evaluation: the one path every reported PSNR/SSIM takes, and the result rows it produces.

Validation, ``train.py``'s test of the best checkpoint, ``eval.py`` and the bicubic rows all run
Lightning's test loop over :class:`~sr_lightning.lit_module.SRLitModule`: whole images through
:func:`~sr_lightning.inference.super_resolve` (fp32, autocast and TF32 off, exact tiles, fp32
self-ensemble), scored by :class:`~sr_lightning.metrics.SRMetrics` under each set's protocol
(``data/datasets.py``: benchmarks Y with border = scale, DIV2K RGB with border = scale + 6).
A result row::

    {"dataset", "scale", "model", "self_ensemble", "psnr", "ssim", "n_images",
     "protocol": {"channels": "y"|"rgb", "border": int,
                  "lr_source": "file"|"imresize"|"mixed"|"generated",
                  "degradation": "bicubic"|"bd"|"dn"}}

Tables put rows side by side only when their protocols are equal.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch import nn

from .data.datamodule import SRDataModule
from .lit_module import EvalResult, SRLitModule
from .loggers import write_atomically
from .protocol import Protocol

log = logging.getLogger(__name__)


def result_rows(results: Sequence[EvalResult], model: str, self_ensemble: bool) -> list[dict]:
    """The JSON rows of evaluation results (the format of results.json and eval.py)."""
    return [
        {
            "dataset": r.dataset,
            "scale": r.scale,
            "model": model,
            "self_ensemble": bool(self_ensemble),
            "psnr": round(r.psnr, 4),
            "ssim": round(r.ssim, 5),
            "n_images": r.n_images,
            "protocol": r.protocol.as_dict(),
        }
        for r in results
    ]


PER_IMAGE_COLUMNS = (
    "dataset", "scale", "image", "model", "psnr", "ssim", "protocol", "hr_path", "lr_path",
)  # fmt: skip


def per_image_rows(module: SRLitModule, model: str) -> list[dict]:
    """The test's per-image results (all ranks) as ``per_image.csv`` rows."""
    return [{**r, "model": model} for r in module.test_images]


def write_per_image(rows: Sequence[dict], path: str | Path) -> bool:
    """``per_image.csv`` (next to results.json): one row per (set, scale, image, model)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=PER_IMAGE_COLUMNS)
    writer.writeheader()
    writer.writerows({c: r[c] for c in PER_IMAGE_COLUMNS} for r in rows)
    return write_atomically(path, text.getvalue())


def check_scales(model: nn.Module, scales: Sequence[int]) -> None:
    """Fail early, naming the keys, when the model lacks a requested scale."""
    missing = [s for s in scales if s not in getattr(model, "scales", ())]
    if missing:
        raise ValueError(
            f"data.scales={list(scales)}: the model supports only x{list(model.scales)} "
            f"(missing {missing}); set model.net.scales / data.scales accordingly"
        )


def test_rows(
    trainer: L.Trainer,
    module: SRLitModule,
    datamodule: SRDataModule,
    model_name: str,
    ckpt_path: str | None = None,
) -> tuple[list[dict], list[dict]]:
    """Run ``trainer.test`` (on every rank under DDP); (result rows, per-image rows), the same
    on every rank."""
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    rows = result_rows(module.test_results, model_name, module.hparams.self_ensemble)
    return rows, per_image_rows(module, model_name)


def trainer_for(device: str = "auto", progress: bool = False) -> L.Trainer:
    """A one-process fp32 trainer for evaluation (``device``: auto, cpu, cuda, cuda:N)."""
    if device == "auto":
        accelerator, devices = "auto", 1
    elif device.startswith("cuda"):
        index = device.partition(":")[2]
        accelerator, devices = "gpu", [int(index)] if index else 1
    else:
        accelerator, devices = device, 1
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
    )


def evaluate(
    model: nn.Module,
    root: str | Path,
    benchmarks: Sequence[str],
    scales: Sequence[int],
    *,
    model_name: str,
    self_ensemble: bool = False,
    device: str = "auto",
    tile: int = 0,
    tile_overlap: int | None = None,
    cache_dir: str | Path | None = None,
    div2k_range: tuple[int, int] = (801, 810),
    protocol: str = "auto",
    degradation: str = "bicubic",
    num_workers: int = 0,
    progress: bool = False,
    per_image: list[dict] | None = None,
) -> list[dict]:
    """Score ``model`` on every (set, scale) of ``benchmarks`` x ``scales``; one row each
    (and, into ``per_image`` if given, one per image)."""
    check_scales(model, scales)
    datamodule = SRDataModule(
        root=str(root),
        scales=list(scales),
        benchmarks=list(benchmarks),
        val_sets=[],
        num_workers=num_workers,
        cache_dir=str(cache_dir) if cache_dir else None,
        div2k_val_range=tuple(div2k_range),
        protocol=protocol,
        degradation=degradation,
    )
    datamodule.check_sets(train=False)  # a missing set or corrupt image: named, no number
    module = SRLitModule(
        model, self_ensemble=self_ensemble, val_tile=tile, val_tile_overlap=tile_overlap
    )
    rows, images = test_rows(trainer_for(device, progress), module, datamodule, model_name)
    if per_image is not None:
        per_image += images
    return rows


def protocol_label(row: dict[str, Any]) -> str:
    return Protocol.from_dict(row["protocol"]).label


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table, one row per (set, scale, protocol), one column per model:
    ``PSNR / SSIM``. Rows scored under different protocols never share a line."""
    models = list(dict.fromkeys(r["model"] + ("+" if r["self_ensemble"] else "") for r in rows))
    cells: dict[tuple[str, int, str], dict[str, str]] = {}
    for r in rows:
        key = r["model"] + ("+" if r["self_ensemble"] else "")
        line = (r["dataset"], r["scale"], protocol_label(r))
        cells.setdefault(line, {})[key] = f"{r['psnr']:.2f} / {r['ssim']:.4f}"
    lines = [
        "| set | scale | protocol | " + " | ".join(models) + " |",
        "|---|---|---|" + "---|" * len(models),
    ]
    for (name, scale, label), by_model in cells.items():
        vals = " | ".join(by_model.get(m, "-") for m in models)
        lines.append(f"| {name} | x{scale} | {label} | {vals} |")
    return "\n".join(lines)


def write_results(rows: Sequence[dict], path: str | Path) -> bool:
    """``results.json`` (atomically); False, with a warning, if the disk refused it."""
    return write_atomically(path, json.dumps(list(rows), indent=2) + "\n")
