"""Kill and resume for real: SIGKILL and SIGTERM a running ``train.py``, resume with
``ckpt_path=last``, and compare with an uninterrupted run of the same seed (issue 8, item 1)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import REPO, ckpt_step, tiny_args, train

pytestmark = pytest.mark.slow

STEPS, EVERY = 24, 4  # 3 epochs of 8 updates; a step checkpoint every 4 updates


def args(cache_dir: Path, run: Path) -> list[str]:
    return [
        *tiny_args(cache_dir),  # later overrides win
        "data.num_workers=1",  # a worker process, killed by the same signal as under SLURM
        "data.updates_per_epoch=8",
        "trainer.max_epochs=3",
        f"callbacks.step_checkpoint.every_n_train_steps={EVERY}",
        "test_after_fit=false",
        f"hydra.run.dir={run}",
    ]


@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory) -> Path:
    pytest.importorskip("skimage", reason="data=sample needs scikit-image (the [sample] extra)")
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample_cache) -> Path:
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    train(args(sample_cache, run))
    return run


def start_and_kill(run: Path, cache: Path, sig: int, after_step: int) -> subprocess.Popen:
    """Start a slowed-down run; once a checkpoint of ``after_step`` exists, signal the whole
    process group (the trainer and its data worker, as SLURM does) and wait for the end."""
    slow = [
        "+callbacks.slow._target_=slow_steps.SleepEveryStep",
        "+callbacks.slow.seconds=0.25",
        # rows of the steps after the checkpoint reach the file: the resumed run must drop them
        "+logger.csv.flush_logs_every_n_steps=1",
    ]
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "PYTHONPATH": str(REPO / "tests" / "plugins"),
    }
    log = run.parent / f"killed-{sig}.log"  # a file, not a pipe that could fill up and block
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args(cache, run), *slow],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    target = run / "checkpoints" / f"step{after_step:07d}.ckpt"
    deadline = time.time() + 120
    # kill once the checkpoint exists and the log already holds a step after it
    while not target.exists() or max(train_steps_logged(run), default=-1) <= after_step:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "the run never reached the checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    proc.out = log.read_text()
    return proc


def train_steps_logged(run: Path) -> list[int]:
    path = run / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def final_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def assert_matches_reference(run: Path, reference: Path) -> None:
    assert train_steps_logged(run) == list(range(STEPS))  # each step once: none lost, none twice
    with open(run / "history.csv") as f:  # history.csv counts steps done: 1..STEPS
        history_steps = [int(r["step"]) for r in csv.DictReader(f) if r["key"] == "train/loss"]
    assert history_steps == list(range(1, STEPS + 1))
    got, ref = final_state(run), final_state(reference)
    assert got["global_step"] == ref["global_step"] == STEPS
    assert got["lr_schedulers"][0]["last_epoch"] == STEPS
    # same data stream (batch k of epoch e is a function of the seed), same optimizer state:
    # the resumed run is the uninterrupted one, to float32 round-off of the CPU kernels
    for key, value in ref["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    exp_avg = [s["exp_avg"] for s in got["optimizer_states"][0]["state"].values()]
    ref_avg = [s["exp_avg"] for s in ref["optimizer_states"][0]["state"].values()]
    for a, b in zip(exp_avg, ref_avg, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    history = json.loads((run / "summary.json").read_text())
    ref_history = json.loads((reference / "summary.json").read_text())
    for kind in ("final", "best"):  # best: kept through the checkpoint from before the kill
        assert history[kind]["val/psnr"] == pytest.approx(ref_history[kind]["val/psnr"], abs=1e-3)


def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path, sample_cache, reference):
    run = tmp_path / "run"
    proc = start_and_kill(run, sample_cache, signal.SIGKILL, after_step=EVERY)
    assert proc.returncode == -signal.SIGKILL
    resume_at = max(ckpt_step(p) for p in (run / "checkpoints").glob("*.ckpt"))
    assert EVERY <= resume_at < STEPS
    # the killed process logged steps the checkpoint does not hold: they will run again
    assert max(train_steps_logged(run)) >= resume_at
    train([*args(sample_cache, run), "ckpt_path=last"])
    assert_matches_reference(run, reference)


def test_sigterm_saves_a_checkpoint_then_resume_equals_the_uninterrupted_run(
    tmp_path, sample_cache, reference
):
    run = tmp_path / "run"
    proc = start_and_kill(run, sample_cache, signal.SIGTERM, after_step=EVERY)
    assert proc.returncode == 143, proc.out[-3000:]
    preempted = run / "checkpoints" / "preempted.ckpt"
    assert preempted.is_file(), proc.out[-3000:]
    step = ckpt_step(preempted)
    assert EVERY < step < STEPS  # saved at the step it was stopped, past the last periodic one
    assert f"checkpoint at step {step} saved" in proc.out
    assert json.loads((run / "summary.json").read_text())["status"] == "preempted"
    train([*args(sample_cache, run), "ckpt_path=last"])
    assert_matches_reference(run, reference)
