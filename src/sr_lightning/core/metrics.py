"""PSNR / SSIM exactly as the SR benchmarks compute them (paper Sec. 4.2, Table 3).

The benchmark protocol: quantize the SR output to 8 bit, convert to the Y channel of MATLAB's
``rgb2ycbcr`` (studio-range BT.601, *not* kornia's full-range JPEG ``rgb_to_y``: that one comes
out 1.32 dB off), cut a border of ``scale`` pixels, then PSNR (peak 255) and SSIM (Wang et al.'s
``ssim_index.m``: 11x11 Gaussian, sigma 1.5, over the *valid* region) per image, averaged over
images. DIV2K is scored as the authors' code scores it: RGB, border ``scale + 6``
(:class:`Protocol` holds the choice; every function here takes it explicitly, as BasicSR's).
A single-channel (grayscale) image is scored on its gray values directly, as the MATLAB
scripts that produced the published numbers do (they call ``rgb2ycbcr`` only when the image has
three channels); Set14's ``bridge`` is such an image.

Both are written here in float64 and checked against torchmetrics in ``tests/test_metrics.py``:
torchmetrics' PSNR pools the error over all images unless reduced per image and accumulates in
float32 (1e-6 dB off); torchmetrics averages its reflect-padded full map (off by up to
0.01 on smooth images) and its float64 2-D window is 5x slower on CPU than the separable one
below; ``tests/test_metrics.py`` checks both against torchmetrics' map cropped to the valid region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from sr_lightning.core.protocol import CHANNELS, Protocol

SSIM_KERNEL = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def quantize(img: torch.Tensor, rgb_range: float = 255.0) -> torch.Tensor:
    """Map a network output in [0, rgb_range] to integer values in [0, 255] (as float)."""
    return torch.floor(img * (255.0 / rgb_range) + 0.5).clamp_(0, 255)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2ycbcr`` luma: (N, 3, H, W) RGB in [0, 255] -> (N, 1, H, W) Y in [16, 235].

    Y is not rounded: the scripts behind the published numbers convert ``im2double`` images,
    and rounding Y moves Set5/Set14 x2 by -0.03 dB, off the paper's bicubic rows.
    """
    r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def to_y(img: torch.Tensor, gray: torch.Tensor | bool) -> torch.Tensor:
    """Luma as the benchmark scores it: Y of RGB images, the gray value itself for gray ones.

    ``img`` is (N, 3, H, W) in [0, 255]; gray images arrive replicated to 3 channels and
    ``gray`` (bool or (N,) bool tensor) says which ones were single-channel on disk.
    """
    y = rgb_to_y(img)
    gray = torch.as_tensor(gray, device=img.device).reshape(-1, 1, 1, 1)
    return torch.where(gray, img[:, 0:1], y)


def shave(img: torch.Tensor, border: int) -> torch.Tensor:
    """Cut ``border`` pixels off every side (the benchmark ignores the border of width scale)."""
    return img[..., border:-border, border:-border] if border > 0 else img


def gaussian_window(size: int = SSIM_KERNEL, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-image SSIM of (N, 1, H, W) images, as ``ssim_index.m``: Gaussian 11x11 window
    (sigma 1.5, applied separably), 'valid' filtering, population (co)variances, map mean."""
    g = gaussian_window().to(x.device, x.dtype)
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    n = stats.shape[1]
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    mx, my, xx, yy, xy = stats.unbind(1)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    var_x, var_y, cov = xx - mx * mx, yy - my * my, xy - mx * my
    luminance = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    ssim_map = luminance * (2 * cov + c2) / (var_x + var_y + c2)
    return ssim_map.mean(dim=(-2, -1))


def psnr_ssim(
    sr: torch.Tensor,
    hr: torch.Tensor,
    *,
    channels: str,
    border: int,
    gray: torch.Tensor | bool = False,
    rgb_range: float = 255.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (PSNR, SSIM) of a batch under an explicit protocol (see :class:`Protocol`).
    Returns two (N,) float64 tensors.

    ``sr`` is the raw network output in [0, rgb_range] (quantized to 8 bit here); ``hr`` the
    ground truth (uint8 or float in [0, 255]) of the same size; ``gray`` marks images that were
    single-channel on disk (scored on their gray value under ``channels="y"``).
    """
    if sr.shape != hr.shape:
        raise ValueError(f"SR {tuple(sr.shape)} and HR {tuple(hr.shape)} differ in shape")
    if channels not in CHANNELS:
        raise ValueError(f"channels={channels!r}; allowed values: {CHANNELS}")
    sr_q, hr_d = quantize(sr.double(), rgb_range), hr.double()
    if channels == "y":
        sr_q, hr_d = to_y(sr_q, gray), to_y(hr_d, gray)
    sr_c, hr_c = shave(sr_q, border), shave(hr_d, border)
    mse = (sr_c - hr_c).pow(2).mean(dim=(1, 2, 3))
    n, c = sr_c.shape[:2]
    per_channel = ssim(
        sr_c.reshape(n * c, 1, *sr_c.shape[-2:]), hr_c.reshape(n * c, 1, *hr_c.shape[-2:])
    )
    return 10 * torch.log10(255.0**2 / mse), per_channel.view(n, c).mean(dim=1)


class SRMetrics(Metric):
    """Mean per-image PSNR and SSIM under ``protocol``, synced across DDP ranks.

    Each image must be seen exactly once over all ranks: feed it from an unpadded sampler.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, protocol: Protocol, rgb_range: float = 255.0, **kwargs):
        super().__init__(**kwargs)
        self.protocol = protocol
        self.rgb_range = rgb_range
        self.add_state("psnr_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ssim_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def score(
        self, sr: torch.Tensor, hr: torch.Tensor, gray: torch.Tensor | bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image (PSNR, SSIM) of a batch under this metric's protocol."""
        p = self.protocol
        return psnr_ssim(
            sr, hr, channels=p.channels, border=p.border, gray=gray, rgb_range=self.rgb_range
        )

    def update(self, psnr: torch.Tensor, ssim: torch.Tensor) -> None:
        """Add the per-image values that :meth:`score` returned."""
        self.psnr_sum += psnr.sum()
        self.ssim_sum += ssim.sum()
        self.count += psnr.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        return {"psnr": self.psnr_sum / n, "ssim": self.ssim_sum / n, "count": self.count}
