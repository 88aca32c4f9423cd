"""What a run says about itself, read off the built objects (never recounted from the
config): the recipe line it logs at start and the ``summary.json`` it leaves."""

from __future__ import annotations

from typing import Any

import lightning as L

from sr_lightning.data.datamodule import SRDataModule, per_device_batch
from sr_lightning.models import count_trainable, describe, record
from sr_lightning.training.callbacks import ImagesPerSecond, MetricHistory
from sr_lightning.training.lit_module import SRLitModule
from sr_lightning.training.precision import precision_label


def arithmetic(trainer: L.Trainer, module: SRLitModule) -> str:
    """``bf16-mixed, fp32 output`` / ``32-true, TF32 convs and matmuls`` / ``32-true, IEEE
    fp32``: the training step's arithmetic (training/precision.py)."""
    return precision_label(
        trainer.precision,
        tf32=bool(module.hparams.get("tf32", False)),
        fp32_output=bool(getattr(module.net, "fp32_output", False)),
        on_gpu=trainer.strategy.root_device.type == "cuda",
    )


def recipe_line(trainer: L.Trainer, module: SRLitModule, datamodule: SRDataModule) -> str:
    """``recipe: global batch 16 = 2 nodes x 4 devices x 2, lr 0.0001 (not rescaled), halved
    every 200000 updates, ...``: the split is the trainer's (an uneven one is an error naming
    both numbers), the schedule the one the optimizer gets (``OptimRecipe.schedule``)."""
    batch, r = datamodule.batch_size, module.recipe
    each = per_device_batch(batch, trainer.world_size)
    devices = trainer.num_devices
    split = f"{devices} device{'s' if devices > 1 else ''} x {each}"
    if trainer.num_nodes > 1:
        split = f"{trainer.num_nodes} nodes x {split}"
    return (
        f"recipe: global batch {batch} = {split}, lr {r.lr:g} (not rescaled), {r.schedule}, "
        f"{r.loss.upper()} loss, {trainer.max_epochs} epochs x "
        f"{datamodule.updates_per_epoch} updates, scales {datamodule.scales}, "
        f"LR patch {datamodule.patch_size}, precision {arithmetic(trainer, module)}"
        + (f", EMA of the weights (decay {r.ema_decay})" if r.ema_decay else "")
    )


def run_summary(
    trainer: L.Trainer,
    module: SRLitModule,
    datamodule: SRDataModule,
    status: str,
    error: str | None,
    wall_s: float,
) -> dict[str, Any]:
    """The ``summary.json`` of a run: what the sweep report tabulates for each job.
    ``wall_time_s``: the whole run, resumes included (``wall_s`` of this process plus the
    training time of the earlier ones up to the checkpoint it resumed from; work they did after
    that checkpoint was done again here and counts once)."""
    history = next((c for c in trainer.callbacks if isinstance(c, MetricHistory)), None)
    throughput = next((c for c in trainer.callbacks if isinstance(c, ImagesPerSecond)), None)
    return {
        "model": describe(record(module.net)),
        "model_args": record(module.net),
        "params": count_trainable(module.net),
        "steps": trainer.global_step,
        "global_batch_size": datamodule.batch_size,
        "per_device_batch_size": datamodule.batch_size // trainer.world_size,
        "world_size": trainer.world_size,
        "precision": arithmetic(trainer, module),
        "wall_time_s": round(wall_s + (history.minutes_before * 60 if history else 0.0), 2),
        "status": status,
        "error": error,
        "best": history.best if history else {},
        "final": history.final if history else {},
        "protocols": {f"{d.name}/x{d.scale}": d.protocol.as_dict() for d in datamodule.val_data},
        "throughput": throughput.summary() if throughput else None,
    }
