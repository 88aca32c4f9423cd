"""What a researcher looks at: labelled crops of a validation image (LR | bicubic | SR | HR,
with the crop's PSNR) and the validation curves (PSNR against updates and wall-clock time, the
bicubic level as a line). Written into every run folder, whatever the logger."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from sr_lightning.core.metrics import psnr_ssim, quantize
from sr_lightning.core.protocol import Protocol

CROP = 48  # LR pixels of the fixed crop (HR: 48 x scale)
LABEL_H = 14


def centre_box(h: int, w: int, size: int = CROP) -> tuple[int, int, int]:
    """(top, left, side) of the fixed centre crop of an (h, w) LR image."""
    side = min(size, h, w)
    return (h - side) // 2, (w - side) // 2, side


def labelled_row(tiles: Sequence[torch.Tensor], labels: Sequence[str]) -> np.ndarray:
    """uint8 (3, H, W) tiles of one size side by side, each with its label above it."""
    strips = []
    for tile, label in zip(tiles, labels, strict=True):
        img = Image.fromarray(tile.permute(1, 2, 0).cpu().numpy())
        canvas = Image.new("RGB", (img.width, img.height + LABEL_H), (255, 255, 255))
        canvas.paste(img, (0, LABEL_H))
        ImageDraw.Draw(canvas).text((2, 1), label, fill=(0, 0, 0))
        strips.append(np.asarray(canvas))
    gap = np.full((strips[0].shape[0], 2, 3), 255, np.uint8)
    out = [strips[0]]
    for strip in strips[1:]:
        out += [gap, strip]
    return np.concatenate(out, axis=1)


def sample_panel(
    lr: torch.Tensor,
    sr: torch.Tensor,
    hr: torch.Tensor,
    bicubic,
    scale: int,
    protocol: Protocol,
    rgb_range: float = 255.0,
) -> tuple[np.ndarray, str]:
    """(panel, caption) of the fixed centre crop: LR (nearest) | bicubic | SR | HR; the crop
    PSNRs of bicubic and SR are under ``protocol`` (the set's). ``lr`` (3, h, w) float in
    [0, rgb_range], ``sr`` the whole-image SR, ``hr`` uint8; ``bicubic(x, scale)`` the baseline
    (run on the crop plus a margin of 4 LR pixels, so that the crop is exact)."""
    top, left, side = centre_box(*lr.shape[-2:])
    m = 4
    y0, x0 = max(top - m, 0), max(left - m, 0)
    y1, x1 = min(top + side + m, lr.shape[-2]), min(left + side + m, lr.shape[-1])
    up = bicubic(lr[None, :, y0:y1, x0:x1], scale)[0]
    oy, ox = (top - y0) * scale, (left - x0) * scale
    hs = side * scale
    crops = {
        "LR": F.interpolate(
            lr[None, :, top : top + side, left : left + side], scale_factor=scale, mode="nearest"
        )[0],
        "bicubic": up[:, oy : oy + hs, ox : ox + hs],
        "SR": sr[:, top * scale : top * scale + hs, left * scale : left * scale + hs],
        "HR": hr[:, top * scale : top * scale + hs, left * scale : left * scale + hs].float()
        * (rgb_range / 255.0),
    }
    tiles = {k: quantize(v.float(), rgb_range).to(torch.uint8) for k, v in crops.items()}
    border = min(protocol.border, hs // 4)
    psnr = {
        k: psnr_ssim(
            crops[k][None], tiles["HR"][None], channels=protocol.channels, border=border,
            rgb_range=rgb_range,
        )[0].item()
        for k in ("bicubic", "SR")
    }  # fmt: skip
    labels = ["LR (nearest)", f"bicubic {psnr['bicubic']:.2f} dB", f"SR {psnr['SR']:.2f} dB", "HR"]
    caption = f"LR | bicubic {psnr['bicubic']:.2f} dB | SR {psnr['SR']:.2f} dB | HR (crop)"
    return labelled_row(list(tiles.values()), labels), caption


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def plot_curves(
    history: Sequence[tuple[int, str, float]],
    out: str | Path,
    key: str = "val/psnr",
    bicubic_key: str = "val/bicubic_psnr",
    time_key: str = "time/minutes",
) -> Path | None:
    """``curves.png``: ``key`` against updates and against wall-clock minutes, with the
    bicubic level as a dashed line. ``history`` holds ``(step, key, value)`` rows (the run's
    ``history.csv``); None when there is no validation to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = {s: v for s, k, v in history if k == key and np.isfinite(v)}
    minutes = {s: v for s, k, v in history if k == time_key}
    bicubic = [v for _, k, v in history if k == bicubic_key]
    if not points:
        return None
    steps = sorted(points)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100, sharey=True)
    axes[0].plot(steps, [points[s] for s in steps], marker="o", markersize=3, label="model")
    timed = [s for s in steps if s in minutes]
    axes[1].plot([minutes[s] for s in timed], [points[s] for s in timed], marker="o", markersize=3)
    for ax, xlabel in zip(axes, ("updates", "wall-clock minutes"), strict=True):
        if bicubic:
            ax.axhline(bicubic[-1], color="tab:gray", linestyle="--", label="bicubic")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{key} (dB)")
    axes[0].legend(fontsize=8)
    fig.suptitle("validation PSNR")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out
