"""Benchmark evaluation: paper-style table (rows set x scale, PSNR / SSIM) and JSON results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .data.datasets import eval_dataset
from .inference import self_ensemble as ensemble_forward
from .inference import tiled_forward
from .metrics import SRMetrics


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_scales(model: nn.Module, scales: Sequence[int]) -> None:
    """Fail early, naming the keys, when the model lacks a requested scale."""
    missing = [s for s in scales if s not in getattr(model, "scales", ())]
    if missing:
        raise ValueError(
            f"data.scales={list(scales)}: the model supports only x{list(model.scales)} "
            f"(missing {missing}); set model.scale / model.scales or change data.scales"
        )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    root: str | Path,
    benchmarks: Sequence[str],
    scales: Sequence[int],
    *,
    model_name: str,
    self_ensemble: bool = False,
    device: str | torch.device = "auto",
    tile: int = 0,
    tile_overlap: int = 32,
    cache_dir: str | Path | None = None,
    div2k_range: tuple[int, int] = (801, 810),
    rgb_range: float = 255.0,
) -> list[dict]:
    """Score ``model`` on every (set, scale); one result row per pair, in the JSON format."""
    check_scales(model, scales)
    device = pick_device(device) if isinstance(device, str) else device
    model = model.to(device).eval()
    rows = []
    for name in benchmarks:
        for scale in scales:
            data = eval_dataset(root, name, scale, cache_dir, tuple(div2k_range))
            metric = SRMetrics(scale, rgb_range, sync_on_compute=False).to(device)

            def forward(x: torch.Tensor, scale: int = scale) -> torch.Tensor:
                return tiled_forward(lambda t: model(t, scale), x, scale, tile, tile_overlap)

            for item in data:
                lr = item["lr"][None].to(device, torch.float32) * (rgb_range / 255.0)
                sr = ensemble_forward(forward, lr) if self_ensemble else forward(lr)
                metric.update(sr, item["hr"][None].to(device), item["gray"])
            result = metric.compute()
            rows.append(
                {
                    "dataset": name,
                    "scale": scale,
                    "psnr": round(result["psnr"].item(), 4),
                    "ssim": round(result["ssim"].item(), 5),
                    "model": model_name,
                    "self_ensemble": self_ensemble,
                    "n_images": int(result["count"].item()),
                }
            )
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table, one row per (set, scale), one column per model: ``PSNR / SSIM``."""
    models = list(dict.fromkeys(r["model"] + ("+" if r["self_ensemble"] else "") for r in rows))
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for r in rows:
        key = r["model"] + ("+" if r["self_ensemble"] else "")
        cells.setdefault((r["dataset"], r["scale"]), {})[key] = f"{r['psnr']:.2f} / {r['ssim']:.4f}"
    lines = ["| set | scale | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for (name, scale), by_model in cells.items():
        vals = " | ".join(by_model.get(m, "-") for m in models)
        lines.append(f"| {name} | x{scale} | {vals} |")
    return "\n".join(lines)


def write_results(rows: Sequence[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(rows), indent=2) + "\n")
    return path
