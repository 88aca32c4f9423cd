"""``python eval.py``: score a checkpoint (ours or an authors' ``.pt``) or bicubic on the
benchmarks under the paper's protocol; prints the table and writes ``results.json`` and
``per_image.csv``. The data module and the LightningModule are ``cfg.data`` and ``cfg.model``,
as in ``train.py``, and the test code is the same (:mod:`sr_lightning.training.evaluation`)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig
from torch import nn

from sr_lightning.config.build import build_evaluation
from sr_lightning.config.keys import check_keys
from sr_lightning.config.rules import evaluate_every_scale_of_the_network
from sr_lightning.data.io import ImageError
from sr_lightning.models import count_trainable, describe, record
from sr_lightning.models.checkpoint import find_checkpoint, load_network
from sr_lightning.runs.results import format_table
from sr_lightning.training.console import quiet_library_noise
from sr_lightning.training.evaluation import evaluate, save_results

log = logging.getLogger(__name__)


def eval_network(cfg: DictConfig) -> tuple[nn.Module, str]:
    """(network, name) that ``eval.py`` scores: ``ckpt_path``'s (a file, or a glob matching
    one: its record, or its shapes), else ``model=``'s, which must not be a randomly
    initialised trainable network."""
    if cfg.ckpt_path:
        path = find_checkpoint(cfg.ckpt_path)
        net, _ = load_network(path, res_scale=cfg.get("res_scale"), echo=log.warning)
        log.info("loaded %s: %s x%s", path, type(net).__name__, list(net.scales))
        return net, path.stem
    net = hydra.utils.instantiate(cfg.model.net)
    if count_trainable(net):
        raise ValueError(
            f"model={cfg.model.net.get('preset')} without ckpt_path= would score a "
            "randomly initialised network: pass ckpt_path=<checkpoint or authors' .pt>, or "
            "model=bicubic for the bicubic rows"
        )
    return net, describe(record(net))


def run_eval(cfg: DictConfig) -> list[dict]:
    """Score the network on ``data.benchmarks`` at ``data.scales`` (default: every scale it
    has); prints the table and writes the JSON rows. A missing set, a corrupt image or a bad
    value is named, without a traceback."""
    quiet_library_noise()
    check_keys(cfg, "eval")
    try:
        net, name = eval_network(cfg)
        evaluate_every_scale_of_the_network(cfg, list(net.scales))
        module, datamodule = build_evaluation(cfg, net)
        rows, images = evaluate(module, datamodule, name, cfg.device)
    except (FileNotFoundError, ImageError, ValueError) as e:
        log.error("%s", e)
        raise SystemExit(1) from None
    print(format_table(rows))
    save_results(rows, images, Path(cfg.results_path))
    return rows
