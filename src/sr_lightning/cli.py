"""Bodies of the Hydra entry points: they only run (the scripts at the repo root compose the
config; :mod:`.config_rules` shapes it; :mod:`.evaluate` scores)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import hydra
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from .callbacks import DivergenceError
from .checkpoint import load_network, load_state_dict
from .compare import PER_IMAGE
from .config_check import ConfigKeyError, check_command_line, check_keys
from .config_rules import (
    finished_sweep_job,
    recipe_line,
    restore_run_overrides,
    shape_train_config,
    world_size,
)
from .console import quiet_library_noise
from .data.io import ImageError
from .evaluate import (
    PER_IMAGE_COLUMNS,
    check_scales,
    evaluate,
    format_table,
    test_rows,
    trainer_for,
    write_per_image,
    write_results,
)
from .loggers import write_atomically
from .models import Bicubic, count_trainable, describe, record

log = logging.getLogger(__name__)


def prepare_command_line(config_name: str, argv: list[str]) -> list[str]:
    """What ``train.py`` / ``eval.py`` do before Hydra sees the command line: a resume gets
    its run's own overrides back (``train``), and a misspelt key gets our did-you-mean."""
    if config_name == "train":
        argv = restore_run_overrides(argv)
    try:
        check_command_line(config_name, argv)
    except ConfigKeyError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return argv


def eval_network(cfg: DictConfig):
    """(network, name) that ``eval.py`` scores: ``ckpt_path``'s (its record, or its shapes),
    else ``model=``'s, which must not be a randomly initialised trainable network."""
    if cfg.ckpt_path:
        net, _ = load_network(cfg.ckpt_path, res_scale=cfg.get("res_scale"), echo=log.warning)
        log.info("loaded %s: %s x%s", cfg.ckpt_path, type(net).__name__, list(net.scales))
        return net, Path(cfg.ckpt_path).stem
    net = hydra.utils.instantiate(cfg.model.net)
    if count_trainable(net):
        raise ValueError(
            f"model={cfg.model.net.get('preset')} without ckpt_path= would score a "
            "randomly initialised network: pass ckpt_path=<checkpoint or authors' .pt>, or "
            "model=bicubic for the bicubic rows"
        )
    return net, describe(record(net))


def run_eval(cfg: DictConfig) -> list[dict]:
    """``eval.py``: score the network on ``data.benchmarks`` at ``data.scales`` (default: every
    scale it has); prints the table and writes the JSON rows."""
    quiet_library_noise()
    check_keys(cfg, "eval")
    try:
        return score_and_report(cfg)
    except (FileNotFoundError, ImageError, ValueError) as e:  # named files and keys: no trace
        log.error("%s", e)
        raise SystemExit(1) from None


def score_and_report(cfg: DictConfig) -> list[dict]:
    net, name = eval_network(cfg)
    scales = list(cfg.data.scales) if cfg.data.get("scales") else list(net.scales)
    images: list[dict] = []
    rows = evaluate(
        net,
        cfg.data.root,
        list(cfg.data.benchmarks),
        scales,
        model_name=name,
        self_ensemble=cfg.self_ensemble,
        device=cfg.device,
        tile=cfg.tile,
        tile_overlap=cfg.tile_overlap,
        cache_dir=cfg.data.cache_dir,
        div2k_range=tuple(cfg.data.div2k_val_range),
        protocol=cfg.data.protocol,
        degradation=cfg.data.degradation,
        num_workers=min(cfg.data.num_workers, 1),
        per_image=images,
    )
    print(format_table(rows))
    save_results(rows, images, Path(cfg.results_path))
    return rows


def test_and_report(trainer, module, datamodule, cfg: DictConfig) -> list[dict]:
    """Test the best checkpoint on the benchmarks, and bicubic beside it, through the same
    test loop; print the table and save ``results.json`` (rank zero)."""
    from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

    from .lit_module import SRLitModule

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
        save_results(rows, images, Path(cfg.paths.output_dir) / "results.json")
        log_result_tables(trainer, rows, images)
    return rows


def save_results(rows: list[dict], images: list[dict], path: Path) -> None:
    """``results.json`` and, beside it, ``per_image.csv``; say where they are."""
    if write_results(rows, path):
        print(f"results written to {path}")
    if write_per_image(images, path.with_name(PER_IMAGE)):
        print(f"per-image results written to {path.with_name(PER_IMAGE)}")


def log_result_tables(trainer, rows: list[dict], images: list[dict]) -> None:
    """The result rows and the per-image rows as tables for loggers that take one (W&B)."""
    columns = ["dataset", "scale", "model", "self_ensemble", "psnr", "ssim", "n_images"]
    data = [[r[c] for c in columns] + [json.dumps(r["protocol"])] for r in rows]
    per_image = [[r[c] for c in PER_IMAGE_COLUMNS] for r in images]
    for logger in trainer.loggers:
        if hasattr(logger, "log_table"):
            logger.log_table(key="test/results", columns=[*columns, "protocol"], data=data)
            logger.log_table(key="test/per_image", columns=list(PER_IMAGE_COLUMNS), data=per_image)


def build_training(cfg: DictConfig, extra_callbacks: list | None = None) -> tuple:
    """(trainer, module, datamodule) of a ``train.py`` config; also used by the benchmarks."""
    import lightning as L

    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model)
    check_scales(module.net, datamodule.scales)
    # named entries; one set to null (callbacks.progress_bar=null) is switched off
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks + (extra_callbacks or []), logger=loggers or False
    )
    return trainer, module, datamodule


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
    """``train.py``: fit, then test the best checkpoint next to bicubic; returns the metrics."""
    import lightning as L

    quiet_library_noise()
    check_keys(cfg, "train")  # unknown keys first (ConfigKeyError names each one)
    if (done := finished_sweep_job(cfg)) is not None:  # a sweep run again: not trained twice
        log.info("job %s: %s already, not trained again", cfg.paths.output_dir, done["status"])
        return {"val/psnr": float(done.get("best", {}).get("val/psnr", float("nan")))}
    shape_train_config(cfg)
    rank_zero_only(log.info)(recipe_line(cfg))
    L.seed_everything(cfg.seed, workers=True)
    trainer, module, datamodule = build_training(cfg)
    rank_zero_only(log.info)(
        "model: %s, %s trainable parameters",
        describe(record(module.net)),
        f"{count_trainable(module.net):,}",
    )
    out = Path(cfg.paths.output_dir)
    resuming = cfg.ckpt_path is not None
    if trainer.is_global_zero and not (resuming and (out / "checkpoints" / "config.yaml").exists()):
        write_atomically(out / "checkpoints" / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    for logger in trainer.loggers:  # the whole resolved config (rank zero inside)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    start, status, error, metrics = time.time(), "failed", None, {}
    try:
        datamodule.check_sets(decode=trainer.is_global_zero)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.test_after_fit and datamodule.benchmarks:
            test_and_report(trainer, module, datamodule, cfg)
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
            write_summary(cfg, trainer, module, datamodule, status, error, time.time() - start)
        if trainer.is_global_zero:
            say_where_the_pictures_are(out)
            finish_wandb()


def say_where_the_pictures_are(out: Path) -> None:
    samples = sorted((out / "samples").glob("*.png"))
    if samples:
        print(f"pictures: {len(samples)} validation crops in {out / 'samples'}")
    if (out / "curves.png").is_file():
        print(f"curves: {out / 'curves.png'}")


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


def write_summary(
    cfg: DictConfig, trainer, module, datamodule, status: str, error, wall: float
) -> None:
    """``<run_dir>/summary.json``: what ``sr_lightning.report`` tabulates for each job."""
    from .callbacks import ImagesPerSecond, MetricHistory

    history = next((c for c in trainer.callbacks if isinstance(c, MetricHistory)), None)
    summary = {
        "model": describe(record(module.net)),
        "model_args": record(module.net),
        "params": count_trainable(module.net),
        "steps": trainer.global_step,
        "global_batch_size": datamodule.batch_size,
        "per_device_batch_size": datamodule.batch_size // world_size(cfg),
        "wall_time_s": round(wall, 2),
        "status": status,
        "error": error,
        "best": history.best if history else {},
        "final": history.final if history else {},
        "protocols": {f"{d.name}/x{d.scale}": d.protocol.as_dict() for d in datamodule.val_data},
        "throughput": next(
            (c.summary() for c in trainer.callbacks if isinstance(c, ImagesPerSecond)), None
        ),
    }
    text = json.dumps(summary, indent=2, allow_nan=True) + "\n"
    write_atomically(Path(cfg.paths.output_dir) / "summary.json", text)
