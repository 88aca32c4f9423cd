"""W&B for sweeps (training/loggers.py ``run_labels``): each job of a multirun is named by its
swept overrides, the jobs of a sweep share one group, and every run is tagged with its
experiment, preset and network. Offline only: nothing here touches the network."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
from helpers import REPO, compose_with_hydra, env_vars, hydra_config_cleared, task_config
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

from sr_lightning.training.loggers import WandbLogger, run_labels


def _wandb_logger(overrides: list[str], sweep_dir: Path | None = None, job: int = 0):
    """The W&B logger of ``train.py OVERRIDES logger=wandb`` as it is built, in a single run or
    (with ``sweep_dir``) as job ``job`` of a multirun there; wandb.init is not called."""
    full = compose_with_hydra("train", [*overrides, "logger=wandb"])
    if sweep_dir is not None:
        with open_dict(full):
            full.hydra.mode = RunMode.MULTIRUN
            full.hydra.sweep.dir = str(sweep_dir)
            full.hydra.job.num = job
    with env_vars(WANDB_MODE="offline"), hydra_config_cleared():
        cfg = task_config(full, sweep_dir / str(job) if sweep_dir else None)
        logger = hydra.utils.instantiate(cfg.logger.wandb)
    assert isinstance(logger, WandbLogger)
    init = logger._wandb_init
    return init.get("name"), init.get("group"), init.get("tags")


def _multirun_yaml(sweep_dir: Path, task_overrides: list[str]) -> None:
    """What Hydra's basic sweeper writes first: the sweep's command line, sweep syntax and all."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save({"hydra": {"overrides": {"task": task_overrides}}}, sweep_dir / "multirun.yaml")


def test_a_single_run_is_named_by_its_network_and_tagged(tmp_path):
    """No group; the name says which network (a 4x32 net is not the preset's name)."""
    name, group, tags = _wandb_logger(["experiment=smoke"])
    assert name == "edsr 4x32 x2" and group is None
    assert tags == ["smoke", "edsr_baseline", "edsr 4x32"]
    name, _, tags = _wandb_logger(["experiment=quickstart", "model.net.res_scale=0.1"])
    assert name == "edsr 8x48 rs0.1 x2" and tags == [
        "quickstart",
        "edsr_baseline",
        "edsr 8x48 rs0.1",
    ]
    name, _, tags = _wandb_logger(["model=mdsr"])
    assert name == "mdsr x2 x3 x4" and tags == ["train", "mdsr"]  # no experiment: the task


def test_sweep_jobs_are_named_by_their_swept_overrides(tmp_path):
    """The sweeper's params (an experiment's norm, +seeds' seed) and the command line's sweeps
    (multirun.yaml) name a job; its other overrides do not. One group per sweep folder."""
    sweep = tmp_path / "sweep"
    _multirun_yaml(sweep, ["experiment=ablation_bn_smoke", "+seeds=two", "optim.lr=1e-3,5e-4"])
    base = ["experiment=ablation_bn_smoke", "+seeds=two", "data.patch_size=12"]
    jobs = [
        _wandb_logger([*base, f"model.net.norm={norm}", f"seed={seed}", f"optim.lr={lr}"], sweep, i)
        for i, (norm, seed, lr) in enumerate([("batch", 0, "1e-3"), ("none", 1, "5e-4")])
    ]
    assert [name for name, _, _ in jobs] == [
        "norm=batch,seed=0,lr=1e-3",
        "norm=none,seed=1,lr=5e-4",
    ]
    assert {group for _, group, _ in jobs} == {"ablation_bn_smoke/sweep"}
    assert jobs[0][2] == ["ablation_bn_smoke", "edsr_baseline", "edsr 4x32 bn"]
    assert jobs[1][2] == ["ablation_bn_smoke", "edsr_baseline", "edsr 4x32"]


def test_swept_keys_sharing_a_last_part_are_named_in_full(tmp_path):
    sweep = tmp_path / "sweep"
    _multirun_yaml(sweep, ["model.net.n_feats=8,16", "+foo.n_feats=1,2"])
    name, _, _ = _wandb_logger(["model.net.n_feats=8", "+foo.n_feats=2"], sweep)
    assert name == "model.net.n_feats=8,foo.n_feats=2"


def test_a_sweep_without_a_swept_key_names_its_jobs_by_number(tmp_path):
    name, group, _ = _wandb_logger(["experiment=smoke"], tmp_path / "2024-01-01_00-00-00", 3)
    assert name == "edsr 4x32 x2 #3" and group == "smoke/2024-01-01_00-00-00"


def test_names_given_are_kept(tmp_path):
    name, group, tags = _wandb_logger(
        [
            "experiment=smoke",
            "logger.wandb.name=mine",
            "logger.wandb.group=g",
            "logger.wandb.tags=[a]",
        ],
        tmp_path / "sweep",
    )
    assert (name, group, tags) == ("mine", "g", ["a"])


def test_without_naming_nothing_is_set(tmp_path):
    """Constructed by hand (no ``naming``): W&B's own defaults, as before."""
    logger = WandbLogger(project="p", save_dir=str(tmp_path), offline=True)
    assert "group" not in logger._wandb_init and "tags" not in logger._wandb_init
    assert run_labels(None)["tags"] == []


# ---- a real multirun, offline ------------------------------------------------------------------


def _wandb_records(path: Path):
    """The records of a ``.wandb`` file (wandb's transaction log, a LevelDB-style log of
    protobuf ``Record`` s: a 7-byte header, then 32 KiB blocks of chunks, each with a 7-byte
    header: CRC, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), path
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def _run_record(job: Path):
    (path,) = job.glob("wandb/offline-run-*/run-*.wandb")
    runs = [r.run for r in _wandb_records(path) if r.WhichOneof("record_type") == "run"]
    assert runs, path
    return runs[-1]


@pytest.mark.slow
def test_a_multirun_logged_offline_has_one_group_and_a_name_per_job(tmp_path, sample_cache):
    """``train.py -m experiment=smoke model.net.norm=batch,none logger=wandb`` (tiny, offline):
    two W&B runs, named by the swept value, in the sweep's group, tagged; read back from the
    runs' own ``.wandb`` files."""
    pytest.importorskip("wandb")
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        f"data.cache_dir={sample_cache}",
        "experiment=smoke",
        "model.net.n_resblocks=1",
        "model.net.n_feats=8",
        "data.patch_size=12",
        "data.updates_per_epoch=4",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=2",
        "test_after_fit=false",
        "logger=wandb",
        "model.net.norm=batch,none",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    runs = [_run_record(sweep / f"norm-{norm}") for norm in ("batch", "none")]  # job folders
    assert [r.display_name for r in runs] == ["norm=batch", "norm=none"]
    assert {r.run_group for r in runs} == {"smoke/sweep"}
    assert list(runs[0].tags) == ["smoke", "edsr_baseline", "edsr 1x8 bn"]
    assert list(runs[1].tags) == ["smoke", "edsr_baseline", "edsr 1x8"]
