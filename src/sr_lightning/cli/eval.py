"""``python eval.py``: score a checkpoint (ours or an authors' ``.pt``) or bicubic on the
benchmarks under the paper's protocol; prints the table (a checkpoint's column headed by its
network, ``EDSR baseline (16x64) x2``, with bicubic beside it) and writes ``results.json`` and
``per_image.csv`` (the rows of both, as ``train.py``'s). The data module and the
LightningModule are ``cfg.data`` and ``cfg.model``, as in ``train.py``, and the test code is
the same (:mod:`sr_lightning.training.evaluation`), for bicubic too."""

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
from sr_lightning.models import Bicubic, count_trainable, describe, record
from sr_lightning.models.catalogue import PRESETS, matching_preset
from sr_lightning.models.checkpoint import find_checkpoint, load_network
from sr_lightning.runs.results import format_table
from sr_lightning.training.console import quiet_library_noise
from sr_lightning.training.evaluation import evaluate, save_results
from sr_lightning.training.lit_module import SRLitModule

log = logging.getLogger(__name__)


def network_heading(rec: dict) -> str:
    """A network as the table heads its column: name, size (blocks x features, and residual
    scaling / norm where they differ from the preset's) and scales, from its record:
    ``EDSR baseline (16x64) x2``, ``EDSR (4x32, bn) x2``, ``MDSR (80x64) x2, x3, x4``."""
    arch = rec["arch"]
    if arch == "Bicubic":
        return "bicubic"
    preset = matching_preset(arch, rec["n_resblocks"], rec["n_feats"])
    name = preset.replace(arch.lower(), arch).replace("_", " ") if preset else arch
    usual = PRESETS[preset].res_scale if preset else 1.0
    size = [f"{rec['n_resblocks']}x{rec['n_feats']}"]
    if rec["res_scale"] != usual:
        size.append(f"res_scale {rec['res_scale']:g}")
    if rec.get("norm", "none") != "none":
        size.append("bn" if rec["norm"] == "batch" else str(rec["norm"]))
    scales = ", ".join(f"x{s}" for s in rec["scales"])
    return f"{name} ({', '.join(size)}) {scales}"


def eval_network(cfg: DictConfig) -> tuple[nn.Module, str]:
    """(network, name) that ``eval.py`` scores: ``ckpt_path``'s (a file, or a glob matching
    one: its record, or its shapes; named by :func:`network_heading`), else ``model=``'s,
    which must not be a randomly initialised trainable network."""
    if cfg.ckpt_path:
        path = find_checkpoint(cfg.ckpt_path)
        net, _ = load_network(path, res_scale=cfg.get("res_scale"), echo=log.warning)
        name = network_heading(record(net))
        log.info("loaded %s: %s", path, name)
        return net, name
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
    has), and bicubic beside it through the same evaluation; prints the table and writes the
    JSON rows of both. Returns the network's rows. A missing set, a corrupt image or a bad
    value is named, without a traceback."""
    quiet_library_noise()
    check_keys(cfg, "eval")
    try:
        net, name = eval_network(cfg)
        evaluate_every_scale_of_the_network(cfg, list(net.scales))
        module, datamodule = build_evaluation(cfg, net)
        rows, images = evaluate(module, datamodule, name, cfg.device)
        scored = list(rows)
        if not isinstance(net, Bicubic):  # the reference beside it, scored the same way
            bicubic = SRLitModule(Bicubic(datamodule.scales), log_prefix="bicubic/")
            more, more_images = evaluate(bicubic, datamodule, "bicubic", cfg.device)
            rows, images = rows + more, images + more_images
    except (FileNotFoundError, ImageError, ValueError) as e:
        log.error("%s", e)
        raise SystemExit(1) from None
    print(format_table(rows))
    save_results(rows, images, Path(cfg.results_path))
    return scored
