"""The run's metric history (``history.csv``), its best and last values (``summary.json``)
and its validation curves (``curves.png``)."""

from __future__ import annotations

import contextlib
import time

import lightning as L

from sr_lightning.models import describe, record
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.history import HEADER, read_history
from sr_lightning.runs.records import WriteErrors, truncate_quietly
from sr_lightning.training.pictures import plot_curves


class MetricHistory(L.Callback):
    """Appends ``step,key,value`` rows to the run folder's ``history.csv`` (validation metrics
    and, at each validation, ``time/minutes``, the wall-clock minutes of ``fit`` since training
    started, validations included, and ``time/train_minutes``, the same without the time spent
    in validation; ``train/loss`` every ``trainer.log_every_n_steps``), keeps the last values
    and the best validation's (every metric of the validation the best checkpoint monitors
    highest, e.g. ``val/psnr``: its SSIM and per-set values come from that same step), from
    which ``train.py`` writes ``summary.json`` for the reports, and draws
    ``curves.png`` at the end of ``fit``: validation PSNR against updates and against minutes,
    with the bicubic level and the best step, titled with the set, scale and run
    (:func:`run_label`). Both clocks start at ``on_train_start`` (after the sanity check)
    and go on across resumes (in the checkpoint's callback state); a validation's time runs
    from ``on_validation_start`` to this callback's ``on_validation_end`` (the checkpoint saves
    of ``on_validation_end`` that follow it count as training)."""

    def __init__(self, run_dir: str):
        self.folder = RunFolder(run_dir)
        self.path = self.folder.history
        self.best: dict[str, float] = {}
        self.final: dict[str, float] = {}
        self.minutes_before = 0.0  # training time of the run before this process (resume)
        self.train_minutes_before = 0.0  # the same without validation
        self._started: float | None = None
        self._validating_since: float | None = None  # the current validation's start
        self._validation_seconds = 0.0  # this process's finished validations
        self.write_errors = WriteErrors("metric history")

    def clocks(self) -> tuple[float, float]:
        """``(minutes, train_minutes)`` so far, across resumes, read at one instant:
        wall-clock minutes since training started, and those minus the validations' (the
        current one's included), so that ``train_minutes <= minutes``."""
        if self._started is None:
            return self.minutes_before, self.train_minutes_before
        now = time.monotonic()
        validating = self._validation_seconds
        if self._validating_since is not None:
            validating += now - self._validating_since
        running = (now - self._started) / 60
        train = max(running - validating / 60, 0.0)
        return self.minutes_before + running, self.train_minutes_before + train

    def minutes(self) -> float:
        """Training wall-clock minutes so far, across resumes (validations included)."""
        return self.clocks()[0]

    def train_minutes(self) -> float:
        """Training minutes so far, across resumes, without the time spent in validation."""
        return self.clocks()[1]

    def _append(self, trainer, rows: dict[str, float]) -> None:
        """A failed write (disk full) is reported once, cut back to the last whole row, and
        training goes on; ``best``/``final`` (for summary.json) are kept in memory anyway."""
        if not trainer.is_global_zero or not rows:
            return
        size = 0
        try:
            size = self.path.stat().st_size if self.path.is_file() else 0
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                if size == 0:
                    f.write(HEADER)
                for key, value in rows.items():
                    f.write(f"{trainer.global_step},{key},{value!r}\n")
        except OSError as e:
            truncate_quietly(self.path, size)
            self.write_errors.report(e, self.path)

    def state_dict(self) -> dict:  # in the checkpoint: a resumed run keeps its best values
        minutes, train_minutes = self.clocks()
        return {
            "best": dict(self.best),
            "final": dict(self.final),
            "minutes": minutes,
            "train_minutes": train_minutes,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.final = dict(state_dict["best"]), dict(state_dict["final"])
        self.minutes_before = float(state_dict["minutes"])
        # a checkpoint from before time/train_minutes: its minutes, validations included
        self.train_minutes_before = float(state_dict.get("train_minutes", self.minutes_before))

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = time.monotonic()
        self._validating_since, self._validation_seconds = None, 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._started is not None and not trainer.sanity_checking:
            self._validating_since = time.monotonic()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            try:
                run = run_label(self.folder, pl_module)
                plot_curves(read_history(self.path), self.folder.curves, run=run)
            except OSError as e:
                self.write_errors.report(e, self.folder.curves)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = trainer.log_every_n_steps
        if trainer.global_step % every == 0 and "train/loss" in trainer.callback_metrics:
            self._append(trainer, {"train/loss": float(trainer.callback_metrics["train/loss"])})

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        rows = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and not k.endswith("n_images")
        }
        minutes, train_minutes = self.clocks()
        rows["time/minutes"] = round(minutes, 4)
        rows["time/train_minutes"] = round(train_minutes, 4)
        if self._validating_since is not None:  # this validation's time, from here on
            self._validation_seconds += time.monotonic() - self._validating_since
            self._validating_since = None
        self.final.update(rows)
        scored = {k: v for k, v in rows.items() if not k.startswith("time/")}
        monitor = best_monitor(trainer)
        if monitor in scored:  # the checkpoint's validation, all of its metrics
            if scored[monitor] > self.best.get(monitor, float("-inf")):  # NaN never is
                self.best = scored
        else:  # nothing monitored: each metric's own best
            for key, value in scored.items():
                if value == value and value > self.best.get(key, float("-inf")):  # not NaN
                    self.best[key] = value
        self._append(trainer, rows)


def best_monitor(trainer) -> str | None:
    """The validation metric the best checkpoint is chosen by (``callbacks.best_checkpoint``:
    a ModelCheckpoint monitoring a ``val/`` key, mode max), or None."""
    for callback in trainer.checkpoint_callbacks:
        monitor = getattr(callback, "monitor", None)
        if monitor and monitor.startswith("val/") and getattr(callback, "mode", "") == "max":
            return monitor
    return None


def run_label(folder: RunFolder, pl_module=None) -> str:
    """The run as the curves name it: the experiment (Hydra's choice, when there is one), the
    run folder (a sweep job's as ``<sweep folder>/<job folder>``) and the network
    (``quickstart, 2024-06-01_12-00-00_123456, edsr 8x48``)."""
    path = folder.path.resolve()
    # Hydra writes multirun.yaml into a sweep folder: its job folders are numbered or named
    experiment, in_sweep = None, (path.parent / "multirun.yaml").is_file()
    with contextlib.suppress(Exception):  # no Hydra config (a notebook): the folder says it
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            experiment = hydra_cfg.runtime.choices.get("experiment")
            in_sweep = in_sweep or hydra_cfg.mode == RunMode.MULTIRUN
    parts = [str(experiment)] if experiment else []
    parts.append(f"{path.parent.name}/{path.name}" if in_sweep else path.name)
    with contextlib.suppress(AttributeError, TypeError, KeyError):  # not a catalogued network
        parts.append(describe(record(pl_module.net)))
    return ", ".join(dict.fromkeys(parts))  # a folder named as its experiment: said once
