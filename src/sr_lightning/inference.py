"""Test-time forwards: geometric self-ensemble (paper Sec. 4.3) and exact tiled inference."""

from __future__ import annotations

from collections.abc import Callable

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 flips/rotations (k = 4 * transpose + 2 * vflip + hflip) of (..., H, W)."""
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4:
        x = x.transpose(-2, -1)
    return x


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` (the same operations in reverse order)."""
    if k & 4:
        x = x.transpose(-2, -1)
    if k & 2:
        x = x.flip(-2)
    if k & 1:
        x = x.flip(-1)
    return x


def self_ensemble(forward: Forward, x: torch.Tensor) -> torch.Tensor:
    """EDSR+ / MDSR+: mean of the 8 inverse-transformed outputs of the transformed inputs."""
    out = forward(x)
    for k in range(1, 8):
        out = out + dihedral_inverse(forward(dihedral(x, k).contiguous()), k)
    return out / 8


def tiled_forward(
    forward: Forward,
    x: torch.Tensor,
    scale: int,
    tile: int = 0,
    overlap: int = 32,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``forward`` on overlapping LR tiles of side ``tile`` and stitch the centres.

    Each output pixel is taken from the one tile where it lies at least ``overlap`` LR pixels from
    a tile edge that is not an image edge, so with ``overlap`` >= the receptive-field radius the
    result equals the whole-image forward up to float rounding. ``tile <= 0`` runs untiled.
    ``out`` (e.g. a uint8 buffer, for quantized tiles) receives the result if given.
    """
    h, w = x.shape[-2:]
    if tile <= 0 or (h <= tile and w <= tile):
        if out is None:
            return forward(x)
        out.copy_(forward(x))
        return out
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must exceed 2 * overlap ({2 * overlap})")
    step = tile - 2 * overlap
    if out is None:
        out = x.new_zeros(*x.shape[:-2], h * scale, w * scale)
    for top in range(0, h, step):
        for left in range(0, w, step):
            # the core [top, top+step) x [left, left+step), padded by `overlap` where possible
            y0, x0 = max(top - overlap, 0), max(left - overlap, 0)
            y1, x1 = min(top + step + overlap, h), min(left + step + overlap, w)
            sr = forward(x[..., y0:y1, x0:x1])
            cy1, cx1 = min(top + step, h), min(left + step, w)
            out[..., top * scale : cy1 * scale, left * scale : cx1 * scale] = sr[
                ...,
                (top - y0) * scale : (cy1 - y0) * scale,
                (left - x0) * scale : (cx1 - x0) * scale,
            ]
    return out
