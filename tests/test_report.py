"""``sr_lightning.analysis.report`` over synthetic multiruns (no training), their job folders
written with the run folder's own writers (``helpers.write_job``)."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest
from helpers import write_job

from sr_lightning.analysis.report import Report, build_report
from sr_lightning.cli.report import main
from sr_lightning.runs.job import read_job
from sr_lightning.runs.records import write_atomically

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GRID = [("batch", "1.0"), ("batch", "0.1"), ("none", "1.0"), ("none", "0.1")]
DIVERGED, MISSING = 1, 3  # job numbers


def write_grid_job(sweep: Path, i: int, norm: str, res_scale: str) -> None:
    overrides = [
        f"model.net.norm={norm}",
        f"model.net.res_scale={res_scale}",
        "trainer.max_steps=10",
    ]
    if i == MISSING:  # crashed before writing summary.json, its history cut back to nothing
        write_atomically(write_job(sweep / str(i), overrides).history, "")
        return
    psnr = 30.0 + i + 0.123456
    diverged = i == DIVERGED
    best = {
        "val/psnr": psnr,
        "val/Set5/x2/psnr": psnr,
        "val/Set5/x2/ssim": 0.9,
        "val/Set5/x2/bicubic_psnr": 31.5,  # jobs 0 and 1 are below bicubic
        "val/Set14/x2/psnr": psnr - 2,
        "val/Set14/x2/ssim": 0.8,
        "val/Set14/x2/bicubic_psnr": 27.0,
    }
    summary = {
        "model": "edsr_baseline",
        "params": 1234567,
        "steps": 10,
        "wall_time_s": 12.34 if i else 270.0,
        "status": "diverged" if diverged else "completed",
        "error": "non-finite training loss" if diverged else None,
        "best": best,
        "final": best,
    }
    history = [(0, "train/loss", 0.5), (5, "val/psnr", psnr - 1)]
    if diverged:
        history += [(10, "val/psnr", math.nan), (10, "train/loss", math.inf)]
    else:
        history += [(10, "val/psnr", psnr)]
    history += [(10, "val/Set5/x2/psnr", psnr)]
    write_job(sweep / str(i), overrides, summary, history)


@pytest.fixture
def sweep(tmp_path) -> Path:
    sweep = tmp_path / "multirun"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")  # Hydra's, not a job
    for i, (norm, res_scale) in enumerate(GRID):
        write_grid_job(sweep, i, norm, res_scale)
    return sweep


def table_rows(md: str) -> list[list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.width >= 200 and im.height >= 150


def test_markdown_table(sweep):
    pytest.importorskip("matplotlib")
    report = build_report(sweep)
    assert isinstance(report, Report)
    md = (sweep / "report.md").read_text()
    assert md.startswith(f"# Sweep report: {sweep}")
    header, *rows = table_rows(md)
    assert header == [
        "job",
        "model.net.norm",
        "model.net.res_scale",
        "params",
        "steps",
        "wall time",
        "Set5 x2 PSNR",
        "Set5 x2 SSIM",
        "Set5 x2 bicubic",
        "Set14 x2 PSNR",
        "Set14 x2 SSIM",
        "Set14 x2 bicubic",
        "diverged",
        "status",
    ]
    assert "Set5 x2: jobs 0, 1 below bicubic" in md  # a sweep below bicubic says so
    assert "trainer.max_steps" not in md  # constant across jobs: not swept
    assert len(rows) == 4 and [r[0] for r in rows] == ["0", "1", "2", "3"]
    by_job = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert by_job["0"] == {
        "job": "0",
        "model.net.norm": "batch",
        "model.net.res_scale": "1.0",
        "params": "1,234,567",
        "steps": "10",
        "wall time": "4.5 min",
        "Set5 x2 PSNR": "30.12",
        "Set5 x2 SSIM": "0.9000",
        "Set5 x2 bicubic": "31.50",
        "Set14 x2 PSNR": "28.12",
        "Set14 x2 SSIM": "0.8000",
        "Set14 x2 bicubic": "27.00",
        "diverged": "no",
        "status": "completed",
    }
    assert by_job["1"]["wall time"] == "12.3 s"
    assert by_job["1"]["diverged"] == "yes" and by_job["1"]["status"] == "diverged"
    assert by_job["2"]["Set5 x2 PSNR"] == "32.12"
    assert by_job["3"] == {
        **dict.fromkeys(header, "-"),
        "job": "3",
        "model.net.norm": "none",
        "model.net.res_scale": "0.1",
        "diverged": "no",
        "status": "failed",
    }
    assert "![val_psnr](val_psnr.png)" in md and "![final_psnr](final_psnr.png)" in md


def test_csv_and_report_object(sweep, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    report = build_report(sweep, out)
    assert [p.name for p in report.paths] == [
        "report.md",
        "report.csv",
        "val_psnr.png",
        "final_psnr.png",
    ]
    assert all(p.parent == out and p.is_file() for p in report.paths)
    assert not (sweep / "report.md").exists()
    assert len(report.rows) == 4 and report.rows[3]["status"] == "failed"
    assert report.jobs[3].error == "no summary.json"
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert list(rows[0]) == [
        "job",
        "model.net.norm",
        "model.net.res_scale",
        "params",
        "steps",
        "wall_time_s",
        "val/Set5/x2/psnr",
        "val/Set5/x2/ssim",
        "val/Set5/x2/bicubic_psnr",
        "val/Set14/x2/psnr",
        "val/Set14/x2/ssim",
        "val/Set14/x2/bicubic_psnr",
        "diverged",
        "status",
    ]
    assert float(rows[0]["val/Set5/x2/psnr"]) == pytest.approx(30.123456)  # full precision
    assert rows[0]["params"] == "1234567"
    assert rows[1]["diverged"] == "yes"
    assert rows[3]["status"] == "failed" and rows[3]["params"] == ""


def test_plots(sweep):
    pytest.importorskip("matplotlib")
    build_report(sweep)
    for name in ("val_psnr.png", "final_psnr.png"):
        check_png(sweep / name)


def test_history_drops_non_finite_points(sweep):
    job = read_job(sweep / str(DIVERGED))
    assert job.curve("val/psnr") == [(5, pytest.approx(30.123456))]
    assert read_job(sweep / str(MISSING)).curve("val/psnr") == []


def test_single_job_shows_all_overrides(sweep):
    pytest.importorskip("matplotlib")
    for i in (1, 2, 3):
        shutil.rmtree(sweep / str(i))
    report = build_report(sweep)
    assert report.columns[1:4] == ["model.net.norm", "model.net.res_scale", "trainer.max_steps"]


def test_a_single_run_folder_is_a_report_too(sweep):
    pytest.importorskip("matplotlib")
    run = sweep / "2"
    report = build_report(run)
    assert [r["job"] for r in report.rows] == ["2"]
    assert report.rows[0]["val/Set5/x2/psnr"] == pytest.approx(32.123456)
    assert (run / "report.md").is_file()


def test_main(sweep, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.md").is_file()
    assert "Set5 x2 PSNR" in capsys.readouterr().out


def test_main_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 1
    assert "multirun folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1
    assert "no job folders (named like norm-batch+seed-0, or 0, 1, ...) and no summary.json" in (
        capsys.readouterr().err
    )


def test_wandb_disabled_is_a_warning(sweep, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert main([str(sweep), "--wandb"]) == 0
    assert "warning" in capsys.readouterr().err


def test_wandb_offline_logs_the_table(sweep, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--wandb"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert list((out / "wandb").glob("offline-run-*"))


def test_report_marks_a_job_without_summary_as_failed(tmp_path, capsys):
    """A crashed job (no summary.json) is a failed row, not a crash."""
    pytest.importorskip("matplotlib")
    best = {"val/psnr": 30.5, "val/Set5/x2/psnr": 30.5}
    summary = {"params": 1234, "steps": 5, "wall_time_s": 3.0, "status": "completed", "best": best}
    write_job(
        tmp_path / "0", ["optim.lr=1e-4", "trainer.max_steps=5"], summary, [(5, "val/psnr", 30.5)]
    )
    write_job(tmp_path / "1", ["optim.lr=1e-3", "trainer.max_steps=5"])
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| 0 | 1e-4 | 1,234 | 5 | 3.0 s | 30.50 | - | - | no | completed |" in md
    assert "| 1 | 1e-3 | - | - | - | - | - | - | no | failed |" in md
    assert "trainer.max_steps" not in md  # constant across jobs: not a swept column
    assert main([str(tmp_path / "missing")]) == 1
    assert "multirun folder not found" in capsys.readouterr().err
