"""Progress as log lines: what a run writing to a file (``tee``, ``nohup``, a SLURM ``.out``)
shows while it trains, and what ``train.log`` keeps of it (see ``training/console.py``)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer

from sr_lightning.models import describe, record
from sr_lightning.training.console import log_in_spawned_worker, log_progress

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """``45s``, ``3m12s``, ``2h05m``."""
    if not math.isfinite(seconds):
        return "?"
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressLog(L.Callback):
    """Log lines of the run's progress, from rank zero: into the log files always (``train.log``,
    ``eval.log``), onto the console when it is not a terminal (a terminal has the progress bar).

    - training, every ``every_n_updates`` updates or every ``every_s`` seconds, whichever comes
      first (``null`` switches either off): ``update 500/2000 (25%), epoch 2/8, loss 6.123,
      412.3 images/s, lr 0.0005, elapsed 1m23s, ETA 4m10s``. The loss is rank zero's mean over
      the updates since the last line, summed on the device and read (one host sync) at the
      line only; images/s counts every rank's images, validation time left out; the ETA is from
      the updates per second of this process so far (validations included), or the time left
      of ``trainer.max_time`` if sooner.
    - each validation: each set's PSNR/SSIM beside bicubic's on the same images, the checkpoint
      criterion ``val/psnr`` and the best so far (kept across resumes, in the checkpoint);
    - the end of ``fit``: the updates done and ``best = step N``;
    - a test (``train.py``'s of the best checkpoint, ``eval.py``'s): what is tested, then a line
      every ``every_s`` seconds while it runs. The result table is logged where it is printed
      (:func:`~sr_lightning.training.evaluation.save_results`).
    """

    def __init__(self, every_n_updates: int | None = 100, every_s: float | None = 60.0):
        if every_n_updates is not None and (
            isinstance(every_n_updates, bool)
            or not isinstance(every_n_updates, int)
            or every_n_updates < 1
        ):
            raise ValueError(
                f"callbacks.progress_log.every_n_updates={every_n_updates!r}: a positive number "
                "of updates, or null (no line by count)"
            )
        if every_s is not None and not (isinstance(every_s, int | float) and every_s > 0):
            raise ValueError(
                f"callbacks.progress_log.every_s={every_s!r}: a positive number of seconds, or "
                "null (no line by time)"
            )
        self.every_n_updates = every_n_updates
        self.every_s = float(every_s) if every_s is not None else None
        self.best_psnr = float("-inf")
        self.best_step: int | None = None
        self._reset_clocks()

    def _reset_clocks(self) -> None:
        self._started: float | None = None  # this process's fit (monotonic)
        self._start_step = 0
        self._total: float = math.inf
        self._last_line: float = 0.0
        self._last_step = -1
        self._images = 0
        self._batches = 0
        self._loss_sum: torch.Tensor | None = None
        self._paused = 0.0  # validation seconds since the last line
        self._validating_since: float | None = None
        self._testing_since: float | None = None

    # ---- state across resumes --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"best_psnr": self.best_psnr, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_psnr = float(state_dict.get("best_psnr", float("-inf")))
        self.best_step = state_dict.get("best_step")

    # ---- training ---------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.is_global_zero:  # a ddp_spawn worker has no logging set up of its own
            log_in_spawned_worker(trainer.default_root_dir)

    def on_train_start(self, trainer, pl_module) -> None:
        self._reset_clocks()
        now = time.monotonic()
        self._started = self._last_line = now
        self._start_step = self._last_step = trainer.global_step
        try:
            self._total = float(trainer.estimated_stepping_batches)
        except Exception:  # an iterable without a length and no max_steps
            self._total = math.inf

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero or self._started is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # on the device: no sync
            loss = loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._batches += 1
        lr = batch.get("lr") if isinstance(batch, dict) else None
        self._images += int(lr.shape[0]) if isinstance(lr, torch.Tensor) else 0
        step = trainer.global_step
        if step == self._last_step:  # accumulating gradients: no update yet
            return
        now = time.monotonic()
        by_count = self.every_n_updates is not None and step % self.every_n_updates == 0
        by_time = self.every_s is not None and now - self._last_line >= self.every_s
        if by_count or by_time:
            self._training_line(trainer, step, now)

    def _training_line(self, trainer, step: int, now: float) -> None:
        parts = [f"update {step}"]
        if math.isfinite(self._total) and self._total > 0:
            parts[0] += f"/{int(self._total)} ({100 * step / self._total:.0f}%)"
        epoch = f"epoch {trainer.current_epoch + 1}"
        if trainer.max_epochs and trainer.max_epochs > 0:
            epoch += f"/{trainer.max_epochs}"
        parts.append(epoch)
        if self._loss_sum is not None and self._batches:
            accumulate = max(int(getattr(trainer, "accumulate_grad_batches", 1) or 1), 1)
            loss = self._loss_sum.item() / self._batches * accumulate  # the one host sync
            parts.append(f"loss {loss:.4g}")
        seconds = now - self._last_line - self._paused
        if seconds > 0 and self._images:
            parts.append(f"{self._images * trainer.world_size / seconds:.1f} images/s")
        optimizers = trainer.optimizers
        if optimizers and optimizers[0].param_groups:
            parts.append(f"lr {optimizers[0].param_groups[0]['lr']:.3g}")
        elapsed = now - self._started if self._started is not None else 0.0
        parts.append(f"elapsed {duration(elapsed)}")
        eta = self._eta(trainer, step, elapsed)
        if eta is not None:
            parts.append(f"ETA {duration(eta)}")
        log_progress(log, "%s", ", ".join(parts))
        self._last_line, self._last_step = now, step
        self._images, self._batches, self._loss_sum, self._paused = 0, 0, None, 0.0

    def _eta(self, trainer, step: int, elapsed: float) -> float | None:
        done = step - self._start_step
        eta = None
        if math.isfinite(self._total) and done > 0 and elapsed > 0:
            eta = max(self._total - step, 0) / (done / elapsed)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        left = timer.time_remaining() if timer is not None else None
        if left is not None:
            eta = left if eta is None else min(eta, left)
        return eta

    # ---- validation -------------------------------------------------------------------------
    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._validating_since = time.monotonic()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        took = 0.0
        if self._validating_since is not None:
            took = time.monotonic() - self._validating_since
            self._paused += took
            self._validating_since = None
        psnr = trainer.callback_metrics.get("val/psnr")
        psnr = float(psnr) if psnr is not None else float("nan")
        step = trainer.global_step
        new = psnr > self.best_psnr  # as ModelCheckpoint(mode="max"): strictly better, NaN never
        if new:
            self.best_psnr, self.best_step = psnr, step
        if not trainer.is_global_zero:
            return
        levels = getattr(pl_module, "bicubic_levels", {})
        sets = []
        for r in getattr(pl_module, "val_results", []):
            text = f"{r.dataset} x{r.scale} PSNR {r.psnr:.2f} dB / SSIM {r.ssim:.4f}"
            if (r.dataset, r.scale) in levels:
                b_psnr, b_ssim = levels[r.dataset, r.scale]
                text += f" (bicubic {b_psnr:.2f} / {b_ssim:.4f}, {r.psnr - b_psnr:+.2f} dB)"
            sets.append(text)
        best = (
            "new best"
            if new
            else (
                f"best {self.best_psnr:.2f} dB at step {self.best_step}"
                if self.best_step is not None
                else "no best yet"
            )
        )
        log_progress(
            log,
            "validation at update %d (epoch %d, %s): %s; val/psnr %.2f dB, %s",
            step,
            trainer.current_epoch + 1,
            duration(took),
            "; ".join(sets) or "no set",
            psnr,
            best,
        )

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or self._started is None:
            return
        elapsed = time.monotonic() - self._started
        text = f"fit done at update {trainer.global_step} after {duration(elapsed)}"
        if self.best_step is not None:
            text += f": best = step {self.best_step} (val/psnr {self.best_psnr:.2f} dB)"
            checkpoint = getattr(trainer.checkpoint_callback, "best_model_path", "")
            if checkpoint:
                text += f", {checkpoint}"
        log_progress(log, "%s", text)

    # ---- test -------------------------------------------------------------------------------
    def on_test_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        self._testing_since = self._last_line = time.monotonic()
        net = getattr(pl_module, "net", None)
        try:
            name = describe(record(net))
        except (TypeError, KeyError):
            name = type(net).__name__
        if self.best_step is not None and name != "bicubic":
            name += f" (best = step {self.best_step})"
        sets = getattr(trainer.datamodule, "test_data", None) or []
        listed = ", ".join(f"{d.name} x{d.scale} ({len(d)} images)" for d in sets)
        log_progress(log, "testing %s on %s", name, listed or "the test sets")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.is_global_zero or self.every_s is None or self._testing_since is None:
            return
        now = time.monotonic()
        if now - self._last_line < self.every_s:
            return
        sets = getattr(trainer.datamodule, "test_data", None) or []
        which = sets[dataloader_idx] if dataloader_idx < len(sets) else None
        name = f"{which.name} x{which.scale}" if which is not None else f"set {dataloader_idx}"
        counts = trainer.num_test_batches or [0]
        total = counts[dataloader_idx] if dataloader_idx < len(counts) else 0
        log_progress(
            log,
            "testing %s: image %d/%d of this rank (set %d of %d), elapsed %s",
            name,
            batch_idx + 1,
            int(total),
            dataloader_idx + 1,
            len(counts),
            duration(now - self._testing_since),
        )
        self._last_line = now
