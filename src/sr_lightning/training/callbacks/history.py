"""The run's metric history (``history.csv``), its best and last values (``summary.json``)
and its validation curves (``curves.png``)."""

from __future__ import annotations

import time

import lightning as L

from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.history import HEADER, read_history
from sr_lightning.runs.records import WriteErrors, truncate_quietly
from sr_lightning.training.pictures import plot_curves


class MetricHistory(L.Callback):
    """Appends ``step,key,value`` rows to the run folder's ``history.csv`` (validation metrics
    and the training wall-clock minutes at each validation, ``train/loss`` every
    ``trainer.log_every_n_steps``), keeps the best and last values, from which ``train.py``
    writes ``summary.json`` for the reports, and draws ``curves.png`` at the end of ``fit``:
    validation PSNR against updates and against minutes, with the bicubic level."""

    def __init__(self, run_dir: str):
        self.folder = RunFolder(run_dir)
        self.path = self.folder.history
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
        self.minutes_before = float(state_dict["minutes"])

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = time.monotonic()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            try:
                plot_curves(read_history(self.path), self.folder.curves)
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
        rows["time/minutes"] = round(self.minutes(), 4)
        for key, value in rows.items():
            self.final[key] = value
            if key.startswith("time/"):
                continue
            if value == value and value > self.best.get(key, float("-inf")):  # not NaN
                self.best[key] = value
        self._append(trainer, rows)
