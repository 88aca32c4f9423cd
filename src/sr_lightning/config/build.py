"""The objects of a run, built once from its config (``_target_`` instantiation, as in
lightning-hydra-template): the data module from ``cfg.data``, the LightningModule from
``cfg.model`` (which holds the network node ``cfg.model.net``), the callbacks, loggers and
trainer. Everything derived (world size, per-device batch, scales) is read off these objects."""

from __future__ import annotations

import hydra
import lightning as L
from omegaconf import DictConfig
from torch import nn

from sr_lightning.data.datamodule import SRDataModule, per_device_batch
from sr_lightning.models import check_scales
from sr_lightning.training.lit_module import SRLitModule


def build_training(
    cfg: DictConfig, extra_callbacks: list | None = None
) -> tuple[L.Trainer, SRLitModule, SRDataModule]:
    """(trainer, module, datamodule) of a ``train.py`` config; also used by the benchmarks.
    A global batch that does not split over the trainer's processes is refused here."""
    datamodule: SRDataModule = hydra.utils.instantiate(cfg.data)
    module: SRLitModule = hydra.utils.instantiate(cfg.model)
    check_scales(module.net, datamodule.scales)
    # named entries; one set to null (callbacks.progress_bar=null) is switched off
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks + (extra_callbacks or []), logger=loggers or False
    )
    per_device_batch(datamodule.batch_size, trainer.world_size)
    return trainer, module, datamodule


def build_evaluation(cfg: DictConfig, net: nn.Module) -> tuple[SRLitModule, SRDataModule]:
    """(module, datamodule) of an ``eval.py`` config around the loaded ``net``: the same
    ``cfg.model`` switches as training (``model.self_ensemble``, ``model.val_tile``, ...) and
    the same ``cfg.data`` (its ``benchmarks`` are the test sets; nothing is trained)."""
    datamodule: SRDataModule = hydra.utils.instantiate(cfg.data, val_sets=[])
    module: SRLitModule = hydra.utils.instantiate(cfg.model, net=net, init_from=None)
    return module, datamodule
