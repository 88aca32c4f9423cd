"""The ablation sweeps as real Hydra multiruns (tiny, CPU), and the report over them.

Each job trains one epoch of 10 updates (a 1x8 EDSR on 12 px patches) and validates once;
the report's own logic is tested on synthetic job folders in ``test_report.py``, the placing
of jobs in their folders in process in ``test_sweep_folders.py``."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO

from sr_lightning.analysis.report import build_report
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.job import job_folders

pytestmark = pytest.mark.slow

STEPS = 10  # updates a job trains: one epoch (the divergence guard checks every 10 steps)
ENV = {**os.environ, "WANDB_MODE": "disabled"}


def multirun_args(sweep_dir: Path, cache: Path, *overrides: str) -> list[str]:
    """``python train.py -m`` into ``sweep_dir``, each job a tiny one."""
    return [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        f"data.cache_dir={cache}",
        "model.net.n_resblocks=1",
        "model.net.n_feats=8",
        "data.patch_size=12",
        f"data.updates_per_epoch={STEPS}",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=5",
        *overrides,
    ]


def run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def multirun(sweep_dir: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run(multirun_args(sweep_dir, cache, *overrides))


def jobs(sweep_dir: Path) -> list[RunFolder]:
    return [RunFolder(p) for p in job_folders(sweep_dir)]


def summaries(sweep_dir: Path) -> list[dict | None]:
    return [job.read_summary() for job in jobs(sweep_dir)]


def test_a_grid_over_seeds_gives_means_with_cis_and_paired_ablation_verdicts(
    tmp_path, sample_cache
):
    """norm=batch,none x +seeds=two: a 2x2 grid (a swept key and the seeds config's sweeper
    params) where every job completes; the report has one row per job, then one row per
    setting with n=2 and the t interval of the mean, and the pair's paired per-image
    difference, all checked by hand."""
    from scipy import stats

    sweep = tmp_path / "sweep"
    multirun(sweep, sample_cache, "experiment=smoke", "model.net.norm=batch,none", "+seeds=two")
    assert [s["status"] for s in summaries(sweep)] == ["completed"] * 4
    report = build_report(sweep)
    assert [p.name for p in report.paths] == [
        "report.md",
        "report.csv",
        "val_psnr.png",
        "final_psnr.png",
        "val_psnr_groups.png",
    ]
    assert all(p.is_file() for p in report.paths)
    assert (sweep / "val_psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (sweep / "report.md").read_text()
    per_job = [line for line in md.split("\n\n")[1].splitlines() if line.startswith("| ")]
    assert len(per_job) == 1 + 4  # header + one row per job
    assert per_job[0].startswith("| job | seed | model.net.norm | params |")  # both swept

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
    assert md.count("| model.net.norm=") == 2 and "| 2 |" in md
    (pair,) = report.pairs
    psnr = {}
    for job in jobs(sweep):
        overrides = job.overrides.read_text()
        norm = "none" if "model.net.norm=none" in overrides else "batch"
        seed = "1" if "seed=1" in overrides else "0"
        with open(job.per_image, newline="") as f:
            for r in csv.DictReader(f):
                if r["model"] != "bicubic":
                    psnr[norm, seed, r["image"]] = float(r["psnr"])
    test_photos = ("chelsea", "immunohistochemistry")  # the sample's held-out test photos
    per_seed = {
        s: sum(psnr["none", s, i] - psnr["batch", s, i] for i in test_photos) / 2 for s in "01"
    }  # the unit is the training run: a seed's mean over the set's images
    assert (pair.n_seeds, pair.n_images, pair.primary) == (2, 2, True)
    assert pair.per_seed == pytest.approx(per_seed)
    assert pair.diff is None  # 2 runs: no run-level interval
    assert (
        "model.net.norm=none vs batch, sample x2 [primary], 2 seeds x 2 images: cannot give an "
        "interval at the run level with 2 seeds (needs 3 or more)"
    ) in md


def test_pretrain_sweep_finds_its_x2_checkpoint(tmp_path, sample_cache):
    sweep = tmp_path / "sweep"
    multirun(sweep, sample_cache, "experiment=ablation_pretrain_smoke", "test_after_fit=false")
    assert [s["status"] for s in summaries(sweep)] == ["completed"] * 5
    x2, x3_from_x2, _, x4_from_x2, _ = jobs(sweep)  # each named by its stage
    assert [job.path.name for job in jobs(sweep)] == [
        "stage-x2",
        "stage-x3_from_x2",
        "stage-x3_scratch",
        "stage-x4_from_x2",
        "stage-x4_scratch",
    ]
    for job in (x3_from_x2, x4_from_x2):
        log = job.log.read_text()
        assert f"init_from {x2.checkpoints}/best-" in log
    assert str(x2.checkpoints) in x3_from_x2.recorded_config.read_text()  # resolved path


def test_a_killed_sweep_run_again_trains_only_its_unfinished_jobs(tmp_path, sample_cache):
    """optim.lr=1e12,1e-3,5e-4: the first job diverges, and that is a result: the next job
    completes in the same process. The sweep is killed during the third job; the same
    multirun command into the same hydra.sweep.dir skips the diverged and the completed job
    (their files untouched) and trains the third; the report shows each job once."""
    sweep = tmp_path / "sweep"
    args = multirun_args(
        sweep, sample_cache, "experiment=smoke", "test_after_fit=false", "optim.lr=1e12,1e-3,5e-4"
    )
    proc = subprocess.Popen(args, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    # folders named by the swept value (as Hydra writes it), listed by the value
    diverged, completed, killed = (
        RunFolder(sweep / f"lr-{lr}") for lr in ("1000000000000.0", "0.001", "0.0005")
    )
    deadline = time.time() + 240
    while not completed.summary.is_file():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # after job 1, before job 2 finished
    proc.wait()
    first = diverged.read_summary()
    assert first["status"] == "diverged" and "non-finite training loss" in first["error"]
    second = completed.read_summary()
    assert (second["status"], second["steps"]) == ("completed", STEPS)
    assert not killed.summary.is_file()
    files = [diverged.summary, completed.summary, *completed.checkpoint_files()]
    assert len(files) > 2  # the completed job's checkpoints are among them
    stamp = {p: p.stat().st_mtime_ns for p in files}

    again = run(args)  # the same command
    said = again.stdout + again.stderr
    assert "diverged already, not trained again" in said
    assert "completed already, not trained again" in said
    assert {p: p.stat().st_mtime_ns for p in files} == stamp
    assert [job.path for job in jobs(sweep)] == [killed.path, completed.path, diverged.path]
    assert [s["status"] for s in summaries(sweep)] == ["completed", "completed", "diverged"]
    assert killed.read_summary()["steps"] == STEPS
    report = build_report(sweep)
    assert [r["diverged"] for r in report.rows] == ["no", "no", "yes"]
    md = (sweep / "report.md").read_text()
    assert "| yes |" in md and "| no |" in md
    assert [md.count(f"| {job.path.name} | ") for job in jobs(sweep)] == [1, 1, 1]


def stamped(root: Path) -> dict[Path, tuple[int, bytes]]:
    """Every file under ``root``: its modification time and bytes."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def trained_files(job: RunFolder) -> dict[Path, tuple[int, bytes]]:
    """What a job's training wrote (:func:`stamped`): all but ``.hydra/`` (which Hydra writes
    again for every job it starts, a finished one too) and ``train.log`` (appended to)."""
    return {
        p: stamp
        for p, stamp in stamped(job.path).items()
        if ".hydra" not in p.relative_to(job.path).parts and p != job.log
    }


def without_wall_times(md: str) -> list[str]:
    """``report.md`` but its title (the folder) and the per-job wall times (not replicable)."""
    lines = md.splitlines()[1:]
    header = next(line for line in lines if line.startswith("| job |"))
    column = [c.strip() for c in header.split("|")].index("wall time")
    return [
        "|".join(c for i, c in enumerate(line.split("|")) if i != column)
        if line.startswith("|") and line.count("|") == header.count("|")
        else line
        for line in lines
    ]


def test_seeds_added_to_a_finished_sweep_train_only_the_new_jobs(tmp_path, sample_cache):
    """``experiment=ablation_bn_smoke +seeds=two``, then ``+seeds=three`` into the same
    hydra.sweep.dir (the extension that used to map new jobs onto old folders by job number):
    the four finished jobs are found in their folders and not trained again, the two new
    ones train in folders of their own, and the report is a clean 3-seed sweep's (runs are
    deterministic per seed), verdicts and tables."""
    extended, clean = tmp_path / "extended", tmp_path / "clean"
    multirun(extended, sample_cache, "experiment=ablation_bn_smoke", "+seeds=two")
    old = {job.path.name: trained_files(job) for job in jobs(extended)}
    assert sorted(old) == [f"norm-{n}+seed-{s}" for n in ("batch", "none") for s in (0, 1)]

    said = multirun(extended, sample_cache, "experiment=ablation_bn_smoke", "+seeds=three")
    assert (said.stdout + said.stderr).count("completed already, not trained again") == 4
    assert {name: trained_files(RunFolder(extended / name)) for name in old} == old
    multirun(clean, sample_cache, "experiment=ablation_bn_smoke", "+seeds=three")
    names = [f"norm-{n}+seed-{s}" for n in ("batch", "none") for s in (0, 1, 2)]
    assert [j.path.name for j in jobs(extended)] == [j.path.name for j in jobs(clean)] == names
    assert [s["status"] for s in summaries(extended)] == ["completed"] * 6

    a, b = build_report(extended), build_report(clean)
    assert [len(g.jobs) for g in a.groups] == [3, 3]
    assert [pair.lines() for pair in a.pairs] == [pair.lines() for pair in b.pairs]
    assert a.pairs and a.pairs[0].n_seeds == 3 and a.pairs[0].diff is not None  # a verdict
    drop = {"wall_time_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in a.rows] == [
        {k: v for k, v in r.items() if k not in drop} for r in b.rows
    ]
    md_a, md_b = ((s / "report.md").read_text() for s in (extended, clean))
    assert without_wall_times(md_a) == without_wall_times(md_b)


def test_a_sweep_with_other_settings_is_refused_before_anything_is_written(tmp_path, sample_cache):
    """A finished sweep, then the same sweep folder with another number of updates: exit code
    2 and one message naming a job folder and the key (no Hydra traceback), before Hydra
    launches or writes anything: no folder's ``.hydra/`` rewritten, no new folder."""
    sweep = tmp_path / "sweep"
    multirun(sweep, sample_cache, "experiment=smoke", "test_after_fit=false", "seed=0,1")
    assert [job.path.name for job in jobs(sweep)] == ["seed-0", "seed-1"]
    before = stamped(tmp_path)
    args = multirun_args(
        sweep, sample_cache, "experiment=smoke", "test_after_fit=false", "seed=0,1,2",
        "trainer.max_steps=5",
    )  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=ENV, cwd=REPO)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-4000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert f"{sweep / 'seed-0'} holds a job with trainer.max_steps=-1 (this command: 5)" in line
    assert "Traceback" not in proc.stderr + proc.stdout and "Launching" not in proc.stdout
    assert stamped(tmp_path) == before
    assert sorted(p.name for p in sweep.iterdir()) == ["multirun.yaml", "seed-0", "seed-1"]
