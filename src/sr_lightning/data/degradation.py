"""The degradation of the SR benchmarks (paper Sec. 4.1): HR -> LR by MATLAB's bicubic imresize."""

from __future__ import annotations

import torch

from ..resize import imresize


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right so that H and W are multiples of ``scale`` (the SR papers' modcrop)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The standard SR degradation: ``imresize(modcrop(HR, s), 1/s, 'bicubic')`` on uint8."""
    hr = modcrop(hr, scale)
    h, w = hr.shape[-2:]
    return imresize(hr, 1 / scale, out_size=(h // scale, w // scale))
