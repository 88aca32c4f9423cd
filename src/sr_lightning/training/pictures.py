"""What a researcher looks at, with any logger: the sample panel of a validation image and the
validation curves. Written into every run folder; the same panel goes to W&B and to README.

The sample panel (:func:`sample_panel`, the one function that draws it): a title strip, then a
row of labelled tiles, each label in its own strip above its tile (no text on a pixel):

    HR 512x512 (thumbnail, the crop marked) | bicubic  28.31 dB | SR  30.02 dB | HR | |SR - HR| x8

The crop is a square of :data:`CROP_SIDE` HR pixels (160-256 whenever the image allows; a
smaller image is shown whole) placed where SR and bicubic differ most (the window of the
largest summed |SR - bicubic| on Y, first in raster order on ties: deterministic), enlarged
with nearest-neighbour to about :data:`DISPLAY` pixels. The PSNRs are the crop's, under the
set's protocol.

The curves (:func:`plot_curves`): PSNR against updates and wall-clock minutes, bicubic as a
dashed line, titled with the set, scale and run, the best validation (the best checkpoint's
step) marked."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from sr_lightning.core.metrics import psnr_ssim, quantize, rgb_to_y
from sr_lightning.core.protocol import Protocol

CROP_SIDE = 192  # HR pixels of a sample crop's side
MIN_CROP_SIDE, MAX_CROP_SIDE = 160, 256  # below MIN_CROP_SIDE the whole image is shown
DISPLAY = 384  # a tile is enlarged (nearest-neighbour, an integer factor) to about this side
DIFF_GAIN = 8  # |SR - HR| is shown times this (white: a difference of 255 / 8 = 32 or more)
FONT_SIZE = 14
PAD = 4  # around a label's text, inside its strip
GAP = 8  # between columns
BACKGROUND = (232, 232, 232)  # light gray: a white tile (paper, a saturated |SR - HR|) shows
MARK = (255, 32, 32)  # the crop's rectangle on the thumbnail
MARK_WIDTH = 2
CROP = 48  # LR pixels of sr-compare's fixed centre crop (:func:`centre_box`)


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: rows ``top`` .. ``top + height``, columns ``left`` .. ``left +
    width`` (ends excluded)."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        return self.left + self.width

    def contains(self, other: Box) -> bool:
        return (
            self.top <= other.top
            and self.left <= other.left
            and other.bottom <= self.bottom
            and other.right <= self.right
        )

    def overlaps(self, other: Box) -> bool:
        return (
            self.top < other.bottom
            and other.top < self.bottom
            and self.left < other.right
            and other.left < self.right
        )

    def of(self, img: torch.Tensor | np.ndarray, axis: int = -2):
        """The box's pixels of ``img``: (..., H, W) with ``axis=-2``, (H, W, C) with 0."""
        rows, cols = slice(self.top, self.bottom), slice(self.left, self.right)
        return img[..., rows, cols] if axis == -2 else img[rows, cols]


@dataclass(frozen=True)
class Layout:
    """Where things lie in a panel (pixels): the title strip, each column's label strip and
    tile (same order as the tiles)."""

    height: int
    width: int
    title: Box | None
    labels: tuple[Box, ...]
    tiles: tuple[Box, ...]


@dataclass(frozen=True, eq=False)
class Panel:
    """A sample panel: the (H, W, 3) uint8 picture, its caption (W&B), the crop (HR pixels),
    its rectangle on the thumbnail (panel pixels), the layout, the crop PSNRs and the zoom."""

    image: np.ndarray
    caption: str
    crop: Box
    marker: Box
    layout: Layout
    psnr: dict[str, float]
    zoom: int


# ---- the crop -----------------------------------------------------------------------------
def crop_size(height: int, width: int, side: int = CROP_SIDE) -> tuple[int, int]:
    """(height, width) of the sample crop of a ``height`` x ``width`` HR image: a square of
    ``side`` pixels, of the shorter side when that is shorter (but not below
    :data:`MIN_CROP_SIDE`), else the whole image."""
    side = min(max(side, MIN_CROP_SIDE), MAX_CROP_SIDE)
    short = min(height, width)
    if short < MIN_CROP_SIDE:
        return height, width
    return min(side, short), min(side, short)


def window_sums(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sum of ``weight`` (H, W) over every ``height`` x ``width`` window, (H - height + 1,
    W - width + 1) float64, from the integral image (a box filter in O(H W))."""
    w = weight.detach().to("cpu", torch.float64)
    integral = F.pad(w.cumsum(0).cumsum(1), (1, 0, 1, 0))
    return (
        integral[height:, width:]
        - integral[:-height, width:]
        - integral[height:, :-width]
        + integral[:-height, :-width]
    )


def busiest_box(weight: torch.Tensor, height: int, width: int) -> Box:
    """The ``height`` x ``width`` window of largest summed ``weight`` (H, W); on ties the first
    in raster order (top, then left)."""
    sums = window_sums(weight, height, width)
    top, left = divmod(int(torch.argmax(sums)), sums.shape[1])  # argmax: the first maximum
    return Box(top, left, height, width)


def luma_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|Y(a) - Y(b)| (H, W) of two (3, H, W) images with values in [0, 255]."""
    return (rgb_to_y(a[None].float()) - rgb_to_y(b[None].float()))[0, 0].abs()


def choose_crop(sr: torch.Tensor, bicubic: torch.Tensor, side: int = CROP_SIDE) -> Box:
    """The sample crop (HR pixels) of 8-bit-valued (3, H, W) ``sr`` and ``bicubic``: where they
    differ most on Y (:func:`busiest_box` of :func:`luma_difference`)."""
    height, width = crop_size(*sr.shape[-2:], side=side)
    return busiest_box(luma_difference(sr, bicubic), height, width)


def centre_box(h: int, w: int, size: int = CROP) -> tuple[int, int, int]:
    """(top, left, side) of the fixed centre crop of an (h, w) LR image (``sr-compare``)."""
    side = min(size, h, w)
    return (h - side) // 2, (w - side) // 2, side


# ---- drawing ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's own font (no file, no network): the scalable one Pillow >= 10.1 embeds, else its
    bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def _text_size(text: str) -> tuple[int, int]:
    """(width, height) a line of text takes from its drawing origin (left, ascender)."""
    _, _, right, bottom = font().getbbox(text)
    _, _, _, line = font().getbbox("Ag|(dB)")  # one height for every strip
    return int(np.ceil(right)), int(np.ceil(max(bottom, line)))


def _to_hwc(tile: torch.Tensor | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 of a (3, H, W) tensor or an (H, W, 3) array."""
    if isinstance(tile, torch.Tensor):
        tile = tile.detach().cpu()
        tile = tile.permute(1, 2, 0).numpy() if tile.shape[0] in (1, 3) else tile.numpy()
    tile = np.asarray(tile)
    if tile.ndim == 2:
        tile = tile[..., None]
    if tile.shape[-1] == 1:
        tile = np.repeat(tile, 3, axis=-1)
    return np.ascontiguousarray(tile.astype(np.uint8))


def compose(
    tiles: Sequence[torch.Tensor | np.ndarray],
    labels: Sequence[str],
    title: Sequence[str] = (),
) -> tuple[np.ndarray, Layout]:
    """Tiles side by side, each under its label; ``title`` lines in a strip across the top.
    Every text lies in a strip of its own, at least as wide as the text: no text covers a
    tile's pixel. Returns the (H, W, 3) uint8 picture and its :class:`Layout`."""
    arrays = [_to_hwc(t) for t in tiles]
    line_h = _text_size("")[1]
    strip_h = line_h + 2 * PAD
    title_h = len(title) * line_h + (len(title) + 1) * PAD if title else 0
    widths = [
        max(a.shape[1], _text_size(label)[0] + 2 * PAD)
        for a, label in zip(arrays, labels, strict=True)
    ]
    row_w = sum(widths) + GAP * (len(widths) - 1)
    width = max([row_w] + [_text_size(line)[0] + 2 * PAD for line in title])
    height = title_h + strip_h + max(a.shape[0] for a in arrays)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title):
        draw.text((PAD, PAD + i * (line_h + PAD)), line, fill=(0, 0, 0), font=font())
    label_boxes, tile_boxes = [], []
    x = 0
    for a, label, w in zip(arrays, labels, widths, strict=True):
        label_box = Box(title_h, x, strip_h, w)
        tile_box = Box(title_h + strip_h, x, a.shape[0], a.shape[1])
        draw.text((x + PAD, title_h + PAD), label, fill=(0, 0, 0), font=font())
        canvas.paste(Image.fromarray(a), (tile_box.left, tile_box.top))
        label_boxes.append(label_box)
        tile_boxes.append(tile_box)
        x += w + GAP
    title_box = Box(0, 0, title_h, width) if title else None
    layout = Layout(height, width, title_box, tuple(label_boxes), tuple(tile_boxes))
    return np.asarray(canvas).copy(), layout


def labelled_row(tiles: Sequence[torch.Tensor], labels: Sequence[str]) -> np.ndarray:
    """uint8 (H, W, 3): tiles side by side, each with its label in a strip above it."""
    return compose(tiles, labels)[0]


def enlarge(tile: torch.Tensor, zoom: int) -> torch.Tensor:
    """(3, H, W) enlarged ``zoom`` times with nearest-neighbour (each pixel a square)."""
    return tile.repeat_interleave(zoom, dim=-2).repeat_interleave(zoom, dim=-1)


def zoom_for(height: int, width: int) -> int:
    """The integer enlargement that brings a crop to about :data:`DISPLAY` pixels."""
    return max(1, DISPLAY // max(height, width))


def thumbnail(hr: torch.Tensor, crop: Box) -> tuple[np.ndarray, Box]:
    """The whole (3, H, W) uint8 ``hr`` fitted into :data:`DISPLAY` pixels, the crop marked
    by a rectangle; (H', W', 3) uint8 and the rectangle (thumbnail pixels, outer edge)."""
    h, w = hr.shape[-2:]
    f = min(DISPLAY / h, DISPLAY / w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    img = Image.fromarray(_to_hwc(hr))
    img = img.resize(size, Image.Resampling.BOX if f < 1 else Image.Resampling.NEAREST)
    top, left = int(crop.top * f), int(crop.left * f)
    bottom = min(max(round(crop.bottom * f), top + 2 * MARK_WIDTH), size[1])
    right = min(max(round(crop.right * f), left + 2 * MARK_WIDTH), size[0])
    marker = Box(top, left, bottom - top, right - left)
    ImageDraw.Draw(img).rectangle(
        (marker.left, marker.top, marker.right - 1, marker.bottom - 1),
        outline=MARK,
        width=MARK_WIDTH,
    )
    return np.asarray(img).copy(), marker


def sample_panel(
    sr: torch.Tensor,
    bicubic: torch.Tensor,
    hr: torch.Tensor,
    protocol: Protocol,
    rgb_range: float = 255.0,
    gray: bool = False,
    title: str | None = None,
    side: int = CROP_SIDE,
) -> Panel:
    """The sample panel of one validation image (the run folder's ``samples/``, W&B, README):
    thumbnail of HR with the crop marked | bicubic | SR | HR | |SR - HR| x :data:`DIFF_GAIN`,
    the crop where SR and bicubic differ most (:func:`choose_crop`), its PSNRs under
    ``protocol``. ``sr`` and ``bicubic`` are whole (3, H, W) float images in [0, rgb_range],
    ``hr`` the (3, H, W) uint8 ground truth; ``gray`` marks a single-channel image; ``title``
    (e.g. ``sample x2, astronaut, step 2000``) heads the panel and its caption."""
    sr_q = quantize(sr.detach().float(), rgb_range)
    bic_q = quantize(bicubic.detach().float(), rgb_range)
    hr_f = hr.detach().float()
    crop = choose_crop(sr_q, bic_q, side)
    crops = {"bicubic": crop.of(bic_q), "SR": crop.of(sr_q), "HR": crop.of(hr_f)}
    border = min(protocol.border, min(crop.height, crop.width) // 4)
    psnr = {
        k: psnr_ssim(
            crops[k][None], crops["HR"][None], channels=protocol.channels, border=border,
            gray=gray,
        )[0].item()
        for k in ("bicubic", "SR")
    }  # fmt: skip
    diff = (crops["SR"] - crops["HR"]).abs().mean(dim=0, keepdim=True)
    diff = (diff * DIFF_GAIN).round().clamp(0, 255).expand(3, -1, -1)
    zoom = zoom_for(crop.height, crop.width)
    thumb, marker = thumbnail(hr, crop)
    tiles = [thumb] + [enlarge(t, zoom).to(torch.uint8) for t in (*crops.values(), diff)]
    h, w = hr.shape[-2:]
    labels = [
        f"HR {w}x{h}, crop at x {crop.left}, y {crop.top}",
        f"bicubic  {psnr['bicubic']:.2f} dB",
        f"SR  {psnr['SR']:.2f} dB",
        "HR",
        f"|SR - HR|  x{DIFF_GAIN}  (white: {255 / DIFF_GAIN:.0f}+)",
    ]
    what = (
        f"crop {crop.width}x{crop.height} of HR where SR and bicubic differ most, shown x{zoom} "
        f"(nearest); PSNR of the crop ({protocol.label})"
    )
    image, layout = compose(tiles, labels, [title, what] if title else [what])
    tile = layout.tiles[0]
    marker = Box(tile.top + marker.top, tile.left + marker.left, marker.height, marker.width)
    caption = (
        f"{title + ': ' if title else ''}bicubic {psnr['bicubic']:.2f} dB | SR "
        f"{psnr['SR']:.2f} dB (crop {crop.width}x{crop.height} at x {crop.left}, y {crop.top} "
        f"of HR {w}x{h}, {protocol.label}) | |SR - HR| x{DIFF_GAIN}"
    )
    return Panel(image, caption, crop, marker, layout, psnr, zoom)


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# ---- the curves ---------------------------------------------------------------------------
def evaluated_on(history: Sequence[tuple[int, str, float]]) -> str | None:
    """What ``val/psnr`` averages, read off the history's keys: the first validation set and
    its scales (``sample x2``, ``Set5 x2, x3, x4``); None if no per-set key is there."""
    sets: dict[str, list[str]] = {}
    for _, key, _ in history:
        m = re.fullmatch(r"val/(.+)/x(\d+)/psnr", key)
        if m and m[2] not in sets.setdefault(m[1], []):
            sets[m[1]].append(m[2])
    if not sets:
        return None
    name, scales = next(iter(sets.items()))
    return f"{name} " + ", ".join(f"x{s}" for s in sorted(scales, key=int))


def best_point(history: Sequence[tuple[int, str, float]], key: str = "val/psnr"):
    """(step, value) of the best validation (the first maximum: the best checkpoint's, whose
    criterion is strictly better), or None."""
    best = None
    for step, k, v in history:
        if k == key and np.isfinite(v) and (best is None or v > best[1]):
            best = (step, v)
    return best


def curves_title(
    history: Sequence[tuple[int, str, float]], run: str | None = None, key: str = "val/psnr"
) -> str:
    """``validation PSNR on sample x2 | run <run>``: the set and scales from the history."""
    parts = [f"validation PSNR on {evaluated_on(history) or key}"]
    if run:
        parts.append(f"run {run}")
    return " | ".join(parts)


def plot_curves(
    history: Sequence[tuple[int, str, float]],
    out: str | Path,
    key: str = "val/psnr",
    bicubic_key: str = "val/bicubic_psnr",
    time_key: str = "time/minutes",
    run: str | None = None,
) -> Path | None:
    """``curves.png``: ``key`` against updates and against wall-clock minutes, with the
    bicubic level as a dashed line and the best validation marked (``best = step N``), titled
    with the set, scales and ``run`` (:func:`curves_title`; also the PNG's ``Title`` text,
    the best step its ``Description``). ``history`` holds ``(step, key, value)`` rows (the
    run's ``history.csv``); None when there is no validation to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = {s: v for s, k, v in history if k == key and np.isfinite(v)}
    minutes = {s: v for s, k, v in history if k == time_key}
    bicubic = [v for _, k, v in history if k == bicubic_key]
    if not points:
        return None
    steps = sorted(points)
    best_step, best_value = best_point(history, key)
    best = f"best = step {best_step} ({best_value:.2f} dB)"
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100, sharey=True)
    axes[0].plot(steps, [points[s] for s in steps], marker="o", markersize=3, label="model")
    timed = [s for s in steps if s in minutes]
    axes[1].plot([minutes[s] for s in timed], [points[s] for s in timed], marker="o", markersize=3)
    star = dict(marker="*", markersize=13, color="tab:red", linestyle="none", zorder=3)
    axes[0].plot([best_step], [best_value], label=best, **star)
    axes[0].axvline(best_step, color="tab:red", linestyle=":", linewidth=1)
    if best_step in minutes:
        axes[1].plot([minutes[best_step]], [best_value], **star)
    for ax, xlabel in zip(axes, ("updates", "wall-clock minutes"), strict=True):
        if bicubic:
            ax.axhline(bicubic[-1], color="tab:gray", linestyle="--", label="bicubic")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{key} (dB)")
    axes[0].legend(fontsize=8)
    title = curves_title(history, run, key)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, bbox_inches="tight", metadata={"Title": title, "Description": best})
    plt.close(fig)
    return out
