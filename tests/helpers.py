"""Helpers shared by the tests (``from helpers import ...``; tests/ is on pytest's path).

Tiny models and small crops only: a 1x8 EDSR on 12 px patches trains a step in milliseconds.
Runs go through the same code as ``train.py`` and ``eval.py``: in process
(:func:`run_train_in_process`, the fast tier) or as a subprocess (:func:`train`, where a
signal, a launcher or an exit code is the point).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from sr_lightning.data.datamodule import SRDataModule
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.history import HEADER
from sr_lightning.runs.records import write_atomically
from sr_lightning.runs.results import write_per_image
from sr_lightning.training.evaluation import evaluate
from sr_lightning.training.lit_module import SRLitModule

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = Path(os.environ.get("SR_TEST_DATA", REPO.parent / "shared" / "datasets"))

# a 1x8 EDSR, 12 px patches, 2 per batch, 3 updates an epoch: seconds on any CPU
TINY = [
    "model.net.n_resblocks=1",
    "model.net.n_feats=8",
    "data.patch_size=12",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.updates_per_epoch=3",
]


def tiny_args(cache_dir: Path) -> list[str]:
    """The quickstart on the sample photos, shrunk: 2 epochs of 3 updates."""
    return [
        "experiment=quickstart",
        *TINY,
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "callbacks.step_checkpoint.every_n_train_steps=2",
        "~callbacks.progress_bar",
        f"data.cache_dir={cache_dir}",
    ]


def train(
    args: Sequence[str], env: dict | None = None, timeout: int = 300, check: bool = True
) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` in a subprocess (W&B disabled unless ``env`` says otherwise)."""
    return run_script("train.py", args, env, timeout, check)


def run_script(
    script: str,
    args: Sequence[str],
    env: dict | None = None,
    timeout: int = 300,
    check: bool = True,
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None: unset
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO,
    )
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@contextlib.contextmanager
def hydra_conf() -> Iterator[None]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def compose_config(
    name: str, overrides: Sequence[str] = (), output_dir: Path | None = None
) -> DictConfig:
    """``conf/<name>.yaml`` with ``overrides``, as the script would see it, with the Hydra
    config set (``${hydra:...}`` resolves) and the run folder at ``output_dir``."""
    return task_config(compose_with_hydra(name, overrides), output_dir)


def compose_with_hydra(name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The composed config with its ``hydra`` node (what :func:`task_config` takes)."""
    with hydra_conf():
        return compose(name, overrides=list(overrides), return_hydra_config=True)


def task_config(full: DictConfig, output_dir: Path | None = None) -> DictConfig:
    """What ``@hydra.main`` hands the task: a copy of ``full`` without its ``hydra`` node, the
    Hydra config set (so ``${hydra:runtime.output_dir}`` resolves), the run folder at
    ``output_dir``."""
    cfg = copy.deepcopy(full)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_train_in_process(overrides: Sequence[str], run_dir: Path) -> dict:
    """``train.py OVERRIDES hydra.run.dir=RUN_DIR``, in this process (W&B disabled)."""
    from sr_lightning.cli.train import run_train

    with env_vars(WANDB_MODE="disabled"), hydra_config_cleared():
        return run_train(compose_config("train", overrides, output_dir=run_dir))


def run_eval_in_process(overrides: Sequence[str], out_dir: Path) -> list[dict]:
    """``eval.py OVERRIDES``, in this process; results under ``out_dir``."""
    from sr_lightning.cli.eval import run_eval

    with hydra_config_cleared():
        return run_eval(compose_config("eval", overrides, output_dir=out_dir))


@contextlib.contextmanager
def hydra_config_cleared() -> Iterator[None]:
    """No run's Hydra config outlives it (the config rules read ``HydraConfig``)."""
    try:
        yield
    finally:
        HydraConfig.instance().cfg = None


@contextlib.contextmanager
def env_vars(**values: str | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def ckpt_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def make_dm(root: str | Path, cache_dir: str | Path, **kw: Any) -> SRDataModule:
    """A small data module on ``root`` (Set5 to train and evaluate), set up for fitting."""
    args: dict[str, Any] = dict(
        root=str(root),
        scales=[2],
        patch_size=16,
        batch_size=4,
        num_workers=0,
        train_set="benchmark/Set5/HR",  # a folder, read under data.root
        val_sets=["Set5"],
        benchmarks=["Set5"],
        updates_per_epoch=6,
        cache_dir=str(cache_dir),
    )
    args.update(kw)
    dm = SRDataModule(**args)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def score(
    net: torch.nn.Module,
    root: str | Path,
    sets: Sequence[str],
    scales: Sequence[int],
    *,
    model_name: str = "m",
    cache_dir: str | Path | None = None,
    protocol: str = "auto",
    degradation: str = "bicubic",
    div2k_test_range: tuple[int, int] = (811, 900),
    device: str = "auto",
    **module_options: Any,
) -> list[dict]:
    """The result rows of ``net`` on ``sets`` x ``scales`` (the evaluation engine's; the sets
    are test sets: the sample's ``test`` photos, DIV2K images ``div2k_test_range``)."""
    datamodule = SRDataModule(
        root=str(root),
        scales=list(scales),
        benchmarks=list(sets),
        val_sets=[],
        num_workers=0,
        cache_dir=str(cache_dir) if cache_dir else None,
        protocol=protocol,
        degradation=degradation,
        div2k_test_range=div2k_test_range,
    )
    rows, _ = evaluate(SRLitModule(net, **module_options), datamodule, model_name, device)
    return rows


def write_job(
    folder: Path,
    overrides: Sequence[str] = (),
    summary: dict | None = None,
    history: Sequence[tuple[int, str, float]] = (),
    per_image: Sequence[dict] = (),
) -> RunFolder:
    """A synthetic run (or sweep job) folder, written with the run folder's own writers."""
    run = RunFolder(folder)
    run.path.mkdir(parents=True, exist_ok=True)
    overrides_text = "".join(f"- {o}\n" for o in overrides) or "[]\n"
    write_atomically(run.overrides, overrides_text)
    if summary is not None:
        run.write_summary(summary)
    if history:
        write_atomically(run.history, HEADER + "".join(f"{s},{k},{v!r}\n" for s, k, v in history))
    if per_image:
        write_per_image(per_image, run.per_image)
    return run


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
