"""Model FLOPs of a training step and the machine's practical peak (a measured matmul rate,
below the device's rated peak): the two terms of the throughput callback's
``train/frac_of_matmul_peak`` (an MFU only against a rated ``peak_tflops``).

Used by the throughput callback (``train/tflops``, ``train/frac_of_matmul_peak`` in every run)
and by the benchmark harness (``sr-bench``); light to import (torch only).
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(
    device: str | torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 10
) -> float:
    """FLOP/s of a large square matmul (median of ``repeats``): the practical peak, measured
    (not the device's rated peak)."""
    cuda = torch.device(device).type == "cuda"
    n = n or (8192 if cuda else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 3):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def train_step_flops(net: nn.Module, batch: int, patch: int, scale: int) -> int:
    """FLOPs of one training step, counted from the convolutions' shapes (2 per multiply-add).

    Forward of every conv, plus in the backward pass the weight gradient of every trained conv
    and the input gradient of every conv whose input needs one (not the first: its input is the
    image). ReLU, additions, the loss and Adam are memory-bound and left out (< 1% of FLOPs).
    ``scale`` picks the branch of a multi-scale network (MDSR, paper Sec. 3.3): its
    scale-specific head and upsampler differ per scale.
    """
    total = 0

    def hook(module: nn.Conv2d, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        fwd = 2 * out.numel() * (module.in_channels // module.groups) * kh * kw
        total += fwd
        total += fwd if module.weight.requires_grad else 0
        total += fwd if inputs[0].requires_grad else 0

    meta = copy.deepcopy(net).to("meta").train()  # shapes only: nothing is computed
    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, nn.Conv2d)]
    try:
        meta(torch.empty(batch, 3, patch, patch, device="meta"), scale)
    finally:
        for h in handles:
            h.remove()
    return total
