"""EDSR: single-scale Enhanced Deep Super-Resolution network (paper Sec. 3.2, Fig. 3)."""

from __future__ import annotations

import torch
from torch import nn

from sr_lightning.models.blocks import MeanShift, ResBlock, Upsampler, check_norm, check_rgb, conv


class EDSR(nn.Module):
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
        super().__init__()
        check_norm(norm)
        self.scale = int(scale)
        self.scales = (self.scale,)
        self.rgb_range = float(rgb_range)
        self.model_args = {
            "scale": self.scale,
            "n_resblocks": int(n_resblocks),
            "n_feats": int(n_feats),
            "res_scale": float(res_scale),
            "rgb_range": self.rgb_range,
            "norm": norm,
        }
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=+1)
        self.head = nn.Sequential(conv(3, n_feats))
        blocks = [ResBlock(n_feats, 3, res_scale, norm) for _ in range(n_resblocks)]
        self.body = nn.Sequential(*blocks, conv(n_feats, n_feats))
        self.tail = nn.Sequential(Upsampler(self.scale, n_feats), conv(n_feats, 3))

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        """``x``: (N, 3, h, w) RGB in [0, rgb_range] -> (N, 3, h*scale, w*scale)."""
        if scale is not None and int(scale) != self.scale:
            raise ValueError(f"this EDSR was built for x{self.scale}, asked for x{scale}")
        check_rgb(x)
        x = self.head(self.sub_mean(x))
        x = self.body(x) + x
        return self.add_mean(self.tail(x))
