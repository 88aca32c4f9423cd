"""EDSR: single-scale Enhanced Deep Super-Resolution network (paper Sec. 3.2, Fig. 3)."""

from __future__ import annotations

import torch
from torch import nn

from sr_lightning.models.blocks import ResidualTrunk, Upsampler, check_rgb, conv


class EDSR(ResidualTrunk):
    """mean shift -> head -> ``n_resblocks`` ResBlocks + conv (global skip) -> upsampler -> tail.

    Presets (Table 1): EDSR-baseline ``n_resblocks=16, n_feats=64, res_scale=1``;
    EDSR ``n_resblocks=32, n_feats=256, res_scale=0.1``. The state_dict keys are those of the
    authors' code (``sub_mean``, ``head.0``, ``body.{i}.body.{0,2}``, ``body.{n}``, ``tail.0.{j}``,
    ``tail.1``, ``add_mean``), so their published ``.pt`` files load with ``strict=True``.
    ``model_args`` holds the constructor arguments: checkpoints store it to rebuild the network.
    """

    def __init__(
        self,
        scale: int = 2,
        n_resblocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        rgb_range: float = 255.0,
        norm: str = "none",
    ):
        super().__init__({"scale": int(scale)}, n_resblocks, n_feats, res_scale, rgb_range, norm)
        self.scale = int(scale)
        self.scales = (self.scale,)
        self.add_trunk()
        self.tail = nn.Sequential(Upsampler(self.scale, n_feats), conv(n_feats, 3))

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """``x``: (N, 3, h, w) RGB in [0, rgb_range] -> (N, 3, h*scale, w*scale)."""
        if scale is not None and int(scale) != self.scale:
            raise ValueError(f"this EDSR was built for x{self.scale}, asked for x{scale}")
        check_rgb(x)
        x = self.head(self.sub_mean(x))
        x = self.body(x) + x
        return self.reconstruct(self.tail[0](x), self.tail[1])  # upsampler, then the last conv
