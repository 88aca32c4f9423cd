"""PSNR/SSIM with the benchmark protocol, on hand-computable cases and against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from sr_lightning.core.metrics import SRMetrics, psnr_ssim, quantize, rgb_to_y, shave, ssim
from sr_lightning.core.protocol import Protocol


def test_y_is_matlab_studio_range():
    px = torch.tensor([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]])
    y = rgb_to_y(px.double().T.reshape(1, 3, 1, 5)).flatten()
    torch.testing.assert_close(y, torch.tensor([16.0, 235.0, 81.481, 144.553, 40.966]).double())


def test_psnr_hand_computed():
    """A constant error of d levels on Y inside the shaved region gives 20 log10(255 / d)."""
    hr = torch.full((1, 3, 20, 20), 100.0)
    sr = hr.clone()
    sr[..., 2:-2, 2:-2] += 10.0  # border of 2 (x2) is ignored
    psnr, _ = psnr_ssim(sr, hr, channels="y", border=2)
    dy = (65.481 + 128.553 + 24.966) / 255 * 10  # Y difference of +10 on every channel
    assert psnr.item() == pytest.approx(20 * math.log10(255 / dy), abs=1e-9)


def test_output_is_quantized_before_scoring():
    hr = torch.full((1, 3, 16, 16), 100.0)
    assert quantize(torch.tensor([99.4, 99.5, 300.0, -3.0])).tolist() == [99.0, 100.0, 255.0, 0.0]
    psnr, ssim_ = psnr_ssim(hr + 0.4, hr, channels="y", border=2)  # rounds back to HR exactly
    assert math.isinf(psnr.item()) and ssim_.item() == pytest.approx(1.0)


def test_gray_images_are_scored_on_gray_values():
    hr = torch.full((1, 3, 20, 20), 100.0)
    sr = hr + 10.0
    p_gray, _ = psnr_ssim(sr, hr, channels="y", border=2, gray=True)
    p_rgb, _ = psnr_ssim(sr, hr, channels="y", border=2, gray=False)
    assert p_gray.item() == pytest.approx(20 * math.log10(25.5), abs=1e-9)
    assert p_rgb.item() - p_gray.item() == pytest.approx(20 * math.log10(255 / 219), abs=1e-9)


def test_ssim_matches_skimage_and_valid_torchmetrics():
    rng = np.random.default_rng(0)
    smooth = torch.nn.functional.avg_pool2d(torch.from_numpy(rng.random((1, 1, 72, 88))), 9, 1)
    x = smooth * 255
    y = (x + torch.from_numpy(rng.normal(0, 8, x.shape))).clamp(0, 255)
    ours = ssim(x, y).item()
    ref = structural_similarity(
        x[0, 0].numpy(),
        y[0, 0].numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert ours == pytest.approx(ref, abs=1e-12)
    _, full = structural_similarity_index_measure(x, y, data_range=255.0, return_full_image=True)
    assert ours == pytest.approx(full[..., 5:-5, 5:-5].mean().item(), abs=1e-12)
    # torchmetrics' own reduction averages the padded map: not the benchmark's SSIM
    padded = structural_similarity_index_measure(x, y, data_range=255.0).item()
    assert abs(padded - ours) > 1e-3


def test_psnr_matches_torchmetrics_per_image():
    torch.manual_seed(0)
    hr = torch.randint(0, 256, (3, 3, 24, 24)).double()
    sr = (hr + torch.randn_like(hr) * 5).clamp(0, 255)
    ours, _ = psnr_ssim(sr, hr, channels="y", border=2)
    y_sr, y_hr = shave(rgb_to_y(quantize(sr)), 2), shave(rgb_to_y(hr), 2)
    ref = peak_signal_noise_ratio(y_sr, y_hr, data_range=255.0, dim=(1, 2, 3), reduction="none")
    torch.testing.assert_close(ours, ref.double(), atol=1e-4, rtol=0)


def test_metric_averages_per_image_psnr():
    hr = torch.full((2, 3, 16, 16), 100.0)
    sr = hr.clone()
    sr[0] += 1.0
    sr[1] += 20.0
    per_image, _ = psnr_ssim(sr, hr, channels="y", border=2)
    metric = SRMetrics(Protocol("y", 2))
    metric.update(*metric.score(sr[:1], hr[:1]))
    metric.update(*metric.score(sr[1:], hr[1:]))
    out = metric.compute()
    assert out["count"].item() == 2
    assert out["psnr"].item() == pytest.approx(per_image.mean().item(), abs=1e-9)


def test_shape_mismatch_and_shave():
    assert shave(torch.zeros(1, 1, 10, 12), 3).shape == (1, 1, 4, 6)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 10), channels="y", border=2)


def test_rgb_protocol_scores_all_channels_with_its_border():
    """DIV2K's protocol (the authors' code): RGB, border scale + 6. A +10 error on the red
    channel inside the border of 8 (x2) gives 20 log10(255 / (10 / sqrt(3)))."""
    hr = torch.full((1, 3, 30, 30), 100.0, dtype=torch.float64)
    sr = hr.clone()
    sr[:, 0, 8:-8, 8:-8] += 10.0
    sr[:, :, :8] += 50.0  # inside the border: ignored
    psnr, ssim_ = psnr_ssim(sr, hr, channels="rgb", border=8)
    assert psnr.item() == pytest.approx(20 * math.log10(255 / (10 / math.sqrt(3))), abs=1e-9)
    # SSIM: the mean of the three channels' SSIM (two of them equal HR: SSIM 1)
    red = ssim(shave(sr[:, :1], 8), shave(hr[:, :1], 8)).item()
    assert ssim_.item() == pytest.approx((red + 2) / 3, abs=1e-12)
    y_psnr, _ = psnr_ssim(sr, hr, channels="y", border=8)
    assert y_psnr.item() != pytest.approx(psnr.item(), abs=0.1)  # the protocols differ
    with pytest.raises(ValueError, match="channels='ycbcr'"):
        psnr_ssim(sr, hr, channels="ycbcr", border=8)
