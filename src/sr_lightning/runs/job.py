"""The one reader of a job folder (finished, failed or still running): its overrides,
summary, metric history and per-image results. The sweep report, the seed statistics,
``sr-compare``, the resume and sweep-skip rules all read run folders through :func:`read_job` /
:func:`read_sweep`."""

from __future__ import annotations

import functools
import math
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sr_lightning.core.protocol import Protocol
from sr_lightning.runs.folder import RunFolder, process_stat
from sr_lightning.runs.history import Row, read_history
from sr_lightning.runs.results import read_per_image

# val/Set5/x2/psnr, and with the protocol where jobs differ: val/Set5/x2/psnr [RGB, border 8, ...]
PSNR_KEY = re.compile(r"^val/([^/]+)/x(\d+)/psnr(?: \[(.+)\])?$")
RUNNING = "running"
# a run whose process cannot be asked (another host, or no process.json) is running while its
# folder changed this recently (train.log, history.csv, the checkpoints, process.json)
HEARTBEAT_S = 15 * 60


@dataclass
class Job:
    """One job folder of a multirun (or one run folder)."""

    folder: RunFolder
    overrides: dict[str, str]
    summary: dict[str, Any]
    history: list[Row] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.path.name

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or "failed")

    @property
    def error(self) -> str | None:
        return self.summary.get("error")

    @property
    def best(self) -> dict[str, Any]:
        best = self.summary.get("best")
        return best if isinstance(best, dict) else {}

    def protocol(self, key: str) -> str | None:
        """The protocol label of metric ``val/<Set>/x<s>/...`` (None: not recorded)."""
        m = PSNR_KEY.match(key)
        found = (self.summary.get("protocols") or {}).get(f"{m[1]}/x{m[2]}") if m else None
        return Protocol.from_dict(found).label if found else None

    def curve(self, key: str = "val/psnr") -> list[tuple[int, float]]:
        """``(step, value)`` of ``key`` from ``history.csv``, non-finite values dropped."""
        return [(s, v) for s, k, v in self.history if k == key and math.isfinite(v)]

    @functools.cached_property
    def per_image(self) -> dict[tuple[str, int, str], float]:
        """(set, scale, image) -> test PSNR of the job's network; empty without results. Read
        once (a job is in several ablation pairs)."""
        if not self.folder.per_image.is_file():
            return {}
        rows = read_per_image(self.folder.path)
        return {(r["dataset"], int(r["scale"]), r["image"]): float(r["psnr"]) for r in rows}


def read_overrides(folder: RunFolder) -> dict[str, str]:
    """``key -> value`` of the run's command-line overrides (``+`` dropped)."""
    try:
        items = yaml.safe_load(folder.overrides.read_text()) if folder.overrides.is_file() else []
    except yaml.YAMLError:
        items = []
    overrides = {}
    for item in items if isinstance(items, list) else []:
        key, sep, value = str(item).partition("=")
        if sep:
            overrides[key.lstrip("+")] = value
    return overrides


def read_job(path: str | Path) -> Job:
    """A job (or run) folder, with its status: ``summary.json``'s, ``running`` (see
    :func:`running`), or ``failed`` without a readable ``summary.json`` (it crashed before
    writing one, or was killed)."""
    folder = RunFolder(path)
    summary = folder.read_summary()
    if running(folder):
        # a resumed run keeps the previous attempt's numbers until it writes its own
        summary = {**(summary or {}), "status": RUNNING, "error": None}
    elif summary is None:
        why = "no summary.json" if not folder.summary.is_file() else "unreadable summary.json"
        summary = {"status": "failed", "error": why}
    return Job(folder, read_overrides(folder), summary, read_history(folder.history))


def running(folder: RunFolder, now: float | None = None) -> bool:
    """Whether a process is training ``folder`` now. ``train.py`` (rank zero) records itself
    in ``process.json`` (pid, host, start tick) when it starts, and marks it ``ended`` when it
    returns or raises; so:

    - ``process.json`` marked ended: not running (its ``summary.json`` says how it ended);
    - not ended, on this host: running while that pid lives and is the same process (its start
      tick; a reused pid is not it). Killed (``kill -9``, out of memory): not running, and
      without a summary it reads ``failed``;
    - not ended, on another host (a cluster node): running while the folder changed in the
      last :data:`HEARTBEAT_S` seconds (``train.log``, ``history.csv``, a checkpoint);
    - no ``process.json`` (a run of an older version): running if it has no ``summary.json``,
      got as far as training (``checkpoints/config.yaml``, written just before ``fit``) and
      changed in the last :data:`HEARTBEAT_S` seconds. (A run of this version that stopped
      before recording its process, on a config error, has no ``config.yaml``: ``failed``.)
    """
    record = folder.read_process()
    if record is not None:
        if record.get("ended") is not None:
            return False
        if record.get("host") == socket.gethostname() and isinstance(record.get("pid"), int):
            return _alive(record["pid"], record.get("start_ticks"))
        return _changed_since(folder, (now or time.time()) - HEARTBEAT_S)
    if folder.summary.is_file():
        return False
    began = folder.recorded_config.is_file()
    return began and _changed_since(folder, (now or time.time()) - HEARTBEAT_S)


def _alive(pid: int, start_ticks: int | None) -> bool:
    """Process ``pid`` lives, is no zombie and started at ``start_ticks`` (when known)."""
    stat = process_stat(pid)
    if stat is not None:
        return stat[0] not in ("Z", "X") and start_ticks in (None, stat[1])
    try:  # no /proc (macOS): only whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _changed_since(folder: RunFolder, since: float) -> bool:
    paths = [folder.log, folder.history, folder.process, *folder.checkpoint_files()]
    for p in paths:
        try:
            if p.stat().st_mtime >= since:
                return True
        except OSError:
            continue
    return False


def job_folders(sweep_dir: str | Path) -> list[Path]:
    """The job folders of a multirun: named by their swept overrides (``norm-batch+seed-0``,
    :func:`~sr_lightning.runs.folder.job_folder_name`; any folder with Hydra's
    ``.hydra/overrides.yaml`` or a ``summary.json``) or, in sweeps of older versions, by job
    number (``0``, ``1``, ...). Numbered ones first, by number; then the named ones, their
    numbers compared as numbers (``seed-2`` before ``seed-10``): a sweep extended with more
    seeds lists its jobs as the same sweep run at once does."""
    found = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and _is_job_folder(p)]
    return sorted(found, key=_folder_order)


def _is_job_folder(path: Path) -> bool:
    if path.name.isdigit():
        return True
    folder = RunFolder(path)
    return not path.name.startswith(".") and (
        folder.overrides.is_file() or folder.summary.is_file()
    )


NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


def _folder_order(path: Path) -> tuple:
    """Numbered folders by number, then names with their numbers compared as numbers
    (``lr-0.0005`` before ``lr-0.001``, ``seed-2`` before ``seed-10``)."""
    if path.name.isdigit():
        return (0, int(path.name), [], path.name)
    parts = NUMBER.split(path.name)  # text, number, text, ...
    key = [(0, float(t), "") if i % 2 else (1, 0.0, t) for i, t in enumerate(parts)]
    return (1, 0, key, path.name)


def read_sweep(sweep_dir: str | Path) -> list[Job]:
    """All jobs of a multirun (in :func:`job_folders` order); or the one run of a run folder."""
    sweep_dir = Path(sweep_dir)
    folders = job_folders(sweep_dir)
    run = RunFolder(sweep_dir)
    if not folders and (run.summary.is_file() or run.process.is_file()):
        return [read_job(sweep_dir)]
    if not folders:
        raise FileNotFoundError(
            f"no job folders (named like norm-batch+seed-0, or 0, 1, ...) and no summary.json "
            f"in {sweep_dir}: is it a multirun or a run folder?"
        )
    return [read_job(p) for p in folders]
