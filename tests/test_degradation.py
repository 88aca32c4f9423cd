"""MATLAB-exact imresize: reproduces the shipped MATLAB LR images bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sr_lightning.data.datasets import benchmark_pairs
from sr_lightning.data.degradation import bicubic_downscale, modcrop
from sr_lightning.data.io import load_image
from sr_lightning.resize import cubic, imresize


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
