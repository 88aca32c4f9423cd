"""Bodies of the Hydra entry points (the scripts at the repo root only compose configs)."""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .checkpoint import load_weights
from .evaluate import evaluate, format_table, write_results

log = logging.getLogger(__name__)


def model_name(cfg: DictConfig) -> str:
    """The chosen ``model=`` config name (e.g. ``edsr_baseline``)."""
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("model") or cfg.model._target_
    return cfg.model._target_.rsplit(".", 1)[-1].lower()


def run_eval(cfg: DictConfig) -> list[dict]:
    """``eval.py``: build the model, load ``ckpt_path``, score, print the table, write JSON."""
    model = hydra.utils.instantiate(cfg.model)
    if cfg.ckpt_path:
        load_weights(model, cfg.ckpt_path)
        log.info("loaded %s", cfg.ckpt_path)
    rows = evaluate(
        model,
        cfg.data.root,
        list(cfg.data.benchmarks),
        list(cfg.data.scales),
        model_name=model_name(cfg),
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
