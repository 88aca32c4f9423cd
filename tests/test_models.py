"""EDSR / MDSR architecture: parameter counts, reference key names, shapes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sr_lightning.models import EDSR, MDSR, Bicubic, count_trainable


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"scale": 2}, 1_369_859),
        ({"scale": 3}, 1_554_499),
        ({"scale": 4}, 1_517_571),
        ({"scale": 2, "n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, 40_729_603),
        ({"scale": 4, "n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, 43_089_923),
    ],
)
def test_edsr_parameter_counts(kwargs, expected):
    assert count_trainable(EDSR(**kwargs)) == expected


@pytest.mark.parametrize(("n_resblocks", "expected"), [(16, 3_227_203), (80, 7_953_987)])
def test_mdsr_parameter_counts(n_resblocks, expected):
    assert count_trainable(MDSR(scales=(2, 3, 4), n_resblocks=n_resblocks)) == expected


def test_mean_shift_is_frozen_and_in_state_dict():
    model = EDSR(scale=2)
    assert not model.sub_mean.weight.requires_grad and not model.add_mean.bias.requires_grad
    torch.testing.assert_close(model.sub_mean.bias, -255 * torch.tensor([0.4488, 0.4371, 0.4040]))
    # 24 frozen parameters on top of the trainable ones, as in the reference code
    assert sum(p.numel() for p in model.parameters()) == 1_369_859 + 24


def reference_edsr_keys(n_resblocks: int, scale: int) -> list[tuple[str, tuple]]:
    """The authors' EDSR-baseline state_dict, written out from their published key listing."""
    f = 64
    keys = [
        ("sub_mean.weight", (3, 3, 1, 1)),
        ("sub_mean.bias", (3,)),
        ("add_mean.weight", (3, 3, 1, 1)),
        ("add_mean.bias", (3,)),
        ("head.0.weight", (f, 3, 3, 3)),
        ("head.0.bias", (f,)),
    ]
    for i in range(n_resblocks):
        for j in (0, 2):
            keys += [(f"body.{i}.body.{j}.weight", (f, f, 3, 3)), (f"body.{i}.body.{j}.bias", (f,))]
    keys += [(f"body.{n_resblocks}.weight", (f, f, 3, 3)), (f"body.{n_resblocks}.bias", (f,))]
    stages = [0] if scale in (2, 3) else [0, 2]
    out = 9 * f if scale == 3 else 4 * f
    for j in stages:
        keys += [(f"tail.0.{j}.weight", (out, f, 3, 3)), (f"tail.0.{j}.bias", (out,))]
    keys += [("tail.1.weight", (3, f, 3, 3)), ("tail.1.bias", (3,))]
    return keys


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_edsr_state_dict_matches_reference_names(scale):
    state = EDSR(scale=scale).state_dict()
    expected = reference_edsr_keys(16, scale)
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected
    assert len(state) == {2: 76, 3: 76, 4: 78}[scale]


def test_authors_state_dict_loads_strict():
    """A state dict keyed and shaped like the authors' x2 file loads with strict=True."""
    ref = {k: torch.randn(shape) for k, shape in reference_edsr_keys(16, 2)}
    model = EDSR(scale=2)
    model.load_state_dict(ref, strict=True)
    torch.testing.assert_close(model.body[3].body[2].weight, ref["body.3.body.2.weight"])


def test_mdsr_state_dict_names():
    state = MDSR(scales=(2, 3, 4), n_resblocks=16).state_dict()
    assert len(state) == 106
    assert tuple(state["pre_process.2.1.body.2.weight"].shape) == (64, 64, 5, 5)
    assert tuple(state["upsample.1.0.weight"].shape) == (576, 64, 3, 3)
    assert tuple(state["upsample.2.2.weight"].shape) == (256, 64, 3, 3)
    assert tuple(state["tail.0.weight"].shape) == (3, 64, 3, 3)
    assert "body.16.weight" in state and "body.16.body.0.weight" not in state


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_edsr_forward_shapes(scale):
    model = EDSR(scale=scale, n_resblocks=2, n_feats=16)
    x = torch.rand(2, 3, 7, 9) * 255
    assert model(x).shape == (2, 3, 7 * scale, 9 * scale)
    assert model(x, scale).shape == (2, 3, 7 * scale, 9 * scale)


def test_edsr_x8_is_three_x2_stages():
    model = EDSR(scale=8, n_resblocks=1, n_feats=8)
    shuffles = [m for m in model.tail[0] if isinstance(m, nn.PixelShuffle)]
    assert [s.upscale_factor for s in shuffles] == [2, 2, 2]


def test_mdsr_switches_scales():
    torch.manual_seed(0)
    model = MDSR(scales=(2, 3, 4), n_resblocks=2, n_feats=16).eval()
    x = torch.rand(1, 3, 8, 6) * 255
    outs = {s: model(x, s) for s in (2, 3, 4)}
    for s, y in outs.items():
        assert y.shape == (1, 3, 8 * s, 6 * s)
    # each scale runs its own pre-process and upsampler: changing x3's leaves x2 and x4 alone
    with torch.no_grad():
        model.pre_process[1][0].body[0].weight.add_(1.0)
    torch.testing.assert_close(model(x, 2), outs[2])
    torch.testing.assert_close(model(x, 4), outs[4])
    assert not torch.allclose(model(x, 3), outs[3])


def test_batch_norm_only_when_asked():
    def n_bn(m: nn.Module) -> int:
        return sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())

    assert n_bn(EDSR(scale=2, n_resblocks=3, n_feats=8)) == 0
    assert n_bn(MDSR(n_resblocks=3, n_feats=8)) == 0
    assert n_bn(EDSR(scale=2, n_resblocks=3, n_feats=8, norm="batch")) == 6
    assert n_bn(MDSR(n_resblocks=3, n_feats=8, norm="batch")) == 6 + 3 * 2 * 2
    block = EDSR(scale=2, n_resblocks=1, n_feats=8, norm="batch").body[0].body
    assert [type(m).__name__ for m in block] == [
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "Conv2d",
        "BatchNorm2d",
    ]


def test_res_scale_scales_the_residual():
    torch.manual_seed(0)
    a = EDSR(scale=2, n_resblocks=1, n_feats=8, res_scale=1.0)
    b = EDSR(scale=2, n_resblocks=1, n_feats=8, res_scale=0.1)
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 8, 5, 5)
    res = a.body[0].body(x)
    torch.testing.assert_close(b.body[0](x), x + 0.1 * res)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"scale=5 .*allowed values: \[2, 3, 4, 8\]"):
        EDSR(scale=5)
    with pytest.raises(ValueError, match=r"MDSR scale=8 .*allowed"):
        MDSR(scales=(2, 8))
    with pytest.raises(ValueError, match=r"model.net.norm='layer'.*allowed values"):
        EDSR(norm="layer")
    with pytest.raises(ValueError, match="built for x2, asked for x3"):
        EDSR(scale=2, n_resblocks=1, n_feats=8)(torch.zeros(1, 3, 4, 4), 3)
    with pytest.raises(ValueError, match=r"MDSR scale=4 .*allowed values: \[2, 3\]"):
        MDSR(scales=(2, 3), n_resblocks=1, n_feats=8)(torch.zeros(1, 3, 4, 4), 4)
    with pytest.raises(ValueError, match="expected an RGB batch"):
        EDSR(scale=2, n_resblocks=1, n_feats=8)(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="expected an RGB batch"):
        Bicubic()(torch.zeros(1, 1, 4, 4), 2)
