"""Inference speed: ms per output megapixel of a whole LR image through
:func:`~sr_lightning.core.inference.super_resolve` (the path every reported number takes),
untiled or in exact tiles, fp32 (and bf16 on GPU). The one inference benchmark: the inference
table of ``sr-bench`` (``--only inference`` for it alone, ``make bench-infer``)."""

from __future__ import annotations

import statistics
import time

import torch

from sr_lightning.bench.step import make_net
from sr_lightning.core.inference import super_resolve
from sr_lightning.training.flops import sync


def inference_ms_per_mp(
    model: str,
    scale: int,
    device: str,
    size: int,
    repeats: int = 3,
    precision: str = "fp32",
    tile: int = 0,
    overlap: int | None = None,
    net_args: dict | None = None,
) -> float:
    """ms per output megapixel of a ``size`` x ``size`` LR image (median of ``repeats`` after
    one warm-up); ``tile`` > 0 runs overlapping tiles of that LR side with ``overlap`` LR
    pixels of context (default: the receptive radius, exact)."""
    net = make_net(model, scale, net_args).to(device).eval()
    channels_last = device.startswith("cuda")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    lr = torch.rand(1, 3, size, size, device=device) * 255
    times = []
    for i in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        super_resolve(
            net, lr, scale, tile=tile, overlap=overlap, precision=precision,
            channels_last=channels_last,
        )  # fmt: skip
        sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / (size * size * scale * scale / 1e6)
