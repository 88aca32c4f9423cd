"""Image decoding with errors that name the file and say what is wrong."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm")


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
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                warnings.warn(f"{path}: dropping the alpha channel ({mode} image)", stacklevel=2)
                im = im.convert("RGB" if mode != "LA" else "L")
            elif mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif mode == "1":
                im = im.convert("L")
            elif mode not in ("L", "RGB"):
                raise ImageError(
                    f"{path}: unsupported pixel format {mode!r} (16-bit or float?); "
                    "SR benchmarks use 8-bit RGB or grayscale: convert the file to 8-bit"
                )
            arr = np.array(im, dtype=np.uint8)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused, declared size is too large ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode image (corrupt or truncated?): {e}") from e
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


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
