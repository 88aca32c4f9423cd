"""Multi-node as a cluster runs it (issue 23): two node ranks on localhost, one process each,
gloo, one shared file system (run folder and image cache), started together, under torchrun
and under SLURM's environment (what ``slurm/train.sbatch``'s srun gives each task). And the
same training on any number of processes: 1 x 8 patches equals 2 x 4 after 10 updates."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, run_train_in_process, tiny_args, train

pytestmark = pytest.mark.slow

UPDATES = 10
TINY_RUN = ["data.updates_per_epoch=10", "trainer.max_epochs=1", "data.batch_size=8"]
TINY_RUN += ["data.num_workers=0", "test_after_fit=false", "trainer.log_every_n_steps=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(commands: list[list[str]], envs: list[dict], logs: Path) -> list[int]:
    """Start every node's process at once (as a scheduler does) and wait for all of them."""
    procs = []
    for node, (command, env) in enumerate(zip(commands, envs, strict=True)):
        out = (logs / f"node{node}.log").open("w")
        full = {**os.environ, "WANDB_MODE": "disabled", **env}
        procs.append(subprocess.Popen(command, cwd=REPO, env=full, stdout=out, stderr=out))
    try:
        return [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()


def two_node_overrides(cache: Path, run: Path) -> list[str]:
    return [
        *tiny_args(cache),
        *TINY_RUN,
        "trainer.num_nodes=2",
        "trainer.devices=1",
        f"hydra.run.dir={run}",
    ]


def torchrun_nodes(cache: Path, run: Path) -> tuple[list[list[str]], list[dict]]:
    """``torchrun --nnodes 2 --nproc-per-node 1 --node-rank R ... train.py ...``, R = 0, 1."""
    port = str(free_port())
    commands = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
         "1", "--node-rank", str(r), "--master-addr", "127.0.0.1", "--master-port", port,
         "train.py", "trainer=ddp_cpu", *two_node_overrides(cache, run)]
        for r in (0, 1)
    ]  # fmt: skip
    return commands, [{}, {}]


def slurm_nodes(cache: Path, run: Path) -> tuple[list[list[str]], list[dict]]:
    """slurm/train.sbatch's srun line, as each of 2 tasks on 2 nodes runs it: the same
    command, SLURM's variables (read by Lightning's SLURMEnvironment) per task."""
    sbatch = (REPO / "slurm" / "train.sbatch").read_text()
    assert "srun .venv/bin/python train.py trainer=slurm" in sbatch
    command = [sys.executable, "train.py", "trainer=slurm", *two_node_overrides(cache, run)]
    command += ["trainer.accelerator=cpu", "trainer.precision=32-true"]
    port = str(free_port())
    envs = [
        {
            "SLURM_JOB_ID": "777", "SLURM_JOB_NAME": "sr-lightning", "SLURM_NTASKS": "2",
            "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_NODELIST": "localhost",
            "SLURM_PROCID": str(r), "SLURM_LOCALID": "0", "SLURM_NODEID": str(r),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
        }
        for r in (0, 1)
    ]  # fmt: skip
    return [command, command], envs


@pytest.mark.parametrize("launch", [torchrun_nodes, slurm_nodes], ids=["torchrun", "slurm"])
def test_two_nodes_train_one_run_on_a_shared_file_system(tmp_path, launch):
    """Both node ranks exit 0 with one completed run: every update, the global batch split
    over both, one train.log written by global rank 0 only; the image cache is empty at the
    start, so both nodes prepare it at once (the race of issue 23)."""
    run, cache = tmp_path / "run", tmp_path / "cache"
    commands, envs = launch(cache, run)
    codes = start_nodes(commands, envs, tmp_path)
    logs = {p.name: p.read_text()[-3000:] for p in tmp_path.glob("node*.log")}
    assert codes == [0, 0], logs
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["steps"] == UPDATES
    assert (summary["world_size"], summary["global_batch_size"]) == (2, 8)
    assert summary["per_device_batch_size"] == 4
    log = (run / "train.log").read_text()
    assert "recipe: global batch 8 = 2 nodes x 1 device x 4" in log
    assert "[rank: 1]" not in log and "[rank: 0]" in log  # rank 1's lines stay on its console
    assert not list(cache.rglob("*.tmp*"))  # every temporary file renamed or removed


def weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == UPDATES
    return ckpt["state_dict"]


def assert_same_training(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Per trained tensor, max |a - b| / max |a| < 1e-3 (float summation order only)."""
    for key, value in a.items():
        if value.is_floating_point() and "sub_mean" not in key and "add_mean" not in key:
            ratio = (value - b[key]).abs().max() / value.abs().max().clamp_min(1e-12)
            assert ratio < 1e-3, (key, float(ratio))


@pytest.mark.parametrize("model", ["edsr", "mdsr"])
def test_one_process_of_8_trains_what_two_of_4_train(tmp_path, sample_cache, model):
    """The global batch of update k comes from (epoch seed, k) alone, each rank its slice:
    1 x 8 and 2 x 4 (gloo) give the same weights after 10 updates (MDSR's 3 scales too)."""
    extra = [f"model={model}", "model.net.n_resblocks=1", "model.net.n_feats=8"]
    if model == "mdsr":
        extra += ["data.scales=[2,3,4]"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_train_in_process([*tiny_args(sample_cache), *TINY_RUN, *extra], one)
    train([*tiny_args(sample_cache), *TINY_RUN, *extra, "trainer=ddp_cpu", f"hydra.run.dir={two}"])
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    assert_same_training(weights(one), weights(two))


def test_a_run_resumed_on_another_number_of_processes_goes_on_with_the_same_patches(
    tmp_path, sample_cache
):
    """5 updates on 2 processes x 4, then resumed from that checkpoint on 1 process x 8 up to
    10: the weights of 10 updates on 1 process x 8 throughout (a requeue may change nodes)."""
    tiny = [*tiny_args(sample_cache), *TINY_RUN, "callbacks.step_checkpoint.every_n_train_steps=5"]
    first, resumed, whole = tmp_path / "first", tmp_path / "resumed", tmp_path / "whole"
    train([*tiny, "trainer=ddp_cpu", "trainer.max_steps=5", f"hydra.run.dir={first}"])
    start = first / "checkpoints" / "step0000005.ckpt"
    run_train_in_process([*tiny, f"ckpt_path={start}"], resumed)
    run_train_in_process(tiny, whole)
    assert_same_training(weights(whole), weights(resumed))
