"""MATLAB-compatible bicubic ``imresize``: the resampling behind every SR benchmark.

Used by the degradation (``data/degradation.py``: HR -> LR) and by the bicubic baseline
(``models/bicubic.py``: LR -> SR); it sits here, outside both, so neither imports the other.

The LR images of Set5/Set14/B100 and DIV2K were made by MATLAB's ``imresize(HR, 1/s, 'bicubic')``
on uint8 images, and the "Bicubic" rows of every SR paper by ``imresize(LR, s, 'bicubic')``.
Torch's bicubic is not that function: it uses a = -0.75 (MATLAB: a = -0.5), truncates the kernel
at the border instead of replicating the edge pixel, and never rounds between passes. MATLAB, for
uint8 input, rounds to uint8 (half away from zero) after each 1-D pass, resizing rows (height)
first. Each pass is one small matrix product, so the resize is batched and runs on any device.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@lru_cache(maxsize=256)
def _weights_cpu(in_len: int, out_len: int, scale: float) -> torch.Tensor:
    """Dense (out_len, in_len) float64 matrix of MATLAB's ``contributions`` for one axis.

    For downscaling (scale < 1) the kernel is widened by 1/scale (antialiasing). Taps that fall
    outside the image are clamped to the edge pixel, which reproduces the shipped MATLAB LR files
    bit for bit (``../shared/datasets/README.md``).
    """
    kernel_width = 4.0
    if scale < 1:
        kernel_width /= scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # output pixel centre, in input coordinates (1-based)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    w = scale * cubic(scale * dist) if scale < 1 else cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    cols = (idx - 1).clamp(0, in_len - 1).long()  # edge replication, 0-based
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, cols, w)
    return mat


def resize_weights(
    in_len: int, out_len: int, scale: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The (out_len, in_len) float64 resampling matrix for one axis, on ``device``."""
    return _weights_cpu(in_len, out_len, float(scale)).to(device)


def _round_uint8(x: torch.Tensor) -> torch.Tensor:
    # MATLAB's uint8(): saturate, round half away from zero (all values are >= 0 after clamp).
    return torch.floor(x.clamp(0, 255) + 0.5)


def imresize(
    img: torch.Tensor, scale: float, out_size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Resize ``img`` (..., C, H, W) by ``scale`` exactly as MATLAB ``imresize(..., 'bicubic')``.

    - ``uint8`` input: rounded to uint8 after each 1-D pass, returns uint8 (MATLAB's behaviour).
    - float input: values on the [0, 255] scale, no rounding, returns float of the input dtype.
    ``out_size`` (H, W) defaults to ``ceil(H * scale), ceil(W * scale)`` as in MATLAB.
    """
    if img.ndim < 2:
        raise ValueError(f"imresize expects (..., H, W), got shape {tuple(img.shape)}")
    if scale <= 0:
        raise ValueError(f"imresize scale must be > 0, got {scale}")
    quantize = img.dtype == torch.uint8
    if not quantize and not img.is_floating_point():
        raise TypeError(f"imresize takes uint8 or float images, got {img.dtype}")
    h, w = img.shape[-2:]
    out_h, out_w = out_size or (math.ceil(h * scale), math.ceil(w * scale))
    x = img.to(torch.float64)
    # Rows (height) first, then columns; each pass is one matrix product.
    wh = resize_weights(h, out_h, scale, x.device)
    x = torch.einsum("oh,...hw->...ow", wh, x)
    if quantize:
        x = _round_uint8(x)
    ww = resize_weights(w, out_w, scale, x.device)
    x = torch.einsum("...hw,ow->...ho", x, ww)
    if quantize:
        return _round_uint8(x).to(torch.uint8)
    return x.to(img.dtype)
