"""Unknown config keys fail at start, named with a close match; every shipped config passes."""

from __future__ import annotations

import copy
import itertools
import logging
import os
import subprocess
import sys
import time

import pytest
from helpers import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sr_lightning.config.keys import ConfigKeyError, check_keys

CONF = REPO / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def composed(name: str, overrides: list[str]):
    return compose(name, overrides=overrides, return_hydra_config=True)


@pytest.fixture(scope="module")
def train_cfg(hydra_conf):
    return composed("train", [])


@pytest.fixture(scope="module")
def eval_cfg(hydra_conf):
    return composed("eval", [])


def with_keys(cfg, **keys):
    """A copy of ``cfg`` with ``keys`` (dotted, ``__`` for ``.``) set as a YAML file would."""
    cfg = copy.deepcopy(cfg)
    for key, value in keys.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


def zipped(*groups: str) -> list[list[str]]:
    """Every option of each group, the i-th options of all groups in one config (fewer
    compositions: each takes ~0.3 s); ``+group`` for a group not in the defaults list."""
    lists = [[f"{g}={o}" for o in options(g.lstrip("+"))] for g in groups]
    return [[o for o in row if o] for row in itertools.zip_longest(*lists)]


SHIPPED_TRAIN = (
    zipped("experiment", "+stage")  # a stage is merged into an experiment's jobs
    + zipped("model", "data", "trainer", "logger", "callbacks", "optim", "paths")
    + [["experiment=smoke", f"hparams_search={h}"] for h in options("hparams_search")]
    + [["experiment=ablation_bn_smoke", f"+seeds={n}"] for n in options("seeds")]
)


@pytest.mark.parametrize("overrides", SHIPPED_TRAIN, ids=",".join)
def test_every_shipped_train_config_passes(hydra_conf, overrides):
    if any(o.startswith("hparams_search") for o in overrides):
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the [sweep] extra")
    check_keys(composed("train", overrides), "train")


@pytest.mark.parametrize(
    "overrides", [[]] + zipped("model", "data"), ids=lambda o: ",".join(o) or "defaults"
)
def test_every_shipped_eval_config_passes(hydra_conf, overrides):
    check_keys(composed("eval", overrides), "eval")


def test_defaults_pass(train_cfg):
    check_keys(train_cfg, "train")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "model.net.n_resblock",
            32,
            "model.net.n_resblock: unknown key for sr_lightning.models.build_net "
            "(config: model=edsr_baseline); did you mean 'n_resblocks'? allowed: preset, scales, ",
        ),
        (  # the LitModule node holds the net node: its own keys are SRLitModule's arguments
            "model.channel_last",
            True,
            "model.channel_last: unknown key for sr_lightning.training.lit_module.SRLitModule "
            "(config: model=edsr_baseline); did you mean 'channels_last'? allowed: net, optim, "
            "init_from, channels_last, compile, self_ensemble",
        ),
        (
            "optim.lr_decay_step",
            10,
            "optim.lr_decay_step: unknown key for sr_lightning.training.lit_module.OptimRecipe "
            "(config: optim=adam); did you mean 'lr_decay_steps'? allowed: loss, lr, ",
        ),
        (
            "data.patch_sise",
            32,
            "data.patch_sise: unknown key for sr_lightning.data.datamodule.SRDataModule "
            "(config: data=div2k); did you mean 'patch_size'? allowed: root, ",
        ),
        (
            "trainer.max_step",
            10,
            "trainer.max_step: unknown key for lightning.pytorch.Trainer (config: trainer=default);"
            " did you mean 'max_steps'? allowed: ",
        ),
        ("trainer.plugins.0.path", "x", "trainer.plugins[0].path: unknown key for sr_lightning."),
        (
            "callbacks.best_checkpoint.moniter",
            "val/psnr",
            "callbacks.best_checkpoint.moniter: unknown key for "
            "lightning.pytorch.callbacks.ModelCheckpoint (config: callbacks=default); "
            "did you mean 'monitor'? allowed: dirpath, ",
        ),
        (
            "callbacks.lr_monitr.logging_interval",
            "step",
            "callbacks.lr_monitr: an entry without _target_ (config: callbacks=default); "
            "did you mean 'lr_monitor'? entries: best_checkpoint, ",
        ),
        (
            "logger.wandb.init_timout",  # an own parameter of a **kwargs target's subclass
            5,
            None,
        ),
        (
            "sed",
            1,
            "sed: unknown key at the top level (config: train.yaml); did you mean 'seed'? "
            "allowed: callbacks, ckpt_path, ",
        ),
        (
            "paths.dat_dir",
            "x",
            "paths.dat_dir: unknown key in group 'paths' (config: paths=default); "
            "did you mean 'data_dir'? allowed: root_dir, data_dir, ",
        ),
        (
            "model._target_",
            "sr_lightning.models.EDRS",
            "model._target_ (config: model=edsr_baseline): 'sr_lightning.models' has no 'EDRS'; "
            "did you mean 'EDSR'?",
        ),
    ],
)
def test_typo_in_each_group_is_named(train_cfg, key, value, expected):
    cfg = with_keys(train_cfg, **{key: value})
    if expected is None:  # WandbLogger(**kwargs) -> wandb.init: accepted (with a warning)
        check_keys(cfg, "train")
        return
    with pytest.raises(ConfigKeyError, match="1 unknown config key") as err:
        check_keys(cfg, "train")
    assert expected in str(err.value)


def test_logger_typo_and_all_keys_at_once(hydra_conf):
    cfg = with_keys(
        composed("train", ["experiment=quickstart"]),
        logger__csv__nme="x",
        sed=1,
        trainer__max_step=1,
    )
    with pytest.raises(ConfigKeyError, match="3 unknown config key") as err:
        check_keys(cfg, "train")
    msg = str(err.value)
    assert "logger.csv.nme: unknown key for sr_lightning.training.loggers.CSVLogger" in msg
    assert "(config: logger=csv, experiment=quickstart); did you mean 'name'?" in msg
    assert "sed: unknown key at the top level (config: train.yaml, experiment=quickstart)" in msg
    paths = {p.split(":")[0] for p in err.value.problems}
    assert paths == {"logger.csv.nme", "sed", "trainer.max_step"}


def test_kwargs_target_warns_on_a_near_miss_only(train_cfg, caplog):
    """W&B's logger hands **kwargs on to wandb.init: any key passes, a near miss is a warning."""
    cfg = with_keys(train_cfg, logger__wandb__projct="x", logger__wandb__entity="me")
    with caplog.at_level(logging.WARNING, logger="sr_lightning.config.keys"):
        check_keys(cfg, "train")
    assert "logger.wandb.projct: passed to" in caplog.text and "'project'?" in caplog.text
    assert "entity" not in caplog.text and "mode" not in caplog.text


def test_train_and_eval_only_keys(train_cfg, eval_cfg):
    with pytest.raises(ConfigKeyError, match="data.global_batch_size: unknown key"):
        check_keys(with_keys(train_cfg, data__global_batch_size=32), "train")  # gone: batch_size
    with pytest.raises(ConfigKeyError, match="devise: unknown key .*eval.yaml.*'device'"):
        check_keys(with_keys(eval_cfg, devise="cpu"), "eval")
    with pytest.raises(ConfigKeyError, match="ckpt: unknown key at the top level"):
        check_keys(with_keys(eval_cfg, ckpt=1), "eval")


@pytest.mark.slow
def test_train_py_fails_fast_on_a_typo_in_an_experiment_file(tmp_path):
    """An experiment of one's own (``--config-dir``) with typos: train.py stops before any data
    is read (data.root does not exist) and names each key."""
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nsed: 1\nmodel:\n  n_resblock: 32\ntrainer:\n  max_step: 10\n"
    )
    run = tmp_path / "run"
    start = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--config-dir",
            str(tmp_path / "conf"),
            "experiment=mine",
            f"data.root={tmp_path / 'no_data'}",
            f"hydra.run.dir={run}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WANDB_MODE": "disabled"},
        cwd=REPO,
    )
    elapsed = time.time() - start
    assert proc.returncode != 0
    assert "ConfigKeyError: 3 unknown config key(s)" in proc.stderr, proc.stderr[-3000:]
    for line in (
        "model.n_resblock: unknown key for sr_lightning.training.lit_module.SRLitModule (config: "
        "model=edsr_baseline, experiment=mine); did you mean 'net.n_resblocks'?",
        "trainer.max_step: unknown key for lightning.pytorch.Trainer",
        "sed: unknown key at the top level (config: train.yaml, experiment=mine)",
    ):
        assert line in proc.stderr
    assert not (run / "checkpoints").exists()
    assert elapsed < 30, f"took {elapsed:.1f} s"  # ~10 s here, most of it importing torch
