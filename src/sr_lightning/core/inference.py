"""Test-time forwards: geometric self-ensemble (paper Sec. 4.3), exact tiled inference, and
:func:`super_resolve`, the one whole-image forward behind validation, testing, ``eval.py``,
the bicubic rows and ``sr-upscale``: fp32 with autocast and TF32 off, whatever the trainer's
precision, so that every reported number is the network's fp32 output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from sr_lightning.core.metrics import quantize

Forward = Callable[[torch.Tensor], torch.Tensor]
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_device() -> str:
    """``cuda`` where a GPU is visible, else ``cpu``: the one place this default is decided
    (training on GPU by default, ``sr-upscale --device``, ``eval.py device=auto``, benches)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def receptive_radius(net: nn.Module) -> int:
    """An upper bound, in LR pixels, of how far an output pixel's context reaches: the sum of
    the conv radii (or the network's own ``receptive_radius``, e.g. bicubic's kernel support).
    As the tile overlap it makes tiled inference exact."""
    if hasattr(net, "receptive_radius"):
        return int(net.receptive_radius)
    return sum(m.kernel_size[0] // 2 for m in net.modules() if isinstance(m, nn.Conv2d))


@contextmanager
def network_precision(device_type: str, precision: str = "fp32") -> Iterator[None]:
    """Run the network in ``precision``. fp32 means IEEE fp32: autocast off (Lightning's
    ``bf16-mixed`` wraps evaluation steps in autocast) and TF32 off (cuDNN convs default to
    TF32 on Ampere and newer); bf16/fp16 mean autocast to that type."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; allowed values: {list(PRECISIONS)}")
    if precision != "fp32":
        with torch.autocast(device_type, dtype=PRECISIONS[precision]):
            yield
        return
    saved = set_tf32(False)
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        set_tf32(*saved)


def convs_in_tf32() -> bool:
    """Whether cuDNN runs fp32 convolutions in TF32 (torch's default). The legacy getter
    ``cudnn.allow_tf32`` raises once the new API set convolutions to ``"ieee"``: read the new
    setting first."""
    value = torch.backends.cudnn.conv.fp32_precision
    if value != "none":
        return value == "tf32"
    try:
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        return False


def set_tf32(convs: bool, matmuls: bool | None = None) -> tuple[bool, bool]:
    """fp32 cuDNN convolutions (and RNNs) and matmuls in TF32 or IEEE fp32, process-wide;
    returns the previous ``(convs, matmuls)``. Set through the legacy flags on purpose: the new
    API's ``"ieee"`` makes the legacy getter ``cudnn.allow_tf32`` raise, and torch.export
    reads it."""
    saved = convs_in_tf32(), bool(torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = convs
    torch.backends.cuda.matmul.allow_tf32 = convs if matmuls is None else matmuls
    return saved


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
    """EDSR+ / MDSR+: mean of the 8 inverse-transformed outputs of the transformed inputs,
    accumulated in fp32 (a bf16 sum of 8 outputs near 255 x 8 has a spacing of 8)."""
    out = forward(x).float()
    for k in range(1, 8):
        out = out + dihedral_inverse(forward(dihedral(x, k).contiguous()), k).float()
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


@torch.no_grad()
def super_resolve(
    net: nn.Module,
    lr: torch.Tensor,
    scale: int,
    *,
    ensemble: bool = False,
    tile: int = 0,
    overlap: int | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """SR of a float LR batch (N, 3, h, w) in [0, rgb_range]: the float32 output, or, given a
    uint8 ``out`` buffer, the output quantized to 8 bit tile by tile (bounded memory).

    ``tile`` > 0 runs overlapping LR tiles, by default with the exact overlap (the receptive
    radius); ``ensemble`` averages the 8 dihedral transforms in fp32 (inside each tile);
    ``precision`` is the network's (see :func:`network_precision`; fp32 for every reported
    number); ``channels_last`` feeds NHWC inputs to a network stored in that layout.
    """
    overlap = receptive_radius(net) if overlap is None else overlap
    rgb_range = float(getattr(net, "rgb_range", 255.0))

    def forward(x: torch.Tensor) -> torch.Tensor:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with network_precision(x.device.type, precision):
            return net(x, scale).float()

    def run(x: torch.Tensor) -> torch.Tensor:
        y = self_ensemble(forward, x) if ensemble else forward(x)
        return quantize(y, rgb_range) if out is not None else y

    return tiled_forward(run, lr.float(), scale, tile, overlap, out=out)
