"""MDSR: one network for x2, x3 and x4 (paper Sec. 3.3, Fig. 5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sr_lightning.models.blocks import (
    ResBlock,
    ResidualTrunk,
    Upsampler,
    check_rgb,
    check_scale,
    conv,
)

SCALES_MDSR = (2, 3, 4)


class MDSR(ResidualTrunk):
    """Shared head/body/tail with a scale-specific pre-processing module (two 5x5 ResBlocks)
    in front of the body and a scale-specific upsampler after it. ``forward(x, scale)``.

    Presets: MDSR-baseline ``n_resblocks=16``; MDSR ``n_resblocks=80`` (``n_feats=64``).
    State_dict keys as the authors' code: ``pre_process.{k}``, ``upsample.{k}``, ``tail.0``,
    where ``k`` indexes ``scales`` (x2, x3, x4 -> 0, 1, 2). ``model_args``: as EDSR's.
    """

    def __init__(
        self,
        scales: Sequence[int] = SCALES_MDSR,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 255.0,
        norm: str = "none",
    ):
        chosen = [int(s) for s in scales]
        super().__init__({"scales": chosen}, n_resblocks, n_feats, res_scale, rgb_range, norm)
        if not chosen:
            raise ValueError("MDSR needs at least one scale (model.scales / data.scales)")
        for s in chosen:
            check_scale(s, SCALES_MDSR, "MDSR scale")
        self.scales = tuple(chosen)
        self.pre_process = nn.ModuleList(
            nn.Sequential(ResBlock(n_feats, 5, 1.0, norm), ResBlock(n_feats, 5, 1.0, norm))
            for _ in self.scales
        )
        self.upsample = nn.ModuleList(Upsampler(s, n_feats) for s in self.scales)
        self.add_trunk()
        self.tail = nn.Sequential(conv(n_feats, 3))

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """``x``: (N, 3, h, w) RGB in [0, rgb_range]; ``scale`` one of ``self.scales``."""
        if scale is None:
            if len(self.scales) != 1:
                raise ValueError(f"MDSR needs forward(x, scale) with scale in {list(self.scales)}")
            scale = self.scales[0]
        check_scale(int(scale), self.scales, "MDSR scale")
        check_rgb(x)
        k = self.scales.index(int(scale))
        x = self.pre_process[k](self.head(self.sub_mean(x)))
        x = self.body(x) + x  # the global skip starts after the scale-specific module
        return self.reconstruct(self.upsample[k](x), self.tail[0])
