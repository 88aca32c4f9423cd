"""Callbacks and plugins: throughput logging and crash-safe checkpoint writes."""

from __future__ import annotations

import csv
import io
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import CSVLogger

from .history import FILENAME, HEADER, read_history
from .loggers import WriteErrors, truncate_quietly, write_atomically

log = logging.getLogger(__name__)


class ImagesPerSecond(L.Callback):
    """Logs, every N steps, this rank's throughput over the steps since the last log:
    ``train/images_per_sec`` (LR patches per second), ``train/tflops`` (model TFLOP/s, counted
    from the conv shapes of each batch's scale and size by :func:`~sr_lightning.flops.
    train_step_flops`) and ``train/mfu`` (that rate as a fraction of the device's peak).

    Host-side timing over a window of steps: no device synchronisation in the step. The first
    step (warm-up, compilation) and validation are left out. The peak is ``peak_tflops`` or,
    by default, a short matmul measured once at train start in the arithmetic the step uses
    (fp32 on CPU; on GPU bf16 / fp16 under mixed precision, else fp32, TF32 where cuDNN uses
    it). :meth:`summary` (the run's means) goes into ``summary.json``.
    """

    def __init__(self, every_n_steps: int | None = None, peak_tflops: float | None = None):
        if peak_tflops is not None and peak_tflops <= 0:
            raise ValueError(
                f"callbacks.throughput.peak_tflops={peak_tflops!r} must be > 0 (or null: measure)"
            )
        self.every_n_steps = every_n_steps
        self.peak_tflops = peak_tflops
        self.peak_dtype = "given" if peak_tflops is not None else None
        self.flops_per_step: dict[tuple[int, int, int], int] = {}  # (scale, batch, patch)
        self._t0: float | None = None
        self._images = 0
        self._flops = 0
        self._paused_at: float | None = None
        self._total = {"seconds": 0.0, "images": 0, "flops": 0}

    def measure_peak(self, trainer, pl_module) -> None:
        """The device's peak TFLOP/s: a short square matmul (< 1 s on CPU)."""
        from .flops import matmul_peak

        device = pl_module.device
        precision = str(trainer.precision)
        dtype, name = torch.float32, "fp32"
        tf32 = False
        if device.type == "cuda":
            if "bf16" in precision:
                dtype, name = torch.bfloat16, "bf16"
            elif "16" in precision:
                dtype, name = torch.float16, "fp16"
            elif torch.backends.cudnn.allow_tf32:  # fp32 convolutions then run in TF32
                tf32, name = True, "tf32"
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32 or before
        try:
            n = None if device.type == "cuda" else 1024
            self.peak_tflops = matmul_peak(device, dtype, n=n, repeats=5) / 1e12
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before
        self.peak_dtype = name

    def step_flops(self, net: torch.nn.Module, batch: dict) -> int:
        """Model FLOPs of a training step on ``batch`` (cached per scale, batch and patch)."""
        n, _, patch, _ = batch["lr"].shape
        key = (int(batch["scale"]), n, patch)
        if key not in self.flops_per_step:
            from .flops import train_step_flops

            self.flops_per_step[key] = train_step_flops(net, n, patch, key[0])
        return self.flops_per_step[key]

    def on_train_start(self, trainer, pl_module) -> None:
        if self.peak_tflops is None:
            self.measure_peak(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += batch["lr"].shape[0]
        self._flops += self.step_flops(pl_module.net, batch)
        every = self.every_n_steps or trainer.log_every_n_steps
        if self._t0 is None:
            self._t0, self._images, self._flops = time.perf_counter(), 0, 0  # warm-up step
        elif trainer.global_step % every == 0:
            now = time.perf_counter()
            seconds = now - self._t0
            tflops = self._flops / seconds / 1e12
            pl_module.log("train/images_per_sec", self._images / seconds)
            pl_module.log("train/tflops", tflops)
            pl_module.log("train/mfu", tflops / self.peak_tflops)
            total = self._total
            total["seconds"] += seconds
            total["images"] += self._images
            total["flops"] += self._flops
            self._t0, self._images, self._flops = now, 0, 0

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._t0 is not None and not trainer.sanity_checking:
            self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._paused_at is not None:  # the window goes on without the validation time
            self._t0 += time.perf_counter() - self._paused_at
            self._paused_at = None

    def summary(self) -> dict:
        """The run's mean throughput over the logged windows (this process)."""
        t = self._total
        tflops = t["flops"] / t["seconds"] / 1e12 if t["seconds"] else None
        return {
            "images_per_sec": t["images"] / t["seconds"] if t["seconds"] else None,
            "tflops": tflops,
            "mfu": tflops / self.peak_tflops if tflops is not None and self.peak_tflops else None,
            "peak_tflops": self.peak_tflops,
            "peak_dtype": self.peak_dtype,
        }


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
    """NaN/Inf in training: ``action="stop"`` (default) or ``"skip"``.

    - stop: raises :class:`DivergenceError` when the loss is not finite, checked every
      ``check_every_n_steps`` (one host sync each time). No checkpoint is written on the way
      out: the last good one stays the newest.
    - skip: a step whose gradients are not finite changes nothing (its gradients are dropped, so
      Adam leaves weights and moments as they were; the LR schedule goes on). Checked at every
      step, so it costs one host sync per step. More than ``max_skipped`` skipped steps in a
      row stop the run as above.

    Decisions are agreed across DDP ranks, so that all ranks act together.
    """

    ACTIONS = ("stop", "skip")

    def __init__(self, check_every_n_steps: int = 10, action: str = "stop", max_skipped: int = 10):
        if action not in self.ACTIONS:
            raise ValueError(
                f"callbacks.divergence_guard.action={action!r}: allowed values are "
                f"{list(self.ACTIONS)}"
            )
        self.check_every_n_steps = check_every_n_steps
        self.action = action
        self.max_skipped = max_skipped
        self.skipped = 0  # in total
        self._in_a_row = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.action != "skip":
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        bad = not bool(torch.stack([g.isfinite().all() for g in grads]).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            self._in_a_row = 0
            return
        optimizer.zero_grad(set_to_none=True)  # Adam skips parameters without a gradient
        self.skipped += 1
        self._in_a_row += 1
        log.warning("step %d skipped: non-finite gradients", trainer.global_step)
        if self._in_a_row > self.max_skipped:
            raise DivergenceError(
                f"non-finite gradients at {self._in_a_row} steps in a row (up to step "
                f"{trainer.global_step}); the last good checkpoint is kept. Lower optim.lr."
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.action != "stop" or trainer.global_step % self.check_every_n_steps:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            raise DivergenceError(
                f"non-finite training loss at step {trainer.global_step} (loss={loss.item()}); "
                "the last good checkpoint is kept. Lower optim.lr or use model.res_scale < 1."
            )


class MetricHistory(L.Callback):
    """Appends ``step,key,value`` rows to ``<dirpath>/history.csv`` (validation metrics and
    the training wall-clock minutes at each validation, ``train/loss`` every N steps), keeps
    the best and last values, from which ``train.py`` writes ``summary.json`` for
    ``sr_lightning.report``, and draws ``<dirpath>/curves.png`` at the end of ``fit``:
    validation PSNR against updates and against minutes, with the bicubic level."""

    def __init__(self, dirpath: str, every_n_steps: int | None = None):
        self.path = Path(dirpath) / FILENAME
        self.every_n_steps = every_n_steps
        self.best: dict[str, float] = {}
        self.final: dict[str, float] = {}
        self.minutes_before = 0.0  # training time of the run before this process (resume)
        self._started: float | None = None
        self.write_errors = WriteErrors("metric history")

    def minutes(self) -> float:
        """Training wall-clock minutes so far, across resumes."""
        running = (time.monotonic() - self._started) / 60 if self._started is not None else 0.0
        return self.minutes_before + running

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
        return {"best": dict(self.best), "final": dict(self.final), "minutes": self.minutes()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.final = dict(state_dict["best"]), dict(state_dict["final"])
        self.minutes_before = float(state_dict.get("minutes", 0.0))

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = time.monotonic()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            from .pictures import plot_curves

            try:
                plot_curves(read_history(self.path), self.path.parent / "curves.png")
            except OSError as e:
                self.write_errors.report(e, self.path.parent / "curves.png")

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
        rows["time/minutes"] = round(self.minutes(), 4)
        for key, value in rows.items():
            self.final[key] = value
            if key.startswith("time/"):
                continue
            if value == value and value > self.best.get(key, float("-inf")):  # not NaN
                self.best[key] = value
        self._append(trainer, rows)


def drop_csv_rows_from(path: Path, step_column: str, first_stale: int) -> int:
    """Rewrite the CSV ``path`` (atomically; a full disk leaves it as it was, with a warning)
    without rows whose ``step_column`` >= first_stale."""
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], list(reader)
    keep = [r for r in rows if not r.get(step_column) or int(float(r[step_column])) < first_stale]
    if len(keep) < len(rows):
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(keep)
        if not write_atomically(path, text.getvalue()):
            return 0
    return len(rows) - len(keep)


class Resumable(L.Callback):
    """What a killed, pre-empted or requeued run needs to resume where it was.

    - SIGTERM (SLURM pre-emption, ``scancel``, a cluster's grace period): every rank stops after
      the same step and ``<dirpath>/preempted.ckpt`` is written on the way out. Any exception
      raised while the SIGTERM is pending (e.g. data workers killed by the same signal) also
      saves, since the model and optimizer are consistent between steps.
    - SLURM's requeue signal (``#SBATCH --signal=SIGUSR1@90``, with Lightning's
      ``SLURMEnvironment(auto_requeue=True)``): Lightning's own requeue (``hpc_ckpt_N.ckpt`` in
      the run folder, ``scontrol requeue``; the requeued job resumes from it) runs at the end
      of a step on every rank, not inside the signal handler in the middle of one.
    - On resume from a checkpoint at step G, CSV log rows of steps the checkpoint did not see
      (written by the killed process after it) are dropped, so no step is logged twice.

    Lightning 2.6's handlers are replaced during training because they act inside the signal
    handler: its SIGTERM handler broadcasts there and forwards the signal to the other ranks (a
    SIGTERM sent to the whole job reaches a rank twice: mismatched collectives, a hang) and each
    rank then stops on its own flag, after whichever step it got the signal in; its SIGUSR1
    handler saves a checkpoint half-way through a step. Here the handlers only note the signal;
    every ``sync_every_n_steps`` steps the ranks agree (one all-reduce) and act together at
    that step's end. (Private: ``trainer._signal_connector`` and its
    ``received_sigterm`` / ``_slurm_sigusr_handler_fn``; pinned, see tests/test_overrides.py.)
    """

    def __init__(self, dirpath: str, sync_every_n_steps: int = 10):
        self.dirpath = Path(dirpath)
        self.sync_every_n_steps = sync_every_n_steps
        self.saved: Path | None = None
        self.pending = {"stop": False, "requeue": False}
        self._requeue_signal: int | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not (trainer.received_sigterm or self.pending["stop"]) or self.saved is not None:
            return
        trainer._signal_connector.received_sigterm = True  # for train.py's "preempted"
        self.saved = self.dirpath / "preempted.ckpt"
        trainer.save_checkpoint(self.saved)
        if trainer.is_global_zero:
            print(
                f"SIGTERM: checkpoint at step {trainer.global_step} saved to {self.saved}; "
                "resume with ckpt_path=last in the same hydra.run.dir",
                flush=True,
            )

    def _noter(self, what: str):
        def note(signum: int, frame: object) -> None:
            log.info("%s received: acting after the current step", signal.Signals(signum).name)
            self.pending[what] = True

        return note

    def on_train_start(self, trainer, pl_module) -> None:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        # Lightning restores its own handlers after fit
        signal.signal(signal.SIGTERM, self._noter("stop"))
        env = trainer._accelerator_connector.cluster_environment
        if isinstance(env, SLURMEnvironment) and env.auto_requeue:
            self._requeue_signal = env.requeue_signal
            signal.signal(self._requeue_signal, self._noter("requeue"))
        if not trainer.ckpt_path or not trainer.is_global_zero:
            return
        step = trainer.global_step
        # Lightning's CSV rows carry the index of the step being run (G steps done: 0..G-1)
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                drop_csv_rows_from(Path(logger.log_dir) / "metrics.csv", "step", step)
        for callback in trainer.callbacks:  # history.csv rows carry the steps done (<= G)
            if isinstance(callback, MetricHistory):
                drop_csv_rows_from(callback.path, "step", step + 1)

    def _agree(self, trainer) -> tuple[bool, bool]:
        """(stop, requeue), the same on every rank (any rank that got the signal counts)."""
        local = [float(self.pending["stop"]), float(self.pending["requeue"])]
        if trainer.world_size == 1:
            return bool(local[0]), bool(local[1])
        flags = torch.tensor(local, device=trainer.strategy.root_device)
        stop, requeue = trainer.strategy.reduce(flags, reduce_op="sum").tolist()
        return stop > 0, requeue > 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size > 1 and trainer.global_step % self.sync_every_n_steps:
            return
        stop, requeue = self._agree(trainer)
        if requeue:  # Lightning's requeue (hpc checkpoint + scontrol), between two steps
            self.pending["requeue"] = False
            trainer._signal_connector._slurm_sigusr_handler_fn(self._requeue_signal, None)
        if stop:  # Lightning raises SIGTERMException at the end of this step, on every rank
            trainer._signal_connector.received_sigterm = True
