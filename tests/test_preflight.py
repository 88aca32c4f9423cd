"""``sr-preflight`` (issue 23): every rank's report, one table on rank 0, the problems named by
rank. Under torchrun with 2 gloo processes on a few real images (T91, Set5), all good and with
a planted problem (rank 1's data root lacks a file, or a whole set); a rank that never joins;
the verdict itself on made-up rows."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from sr_lightning.cli.preflight import Files, Row, file_difference, format_table, problems_of

# every rank reads its data root from PREFLIGHT_ROOT_<its RANK> (torchrun sets RANK per process)
PER_RANK_ROOT = "data.root='${oc.env:PREFLIGHT_ROOT_${oc.env:RANK}}'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def small_root(data_root: Path, tmp_path_factory) -> Path:
    """A data root of 4 T91 images (the training set) and Set5 with its x2 LR files."""
    root = tmp_path_factory.mktemp("preflight") / "root"
    (root / "T91").mkdir(parents=True)
    for hr in sorted((data_root / "T91" / "HR").glob("*.png"))[:4]:
        shutil.copy(hr, root / "T91" / hr.name)
    shutil.copytree(data_root / "benchmark" / "Set5" / "HR", root / "benchmark/Set5/HR")
    x2 = data_root / "benchmark" / "Set5" / "LR_bicubic" / "X2"
    shutil.copytree(x2, root / "benchmark/Set5/LR_bicubic/X2")
    return root


def overrides(tmp_path: Path) -> list[str]:
    return [
        "experiment=smoke",
        "trainer=ddp_cpu",
        PER_RANK_ROOT,
        "data.train_set=T91",
        "data.val_sets=[Set5]",
        "data.benchmarks=[Set5]",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]


def torchrun_preflight(roots: list[Path], tmp_path: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m sr_lightning.cli.preflight ...``, rank r on roots[r]."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--master-port", str(free_port()), "-m", "sr_lightning.cli.preflight"]
    command += ["--min-free-gb", "0", "--timeout", "30", *overrides(tmp_path)]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env |= {f"PREFLIGHT_ROOT_{r}": str(root) for r, root in enumerate(roots)}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def table_rows(stdout: str) -> list[list[str]]:
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


@pytest.mark.slow
def test_two_ranks_all_good(small_root, tmp_path):
    proc = torchrun_preflight([small_root, small_root], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = table_rows(proc.stdout)
    assert [r[0] for r in rows] == ["0", "1"]  # rank
    assert [r[1] for r in rows] == ["0", "1"]  # local rank
    assert all(r[4] == "OK" and float(r[5]) > 0 for r in rows)  # all-reduce, busbw
    assert rows[0][6] == rows[1][6] and rows[0][6].startswith("4 ")  # 4 training files
    assert rows[0][7] == rows[1][7] and rows[0][7].startswith("20 ")  # Set5 HR + x2, val + test
    assert "preflight: all good" in proc.stdout
    assert not (tmp_path / "run").exists()  # nothing written into the run folder


@pytest.mark.slow
@pytest.mark.parametrize("planted", ["file", "set"])
def test_a_rank_missing_data_is_named(small_root, tmp_path, planted):
    """Rank 1's own copy of the data lacks a training image (or the whole of Set5): every rank
    exits 1, and rank 0 names rank 1 and what it lacks."""
    other = tmp_path / "rank1_root"
    shutil.copytree(small_root, other)
    first = sorted((other / "T91").glob("*.png"))[0]
    if planted == "file":
        first.unlink()
    else:
        shutil.rmtree(other / "benchmark" / "Set5")
    proc = torchrun_preflight([small_root, other], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    host = socket.gethostname()
    assert [r[0] for r in table_rows(proc.stdout)] == ["0", "1"]
    if planted == "file":
        expected = (
            f"rank 1 (host {host}): training files differ from rank 0: 3 files vs 4, "
            f"missing train/T91/{first.name}"
        )
    else:
        expected = f"rank 1 (host {host}): validation set: benchmark Set5 not found"
    assert expected in proc.stdout, proc.stdout
    assert "rank 0 (host" not in proc.stdout  # rank 0 itself is fine
    assert "preflight: 1 problem(s)" in proc.stdout


@pytest.mark.slow
def test_two_tasks_under_slurm_s_environment(small_root, tmp_path):
    """The same check as srun starts it (one process per task, SLURM's variables read by
    Lightning's SLURMEnvironment): both tasks exit 0, rank 0 prints the table."""
    port = str(free_port())
    command = [sys.executable, "-m", "sr_lightning.cli.preflight", "--min-free-gb", "0"]
    command += [*overrides(tmp_path), "trainer=slurm", "trainer.accelerator=cpu"]
    command += ["trainer.num_nodes=2", "trainer.devices=1", "trainer.precision=32-true"]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "WANDB_MODE": "disabled", f"PREFLIGHT_ROOT_{rank}": str(small_root)}
        env |= {"RANK": str(rank), "SLURM_JOB_ID": "777", "SLURM_JOB_NAME": "sr-lightning"}
        env |= {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2"}
        env |= {"SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank)}
        env |= {"SLURM_NODELIST": "localhost", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        out = subprocess.PIPE
        procs.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=out, text=True))
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "launched by srun" in outputs[0] and outputs[1] == ""  # rank 0 alone prints
    assert [(r[0], r[1]) for r in table_rows(outputs[0])] == [("0", "0"), ("1", "0")]


@pytest.mark.slow
def test_a_rank_that_never_joins_times_out(tmp_path):
    """Rank 0 of 2 alone (its peer never started): exit 1 after the timeout, said in a line."""
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "sr_lightning.cli.preflight", "--timeout", "3"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "rank 0" in proc.stderr and "did not form within 3 s" in proc.stderr, proc.stderr


# ---- the verdict on made-up rows (no processes) ------------------------------------------------
def row(rank: int, **kw) -> Row:
    base = {
        "all_reduce": 3.0,
        "train": Files(12, "a" * 64),
        "eval": Files(20, "b" * 64),
        "free": {"run folder": ("/runs", 500.0), "cache": ("/cache", 500.0)},
        "wandb": "offline",
    }
    return Row(rank, rank, f"node{rank}", **(base | kw))


def test_file_difference_names_the_first_missing_extra_and_resized_files():
    theirs = {"train/a.png": 1, "train/b.png": 2, "train/c.png": 3, "train/d.png": 4}
    mine = {"train/b.png": 2, "train/c.png": 30, "train/e.png": 5}
    assert file_difference(mine, theirs) == (
        "3 files vs 4, missing train/a.png (and 1 more), extra train/e.png, "
        "size differs train/c.png"
    )


def test_problems_name_the_rank_and_host():
    rows = [row(0), row(1, train=Files(11, "c" * 64), all_reduce=2.0)]
    rows[1].free["cache"] = ("/scratch/cache", 2.5)
    lists = [{"train": {"train/x.png": 1, "train/y.png": 2}}, {"train": {"train/y.png": 2}}]
    problems = problems_of(rows, lists, min_free_gb=10)
    assert problems == [
        "rank 1 (host node1): all-reduce gave 2.0, expected 3",
        "rank 1 (host node1): 2.5 GB free for the cache (/scratch/cache), under 10 GB",
        "rank 1 (host node1): training files differ from rank 0: 1 files vs 2, missing train/x.png",
    ]


def test_a_problem_of_every_rank_is_said_once():
    problem = "data.batch_size=3 (the global batch) is not divisible by ..."
    rows = [row(0, problems=[problem]), row(1, problems=[problem, "validation set: gone"])]
    assert problems_of(rows, None, min_free_gb=10) == [
        f"all ranks: {problem}",
        "rank 1 (host node1): validation set: gone",
    ]
    assert problems_of([row(0, all_reduce=1.0)], None, 10) == []  # one rank: 1 is right


def test_the_table_has_one_row_per_rank():
    text = format_table([row(0), row(1, all_reduce=5.0, train=None)])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| rank | local | host")
    assert "| OK " in lines[2] and "| WRONG " in lines[3]
    assert f"12 {'a' * 12}" in lines[2] and "| -" in lines[3]
