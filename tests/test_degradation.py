"""MATLAB-exact imresize: reproduces the shipped MATLAB LR images bit for bit; RDN's BD and
DN degradations equal a plain re-implementation of RDN's MATLAB script."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sr_lightning.core.resize import cubic, imresize
from sr_lightning.data.datasets import benchmark_pairs
from sr_lightning.data.degradation import (
    bd_downscale,
    bd_kernel_size,
    bicubic_downscale,
    degrade,
    dn_downscale,
    gaussian_blur,
    modcrop,
    noise_seed,
)
from sr_lightning.data.io import load_image


@pytest.mark.parametrize("name", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_reproduces_matlab_lr_bit_for_bit(data_root, name, scale):
    pairs = benchmark_pairs(data_root, name, scale)
    assert len(pairs) == {"Set5": 5, "Set14": 14}[name]
    for pair in pairs:
        assert pair.lr is not None
        lr = bicubic_downscale(load_image(pair.hr), scale)
        shipped = load_image(pair.lr)
        assert lr.shape == shipped.shape, pair.lr
        n_diff = int((lr != shipped).sum())
        assert n_diff == 0, f"{pair.lr}: {n_diff} pixels differ"


def test_batched_equals_single_and_runs_in_float():
    torch.manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 24, 36), dtype=torch.uint8)
    batch = imresize(imgs, 0.5)
    for i in range(3):
        assert torch.equal(batch[i], imresize(imgs[i], 0.5))
    as_float = imresize(imgs.float(), 0.5)
    assert as_float.dtype == torch.float32 and as_float.shape == (3, 3, 12, 18)
    # on a ramp (no overshoot to saturate between passes) the two paths agree within rounding
    ramp = torch.linspace(0, 255, 36).expand(3, 24, 36)
    diff = imresize(ramp.round().to(torch.uint8), 0.5).float() - imresize(ramp.round(), 0.5)
    assert diff.abs().max() <= 1.0


def test_kernel_is_keys_cubic_a_minus_half():
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    torch.testing.assert_close(cubic(x), torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0]))


def test_interior_matches_torch_antialiased_bicubic():
    """Away from the border MATLAB's kernel equals torch's antialiased a=-0.5 path."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 60, 48, dtype=torch.float64) * 255
    ours = imresize(x, 1 / 3, out_size=(20, 16))
    ref = F.interpolate(x, size=(20, 16), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(ours[..., 3:-3, 3:-3], ref[..., 3:-3, 3:-3])
    # ...but not at the border, where MATLAB replicates the edge pixel
    assert (ours - ref).abs().max() > 1e-3


def test_constant_image_stays_constant_and_sizes_follow_matlab():
    img = torch.full((3, 17, 10), 77, dtype=torch.uint8)
    assert torch.equal(imresize(img, 3), torch.full((3, 51, 30), 77, dtype=torch.uint8))
    assert imresize(img, 0.5).shape == (3, 9, 5)  # ceil, as MATLAB
    assert bicubic_downscale(img, 4).shape == (3, 4, 2)  # modcrop first
    assert modcrop(img, 4).shape == (3, 16, 8)


def test_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8 or float"):
        imresize(torch.zeros(3, 4, 4, dtype=torch.int32), 2)
    with pytest.raises(ValueError, match="scale must be > 0"):
        imresize(torch.zeros(3, 4, 4), 0)


# ---- RDN's BD and DN (RDN_TestCode/Prepare_TestData_HR_LR.m), re-implemented by hand --------


def plain_gaussian_blur(img: torch.Tensor, size: int, sigma: float = 1.6) -> torch.Tensor:
    """``imfilter(img, fspecial('gaussian', size, sigma), 'replicate')`` in float64: two 1-D
    passes over edge-replicated shifts, anchored at imfilter's centre ``floor((size + 1) / 2)``."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    anchor = (size + 1) // 2 - 1  # 0-based
    x = img.to(torch.float64)
    h, w = x.shape[-2:]
    rows = torch.arange(h)
    x = sum(g[i] * x[..., (rows + i - anchor).clamp(0, h - 1), :] for i in range(size))
    cols = torch.arange(w)
    return sum(g[i] * x[..., (cols + i - anchor).clamp(0, w - 1)] for i in range(size))


def plain_bd(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """RDN's ``imresize_BD``: blur (rounded to uint8), then ``imresize(., 1/s, 'nearest')`` for
    odd ``s`` (1-based pixel ``s i - (s - 1) / 2``), ``blur(s/2:s:end-s/2)`` for even ``s``."""
    hr = modcrop(hr, scale)
    size = {2: 12, 3: 7, 4: 12}[scale]
    exact = plain_gaussian_blur(hr, size).clamp(0, 255)
    blurred = torch.floor(exact + 0.5 + 1e-9).to(torch.uint8)  # ties k + 0.5 (step edges) go up
    h, w = hr.shape[-2] // scale, hr.shape[-1] // scale
    if scale % 2:
        rows = [scale * i - (scale - 1) // 2 - 1 for i in range(1, h + 1)]
        cols = [scale * i - (scale - 1) // 2 - 1 for i in range(1, w + 1)]
    else:
        rows = list(range(scale // 2 - 1, hr.shape[-2] - scale // 2, scale))
        cols = list(range(scale // 2 - 1, hr.shape[-1] - scale // 2, scale))
    return blurred[..., rows, :][..., cols]


def plain_dn(hr: torch.Tensor, scale: int, name: str) -> torch.Tensor:
    """``uint8(single(imresize(HR, 1/s)) + single(30 randn))`` with our per-image seed."""
    lr = bicubic_downscale(hr, scale).numpy()
    noise = np.random.RandomState(noise_seed(name, scale)).standard_normal(lr.shape)
    noisy = lr.astype(np.float32) + (30 * noise).astype(np.float32)
    return torch.from_numpy(np.floor(np.clip(noisy.astype(np.float64), 0, 255) + 0.5)).to(
        torch.uint8
    )


def test_kornia_blur_matches_fspecial_imfilter_by_hand():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 29, 34), dtype=torch.uint8)
    for size in (7, 11, 12):  # x3; odd and even scales of RDN's script
        diff = (gaussian_blur(img, size) - plain_gaussian_blur(img, size)).abs().max()
        assert diff < 1e-9, (size, diff)
    # the separable kernel is fspecial's 2-D one (normalized over the square)
    t = torch.arange(7, dtype=torch.float64) - 3
    g = torch.exp(-(t**2) / (2 * 1.6**2))
    square = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.6**2))
    torch.testing.assert_close(torch.outer(g, g) / g.sum() ** 2, square / square.sum())
    assert [bd_kernel_size(s) for s in (2, 3, 4, 5)] == [12, 7, 12, 11]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bd_and_dn_equal_the_plain_implementation(scale):
    torch.manual_seed(scale)
    hr = torch.randint(0, 256, (3, 37, 41), dtype=torch.uint8)
    bd = bd_downscale(hr, scale)
    assert bd.dtype == torch.uint8 and bd.shape == (3, 37 // scale, 41 // scale)
    assert torch.equal(bd, plain_bd(hr, scale))
    assert torch.equal(degrade(hr[:1], scale, "bd"), plain_bd(hr[:1], scale))  # gray
    dn = dn_downscale(hr, scale, "img")
    assert dn.shape == bd.shape and torch.equal(dn, plain_dn(hr, scale, "img"))
    flat = torch.full((1, 30, 30), 77, dtype=torch.uint8)
    side = 30 // scale  # modcrop first
    expected = torch.full((1, side, side), 77, dtype=torch.uint8)
    assert torch.equal(bd_downscale(flat, scale), expected)


@pytest.mark.parametrize("scale", [2, 3])
def test_bd_and_dn_equal_the_plain_implementation_on_set5(data_root, scale):
    for pair in benchmark_pairs(data_root, "Set5", scale):
        hr = load_image(pair.hr)
        assert torch.equal(bd_downscale(hr, scale), plain_bd(hr, scale)), pair.hr
        assert torch.equal(dn_downscale(hr, scale, pair.hr.stem), plain_dn(hr, scale, pair.hr.stem))


# sha256 of dn_downscale(HR below, 3, "baby"): the DN noise of an image is the same in every
# run, process and machine (a seed from Python's salted hash, or from the global RNG state,
# would change it); changing it changes every DN evaluation set
DN_BABY_X3_SHA256 = "54f1fb4d7b18d7d1b02e1d859c0ebb4b8d8d565ca2608eb14e2cad300d79fba4"


def test_dn_noise_is_fixed_per_image_and_scale():
    hr = (torch.arange(3 * 30 * 36) % 251).to(torch.uint8).view(3, 30, 36)
    first = dn_downscale(hr, 3, "baby")
    assert hashlib.sha256(first.numpy().tobytes()).hexdigest() == DN_BABY_X3_SHA256
    saved = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():  # the global generators play no part
        random.seed(1)
        np.random.seed(1)
        torch.manual_seed(1)
        again = dn_downscale(hr, 3, "baby")
    random.setstate(saved[0])
    np.random.set_state(saved[1])
    assert torch.equal(first, again)
    assert not torch.equal(first, dn_downscale(hr, 3, "bird"))  # each image its own noise
    assert noise_seed("baby", 3) != noise_seed("baby", 2)
    assert noise_seed("baby", 3) == 3212309623  # changing it changes every DN evaluation set
    gray = torch.full((1, 90, 90), 128, dtype=torch.uint8)
    noise = dn_downscale(gray, 3, "gray").double() - 128
    assert abs(noise.std().item() - 30) < 1.5 and abs(noise.mean().item()) < 1.5


def test_bad_degradation_is_refused_by_name():
    with pytest.raises(ValueError, match=r"data.degradation='blur': allowed values are \('bic"):
        degrade(torch.zeros(3, 6, 6, dtype=torch.uint8), 2, "blur")
    with pytest.raises(ValueError, match="DN degradation needs the image's name"):
        degrade(torch.zeros(3, 6, 6, dtype=torch.uint8), 2, "dn")


def test_datamodule_serves_bd_and_dn_sets_named_by_their_protocol_in_separate_caches(
    data_root, tmp_path
):
    from sr_lightning.data.datamodule import SRDataModule

    def first_set(degradation: str):
        dm = SRDataModule(
            root=str(data_root),
            scales=[3],
            benchmarks=["Set5"],
            val_sets=[],
            cache_dir=str(tmp_path),  # one cache for all three: keys must keep them apart
            degradation=degradation,
        )
        dm.setup("test")
        return dm.test_data[0]

    for degradation, make in [
        ("bd", lambda hr, stem: bd_downscale(hr, 3)),
        ("dn", lambda hr, stem: dn_downscale(hr, 3, stem)),
        ("bicubic", None),
    ]:
        data = first_set(degradation)
        assert data.protocol.degradation == degradation
        item = data[0]
        hr = load_image(data.pairs[0].hr)
        if make is None:  # the shipped LR file, not a generated one from the cache
            assert data.protocol.label == "Y, border 3, LR file"
            assert torch.equal(item["lr"], load_image(benchmark_pairs(data_root, "Set5", 3)[0].lr))
        else:
            assert data.protocol.label == f"Y, border 3, {degradation.upper()} (generated)"
            assert torch.equal(item["lr"], make(hr, item["name"]))
    with pytest.raises(ValueError, match="data.degradation='blur'"):
        SRDataModule(root=str(data_root), degradation="blur")
