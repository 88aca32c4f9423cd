"""The benchmark harness (issue 7): FLOP accounting, the plain and our steps, the table."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sr_lightning import bench
from sr_lightning.lit_module import CompiledOrEager
from sr_lightning.models import EDSR, MDSR, PRESETS


def test_edsr_baseline_step_flops_by_hand():
    """EDSR-baseline x2, batch 16, 48x48: every conv's 2*Cin*Cout*9 per output pixel."""
    px, hr_px = 16 * 48 * 48, 16 * 96 * 96
    body = 33 * 2 * 64 * 64 * 9 * px  # 16 blocks x 2 convs + the body's last conv
    head, up = 2 * 3 * 64 * 9 * px, 2 * 64 * 256 * 9 * px
    tail, shifts = 2 * 64 * 3 * 9 * hr_px, 2 * 3 * 3 * (px + hr_px)
    # forward; weight gradients of trained convs; input gradients of all but the head and the
    # input mean shift (their inputs need none); the output mean shift is frozen but its input
    # gradient is needed
    expected = (body + head + up + tail + shifts) + (body + head + up + tail) + (body + up + tail)
    expected += 2 * 3 * 3 * hr_px
    got = bench.train_step_flops(EDSR(2, 16, 64), 16, 48, 2)
    assert got == expected
    assert got / 1e9 == pytest.approx(303.5, abs=0.1)  # ~3x the 101 GFLOP forward


@pytest.mark.parametrize("net", [EDSR(3, 2, 16), MDSR((2, 3), 2, 16)], ids=["edsr", "mdsr"])
def test_step_flops_agree_with_torch_flop_counter(net):
    """torch's own counter over a real forward + backward sees the same conv FLOPs."""
    lr = torch.rand(2, 3, 12, 12) * 255
    with FlopCounterMode(display=False) as counter:
        F.l1_loss(net(lr, 3), torch.rand(2, 3, 36, 36)).backward()
    assert bench.train_step_flops(net, 2, 12, 3) == pytest.approx(
        counter.get_total_flops(), rel=0.01
    )


def test_matmul_peak_is_a_plausible_rate():
    rate = bench.matmul_peak("cpu", torch.float32, n=256, repeats=3)
    assert 1e8 < rate < 1e13  # FLOP/s of a 2-core CPU or anything bigger


def test_plain_and_our_steps_run_and_the_table_is_appended(tmp_path, monkeypatch, data_root):
    tiny = dataclasses.replace(PRESETS["edsr_baseline"], n_resblocks=1, n_feats=8)
    monkeypatch.setitem(PRESETS, "edsr_baseline", tiny)
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n")
    text = bench.main(
        [
            "--models", "edsr_baseline", "--steps", "3", "--warmup", "1", "--batch", "2",
            "--patch", "12", "--modes", "plain", "ours default", "ours channels_last",
            "--workers", "0", "--no-inference", "--data-root", str(data_root),
            "--train-set", "benchmark/Set14/HR", "--out", str(out),
        ]
    )  # fmt: skip
    rows = [line for line in text.splitlines() if line.startswith("| edsr_baseline")]
    assert [r.split(" | ")[1] for r in rows] == [
        "plain eager fp32 NCHW",
        "ours default",
        "ours channels_last",
    ]
    assert all(r.rstrip(" |").endswith("x") for r in rows[1:])  # speed-up vs plain
    assert "patches/s** delivered" in text and "torch 2." in text and "commit" in text
    assert out.read_text() == "# Benchmarks\n\n" + text


def test_compile_falls_back_to_eager_when_the_backend_fails(monkeypatch, caplog):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler here")

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m: real_compile(m, backend=broken_backend))
    net = EDSR(2, 1, 8)
    fwd = CompiledOrEager(net)
    lr = torch.rand(1, 3, 8, 8) * 255
    with caplog.at_level(logging.WARNING):
        out = fwd(lr, 2)
    assert "compiling failed, training eagerly" in caplog.text and fwd.failed
    torch.testing.assert_close(out, net(lr, 2))
    assert fwd(lr, 2).shape == (1, 3, 16, 16)  # and stays eager, without retrying
