"""The run folder: every file a run (or a sweep job) leaves, named here once.

::

    <run>/.hydra/overrides.yaml     the run's command-line overrides (Hydra)
    <run>/.hydra/config.yaml        the config Hydra composed (unresolved, before train.py's rules)
    <run>/train.log                 its log lines (Hydra's job logging)
    <run>/checkpoints/config.yaml   the resolved config it trained with
    <run>/checkpoints/best-step<N>-psnr<P>.ckpt, last.ckpt, step<N>.ckpt, preempted.ckpt
    <run>/summary.json              status, steps, best/final metrics, throughput
    <run>/process.json              the process training it (pid, host, start): "running"
    <run>/history.csv               step,key,value (validation metrics, loss, minutes)
    <run>/results.json, per_image.csv   the test of the best checkpoint (and eval.py's)
    <run>/samples/<set>_x<s>_<image>_step<N>.png, curves.png   what a researcher looks at

A multirun's job folders sit in its sweep folder, each named by the job's swept overrides
(:func:`job_folder_name`: ``<sweep>/norm-batch+seed-0``), so that a sweep extended with more
seeds or values keeps each job in its folder (``config/rules.py``: ``sweep_job_folder``).

Writers are atomic (:mod:`.records`); the finders (best, newest, recorded config) and the
reader of a whole job (:mod:`.job`) are the only code that looks inside a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sr_lightning.runs.records import write_atomically

CHECKPOINTS = "checkpoints"
BEST_PREFIX = "best-"
# ModelCheckpoint file name patterns (conf/callbacks reads them through ${sr_run:...})
BEST_FILENAME = BEST_PREFIX + "step{step:07d}-psnr{val/psnr:.3f}"
STEP_FILENAME = "step{step:07d}"
LAST_FILENAME = "last"  # at every validation, improved or not
PREEMPTED = "preempted.ckpt"
RECORDED_CONFIG = "config.yaml"  # in checkpoints/
OVERRIDES = ".hydra/overrides.yaml"
COMPOSED_CONFIG = ".hydra/config.yaml"
SUMMARY = "summary.json"
PROCESS = "process.json"
HISTORY = "history.csv"
RESULTS = "results.json"
PER_IMAGE = "per_image.csv"
SAMPLES = "samples"
CURVES = "curves.png"
LOG = "train.log"

# the names conf/ may read (${sr_run:<name>})
NAMES = {
    "checkpoints": CHECKPOINTS,
    "best_filename": BEST_FILENAME,
    "step_filename": STEP_FILENAME,
    "last_filename": LAST_FILENAME,
}
FINISHED = ("completed", "diverged")  # a sweep run again does not train these jobs twice
# a job folder's name: key-value+key-value, characters a command line takes unquoted (Hydra
# reads ',' and '=' in a value as its own syntax: ckpt_path=<sweep>/norm=batch,seed=0/... fails)
NAME_KV, NAME_ITEM = "-", "+"
NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._@%-]")
NAME_MAX = 120


class RunFolder:
    """The folder of one run: its file paths, finders and atomic writers."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ---- paths --------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def recorded_config(self) -> Path:
        return self.checkpoints / RECORDED_CONFIG

    @property
    def preempted(self) -> Path:
        return self.checkpoints / PREEMPTED

    @property
    def overrides(self) -> Path:
        return self.path / OVERRIDES

    @property
    def composed_config(self) -> Path:
        return self.path / COMPOSED_CONFIG

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def process(self) -> Path:
        return self.path / PROCESS

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def per_image(self) -> Path:
        return self.path / PER_IMAGE

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def log(self) -> Path:
        return self.path / LOG

    def sample(self, dataset: str, scale: int, image: str, step: int) -> Path:
        """``samples/<set>_x<s>_<image>_step<N>.png``, N in 7 digits (as the checkpoints')."""
        return self.samples / f"{dataset}_x{scale}_{image}_step{step:07d}.png"

    # ---- finders ------------------------------------------------------------------------
    def checkpoint_files(self) -> list[Path]:
        """Every ``*.ckpt`` in ``checkpoints/``, oldest first (by modification time)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(self.checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)

    def newest_checkpoint(self) -> Path | None:
        """What ``ckpt_path=last`` resumes from: the newest of ``last.ckpt``, ``step*.ckpt``
        and ``preempted.ckpt``."""
        found = self.checkpoint_files()
        return found[-1] if found else None

    def best_checkpoint(self) -> Path | None:
        """The best validation checkpoint (``best-*.ckpt``; the newest name if several)."""
        found = sorted(self.checkpoints.glob(f"{BEST_PREFIX}*.ckpt"))
        return found[-1] if found else None

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json``, or None when missing or unreadable (a run that crashed first)."""
        try:
            summary = json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def finished(self) -> dict[str, Any] | None:
        """The summary of a run that completed or diverged (else None)."""
        summary = self.read_summary()
        return summary if summary and summary.get("status") in FINISHED else None

    def read_process(self) -> dict[str, Any] | None:
        """``process.json`` (pid, host, start of the process that trains or trained the run),
        or None when missing or unreadable."""
        try:
            found = json.loads(self.process.read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    # ---- writers (atomic; a full disk warns and returns False) -------------------------
    def write_config(self, text: str) -> bool:
        return write_atomically(self.recorded_config, text)

    def write_process(self, device: dict[str, Any] | None = None) -> bool:
        """Record this process as the one training the run (``train.py``, rank zero, at start):
        pid, host, its start tick (a reused pid is not taken for it), the wall time and, for a
        job of a parallel sweep, the device slot it holds."""
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_ticks": process_start_ticks(os.getpid()),
            "started": time.time(),
            "ended": None,
            **({"device": device} if device else {}),
        }
        return write_atomically(self.process, json.dumps(record, indent=2) + "\n")

    def end_process(self) -> bool:
        """Mark ``process.json`` ended (``train.py`` returned or raised): not running."""
        record = self.read_process() or {"pid": os.getpid(), "host": socket.gethostname()}
        record["ended"] = time.time()
        return write_atomically(self.process, json.dumps(record, indent=2) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> bool:
        return write_atomically(self.summary, json.dumps(summary, indent=2, allow_nan=True) + "\n")


def process_stat(pid: int) -> tuple[str, int] | None:
    """(state, start tick) of process ``pid`` (``/proc/<pid>/stat``: ``R``, ``S``, ``Z`` for a
    zombie...; clock ticks after boot), or None where there is no ``/proc`` or no such
    process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])  # fields 3 and 22, counted after the name
    except (OSError, ValueError, IndexError):
        return None


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (see :func:`process_stat`), or None."""
    stat = process_stat(pid)
    return stat[1] if stat else None


def job_folder_name(swept: Mapping[str, str]) -> str:
    """``norm-batch+seed-0``: the folder of a sweep job, from its swept keys and values
    (``training/loggers.py`` ``swept_values``, which also names its W&B run ``norm=batch,
    seed=0``). A character a command line would need to quote becomes ``_``; a name over
    :data:`NAME_MAX` characters is cut and ends with a digest of the whole. Empty when nothing
    is swept."""
    name = NAME_ITEM.join(
        f"{NAME_UNSAFE.sub('_', str(k))}{NAME_KV}{NAME_UNSAFE.sub('_', str(v))}"
        for k, v in swept.items()
    )
    if len(name) > NAME_MAX:
        name = f"{name[: NAME_MAX - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name
