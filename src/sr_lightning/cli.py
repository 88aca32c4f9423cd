"""Bodies of the Hydra entry points (the scripts at the repo root only compose configs)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from .callbacks import DivergenceError
from .checkpoint import load_state_dict, model_from_state_dict
from .config_check import check_keys
from .evaluate import check_scales, evaluate, format_table, write_results
from .wandb_mode import wandb_mode

log = logging.getLogger(__name__)

# keys of the `model` group that configure the LightningModule, not the network
MODULE_OPTIONS = ("init_from", "compile", "channels_last", "self_ensemble", "val_tile")


def auto_precision() -> str:
    """bf16-mixed where a GPU runs it natively, fp32 elsewhere (CPU bf16 is 4-8x slower here)."""
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


OmegaConf.register_new_resolver("sr_auto_precision", auto_precision, replace=True)
OmegaConf.register_new_resolver("sr_on_gpu", torch.cuda.is_available, replace=True)
OmegaConf.register_new_resolver("sr_wandb_mode", wandb_mode, replace=True)


def model_name(cfg: DictConfig) -> str:
    """The chosen ``model=`` config name (e.g. ``edsr_baseline``)."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("model") or cfg.model._target_
    return cfg.model._target_.rsplit(".", 1)[-1].lower()


def build_net(model_cfg: DictConfig) -> torch.nn.Module:
    """The network of a ``model`` config (its module options left out)."""
    net_cfg = {k: v for k, v in model_cfg.items() if k not in MODULE_OPTIONS}
    return hydra.utils.instantiate(OmegaConf.create(net_cfg))


def run_eval(cfg: DictConfig) -> list[dict]:
    """``eval.py``: the model of ``ckpt_path`` (read off its tensor shapes) or of ``model=``,
    scored on the benchmarks; prints the table and writes the JSON rows."""
    check_keys(cfg, "eval")
    name = model_name(cfg)
    if cfg.ckpt_path:
        model = model_from_state_dict(load_state_dict(cfg.ckpt_path))
        name = Path(cfg.ckpt_path).stem
        log.info("loaded %s: %s x%s", cfg.ckpt_path, type(model).__name__, list(model.scales))
    else:
        model = build_net(cfg.model)
    rows = evaluate(
        model,
        cfg.data.root,
        list(cfg.data.benchmarks),
        list(cfg.data.scales),
        model_name=name,
        self_ensemble=cfg.self_ensemble,
        device=cfg.device,
        tile=cfg.tile,
        tile_overlap=cfg.tile_overlap,
        cache_dir=cfg.data.cache_dir,
        div2k_range=tuple(cfg.data.div2k_val_range),
    )
    print(format_table(rows))
    path = write_results(rows, cfg.results_path)
    print(f"results written to {path}")
    return rows


def world_size(cfg: DictConfig) -> int:
    """Processes of a run: trainer.devices x trainer.num_nodes (a non-integer device spec,
    e.g. "auto", counts as 1)."""
    devices = cfg.trainer.get("devices", 1)
    if not isinstance(devices, int):
        devices = len(devices) if not isinstance(devices, str) else 1
    return max(devices, 1) * cfg.trainer.get("num_nodes", 1)


def validate_train_config(cfg: DictConfig) -> None:
    """Checks that need the whole config; each error names the key."""
    check_keys(cfg, "train")  # unknown keys first (ConfigKeyError names each one)
    glob = cfg.data.get("global_batch_size")
    world = world_size(cfg)
    if world > 1 and len(cfg.data.scales) > 1:
        # MDSR trains one scale per step: the other scales' modules get no gradient, which DDP
        # must be told about (else it stops with "parameters that were not used")
        strategy = cfg.trainer.get("strategy") or "auto"
        finding = {
            "auto": "ddp_find_unused_parameters_true",
            "ddp": "ddp_find_unused_parameters_true",
            "ddp_spawn": "ddp_spawn_find_unused_parameters_true",
        }
        if strategy in finding:
            log.info("MDSR under DDP: trainer.strategy=%s", finding[strategy])
            with open_dict(cfg):
                cfg.trainer.strategy = finding[strategy]
    if glob is not None:
        if glob % world:
            raise ValueError(
                f"data.global_batch_size={glob} is not divisible by trainer.devices x "
                f"trainer.num_nodes = {world}"
            )
        with open_dict(cfg):
            cfg.data.batch_size = glob // world
    with open_dict(cfg):
        cfg.data.pop("global_batch_size", None)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``ckpt_path=last``: the newest checkpoint in this run folder's ``checkpoints/`` (the
    epoch-end ``last.ckpt`` or the every-N-steps ``step*.ckpt``)."""
    if cfg.ckpt_path != "last":
        return cfg.ckpt_path
    folder = Path(cfg.paths.output_dir) / "checkpoints"
    found = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"ckpt_path=last: no checkpoint in {folder}. To resume a run, start it in its own "
            "folder: python train.py hydra.run.dir=<that run's folder> ckpt_path=last"
        )
    return str(found[-1])


SWEEP_PREFIX = "sweep:x"


def find_sweep_checkpoint(output_dir: Path, scale: int) -> str:
    """``model.init_from=sweep:x2``: the best checkpoint of the completed x2 job of this sweep."""
    candidates = []
    for job in sorted(Path(output_dir).parent.iterdir()):
        summary, config = job / "summary.json", job / "checkpoints" / "config.yaml"
        if job == Path(output_dir) or not summary.is_file() or not config.is_file():
            continue
        done = json.loads(summary.read_text())["status"] == "completed"
        if done and list(OmegaConf.load(config).data.scales) == [scale]:
            candidates += sorted((job / "checkpoints").glob("best-*.ckpt"))
    if not candidates:
        raise FileNotFoundError(
            f"model.init_from=sweep:x{scale}: no completed x{scale} job with a best checkpoint "
            f"in {Path(output_dir).parent}; run the x{scale} stage first in the same sweep"
        )
    return str(candidates[-1])


def _strategy_for_hydra(cfg: DictConfig) -> None:
    """Under ``-m``, run DDP as ``ddp_spawn``: Lightning's ``ddp`` launcher re-runs sys.argv
    in each child, so every rank would start the whole sweep again (see README)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    if SLURMEnvironment.detect():  # srun started one process per rank: keep ddp
        return
    if cfg.trainer.get("strategy") in ("ddp", "ddp_find_unused_parameters_true"):
        spawn = (
            "ddp_spawn"
            if cfg.trainer.strategy == "ddp"
            else "ddp_spawn_find_unused_parameters_true"
        )
        log.info("multirun: trainer.strategy=%s runs as %s", cfg.trainer.strategy, spawn)
        with open_dict(cfg):
            cfg.trainer.strategy = spawn


def rows_from_test(metrics: dict, model: str, ensemble: bool) -> list[dict]:
    """Result rows (``eval.py``'s JSON format) from ``test/<Set>/x<s>/<metric>`` values."""
    rows = []
    for key in metrics:
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "test" or parts[3] != "psnr":
            continue
        prefix = key[: -len("psnr")]
        rows.append(
            {
                "dataset": parts[1],
                "scale": int(parts[2][1:]),
                "psnr": round(float(metrics[key]), 4),
                "ssim": round(float(metrics[prefix + "ssim"]), 5),
                "model": model,
                "self_ensemble": ensemble,
                "n_images": int(metrics[prefix + "n_images"]),
            }
        )
    return rows


def test_and_report(trainer, module, datamodule, cfg: DictConfig) -> dict:
    """Test the best checkpoint on the benchmarks; print and save it next to bicubic."""
    from .models import Bicubic

    best = trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
    tested = trainer.test(
        module, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False
    )[0]
    if trainer.is_global_zero:
        rows = rows_from_test(tested, model_name(cfg), module.hparams.self_ensemble)
        rows += evaluate(
            Bicubic(datamodule.scales),
            datamodule.root,
            datamodule.benchmarks,
            datamodule.scales,
            model_name="bicubic",
            cache_dir=datamodule.cache_dir,
            div2k_range=datamodule.div2k_val_range,
        )
        print(format_table(rows))
        path = write_results(rows, Path(cfg.paths.output_dir) / "results.json")
        print(f"results written to {path}")
    return tested


def build_training(cfg: DictConfig, extra_callbacks: list | None = None) -> tuple:
    """(trainer, module, datamodule) of a ``train.py`` config; also used by the benchmarks."""
    import lightning as L

    from .lit_module import SRLitModule

    datamodule = hydra.utils.instantiate(cfg.data)
    net = build_net(cfg.model)
    check_scales(net, datamodule.scales)
    # plain containers: checkpoints must load with weights_only=True
    options = {k: cfg.model[k] for k in MODULE_OPTIONS if k in cfg.model}
    module = SRLitModule(net, **OmegaConf.to_container(cfg.optim, resolve=True), **options)
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

    validate_train_config(cfg)
    _strategy_for_hydra(cfg)
    init_from = str(cfg.model.get("init_from") or "")
    if init_from.startswith(SWEEP_PREFIX):
        with open_dict(cfg):
            scale = int(init_from[len(SWEEP_PREFIX) :])
            cfg.model.init_from = find_sweep_checkpoint(Path(cfg.paths.output_dir), scale)
    L.seed_everything(cfg.seed, workers=True)
    trainer, module, datamodule = build_training(cfg)
    out = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, out / "checkpoints" / "config.yaml", resolve=True)
    for logger in trainer.loggers:  # the whole resolved config (rank zero inside)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    start, status, error, metrics = time.time(), "failed", None, {}
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg))
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.test_after_fit and datamodule.benchmarks:
            metrics.update(test_and_report(trainer, module, datamodule, cfg))
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
            log.warning("pre-empted by SIGTERM at step %d", trainer.global_step)
            raise SystemExit(128 + signal.SIGTERM) from e  # 143, as if killed by the signal
        raise
    finally:
        if trainer.is_global_zero:
            write_summary(cfg, trainer, module, status, error, time.time() - start)
            wandb = sys.modules.get("wandb")  # imported only if a W&B logger was used
            if wandb is not None and wandb.run is not None:
                wandb.finish()


def write_summary(cfg: DictConfig, trainer, module, status: str, error, wall: float) -> None:
    """``<run_dir>/summary.json``: what ``sr_lightning.report`` tabulates for each job."""
    from .callbacks import MetricHistory
    from .models import count_trainable

    history = next((c for c in trainer.callbacks if isinstance(c, MetricHistory)), None)
    summary = {
        "model": model_name(cfg),
        "params": count_trainable(module.net),
        "steps": trainer.global_step,
        "wall_time_s": round(wall, 2),
        "status": status,
        "error": error,
        "best": history.best if history else {},
        "final": history.final if history else {},
    }
    path = Path(cfg.paths.output_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
