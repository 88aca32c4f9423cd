"""Report over a Hydra multirun: ``python -m sr_lightning.report MULTIRUN_DIR [--wandb]``.

Reads each job's ``.hydra/overrides.yaml``, ``summary.json`` and ``history.csv`` (written by
``train.py``) and writes ``report.md``, ``report.csv``, ``val_psnr.png`` (validation PSNR vs
step, one line per job) and ``final_psnr.png`` (best validation PSNR per job).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass
class Job:
    name: str
    overrides: dict[str, str]
    summary: dict
    history: list[tuple[int, str, float]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.summary.get("status", "failed")


def read_job(folder: Path) -> Job:
    overrides_file = folder / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    overrides = dict(o.split("=", 1) for o in items or [] if "=" in o)
    summary_file = folder / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
    else:
        summary = {"status": "failed", "error": "no summary.json"}
    history = []
    history_file = folder / "history.csv"
    if history_file.is_file():
        with open(history_file) as f:
            history = [(int(r["step"]), r["key"], float(r["value"])) for r in csv.DictReader(f)]
    return Job(folder.name, overrides, summary, history)


def read_sweep(sweep_dir: Path) -> list[Job]:
    folders = sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    if not folders:
        raise FileNotFoundError(f"no job folders (0, 1, ...) in {sweep_dir}: is it a multirun dir?")
    return [read_job(p) for p in folders]


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value differs between jobs (all of them for a single job)."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    if len(jobs) == 1:
        return keys
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def psnr_keys(jobs: list[Job]) -> list[str]:
    keys = (k for j in jobs for k in j.summary.get("best", {}))
    return list(dict.fromkeys(k for k in keys if k.count("/") == 3 and k.endswith("/psnr")))


def label(job: Job, keys: list[str]) -> str:
    return (
        ", ".join(f"{k.rsplit('.', 1)[-1]}={job.overrides.get(k, '-')}" for k in keys) or job.name
    )


def rows(jobs: list[Job]) -> tuple[list[str], list[dict]]:
    swept, metrics = swept_keys(jobs), psnr_keys(jobs)
    header = ["job", *swept, "params", "steps", "wall_time_s", *metrics, "diverged", "status"]
    out = []
    for j in jobs:
        s = j.summary
        row = {"job": j.name, **{k: j.overrides.get(k, "") for k in swept}}
        row.update(params=s.get("params"), steps=s.get("steps"), wall_time_s=s.get("wall_time_s"))
        row.update({k: s.get("best", {}).get(k) for k in metrics})
        row.update(diverged="yes" if j.status == "diverged" else "no", status=j.status)
        out.append(row)
    return header, out


def _fmt(key: str, value) -> str:
    if value is None or value == "":
        return "-"
    if key == "params":
        return f"{value:,}"
    if key == "wall_time_s":
        return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
    if key.endswith("/psnr"):
        return f"{value:.2f}"
    return str(value)


def _title(key: str) -> str:
    if key.count("/") == 3:  # val/Set5/x2/psnr -> Set5 x2 PSNR
        _, name, scale, metric = key.split("/")
        return f"{name} {scale} {metric.upper()}"
    return {"wall_time_s": "wall time"}.get(key, key)


def plot(jobs: list[Job], out_dir: Path) -> list[Path]:
    """``val_psnr.png`` and ``final_psnr.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = swept_keys(jobs)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for j in jobs:
        pts = [(s, v) for s, k, v in j.history if k == "val/psnr" and math.isfinite(v)]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=label(j, keys))
    ax.set(xlabel="update", ylabel="validation PSNR (dB)", title="val/psnr")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    curve = out_dir / "val_psnr.png"
    fig.tight_layout()
    fig.savefig(curve)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    finals = [j.summary.get("best", {}).get("val/psnr", float("nan")) for j in jobs]
    colors = ["tab:red" if j.status != "completed" else "tab:blue" for j in jobs]
    bars = ax.bar(range(len(jobs)), [v if math.isfinite(v) else 0 for v in finals], color=colors)
    for bar, j in zip(bars, jobs, strict=True):
        if j.status != "completed":
            ax.text(bar.get_x() + bar.get_width() / 2, 0.5, j.status, ha="center", rotation=90)
    ax.set_xticks(
        range(len(jobs)), [label(j, keys) for j in jobs], rotation=30, ha="right", fontsize=7
    )
    finite = [v for v in finals if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) - 1, max(finite) + 0.5)
    ax.set(ylabel="best validation PSNR (dB)", title="final PSNR per job")
    bar_png = out_dir / "final_psnr.png"
    fig.savefig(bar_png, bbox_inches="tight")
    plt.close(fig)
    return [curve, bar_png]


def log_to_wandb(sweep_dir: Path, header: list[str], table: list[dict]) -> None:
    """The table as a W&B Table (offline unless an API key is configured); never fatal."""
    try:
        import wandb

        from .cli import wandb_mode

        if wandb_mode() == "disabled":
            return
        run = wandb.init(
            project="sr-lightning",
            name=f"report-{sweep_dir.name}",
            mode=wandb_mode(),
            dir=sweep_dir,
        )
        run.log(
            {"report": wandb.Table(columns=header, data=[[r[h] for h in header] for r in table])}
        )
        run.finish()
    except Exception as e:  # a report must not fail on logging
        print(f"warning: W&B logging failed: {e}", file=sys.stderr)


@dataclass
class Report:
    jobs: list[Job]
    paths: list[Path]


def build_report(
    sweep_dir: str | Path, out_dir: str | Path | None = None, wandb: bool = False
) -> Report:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"multirun folder not found: {sweep_dir}")
    out = Path(out_dir) if out_dir else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    jobs = read_sweep(sweep_dir)
    header, table = rows(jobs)
    with open(out / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(table)
    pngs = plot(jobs, out)
    md = [f"# Sweep report: {sweep_dir}", ""]
    md.append("| " + " | ".join(_title(h) for h in header) + " |")
    md.append("|" + "---|" * len(header))
    md += ["| " + " | ".join(_fmt(h, r[h]) for h in header) + " |" for r in table]
    md += ["", *(f"![{p.stem}]({os.path.relpath(p, out)})" for p in pngs), ""]
    (out / "report.md").write_text("\n".join(md))
    if wandb:
        log_to_wandb(sweep_dir, header, table)
    return Report(jobs, [out / "report.md", out / "report.csv", *pngs])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun folder (holds 0/, 1/, ...)")
    parser.add_argument("--out", help="where to write the report (default: the sweep folder)")
    parser.add_argument("--wandb", action="store_true", help="also log the table to W&B")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.sweep_dir, args.out, args.wandb)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print((report.paths[0]).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
