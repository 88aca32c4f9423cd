"""The one evaluation engine: Lightning's test loop over :class:`SRLitModule`, whose whole-image
forward is :func:`~sr_lightning.core.inference.super_resolve` (fp32, autocast and TF32 off,
exact tiles, fp32 self-ensemble), scored by :class:`~sr_lightning.core.metrics.SRMetrics`
under each set's protocol. Validation, ``train.py``'s test of the best checkpoint (and the
bicubic rows beside it) and ``eval.py`` all come through here; the rows are
:mod:`sr_lightning.runs.results`'s."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L

from sr_lightning.data.datamodule import SRDataModule
from sr_lightning.models import check_scales, describe, record
from sr_lightning.runs.folder import PER_IMAGE
from sr_lightning.runs.results import (
    PER_IMAGE_COLUMNS,
    RESULT_COLUMNS,
    format_table,
    result_rows,
    write_per_image,
    write_results,
)
from sr_lightning.training.callbacks.progress import ProgressLog
from sr_lightning.training.console import log_progress
from sr_lightning.training.lit_module import SRLitModule

log = logging.getLogger(__name__)


def test_rows(
    trainer: L.Trainer, module: SRLitModule, datamodule: SRDataModule, model_name: str
) -> tuple[list[dict], list[dict]]:
    """Run ``trainer.test`` (on every rank under DDP); (result rows, per-image rows), the same
    on every rank."""
    trainer.test(module, datamodule=datamodule, verbose=False)
    rows = result_rows(module.test_results, model_name, module.hparams.self_ensemble)
    return rows, [{**r, "model": model_name} for r in module.test_images]


def trainer_for(device: str = "auto", progress: bool = False) -> L.Trainer:
    """A one-process fp32 trainer for evaluation (``device``: auto, cpu, cuda, cuda:N); what it
    tests, and a line a minute while it runs, go to the log (:class:`ProgressLog`)."""
    if device == "auto":
        accelerator, devices = "auto", 1
    elif device.startswith("cuda"):
        index = device.partition(":")[2]
        accelerator, devices = "gpu", [int(index)] if index else 1
    else:
        accelerator, devices = device, 1
    return L.Trainer(
        accelerator=accelerator,
        devices=devices,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        callbacks=[ProgressLog(every_n_updates=None, every_s=60)],
    )


def save_results(rows: list[dict], images: list[dict], path: Path) -> None:
    """``results.json`` and, beside it, ``per_image.csv``; say where they are. The caller has
    printed the table (``format_table(rows)``): it goes into the log file (``train.log``,
    ``eval.log``) here, with the paths written."""
    log_progress(log, "results on the test sets:\n%s", format_table(rows), printed=True)
    if write_results(rows, path):
        _say(f"results written to {path}")
    if write_per_image(images, path.with_name(PER_IMAGE)):
        _say(f"per-image results written to {path.with_name(PER_IMAGE)}")


def _say(line: str) -> None:
    """Printed, and into the log file."""
    print(line)
    log_progress(log, "%s", line, printed=True)


def log_result_tables(trainer: L.Trainer, rows: list[dict], images: list[dict]) -> None:
    """The result rows and the per-image rows as tables for loggers that take one (W&B)."""
    data = [[r[c] for c in RESULT_COLUMNS] + [json.dumps(r["protocol"])] for r in rows]
    per_image = [[r[c] for c in PER_IMAGE_COLUMNS] for r in images]
    for logger in trainer.loggers:
        if hasattr(logger, "log_table"):
            columns = [*RESULT_COLUMNS, "protocol"]
            logger.log_table(key="test/results", columns=columns, data=data)
            logger.log_table(key="test/per_image", columns=list(PER_IMAGE_COLUMNS), data=per_image)


def evaluate(
    module: SRLitModule,
    datamodule: SRDataModule,
    model_name: str | None = None,
    device: str = "auto",
) -> tuple[list[dict], list[dict]]:
    """Score ``module``'s network on ``datamodule``'s benchmarks at its scales, in one fp32
    process: (result rows, per-image rows). What ``eval.py`` runs, and a notebook can too:
    ``evaluate(SRLitModule(net, self_ensemble=True), SRDataModule(...))``."""
    check_scales(module.net, datamodule.scales)
    datamodule.check_sets(train=False)  # a missing set or corrupt image: named, no number
    name = model_name or describe(record(module.net))
    return test_rows(trainer_for(device), module, datamodule, name)
