"""Image decoding with errors that name the file and say what is wrong."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm")
EIGHT_BIT = "SR benchmarks use 8-bit RGB or grayscale: convert the file to 8-bit"


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(path: str | Path) -> torch.Tensor:
    """Decode ``path`` to a uint8 (C, H, W) tensor, C = 1 (grayscale) or 3 (RGB).

    Grayscale keeps one channel so that evaluation can score it as the benchmarks do; use
    :func:`to_rgb` to train on it. Alpha is dropped with a warning; palette and CMYK images are
    converted to RGB; 16-bit and float images are refused (the SR protocol is 8-bit).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        # PIL raises past 2x Image.MAX_IMAGE_PIXELS but between 1x and 2x only warns, then
        # decodes (gigabytes for a tiny file): refuse those too, before any pixel is allocated
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_pixel_limit(path, im.size)
                check_bit_depth(path, im)
                im.load()
                arr = _to_uint8_array(path, im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: refused, declared size is too large ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        hint = "corrupt or truncated?"
        if isinstance(e, UnidentifiedImageError) and _is_tiff(path):
            hint = f"a float or 16-bit TIFF? {EIGHT_BIT}"
        raise ImageError(f"{path}: cannot decode image ({hint}): {e}") from e
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def check_pixel_limit(path: Path, size: tuple[int, int]) -> None:
    """Refuse an image whose declared ``size`` exceeds ``PIL.Image.MAX_IMAGE_PIXELS``."""
    limit = Image.MAX_IMAGE_PIXELS
    w, h = size
    if limit and w * h > limit:
        raise ImageError(
            f"{path}: refused, declared size {w}x{h} ({w * h} pixels) exceeds the limit of "
            f"{limit} pixels (PIL.Image.MAX_IMAGE_PIXELS; a decompression bomb?)"
        )


def check_bit_depth(path: Path, im: Image.Image) -> None:
    """Refuse 16-bit samples that PIL would silently narrow to 8 bits (e.g. 48-bit RGB PNG)."""
    if im.mode.startswith(("I", "F")):
        return  # refused after load() with its mode
    for tile in im.tile:  # before load(): the raw layout, e.g. "RGB;16B"
        args = tile[3]
        rawmode = args if isinstance(args, str) else args[0] if args else ""
        if isinstance(rawmode, str) and re.search(r";16[BLN]", rawmode):
            raise ImageError(f"{path}: 16 bits per sample ({rawmode}); {EIGHT_BIT}")


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _to_uint8_array(path: Path, im: Image.Image) -> np.ndarray:
    """A decoded PIL image as a uint8 (H, W) or (H, W, 3) array."""
    mode = im.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        warnings.warn(f"{path}: dropping the alpha channel ({mode} image)", stacklevel=3)
        im = im.convert("RGB" if mode != "LA" else "L")
    elif mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "RGB"):
        raise ImageError(
            f"{path}: unsupported pixel format {mode!r} (16-bit or float?); {EIGHT_BIT}"
        )
    return np.array(im, dtype=np.uint8)


def to_rgb(img: torch.Tensor) -> torch.Tensor:
    """Replicate a 1-channel image to 3 channels (a view); RGB passes through."""
    return img.expand(3, *img.shape[-2:]) if img.shape[-3] == 1 else img


def save_image(img: torch.Tensor, path: str | Path) -> None:
    """Write a uint8 (C, H, W) tensor as PNG (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = img.detach().cpu().numpy()
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)
