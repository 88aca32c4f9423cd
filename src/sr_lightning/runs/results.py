"""The result formats, each defined once: ``results.json`` rows (one per set, scale and model),
``per_image.csv`` rows (one per image), and the paper-style table of result rows.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sr_lightning.core.protocol import Protocol
from sr_lightning.runs.folder import PER_IMAGE
from sr_lightning.runs.records import write_atomically

RESULT_COLUMNS = ("dataset", "scale", "model", "self_ensemble", "psnr", "ssim", "n_images")
PER_IMAGE_COLUMNS = (
    "dataset", "scale", "image", "model", "psnr", "ssim", "protocol", "hr_path", "lr_path",
)  # fmt: skip


@dataclass(frozen=True)
class EvalResult:
    """Mean PSNR/SSIM of one evaluation set at one scale, and how it was computed."""

    dataset: str
    scale: int
    protocol: Protocol
    psnr: float
    ssim: float
    n_images: int


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


def write_results(rows: Sequence[dict], path: str | Path) -> bool:
    """``results.json`` (atomically); False, with a warning, if the disk refused it."""
    return write_atomically(path, json.dumps(list(rows), indent=2) + "\n")


def write_per_image(rows: Sequence[dict], path: str | Path) -> bool:
    """``per_image.csv``: one row per (set, scale, image, model)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=PER_IMAGE_COLUMNS)
    writer.writeheader()
    writer.writerows({c: r[c] for c in PER_IMAGE_COLUMNS} for r in rows)
    return write_atomically(path, text.getvalue())


def per_image_csv(source: str | Path) -> Path:
    """A run folder's ``per_image.csv``, or ``source`` itself if it is a file."""
    path = Path(source)
    path = path / PER_IMAGE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no per-image results (a run folder's {PER_IMAGE} is written by "
            "train.py's test and by eval.py)"
        )
    return path


def read_per_image(source: str | Path) -> list[dict]:
    """The per-image rows of the run's network (bicubic rows aside, unless they are all there
    is) from a run folder or a per-image CSV."""
    with open(per_image_csv(source), newline="") as f:
        rows = list(csv.DictReader(f))
    models = list(dict.fromkeys(r["model"] for r in rows))
    chosen = [m for m in models if m != "bicubic"] or models
    if len(chosen) > 1:
        raise ValueError(f"{source}: several models {chosen}; pass a CSV with one of them")
    return [r for r in rows if r["model"] == chosen[0]]


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
