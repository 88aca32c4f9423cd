"""Tables and plots of a Hydra multirun: ``sr-report DIR [--out] [--wandb]``.

Reads each job's ``.hydra/overrides.yaml``, ``summary.json``, ``history.csv`` and
``per_image.csv`` (written by ``train.py``) and writes ``report.md``, ``report.csv``,
``val_psnr.png`` (validation PSNR vs step, one line per job) and ``final_psnr.png`` (best
validation PSNR per job). A sweep over ``seed`` also gets, per setting, the mean over seeds
with a 95% t interval, the ablation pairs' differences at the level of the training run
(per-seed means of the per-image differences, a t interval over seeds) with a verdict, and
``val_psnr_groups.png`` (validation PSNR against updates and minutes, with CI bands).
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sr_lightning.analysis.seeds import (
    SEED,
    group_lines,
    pairings,
    plot_groups,
    seed_groups,
    seeds_swept,
    set_order,
)
from sr_lightning.runs.job import PSNR_KEY, Job, read_sweep
from sr_lightning.training.wandb_mode import wandb_mode

PAIRS_METHOD = (
    "Unit: the training run. Per seed, the mean over a set's images of B - A; the verdict is "
    "a 95% t interval over the seeds (df = seeds - 1), none below 3 seeds. Primary set: "
    "{primary} (the first test set); the other sets are secondary, scored on the same "
    "networks (not independent evidence), their verdicts Holm-corrected per pair. Pairs are "
    "not corrected across each other."
)

# the columns beside each PSNR column: its SSIM and the bicubic level of the same set
METRIC_KEY = re.compile(r"^val/([^/]+)/x(\d+)/(psnr|ssim|bicubic_psnr)(?: \[(.+)\])?$")
METRIC_TITLES = {"psnr": "PSNR", "ssim": "SSIM", "bicubic_psnr": "bicubic"}
STATUS_COLORS = {
    "completed": "tab:blue",
    "diverged": "tab:red",
    "failed": "tab:gray",
    "running": "tab:orange",
}


def not_finished(jobs: list[Job]) -> list[str]:
    """``jobs 3, 4 still running: left out of the statistics ...`` (empty when none is)."""
    running = [j.name for j in jobs if j.status == "running"]
    if not running:
        return []
    one = len(running) == 1
    who = f"job {running[0]}" if one else "jobs " + ", ".join(running)
    return [
        f"{who} still running (left out of the statistics over seeds and the pairs, as failed "
        f"jobs are; run sr-report again when {'it finishes' if one else 'they finish'})"
    ]


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between jobs (all of them for a single job)."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    if len(jobs) == 1:
        return keys
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def psnr_keys(jobs: list[Job]) -> list[str]:
    """The ``val/<Set>/x<s>/psnr`` keys found in any job's best metrics, in first-seen order."""
    return list(dict.fromkeys(k for j in jobs for k in j.best if PSNR_KEY.match(k)))


def metric_columns(jobs: list[Job]) -> list[str]:
    """One column per PSNR key, or, where jobs scored a set under different protocols, one per
    (key, protocol): ``val/Set5/x2/psnr [Y, border 2, LR file]``. Numbers computed under
    different protocols never share a column."""
    columns = []
    for key in psnr_keys(jobs):
        labels = list(dict.fromkeys(j.protocol(key) for j in jobs if key in j.best))
        columns += [key] if len(labels) == 1 else [f"{key} [{label}]" for label in labels]
    return columns


def metric_value(job: Job, column: str) -> float | None:
    m = METRIC_KEY.match(column)
    key = column.split(" [", 1)[0]
    if m and m[4] is not None and job.protocol(key) != m[4]:
        return None
    return job.best.get(key)


def beside(psnr_column: str) -> list[str]:
    """A PSNR column and the SSIM and bicubic columns that go with it."""
    return [psnr_column] + [
        psnr_column.replace("/psnr", f"/{m}", 1) for m in ("ssim", "bicubic_psnr")
    ]


def below_bicubic(jobs: list[Job], rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """``Set5 x2: jobs 0, 2 below bicubic`` for each PSNR column where some job is."""
    notes = []
    for c in columns:
        m = PSNR_KEY.match(c)
        level = c.replace("/psnr", "/bicubic_psnr", 1)
        if not m or level not in columns:
            continue
        below = [r["job"] for r in rows if None not in (r[c], r[level]) and r[c] < r[level]]
        if below:
            who = "every job" if len(below) == len(rows) else "jobs " + ", ".join(below)
            notes.append(f"{m[1]} x{m[2]}: {who} below bicubic")
    return notes


def protocol_notes(jobs: list[Job], columns: list[str]) -> list[str]:
    """``Set5 x2: Y, border 2, LR file`` for each single-protocol column."""
    notes = []
    for c in columns:
        m = PSNR_KEY.match(c)
        if m and m[3] is None:
            label = next((j.protocol(c) for j in jobs if j.protocol(c)), None)
            notes.append(f"{m[1]} x{m[2]}: {label or 'not recorded'}")
    return notes


def label(job: Job, keys: list[str]) -> str:
    """``norm=batch, res_scale=0.1`` (last key segment, unless two swept keys share it)."""
    short = [k.rsplit(".", 1)[-1] for k in keys]
    if len(set(short)) < len(short):
        short = list(keys)
    parts = [f"{s}={job.overrides.get(k, '-')}" for s, k in zip(short, keys, strict=True)]
    return ", ".join(parts) or f"job {job.name}"


def table(jobs: list[Job]) -> tuple[list[str], list[dict[str, Any]]]:
    """Column keys and one row per job (raw values; ``None`` where unknown)."""
    swept = swept_keys(jobs)
    metrics = [c for psnr in metric_columns(jobs) for c in beside(psnr)]
    columns = ["job", *swept, "params", "steps", "wall_time_s", *metrics, "diverged", "status"]
    rows = []
    for j in jobs:
        s = j.summary
        row: dict[str, Any] = {"job": j.name, **{k: j.overrides.get(k) for k in swept}}
        row.update(params=s.get("params"), steps=s.get("steps"), wall_time_s=s.get("wall_time_s"))
        row.update({k: metric_value(j, k) for k in metrics})
        row.update(diverged="yes" if j.status == "diverged" else "no", status=j.status)
        rows.append(row)
    return columns, rows


def title(key: str) -> str:
    """Markdown header of a column: ``val/Set5/x2/psnr`` -> ``Set5 x2 PSNR``."""
    m = METRIC_KEY.match(key)
    if m:
        return f"{m[1]} x{m[2]} {METRIC_TITLES[m[3]]}" + (f" ({m[4]})" if m[4] else "")
    return {"wall_time_s": "wall time"}.get(key, key)


def fmt(key: str, value: Any) -> str:
    """Markdown cell: thousands separators, ``12.3 s`` / ``4.5 min``, PSNR with 2 decimals."""
    if value is None or value == "":
        return "-"
    try:
        if key == "params":
            return f"{int(value):,}"
        if key == "wall_time_s":
            t = float(value)
            return f"{t:.1f} s" if t < 120 else f"{t / 60:.1f} min"
        m = METRIC_KEY.match(key)
        if m:
            return f"{float(value):.4f}" if m[3] == "ssim" else f"{float(value):.2f}"
    except (TypeError, ValueError):
        pass
    return str(value).replace("|", "\\|")


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Full-precision rows; unknown values are empty cells."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: "" if r[c] is None else r[c] for c in columns} for r in rows)


def write_markdown(
    path: Path,
    sweep_dir: Path,
    columns: list[str],
    rows: list[dict[str, Any]],
    plots: list[Path],
    notes: list[str] = (),
    sections: list[str] = (),
) -> None:
    """Title, one table row per job, the scoring protocols, the seed statistics
    (``sections``), then the plots as image links."""
    lines = [f"# Sweep report: {sweep_dir}", ""]
    lines.append("| " + " | ".join(title(c) for c in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(fmt(c, r[c]) for c in columns) + " |" for r in rows]
    if notes:
        lines += ["", "; ".join(notes) + "."]
    lines += ["", *sections] if sections else []
    links = (f"![{p.stem}]({Path(os.path.relpath(p, path.parent)).as_posix()})" for p in plots)
    lines += ["", " ".join(links), ""]
    path.write_text("\n".join(lines))


def plot(jobs: list[Job], out_dir: Path) -> list[Path]:
    """``val_psnr.png`` (val/psnr vs step per job) and ``final_psnr.png`` (best val/psnr)."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("the report plots need matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    keys = swept_keys(jobs)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for j in jobs:
        pts = j.curve("val/psnr")
        if pts:
            steps, values = zip(*pts, strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=label(j, keys))
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no val/psnr history", ha="center", transform=ax.transAxes)
    ax.set(xlabel="step", ylabel="validation PSNR (dB)", title="val/psnr")
    ax.grid(alpha=0.3)
    curve_png = out_dir / "val_psnr.png"
    fig.tight_layout()
    fig.savefig(curve_png, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    best = [j.best.get("val/psnr") for j in jobs]
    best = [float(v) if isinstance(v, int | float) else math.nan for v in best]
    finite = [v for v in best if math.isfinite(v)]
    low = math.floor(min(finite)) - 1 if finite else 0.0
    heights = [v - low if math.isfinite(v) else 0.0 for v in best]
    colors = [STATUS_COLORS.get(j.status, "tab:gray") for j in jobs]
    x = range(len(jobs))
    ax.bar(x, heights, bottom=low, color=colors)
    for i, (j, v) in enumerate(zip(jobs, best, strict=True)):
        if math.isfinite(v):
            ax.annotate(f"{v:.2f}", (i, v), ha="center", va="bottom", fontsize=7)
        if j.status != "completed":  # "diverged" / "failed" / "running" on the bar
            ax.annotate(
                j.status,
                (i, 0.03),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="bottom",
                rotation=90,
                fontsize=8,
                color="black",
            )
    ax.set_xticks(list(x), [label(j, keys) for j in jobs], rotation=30, ha="right", fontsize=7)
    if finite:
        ax.set_ylim(low, max(finite) + 0.5)
    statuses = list(dict.fromkeys(j.status for j in jobs))
    handles = [Patch(color=STATUS_COLORS.get(s, "tab:gray"), label=s) for s in statuses]
    ax.legend(handles=handles, fontsize=7)
    ax.set(ylabel="best validation PSNR (dB)", title="best val/psnr per job")
    bar_png = out_dir / "final_psnr.png"
    fig.savefig(bar_png, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [curve_png, bar_png]


def log_to_wandb(
    sweep_dir: Path, out_dir: Path, columns: list[str], rows: list[dict[str, Any]]
) -> None:
    """The table as a ``wandb.Table`` in run ``report-<sweep dir name>``; never fatal."""
    try:
        import wandb
    except ImportError:
        print("warning: --wandb ignored: wandb is not installed", file=sys.stderr)
        return
    mode = wandb_mode()
    if mode == "disabled":
        print("warning: --wandb ignored: WANDB_MODE=disabled", file=sys.stderr)
        return
    try:
        try:
            settings = wandb.Settings(init_timeout=90, silent=True)
        except Exception:  # an older/newer wandb without these settings
            settings = None
        wandb.init(
            project="sr-lightning",
            name=f"report-{sweep_dir.resolve().name}",
            job_type="report",
            mode=mode,
            dir=str(out_dir),
            settings=settings,
        )
        data = [[r[c] for c in columns] for r in rows]  # None: a missing value
        wandb.log({"report": wandb.Table(columns=columns, data=data)})
    except Exception as e:  # a report must not fail on logging
        print(f"warning: W&B logging failed: {e}", file=sys.stderr)
    finally:
        try:
            if wandb.run is not None:
                wandb.finish()
        except Exception as e:
            print(f"warning: wandb.finish failed: {e}", file=sys.stderr)


@dataclass
class Report:
    """What :func:`build_report` read and wrote."""

    sweep_dir: Path
    out_dir: Path
    columns: list[str]
    rows: list[dict[str, Any]]
    paths: list[Path]  # report.md, report.csv, val_psnr.png, final_psnr.png[, groups]
    jobs: list[Job] = field(default_factory=list, repr=False)
    groups: list = field(default_factory=list, repr=False)  # over seeds (groups.Group)
    pairs: list = field(default_factory=list, repr=False)  # ablation pairs (groups.Pairing)


def build_report(
    sweep_dir: str | Path, out_dir: str | Path | None = None, *, wandb: bool = False
) -> Report:
    """Read every job of the multirun ``sweep_dir`` and write the report into ``out_dir``.

    Raises ``FileNotFoundError`` for a missing folder or one without job folders, and
    ``ImportError`` without matplotlib (after ``report.csv`` is written).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"multirun folder not found: {sweep_dir}")
    jobs = read_sweep(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = table(jobs)
    csv_path, md_path = out / "report.csv", out / "report.md"
    write_csv(csv_path, columns, rows)
    pngs = plot(jobs, out)
    notes = not_finished(jobs) + below_bicubic(jobs, rows, columns)
    scored = protocol_notes(jobs, columns)
    notes += ["scored with: " + "; ".join(scored)] if scored else []
    groups, pairs, sections = [], [], []
    if seeds_swept(jobs):
        keys = [k for k in swept_keys(jobs) if k != SEED]
        groups = seed_groups(jobs)
        order = set_order(jobs)
        pairs = pairings(groups, keys, order)
        psnr = [c for c in columns if PSNR_KEY.match(c)]
        sections = [
            "## Over seeds: best validation PSNR, mean and 95% t interval per setting "
            "(completed jobs; these images chose the checkpoint: the verdicts below use the "
            "test sets)",
            "",
            *group_lines(groups, keys, psnr, title),
            "",
            "## Ablation pairs: test PSNR differences at the level of the training run",
            "",
            PAIRS_METHOD.format(primary=order[0] if order else "-"),
            "",
            *([line for p in pairs for line in p.lines()] or ["- none (no setting pairs that "
                                                              "differ in one key)"]),
        ]  # fmt: skip
        pngs.append(plot_groups(groups, keys, out))
    write_markdown(md_path, sweep_dir, columns, rows, pngs, notes, sections)
    if wandb:
        log_to_wandb(sweep_dir, out, columns, rows)
    paths = [md_path, csv_path, *pngs]
    return Report(sweep_dir, out, columns, rows, paths, jobs, groups, pairs)
