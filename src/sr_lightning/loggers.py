"""CSV logging that survives a second process writing the same run (resume, ddp_spawn test)."""

from __future__ import annotations

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    """Merges the header of an existing ``metrics.csv`` into its keys before each save.

    Lightning's writer only knows the keys its own copy logged; when another process (a resumed
    run, or the ``ddp_spawn`` worker of ``trainer.test``, which gets a pickled copy) adds a key,
    it rewrites the file with its own keys only and fails on the older rows ("dict contains
    fields not in fieldnames").
    """

    def _check_log_dir_exists(self) -> None:
        """Keep an existing ``metrics.csv`` (Lightning deletes it: a resumed run lost its past)."""

    def save(self) -> None:
        if self.metrics and self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r") as f:
                header = [k for k in f.readline().strip().split(",") if k]
            self.metrics_keys = header + [k for k in self.metrics_keys if k not in header]
        super().save()


class CSVLogger(_CSVLogger):
    """:class:`lightning.pytorch.loggers.CSVLogger` that appends safely across processes."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if not isinstance(self._experiment, _AppendingWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
