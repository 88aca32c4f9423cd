"""Callbacks and plugins: throughput logging and crash-safe checkpoint writes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L
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
