"""``python train.py``: fit, then test the best checkpoint on the benchmarks next to bicubic.

The script at the repo root composes the config (Hydra); :mod:`sr_lightning.config.rules`
shapes it, :mod:`sr_lightning.config.build` builds the objects, and the run folder is written
through :mod:`sr_lightning.runs`.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from sr_lightning.config.build import build_training
from sr_lightning.config.keys import check_keys
from sr_lightning.config.rules import finished_sweep_job, shape_train_config
from sr_lightning.config.sweep_devices import hold_a_free_device_slot
from sr_lightning.data.io import ImageError
from sr_lightning.models import Bicubic, count_trainable, describe, record
from sr_lightning.models.checkpoint import load_state_dict
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.results import format_table
from sr_lightning.training.callbacks import DivergenceError
from sr_lightning.training.console import quiet_library_noise
from sr_lightning.training.evaluation import log_result_tables, save_results, test_rows, trainer_for
from sr_lightning.training.lit_module import SRLitModule
from sr_lightning.training.summary import recipe_line, run_summary

log = logging.getLogger(__name__)


def test_and_report(trainer, module, datamodule, folder: RunFolder) -> list[dict]:
    """Test the best checkpoint on the benchmarks, and bicubic beside it, through the same
    test loop as ``eval.py``; print the table and save ``results.json`` (rank zero)."""
    best = trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
    name = describe(record(module.net))
    # ddp_spawn (a DDP job of a multirun) keeps a test's results in its workers: test in this
    # process then, on one device (the numbers are the same: each image is scored once)
    spawned = isinstance(trainer.strategy.launcher, _MultiProcessingLauncher)
    tester = trainer_for() if spawned else trainer
    # the best checkpoint's weights, loaded here: its state_dict is what eval.py scores (with
    # optim.ema_decay, the averaged weights; Lightning's ckpt_path= would restore the raw ones)
    if best:
        module.net.load_state_dict(load_state_dict(best))
    rows, images = test_rows(tester, module, datamodule, name)
    bicubic = SRLitModule(Bicubic(datamodule.scales), log_prefix="bicubic/")
    more, more_images = test_rows(tester, bicubic, datamodule, "bicubic")
    rows, images = rows + more, images + more_images
    if trainer.is_global_zero:
        print(format_table(rows))
        save_results(rows, images, folder.results)
        log_result_tables(trainer, rows, images)
    return rows


def divergence_message(error: BaseException) -> str | None:
    """The message of a :class:`DivergenceError`, also when a ``ddp_spawn`` worker raised it
    (the parent then gets a ``ProcessRaisedException`` holding the worker's traceback)."""
    if isinstance(error, DivergenceError):
        return str(error)
    marker = f"{DivergenceError.__name__}: "
    if type(error).__name__ == "ProcessRaisedException" and marker in str(error):
        return str(error).split(marker, 1)[1].strip().splitlines()[0]
    return None


def run_train(cfg: DictConfig) -> dict:
    """``train.py``: fit, then test the best checkpoint next to bicubic; returns the metrics.
    Rank zero records its process in the run folder (``process.json``) from start to end: a
    report tells a running job from a killed one (:func:`sr_lightning.runs.job.running`)."""
    quiet_library_noise()
    check_keys(cfg, "train")  # unknown keys first (ConfigKeyError names each one)
    if (done := finished_sweep_job(cfg)) is not None:  # a sweep run again: not trained twice
        log.info("job %s: %s already, not trained again", cfg.paths.output_dir, done["status"])
        return {"val/psnr": float(done.get("best", {}).get("val/psnr", float("nan")))}
    folder = RunFolder(cfg.paths.output_dir)
    recorder = rank_zero_only.rank == 0  # set from the environment (RANK, LOCAL_RANK, SLURM)
    with hold_a_free_device_slot(cfg) as device:  # hydra/launcher=parallel only
        if recorder:
            folder.write_process(device)
        else:
            leave_the_log_to_rank_zero(folder)
        try:
            return fit_and_test(cfg, folder)
        finally:
            if recorder:
                folder.end_process()


def leave_the_log_to_rank_zero(folder: RunFolder) -> None:
    """The processes of other ranks (under torchrun or srun: every node's, each with its own
    Hydra) write nothing into the shared run folder's ``train.log``; their console stays."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and (
            Path(handler.baseFilename).resolve() == folder.log.resolve()
        ):
            root.removeHandler(handler)
            handler.close()


def fit_and_test(cfg: DictConfig, folder: RunFolder) -> dict:
    """The body of :func:`run_train`: shape the config, build, fit, test, write the summary."""
    shape_train_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    trainer, module, datamodule = build_training(cfg)
    rank_zero_only(log.info)(recipe_line(trainer, module, datamodule))
    rank_zero_only(log.info)(
        "model: %s, %s trainable parameters",
        describe(record(module.net)),
        f"{count_trainable(module.net):,}",
    )
    resuming = cfg.ckpt_path is not None
    if trainer.is_global_zero and not (resuming and folder.recorded_config.exists()):
        folder.write_config(OmegaConf.to_yaml(cfg, resolve=True))
    for logger in trainer.loggers:  # the whole resolved config (rank zero inside)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    start, status, error, metrics = time.time(), "failed", None, {}
    try:
        datamodule.check_sets(decode=trainer.is_global_zero)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.test_after_fit and datamodule.benchmarks:
            test_and_report(trainer, module, datamodule, folder)
        status = "completed"
        return metrics
    except BaseException as e:
        error = f"{type(e).__name__}: {e}"
        if (message := divergence_message(e)) is not None:
            status, error = "diverged", message  # a result, not a crash: a sweep goes on
            log.error("run diverged: %s", message)
            return {"val/psnr": float("nan")}
        if trainer.received_sigterm:  # pre-empted: checkpoint saved by the Resumable callback
            status = "preempted"
            error = f"SIGTERM at step {trainer.global_step}: resume with ckpt_path=last"
            log.warning("pre-empted by SIGTERM at step %d", trainer.global_step)
            raise SystemExit(128 + signal.SIGTERM) from e  # 143, as if killed by the signal
        if isinstance(e, KeyboardInterrupt | SystemExit) and trainer.interrupted:
            status = "interrupted"  # Ctrl-C: Lightning shut down and exits with 1
            error = f"Ctrl-C (KeyboardInterrupt) at step {trainer.global_step}"
            raise SystemExit(128 + signal.SIGINT) from e  # 130, as a shell reports Ctrl-C
        if isinstance(e, FileNotFoundError | ImageError):  # a data set or file, named
            log.error("%s", e)
            raise SystemExit(1) from None
        raise
    finally:
        # a resume that fails before it restored anything leaves the run's summary as it was
        if trainer.is_global_zero and not (resuming and trainer.global_step == 0):
            wall = time.time() - start
            folder.write_summary(run_summary(trainer, module, datamodule, status, error, wall))
        if trainer.is_global_zero:
            say_where_the_pictures_are(folder)
            finish_wandb()


def say_where_the_pictures_are(folder: RunFolder) -> None:
    samples = sorted(folder.samples.glob("*.png"))
    if samples:
        print(f"pictures: {len(samples)} validation crops in {folder.samples}")
    if folder.curves.is_file():
        print(f"curves: {folder.curves}")


def finish_wandb() -> None:
    """Close the W&B run (a multirun's next job must not log into it) and say where it went:
    its page, or the offline folder and the ``wandb sync`` command that uploads it."""
    wandb = sys.modules.get("wandb")  # imported only if a W&B logger was used
    if wandb is None or wandb.run is None:
        return
    run = wandb.run
    offline = run.settings.mode in ("offline", "dryrun")
    where = run.settings.sync_dir if offline else run.url
    wandb.finish()
    if offline:
        print(f"W&B: offline run {run.id} in {where}\n  upload it with: wandb sync {where}")
    elif where:
        print(f"W&B: {where}")
