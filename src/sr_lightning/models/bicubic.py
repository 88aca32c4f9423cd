"""The bicubic baseline: MATLAB ``imresize(LR, s, 'bicubic')``, no parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sr_lightning.core.resize import imresize
from sr_lightning.models.blocks import check_rgb, check_scale


class Bicubic(nn.Module):
    """Upscales integer-valued RGB in [0, 255] as MATLAB does on uint8 (rounded per pass)."""

    # LR pixels of context an output pixel needs (the cubic kernel's support): exact tiling
    receptive_radius = 2

    def __init__(self, scales: Sequence[int] = (2, 3, 4), rgb_range: float = 255.0):
        super().__init__()
        self.scales = tuple(int(s) for s in scales)
        self.rgb_range = float(rgb_range)
        self.model_args = {"scales": list(self.scales), "rgb_range": self.rgb_range}

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        scale = int(scale if scale is not None else self.scales[0])
        check_scale(scale, self.scales, "bicubic scale")
        check_rgb(x)
        x8 = (x * (255.0 / self.rgb_range)).round().clamp(0, 255).to(torch.uint8)
        return imresize(x8, scale).to(x.dtype) * (self.rgb_range / 255.0)
