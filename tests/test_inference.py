"""Self-ensemble and tiled inference; x2 -> x3 initialisation."""

from __future__ import annotations

import torch

from sr_lightning.core.inference import (
    dihedral,
    dihedral_inverse,
    receptive_radius,
    self_ensemble,
    tiled_forward,
)
from sr_lightning.models import EDSR
from sr_lightning.models.checkpoint import init_from_checkpoint
from sr_lightning.training.lit_module import SRLitModule


def test_self_ensemble_is_mean_of_eight_transformed_forwards():
    torch.manual_seed(0)
    net = EDSR(scale=2, n_resblocks=1, n_feats=8).eval()
    x = torch.rand(1, 3, 6, 9) * 255
    with torch.no_grad():
        expected = sum(dihedral_inverse(net(dihedral(x, k)), k) for k in range(8)) / 8
        out = self_ensemble(lambda t: net(t, 2), x)
    torch.testing.assert_close(out, expected)
    assert out.shape == (1, 3, 12, 18)


def test_tiled_equals_untiled():
    torch.manual_seed(0)
    net = EDSR(scale=3, n_resblocks=2, n_feats=8).eval()
    x = torch.rand(1, 3, 45, 38) * 255
    radius = receptive_radius(net)
    assert radius == 1 + 4 + 1 + 1 + 1  # head, 2 blocks x 2 convs, body end, upsampler, tail
    with torch.no_grad():
        whole = net(x)
        tiled = tiled_forward(lambda t: net(t), x, 3, tile=2 * radius + 5, overlap=radius)
    assert (tiled - whole).abs().max() < 1e-3
    with torch.no_grad():  # too little overlap shows seams: the check above is not vacuous
        seams = tiled_forward(lambda t: net(t), x, 3, tile=2 * radius + 5, overlap=1)
    assert (seams - whole).abs().max() > 1e-2


def test_init_from_x2_copies_body_and_reinitialises_upsampler(tmp_path):
    torch.manual_seed(0)
    x2 = SRLitModule(EDSR(scale=2, n_resblocks=2, n_feats=8))
    path = tmp_path / "x2.ckpt"
    torch.save({"state_dict": x2.state_dict()}, path)  # Lightning checkpoint layout
    fresh = EDSR(scale=3, n_resblocks=2, n_feats=8)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    loaded, kept = init_from_checkpoint(fresh, str(path))
    assert kept == ["tail.0.0.weight", "tail.0.0.bias"]  # the x3 upsampler conv
    state = fresh.state_dict()
    for k in loaded:
        assert torch.equal(state[k], x2.net.state_dict()[k]), k
    for k in kept:
        assert torch.equal(state[k], before[k]), k
    assert "body.1.body.2.weight" in loaded and "tail.1.weight" in loaded
