"""The ablation sweeps as real Hydra multiruns (tiny, CPU), and the report over them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from sr_lightning.cli.report import main as report_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    pytest.importorskip("skimage", reason="data=sample needs scikit-image (the [sample] extra)")
    return tmp_path_factory.mktemp("cache")


def multirun(sweep_dir: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        f"data.cache_dir={cache}",
        "model.net.n_resblocks=1",
        "model.net.n_feats=8",
        "data.patch_size=12",
        "data.updates_per_epoch=10",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=5",
        *overrides,
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def summaries(sweep_dir: Path) -> list[dict]:
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((job / "summary.json").read_text()) for job in jobs]


def test_2x2_smoke_sweep_and_report(tmp_path, cache):
    sweep = tmp_path / "sweep"
    multirun(
        sweep, cache, "experiment=smoke", "model.net.norm=batch,none", "model.net.res_scale=1.0,0.1"
    )
    assert [s["status"] for s in summaries(sweep)] == ["completed"] * 4
    assert report_main([str(sweep)]) == 0
    table = [
        line for line in (sweep / "report.md").read_text().splitlines() if line.startswith("| ")
    ]
    assert len(table) == 1 + 4  # header + one row per job
    assert "model.net.norm" in table[0] and "model.net.res_scale" in table[0]
    assert (sweep / "report.csv").is_file()
    assert (sweep / "val_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_diverging_job_is_a_result_and_the_others_complete(tmp_path, cache):
    sweep = tmp_path / "sweep"
    multirun(sweep, cache, "experiment=smoke", "optim.lr=1e12,5e-4")
    diverged, completed = summaries(sweep)
    assert diverged["status"] == "diverged" and "non-finite training loss" in diverged["error"]
    assert completed["status"] == "completed" and completed["steps"] == 20
    assert report_main([str(sweep)]) == 0
    rows = (sweep / "report.md").read_text()
    assert "| yes |" in rows and "| no |" in rows


def test_pretrain_sweep_finds_its_x2_checkpoint(tmp_path, cache):
    sweep = tmp_path / "sweep"
    multirun(sweep, cache, "experiment=ablation_pretrain_smoke", "data.patch_size=12")
    assert [s["status"] for s in summaries(sweep)] == ["completed"] * 5
    for job in ("2", "4"):  # x3_from_x2, x4_from_x2
        log = (sweep / job / "train.log").read_text()
        assert f"init_from {sweep / '0' / 'checkpoints'}/best-" in log
    cfg = (sweep / "2" / "checkpoints" / "config.yaml").read_text()
    assert str(sweep / "0" / "checkpoints") in cfg  # resolved path recorded


def test_report_marks_a_job_without_summary_as_failed(tmp_path, capsys):
    """No training needed: a crashed job (no summary.json) is a failed row, not a crash."""
    for i, (lr, status) in enumerate([("1e-4", "completed"), ("1e-3", None)]):
        job = tmp_path / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- optim.lr={lr}\n- trainer.max_steps=5\n")
        if status:
            best = {"val/psnr": 30.5, "val/Set5/x2/psnr": 30.5}
            summary = {"params": 1234, "steps": 5, "wall_time_s": 3.0, "status": status}
            (job / "summary.json").write_text(json.dumps({**summary, "best": best}))
            (job / "history.csv").write_text("step,key,value\n5,val/psnr,30.5\n")
    assert report_main([str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| 0 | 1e-4 | 1,234 | 5 | 3.0 s | 30.50 | - | - | no | completed |" in md
    assert "| 1 | 1e-3 | - | - | - | - | - | - | no | failed |" in md
    assert "trainer.max_steps" not in md  # constant across jobs: not a swept column
    assert report_main([str(tmp_path / "missing")]) == 1
    assert "multirun folder not found" in capsys.readouterr().err


def test_seeds_give_means_with_cis_and_paired_ablation_verdicts(tmp_path, cache):
    """2 settings x 2 seeds (+seeds=two): the report has one row per setting with n=2 and the
    t interval of the mean, and the pair's paired per-image difference, all checked by hand."""
    import csv
    import math

    from scipy import stats

    from sr_lightning.analysis.report import build_report

    sweep = tmp_path / "sweep"
    multirun(sweep, cache, "experiment=smoke", "model.net.norm=batch,none", "+seeds=two")
    report = build_report(sweep)
    assert [len(g.jobs) for g in report.groups] == [2, 2]
    t = stats.t.ppf(0.975, 1)
    for group in report.groups:
        values = [j.best["val/sample/x2/psnr"] for j in group.jobs]
        mean, sd = sum(values) / 2, abs(values[0] - values[1]) / math.sqrt(2)
        iv = group.interval("val/sample/x2/psnr")
        assert (iv.n, iv.mean) == (2, pytest.approx(mean))
        assert (iv.low, iv.high) == pytest.approx(
            (mean - t * sd / math.sqrt(2), mean + t * sd / math.sqrt(2))
        )
    md = (sweep / "report.md").read_text()
    assert md.count("| model.net.norm=") == 2 and "| 2 |" in md
    (pair,) = report.pairs
    psnr = {}
    for job in sorted(p for p in sweep.iterdir() if p.name.isdigit()):
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        norm = "none" if "model.net.norm=none" in overrides else "batch"
        seed = "1" if "seed=1" in overrides else "0"
        with open(job / "per_image.csv", newline="") as f:
            for r in csv.DictReader(f):
                if r["model"] != "bicubic":
                    psnr[norm, seed, r["image"]] = float(r["psnr"])
    diffs = [
        psnr["none", s, i] - psnr["batch", s, i] for s in "01" for i in ("astronaut", "coffee")
    ]
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    assert (pair.n_seeds, pair.n_images, pair.diff.n) == (2, 2, 4)
    assert pair.diff.mean == pytest.approx(mean)
    assert pair.diff.high - mean == pytest.approx(stats.t.ppf(0.975, 3) * sd / 2)
    assert "model.net.norm=none vs batch, sample x2 (2 seeds x 2 images, paired): " in md
    assert (sweep / "val_psnr_groups.png").is_file()


def test_a_killed_sweep_run_again_does_not_retrain_its_finished_jobs(tmp_path, cache):
    """The same multirun command into the same hydra.sweep.dir: the job that had completed is
    skipped, the rest run; job folders stay the same and the report shows each job once."""
    import signal
    import time

    sweep = tmp_path / "sweep"
    base = [sys.executable, str(REPO / "train.py"), "-m", f"hydra.sweep.dir={sweep}",
            f"data.cache_dir={cache}", "model.net.n_resblocks=1", "model.net.n_feats=8",
            "data.patch_size=12", "data.updates_per_epoch=10", "trainer.max_epochs=2",
            "experiment=smoke", "optim.lr=1e-3,5e-4"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(base, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.time() + 240
    while not (sweep / "0" / "summary.json").is_file():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # after job 0, before job 1 finished
    proc.wait()
    assert json.loads((sweep / "0" / "summary.json").read_text())["status"] == "completed"
    assert not (sweep / "1" / "summary.json").is_file()
    stamp = {p.name: p.stat().st_mtime_ns for p in (sweep / "0" / "checkpoints").glob("*.ckpt")}
    again = subprocess.run(base, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "completed already, not trained again" in again.stdout + again.stderr
    assert {
        p.name: p.stat().st_mtime_ns for p in (sweep / "0" / "checkpoints").glob("*.ckpt")
    } == stamp
    assert [s["status"] for s in summaries(sweep)] == ["completed", "completed"]
    assert report_main([str(sweep)]) == 0
    md = (sweep / "report.md").read_text()
    assert md.count("| 0 | ") == 1 and md.count("| 1 | ") == 1
