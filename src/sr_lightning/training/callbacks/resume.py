"""What a killed, pre-empted or requeued run needs to resume exactly where it was: atomic
checkpoint writes, SIGTERM / SLURM requeue acted on between steps, and no log row twice."""

from __future__ import annotations

import csv
import io
import logging
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.records import write_atomically
from sr_lightning.training.callbacks.history import MetricHistory
from sr_lightning.training.loggers import CSVLogger

log = logging.getLogger(__name__)


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
      the same step and ``checkpoints/preempted.ckpt`` is written on the way out. Any exception
      raised while the SIGTERM is pending (e.g. data workers killed by the same signal) also
      saves, since the model and optimizer are consistent between steps.
    - SLURM's requeue signal (``#SBATCH --signal=SIGUSR1@90``, with Lightning's
      ``SLURMEnvironment(auto_requeue=True)``): Lightning's own requeue (``hpc_ckpt_N.ckpt`` in
      the run folder, ``scontrol requeue``; the requeued job resumes from it) runs at the end
      of a step on every rank, not inside the signal handler in the middle of one.
    - On resume from a checkpoint at step G, CSV log rows of steps the checkpoint did not see
      (written by the killed process after it) are dropped, so no step is logged twice.
    - With a weight-averaging callback (``optim.ema_decay``: Lightning's EMAWeightAveraging),
      the module holds the averaged weights during validation, swapped back at its end. A stop
      that ends a validation half-way (Lightning reads the SIGTERM flag after each validation
      batch: a flag raised at the end of the step before a validation stops it after one
      batch; a data worker killed by the same signal) swaps them back, through the callback's
      own ``on_validation_epoch_end``, before saving: ``preempted.ckpt`` holds the raw weights as
      ``current_model_state`` and the averaged ones as ``state_dict``, as every checkpoint
      does. Which weights the module holds is told by a checksum of its raw weights taken at
      ``on_validation_start``, before any callback's ``on_validation_epoch_start`` swaps.
    - Only ``fit`` saves: a SIGTERM during the test after it (the module then holds the best
      checkpoint's weights) leaves the checkpoints of the fit, from which a resume tests.

    Lightning 2.6's handlers are replaced during training because they act inside the signal
    handler: its SIGTERM handler broadcasts there and forwards the signal to the other ranks (a
    SIGTERM sent to the whole job reaches a rank twice: mismatched collectives, a hang) and each
    rank then stops on its own flag, after whichever step it got the signal in; its SIGUSR1
    handler saves a checkpoint half-way through a step. Here the handlers only note the signal;
    every ``sync_every_n_steps`` steps the ranks agree (one all-reduce) and act together at
    that step's end. (Private: ``trainer._signal_connector`` and its
    ``received_sigterm`` / ``_slurm_sigusr_handler_fn``; pinned, see tests/test_overrides.py.)
    """

    def __init__(self, run_dir: str, sync_every_n_steps: int = 10):
        self.folder = RunFolder(run_dir)
        self.sync_every_n_steps = sync_every_n_steps
        self.saved: Path | None = None
        self.pending = {"stop": False, "requeue": False}
        self._requeue_signal: int | None = None
        self._raw_checksum: torch.Tensor | None = None  # during a validation, with averaging

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not (trainer.received_sigterm or self.pending["stop"]) or self.saved is not None:
            return
        trainer._signal_connector.received_sigterm = True  # for train.py's "preempted"
        if trainer.state.fn != TrainerFn.FITTING:
            return  # the test after fit: the module holds the best checkpoint's weights
        if not self._raw_weights_in_place(trainer, pl_module):
            log.error(
                "SIGTERM at step %d during validation: the raw weights could not be swapped "
                "back; no preempted.ckpt (a resume starts from the newest checkpoint)",
                trainer.global_step,
            )
            return
        self.saved = self.folder.preempted
        trainer.save_checkpoint(self.saved)
        if trainer.is_global_zero:
            print(
                f"SIGTERM: checkpoint at step {trainer.global_step} saved to {self.saved}; "
                "resume with ckpt_path=last in the same hydra.run.dir",
                flush=True,
            )

    @staticmethod
    def _averaging(trainer) -> list[L.Callback]:
        from lightning.pytorch.callbacks import WeightAveraging

        return [c for c in trainer.callbacks if isinstance(c, WeightAveraging)]

    @staticmethod
    def _checksum(pl_module) -> torch.Tensor:
        """One float64 sum per parameter and buffer, in the order the averaging swaps them."""
        tensors = [*pl_module.parameters(), *pl_module.buffers()]
        return torch.stack([t.detach().sum(dtype=torch.float64) for t in tensors]).cpu()

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING and self._averaging(trainer):
            self._raw_checksum = self._checksum(pl_module)  # before any swap

    def on_validation_end(self, trainer, pl_module) -> None:
        self._raw_checksum = None  # swapped back in on_validation_epoch_end

    def _raw_weights_in_place(self, trainer, pl_module) -> bool:
        """Swap the raw weights back into the module if a validation stopped half-way left
        the averaged ones there; whether the module now holds the raw weights."""
        if self._raw_checksum is None:
            return True  # not in a validation (or no averaging): the raw weights are there
        if torch.equal(self._checksum(pl_module), self._raw_checksum):
            return True  # not swapped yet (or the averaged weights equal the raw ones)
        averaging = self._averaging(trainer)
        if len(averaging) != 1:
            return False
        averaging[0].on_validation_epoch_end(trainer, pl_module)  # its swap back
        restored = torch.equal(self._checksum(pl_module), self._raw_checksum)
        if restored:
            self._raw_checksum = None
            log.info("SIGTERM during validation: raw weights swapped back before saving")
        return restored

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
