"""Building blocks of EDSR/MDSR (paper Sec. 3.1, Fig. 2; names follow the reference code)."""

from __future__ import annotations

import math

import torch
from torch import nn

# DIV2K RGB mean used by the reference code (std 1), in units of rgb_range.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
NORMS = ("none", "batch")


def conv(in_ch: int, out_ch: int, kernel_size: int = 3) -> nn.Conv2d:
    """'Same' convolution with bias, as every conv of EDSR."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=True)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv that subtracts (sign=-1) or adds back (sign=+1) the DIV2K mean.

    A conv rather than a buffer so that the state_dict keys (`sub_mean.weight/bias`) match the
    authors' published checkpoints; its parameters are not trained.
    """

    def __init__(self, rgb_range: float, sign: int, mean: tuple[float, ...] = DIV2K_RGB_MEAN):
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(mean))
        self.requires_grad_(False)


class ResBlock(nn.Module):
    """EDSR residual block: conv -> ReLU -> conv, scaled by ``res_scale``, plus identity (Fig. 2c).

    ``norm="batch"`` puts a BatchNorm after each conv: the SRResNet-style block (Fig. 2b) that
    the paper removes, kept for the BN ablation. No ReLU after the addition.
    """

    def __init__(
        self, n_feats: int, kernel_size: int = 3, res_scale: float = 1.0, norm: str = "none"
    ):
        super().__init__()
        check_norm(norm)
        layers: list[nn.Module] = [conv(n_feats, n_feats, kernel_size)]
        if norm == "batch":
            layers.append(nn.BatchNorm2d(n_feats))
        layers += [nn.ReLU(inplace=True), conv(n_feats, n_feats, kernel_size)]
        if norm == "batch":
            layers.append(nn.BatchNorm2d(n_feats))
        self.body = nn.Sequential(*layers)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        if self.res_scale != 1:  # a multiply by 1 is exact, but costs a pass over memory
            res = res.mul(self.res_scale)
        return res + x


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler (paper Sec. 3.1): conv(F -> r^2 F) + PixelShuffle(r), no activation.

    x2: one stage; x3: one x3 stage; x4 and x8: two and three x2 stages.
    """

    def __init__(self, scale: int, n_feats: int):
        check_scale(scale, SCALES_EDSR, "scale")
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [conv(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            for _ in range(int(math.log2(scale))):
                layers += [conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        super().__init__(*layers)


SCALES_EDSR = (2, 3, 4, 8)


class ResidualTrunk(nn.Module):
    """What EDSR and MDSR share (Sec. 3.2, 3.3): the frozen mean shifts, a head conv and a body
    of ``n_resblocks`` ResBlocks plus a conv (the global skip is the subclass's forward), and
    ``model_args``, the constructor arguments a checkpoint records to rebuild the network.

    Modules are registered in the reference code's order (the mean shifts first, a subclass's
    scale-specific modules, then :meth:`add_trunk`, then the tail), so that a seed initialises
    the same weights.

    ``fp32_output`` (default True; not a weight, so not in ``model_args``): under autocast the
    last conv and the mean add run in fp32 (:meth:`reconstruct`). In bf16 the output grid above
    128 (rgb_range 255) is the integers, so a bf16 output quantises the image the L1 loss sees.
    """

    fp32_output: bool = True

    def __init__(
        self,
        scales: dict[str, int | list[int]],
        n_resblocks: int,
        n_feats: int,
        res_scale: float,
        rgb_range: float,
        norm: str,
    ):
        super().__init__()
        check_norm(norm)
        self.rgb_range = float(rgb_range)
        self.model_args = {
            **scales,  # EDSR: {"scale": 2}; MDSR: {"scales": [2, 3, 4]}
            "n_resblocks": int(n_resblocks),
            "n_feats": int(n_feats),
            "res_scale": float(res_scale),
            "rgb_range": self.rgb_range,
            "norm": norm,
        }
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.add_mean = MeanShift(rgb_range, sign=+1)

    def reconstruct(self, x: torch.Tensor, last: nn.Module) -> torch.Tensor:
        """``add_mean(last(x))``: the final conv and the mean add, in fp32 under any autocast
        (the input cast up) unless ``fp32_output`` is False; the body keeps the autocast dtype."""
        if self.fp32_output and x.device.type != "meta":  # meta: FLOP counting, no autocast
            with torch.autocast(x.device.type, enabled=False):
                return self.add_mean(last(x.float()))
        return self.add_mean(last(x))

    def add_trunk(self) -> None:
        """``head`` (conv 3 -> F) and ``body`` (the ResBlocks and a conv F -> F)."""
        a = self.model_args
        self.head = nn.Sequential(conv(3, a["n_feats"]))
        blocks = [
            ResBlock(a["n_feats"], 3, a["res_scale"], a["norm"]) for _ in range(a["n_resblocks"])
        ]
        self.body = nn.Sequential(*blocks, conv(a["n_feats"], a["n_feats"]))


def check_scale(scale: int, allowed: tuple[int, ...], key: str) -> None:
    if scale not in allowed:
        raise ValueError(f"{key}={scale} is not supported; allowed values: {list(allowed)}")


def check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"model.net.norm={norm!r} is not supported; allowed values: {list(NORMS)}")


def check_rgb(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(
            f"expected an RGB batch of shape (N, 3, H, W), got {tuple(x.shape)}; "
            "grayscale images must be replicated to 3 channels, RGBA must drop alpha"
        )


def count_trainable(module: nn.Module) -> int:
    """Number of trainable parameters (the paper's count: mean-shift convs excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
