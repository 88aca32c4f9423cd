"""The benchmark table: one row per (model, step mode), and the header line naming the
machine, driver, torch version and commit."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from sr_lightning.config.resolvers import PACKAGE_CHECKOUT


@dataclass
class Row:
    model: str
    mode: str
    batch: int
    times: list[float]
    flops: int
    peak: float
    plain: float | None = None  # median step time of the plain step, for the speed-up
    memory: float | None = None  # peak GPU memory, GiB

    @property
    def step(self) -> float:
        return statistics.median(self.times)

    def cells(self) -> list[str]:
        rate = self.flops / self.step
        speedup = f"{self.plain / self.step:.2f}x" if self.plain else ""
        return [
            self.model,
            self.mode,
            str(self.batch),
            f"{self.step * 1000:,.{1 if self.step < 0.1 else 0}f}",
            f"{self.batch / self.step:,.{1 if self.batch / self.step >= 1 else 3}f}",
            f"{self.flops / 1e9:,.1f}",
            f"{rate / 1e12:.3f}",
            f"{100 * rate / self.peak:.0f}%",
            speedup,
            f"{self.memory:.2f}" if self.memory is not None else "",
        ]


HEADER = [
    "model",
    "step",
    "batch",
    "ms/step (median)",
    "patches/s",
    "GFLOP/step",
    "TFLOP/s",
    "of matmul peak",
    "vs plain",
    "peak GPU GiB",
]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def machine(device: str) -> str:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        try:
            driver = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                .stdout.split("\n")[0]
                .strip()
            )
        except (OSError, subprocess.SubprocessError):
            driver = ""
        return (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), driver {driver or '?'}, "
            f"CUDA {torch.version.cuda}"
        )
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PACKAGE_CHECKOUT,
            capture_output=True,
            text=True,
        )
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=PACKAGE_CHECKOUT).returncode
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "?"
    except OSError:
        return "?"


def print_row(cells: list[str]) -> None:
    print(markdown(HEADER, [cells]).splitlines()[-1], flush=True)
