"""The benchmark harness (issue 7): FLOP accounting, the plain and our steps, the table."""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import subprocess
import sys

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers import make_dm
from lightning.pytorch.loggers import CSVLogger
from torch.utils.flop_counter import FlopCounterMode

from sr_lightning.bench import harness as bench
from sr_lightning.bench import step
from sr_lightning.config.resolvers import PACKAGE_CHECKOUT
from sr_lightning.models import EDSR, MDSR, PRESETS
from sr_lightning.training.callbacks import ImagesPerSecond
from sr_lightning.training.compile import CompiledOrEager
from sr_lightning.training.flops import train_step_flops
from sr_lightning.training.lit_module import SRLitModule


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
            "--patch", "12", "--modes", "plain", "ours default", "ours default + channels_last",
            "--workers", "0", "--only", "loader", "steps", "--data-root", str(data_root),
            "--train-set", "benchmark/Set14/HR", "--loader-batches", "10", "--peak-n", "256",
            "--out", str(out),
        ]
    )  # fmt: skip
    rows = [line for line in text.splitlines() if line.startswith("| edsr_baseline")]
    assert [r.split(" | ")[1] for r in rows] == [
        "plain eager fp32 NCHW",
        "ours default",
        "ours default + channels_last",
    ]
    assert all(r.split(" | ")[8].endswith("x") for r in rows[1:])  # speed-up vs plain
    assert "0 workers: **" in text and "data.on_device: **" in text
    assert "patches/s** delivered" in text and "torch 2." in text and "commit" in text
    assert out.read_text() == "# Benchmarks\n\n" + text


def test_the_default_row_is_what_train_py_does():
    """step.default_knobs mirrors the configs (on this machine: CPU), so the rows named
    after it say what they change."""
    cfg = step.compose_train_config(["paths.output_dir=/tmp"])
    knobs = step.default_knobs("cpu")
    assert cfg.model.channels_last is knobs.channels_last
    assert cfg.model.compile is False and knobs.compile is None
    assert cfg.trainer.precision == "32-true" and not knobs.bf16
    assert cfg.data.on_device is False and not knobs.on_device
    names = list(step.variants("cuda"))
    assert names[0] == "ours default" and "ours all off + compile reduce-overhead" in names
    compiled = [step.variants("cuda")[n].compile is not None for n in names]
    assert compiled.index(True) > names.index("ours default + data.on_device")


def test_compile_falls_back_to_eager_when_the_backend_fails(monkeypatch, caplog):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler here")

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real_compile(m, backend=broken_backend))
    net = EDSR(2, 1, 8)
    fwd = CompiledOrEager(net)
    lr = torch.rand(1, 3, 8, 8) * 255
    with caplog.at_level(logging.WARNING):
        out = fwd(lr, 2)
    assert "compiling failed, training eagerly" in caplog.text and fwd.failed
    torch.testing.assert_close(out, net(lr, 2))
    assert fwd(lr, 2).shape == (1, 3, 16, 16)  # and stays eager, without retrying


@pytest.mark.parametrize("net", [EDSR(2, 1, 8), MDSR((2, 3), 1, 8)], ids=["edsr", "mdsr"])
def test_every_run_logs_frac_of_matmul_peak_from_the_counted_flops(
    tmp_path, data_root, cache_dir, net
):
    """A CPU fit logs train/tflops > 0 and train/frac_of_matmul_peak in (0, 1]: that rate over
    a matmul's measured at train start, the FLOPs from train_step_flops of each batch's own
    scale and size (MDSR: per scale)."""
    scales = list(net.scales)
    dm = make_dm(
        data_root, cache_dir, scales=scales, patch_size=12, batch_size=2, updates_per_epoch=6
    )
    speed = ImagesPerSecond()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=6,
        log_every_n_steps=1,
        limit_val_batches=0,
        logger=CSVLogger(tmp_path),
        callbacks=[speed],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(SRLitModule(net), datamodule=dm)
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/frac_of_matmul_peak")]
    assert len(rows) == 5  # every step but the first (warm-up)
    assert all(
        0 < float(r["train/frac_of_matmul_peak"]) <= 1 and float(r["train/tflops"]) > 0
        for r in rows
    )
    assert not any("train/mfu" in r for r in rows)  # renamed: not an MFU (no rated peak)
    assert speed.peak_dtype == "fp32" and speed.peak_tflops > 0
    assert {s for s, _, _ in speed.flops_per_step} == set(scales)
    for (scale, batch, patch), flops in speed.flops_per_step.items():
        assert (batch, patch) == (2, 12)
        assert flops == train_step_flops(net, batch, patch, scale)
    summary = speed.summary()
    assert 0 < summary["frac_of_matmul_peak"] <= 1 and summary["tflops"] > 0
    assert summary["peak_dtype"] == "fp32" and "mfu" not in summary


def test_bad_throughput_and_compile_settings_are_refused_by_name():
    with pytest.raises(ValueError, match=r"callbacks.throughput.peak_tflops=0"):
        ImagesPerSecond(peak_tflops=0)
    with pytest.raises(ValueError, match=r"model.compile='fast'.*max-autotune-no-cudagraphs"):
        SRLitModule(EDSR(2, 1, 8), compile="fast")
    assert CompiledOrEager.mode_of(True) == "default" and CompiledOrEager.mode_of(False) is None


@pytest.mark.slow
def test_gpu_script_runs_to_the_end_on_this_cpu(tmp_path, data_root, cache_dir):
    """bench/gpu.sh with tiny sizes through its options: both training runs (default, fp32)
    with their throughput and PSNR lines, the table (no compile rows: minutes on 2 cores), all
    appended to a temporary BENCHMARKS file and printed last; the repo's file is left alone."""
    repo_benchmarks = PACKAGE_CHECKOUT / "BENCHMARKS.md"
    before = repo_benchmarks.read_bytes()
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n")
    from helpers import TINY

    tiny_train = [
        "trainer=cpu",
        *TINY,
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        f"data.train_set={data_root}/benchmark/Set5/HR",
        f"data.cache_dir={cache_dir}",
    ]
    tiny_bench = (
        "--device cpu --n-resblocks 1 --n-feats 8 --steps 2 --warmup 1 --batch 2 --patch 12 "
        "--edsr-batch 2 --edsr-steps 2 --workers 0 --train-set benchmark/Set5/HR "
        "--loader-batches 10 --peak-n 256 --infer-size 16 --compile-modes"
    )
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DATA": str(data_root),
        "LOGS": str(tmp_path / "logs"),
        "BENCHMARKS": str(out),
        "TRAIN_ARGS": " ".join(tiny_train),
        "BENCH_ARGS": tiny_bench,
        "PRECISION_ARGS": "--device cpu --n-resblocks 1 --n-feats 8 --batch 2 --patch 12 "
        "--steps 2 --warmup 1 --compile-modes",
        "TRAIN_LIMIT": "120",
        "BENCH_LIMIT": "120",
        "PRECISION_LIMIT": "120",
    }
    proc = subprocess.run(
        ["bash", str(PACKAGE_CHECKOUT / "bench" / "gpu.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    block = (tmp_path / "logs" / "BENCHMARKS.append.md").read_text()
    assert proc.stdout.rstrip().endswith(block.rstrip())  # the table is printed last
    assert out.read_text() == "# Benchmarks\n" + block
    assert repo_benchmarks.read_bytes() == before
    for name in ("default", "fp32"):
        line = next(
            x
            for x in block.splitlines()
            if x.startswith(f"- 2-minute EDSR-baseline x2 training, {name}:")
        )
        assert "matmul measured here" in line and "MFU" not in line
        assert "Set5 x2 PSNR" in line and "status completed" in line
    rows = [r.split(" | ")[:2] for r in block.splitlines() if r.startswith("| edsr")]
    for model in ("edsr_baseline", "edsr"):
        assert [f"| {model}", "plain eager fp32 NCHW"] in rows
        assert [f"| {model}", "ours default + data.on_device"] in rows
    assert "data.on_device: **" in block and "Inference (super_resolve)" in block
    assert "- bf16-mixed: fp32 output " in block and "- 32-true: IEEE fp32 " in block


def test_each_compile_mode_compiles_the_network_module(monkeypatch):
    """model.compile's mode reaches torch.compile, applied to the network itself (DDP and the
    loss stay outside); false trains the eager network."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: calls.append((m, kw)) or m)
    lr = torch.rand(1, 3, 8, 8) * 255
    for value in (True, "default", "max-autotune-no-cudagraphs", "reduce-overhead"):
        module = SRLitModule(EDSR(2, 1, 8), compile=value)
        module._train_forward(lr, 2)
        net, kw = calls[-1]
        assert net is module.net and kw == {"mode": CompiledOrEager.mode_of(value)}
    assert len(calls) == 4
    assert not isinstance(SRLitModule(EDSR(2, 1, 8))._train_forward, CompiledOrEager)
