"""The degradations HR -> LR: bicubic (EDSR paper Sec. 4.1) and RDN's BD and DN.

``data.degradation`` chooses one (RDN, Zhang et al. CVPR 2018, Sec. 5):

- ``bicubic`` (RDN's "BI"): MATLAB ``imresize(HR, 1/s, 'bicubic')``, the shipped LR files;
- ``bd``: Gaussian blur (7x7, sigma 1.6 at x3), then keep one pixel in ``s`` per axis;
- ``dn``: bicubic, then additive Gaussian noise of level 30, as an 8-bit image.
BD and DN LR images are always generated from HR (the shipped LR files are bicubic).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from kornia.filters import filter2d_separable, gaussian_blur2d, get_gaussian_kernel1d

from sr_lightning.core.protocol import DEGRADATIONS
from sr_lightning.core.resize import imresize

BD_SIGMA = 1.6
DN_LEVEL = 30.0  # standard deviation on the 0-255 scale


def check_degradation(degradation: str) -> None:
    """Refuse a value of ``data.degradation`` outside ``DEGRADATIONS``, naming the key."""
    if degradation not in DEGRADATIONS:
        raise ValueError(f"data.degradation={degradation!r}: allowed values are {DEGRADATIONS}")


def modcrop(img: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop the bottom/right so that H and W are multiples of ``scale`` (the SR papers' modcrop)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


TIE = 1e-9  # a symmetric blur across a step edge is exactly k + 0.5; float sums miss by 1e-13


def _uint8(x: torch.Tensor) -> torch.Tensor:
    # MATLAB's uint8(): saturate, round half away from zero (values are >= 0 after the clamp),
    # of the exact value: without TIE, 7.5 would round to 7 or 8 by summation order.
    return torch.floor(x.clamp(0, 255) + (0.5 + TIE)).to(torch.uint8)


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The standard SR degradation: ``imresize(modcrop(HR, s), 1/s, 'bicubic')`` on uint8."""
    hr = modcrop(hr, scale)
    h, w = hr.shape[-2:]
    return imresize(hr, 1 / scale, out_size=(h // scale, w // scale))


def bd_kernel_size(scale: int) -> int:
    """The Gaussian's side in RDN's ``imresize_BD``: 7 at x3 (the paper's BD), otherwise
    ``2 * ceil(3 sigma) + 1`` for odd and ``2 * ceil(3 sigma) + 2`` for even scales."""
    if scale == 3:
        return 7
    return 2 * int(np.ceil(3 * BD_SIGMA)) + (1 if scale % 2 else 2)


def gaussian_blur(img: torch.Tensor, size: int, sigma: float = BD_SIGMA) -> torch.Tensor:
    """MATLAB ``imfilter(img, fspecial('gaussian', size, sigma), 'replicate')`` of (..., H, W),
    in float64 on the 0-255 scale (not rounded).

    kornia's kernel is fspecial's (normalized samples at integer, for an even size half-integer,
    offsets) and its even-size anchor ``(size - 1) // 2`` is imfilter's ``floor((size + 1) / 2)``
    (1-based); tests/test_degradation.py checks it against a plain separable implementation.
    """
    h, w = img.shape[-2:]
    x = img.reshape(1, -1, h, w).to(torch.float64)  # float32 would flip some uint8 roundings
    if size % 2:
        out = gaussian_blur2d(x, size, (sigma, sigma), border_type="replicate")
    else:  # gaussian_blur2d takes odd sizes only
        k = get_gaussian_kernel1d(size, sigma, force_even=True, dtype=torch.float64)
        out = filter2d_separable(x, k, k, border_type="replicate")
    return out.reshape(img.shape)


def bd_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """RDN's BD (Sec. 5): blur ``modcrop(HR, s)`` with a Gaussian (sigma 1.6, 7x7 at x3),
    edge pixels replicated, round to uint8, then keep pixel ``(s - 1) // 2`` of every ``s``.

    As ``imresize_BD`` in RDN's ``RDN_TestCode/Prepare_TestData_HR_LR.m`` (and the x3 training
    script ``Prepare_TrainData_HR_LR_BD.m``): ``imfilter(HR, kernel, 'replicate')`` on uint8,
    then pixel subsampling, not bicubic: ``imresize(blur, 1/s, 'nearest')`` for odd ``s`` (the
    centre pixel of each ``s x s`` block) and ``blur(s/2:s:end, ...)`` for even ``s``.
    """
    hr = modcrop(hr, scale)
    blurred = _uint8(gaussian_blur(hr, bd_kernel_size(scale)))
    first = (scale - 1) // 2
    return blurred[..., first::scale, first::scale].contiguous()


def noise_seed(name: str, scale: int) -> int:
    """The DN noise seed of image ``name`` (file name without extension) at ``scale``: fixed
    across runs, processes and machines (not Python's salted ``hash``)."""
    digest = hashlib.sha256(f"{name}|x{scale}|dn".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def add_noise(lr: torch.Tensor, seed: int, level: float = DN_LEVEL) -> torch.Tensor:
    """``uint8(single(LR) + single(level * randn))``: Gaussian noise, rounded and saturated
    as an 8-bit LR file (RDN's ``imresize_DN``)."""
    # NumPy's legacy RandomState stream is frozen by its compatibility policy, unlike torch's
    # and numpy.random.Generator's: the DN evaluation sets stay the same across upgrades.
    noise = np.random.RandomState(seed).standard_normal(tuple(lr.shape))
    noisy = lr.to(torch.float32) + (level * torch.from_numpy(noise)).to(torch.float32)
    return _uint8(noisy.to(torch.float64))


def dn_downscale(hr: torch.Tensor, scale: int, name: str) -> torch.Tensor:
    """RDN's DN (Sec. 5): bicubic downscaling, then noise of level 30 seeded by
    :func:`noise_seed` ``(name, scale)``, so every image has its own fixed noise.

    (RDN's test script resets MATLAB's seed to 0 for every image instead; its noise cannot be
    reproduced outside MATLAB anyway.)
    """
    return add_noise(bicubic_downscale(hr, scale), noise_seed(name, scale))


def degrade(
    hr: torch.Tensor, scale: int, degradation: str = "bicubic", name: str = ""
) -> torch.Tensor:
    """LR uint8 image of ``hr`` by ``degradation`` (``data.degradation``); ``name`` seeds DN."""
    check_degradation(degradation)
    if degradation == "bd":
        return bd_downscale(hr, scale)
    if degradation == "dn":
        if not name:
            raise ValueError("the DN degradation needs the image's name (it seeds the noise)")
        return dn_downscale(hr, scale, name)
    return bicubic_downscale(hr, scale)
