"""Callbacks and plugins: throughput logging and crash-safe checkpoint writes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class ImagesPerSecond(L.Callback):
    """Logs ``train/images_per_sec`` (LR patches per second, this rank) every N steps.

    Host-side timing over a window of steps: no device synchronisation in the step.
    """

    def __init__(self, every_n_steps: int | None = None):
        self.every_n_steps = every_n_steps
        self._t0: float | None = None
        self._images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += batch["lr"].shape[0]
        every = self.every_n_steps or trainer.log_every_n_steps
        if self._t0 is None:
            self._t0, self._images = time.perf_counter(), 0  # the first step warms up
        elif trainer.global_step % every == 0:
            now = time.perf_counter()
            pl_module.log("train/images_per_sec", self._images / (now - self._t0))
            self._t0, self._images = now, 0


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file, fsyncs it, then renames it into place.

    A crash or kill during a save leaves the previous checkpoint untouched and loadable.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss."""


class DivergenceGuard(L.Callback):
    """Stops training with :class:`DivergenceError` when the loss becomes NaN/Inf.

    Checked every ``check_every_n_steps`` (one host sync each time) and agreed across DDP ranks,
    so that all ranks stop together. No checkpoint is written on the way out: the last good
    one stays the newest.
    """

    def __init__(self, check_every_n_steps: int = 10):
        self.check_every_n_steps = check_every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.check_every_n_steps:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            raise DivergenceError(
                f"non-finite training loss at step {trainer.global_step} (loss={loss.item()}); "
                "the last good checkpoint is kept. Lower optim.lr or use model.res_scale < 1."
            )


class MetricHistory(L.Callback):
    """Appends ``step,key,value`` rows to ``<dirpath>/history.csv`` (validation metrics at
    each validation, ``train/loss`` every N steps) and keeps the best and last values, from
    which ``train.py`` writes ``summary.json`` for ``sr_lightning.report``."""

    def __init__(self, dirpath: str, every_n_steps: int | None = None):
        self.path = Path(dirpath) / "history.csv"
        self.every_n_steps = every_n_steps
        self.best: dict[str, float] = {}
        self.final: dict[str, float] = {}

    def _append(self, trainer, rows: dict[str, float]) -> None:
        if not trainer.is_global_zero or not rows:
            return
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            if new:
                f.write("step,key,value\n")
            for key, value in rows.items():
                f.write(f"{trainer.global_step},{key},{value!r}\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.every_n_steps or trainer.log_every_n_steps
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
        for key, value in rows.items():
            self.final[key] = value
            if value == value and value > self.best.get(key, float("-inf")):  # not NaN
                self.best[key] = value
        self._append(trainer, rows)
