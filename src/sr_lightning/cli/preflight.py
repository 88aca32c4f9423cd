"""``sr-preflight`` (also ``python -m sr_lightning.cli.preflight``): a cluster check to run under
torchrun or srun, with ``train.py``'s own overrides, before a long job::

    torchrun --nnodes 2 --nproc-per-node 4 ... -m sr_lightning.cli.preflight trainer=ddp ...
    srun .venv/bin/sr-preflight trainer=slurm trainer.num_nodes=2 trainer.devices=4 ...

Every rank reports its host, global and local rank, device, whether an all-reduce gives the
right sum and its bus bandwidth, a checksum of the training and evaluation files it sees (the
files the data module would open, found by its own functions), free disk where the run folder
and the image cache live, and the W&B mode the run would use. Rank 0 prints one table (one row
per rank) and every problem, each naming its rank and host; every rank exits 1 on any problem
(0 when there is none), so that a job script can stop before training.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf, open_dict

GB = 1e9
FileList = dict[str, int]  # "train/T91/t1.png" -> size in bytes


@dataclass(frozen=True)
class Launch:
    """How this process was started: by srun, torchrun, or alone (world size 1)."""

    launcher: str
    rank: int
    local_rank: int
    world: int
    address: str
    port: int


@dataclass
class Files:
    """A file list as compared between ranks: its length and the sha256 of its entries."""

    count: int
    sha256: str


@dataclass
class Row:
    """What one rank reports (plain data: gathered to every rank as a dict)."""

    rank: int
    local_rank: int
    host: str
    device: str = "cpu"
    all_reduce: float | None = None  # the sum this rank got
    busbw: float | None = None  # GB/s
    train: Files | None = None
    eval: Files | None = None
    free: dict[str, tuple[str, float]] = field(default_factory=dict)  # what -> (path, GB)
    wandb: str = "?"
    problems: list[str] = field(default_factory=list)


# ---- the launch and the process group ---------------------------------------------------------
def detect_launch() -> Launch:
    """The ranks as Lightning reads them (its cluster environments, in its order: SLURM, then
    torchrun), else ``RANK``/``WORLD_SIZE`` if set, else a single process."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for name, env_type in (("srun", SLURMEnvironment), ("torchrun", TorchElasticEnvironment)):
        if env_type.detect():
            env = env_type()
            return Launch(
                name,
                env.global_rank(),
                env.local_rank(),
                env.world_size(),
                env.main_address,
                env.main_port,
            )
    world = int(os.environ.get("WORLD_SIZE", 1))
    return Launch(
        "env" if world > 1 else "none",
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("LOCAL_RANK", 0)),
        world,
        os.environ.get("MASTER_ADDR", "127.0.0.1"),
        int(os.environ.get("MASTER_PORT", 29500)),
    )


def join(launch: Launch, timeout_s: float) -> None:
    """Start the gloo process group every collective here goes through (a single process: an
    in-memory store); a rank that never joins fails the others after ``timeout_s``."""
    timeout = timedelta(seconds=timeout_s)
    if launch.world == 1:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        return
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = launch.address, str(launch.port)
    dist.init_process_group(
        "gloo", rank=launch.rank, world_size=launch.world, timeout=timeout, init_method="env://"
    )


def pick_device(local_rank: int) -> tuple[torch.device, str, str | None]:
    """(device, its name, a problem): ``cuda:<local rank>`` where CUDA is, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu"), "cpu", None
    count = torch.cuda.device_count()
    if local_rank >= count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        problem = (
            f"local rank {local_rank}, {count} GPU(s) visible (CUDA_VISIBLE_DEVICES={visible})"
        )
        return torch.device("cpu"), "cpu", problem
    name = torch.cuda.get_device_name(local_rank)
    return torch.device(f"cuda:{local_rank}"), f"cuda:{local_rank} {name}", None


def collective_group(device: torch.device) -> tuple[torch.device, object | None]:
    """(device, group) of the all-reduce checks: an NCCL group on each rank's GPU when every
    rank has one, else the gloo group on the CPU (all ranks decide alike)."""
    kinds: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(kinds, device.type)
    if all(k == "cuda" for k in kinds):
        torch.cuda.set_device(device)
        return device, dist.new_group(backend="nccl")
    return torch.device("cpu"), None


def check_all_reduce(device: torch.device, group: object | None) -> float:
    """The sum of (rank + 1) over the ranks, as an all-reduce gives it."""
    value = torch.tensor([dist.get_rank() + 1.0], dtype=torch.float64, device=device)
    dist.all_reduce(value, group=group)
    return float(value.item())


def bus_bandwidth(device: torch.device, group: object | None, mb: int, repeats: int = 3):
    """All-reduce bus bandwidth in GB/s (``2 (n - 1) / n x bytes / time``, as nccl-tests
    report it) of ``mb`` MiB of float32, or None on a single rank."""
    world = dist.get_world_size()
    if world == 1:
        return None
    data = torch.ones(mb * 2**20 // 4, dtype=torch.float32, device=device)
    dist.all_reduce(data, group=group)  # warm-up: connections, buffers
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(data, group=group)
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    return 2 * (world - 1) / world * data.numel() * 4 / seconds / GB


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the run's config, its files, its folders --------------------------------------------------
def compose_train_config(overrides: list[str]) -> DictConfig:
    """The config ``train.py OVERRIDES`` composes, as it prepares its command line (a resume
    gets its run's overrides back, a misspelt key is named), with its ``hydra`` node; the run
    folder is ``hydra.run.dir``, resolved (nothing is written there)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from sr_lightning.config.keys import REPO_CONF, check_keys
    from sr_lightning.config.rules import prepare_command_line

    argv = prepare_command_line("train", ["train.py", *overrides])
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(REPO_CONF), version_base="1.3", job_name="train"):
            cfg = compose("train", overrides=argv[1:], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    check_keys(cfg, "train")
    run_dir = str(OmegaConf.select(cfg, "hydra.run.dir"))
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = run_dir
        cfg.paths.output_dir = run_dir
    HydraConfig.instance().set_config(cfg)
    return cfg


def entry(path: Path, role: str, bases: list[Path]) -> str:
    """``<role>/<path relative to the first base holding it>`` (the data root, the cache), so
    that ranks with their data in different places (node-local copies) compare alike."""
    path = Path(os.path.abspath(path))
    for base in bases:
        if path.is_relative_to(base):
            return f"{role}/{path.relative_to(base).as_posix()}"
    return f"{role}/{path.as_posix()}"


def listed(pairs, role: str, bases: list[Path]) -> FileList:
    """The HR and LR files of ``pairs`` (data.datasets.Pair), with their sizes."""
    out: FileList = {}
    for pair in pairs:
        for path in (pair.hr, pair.lr):
            if path is not None:
                try:
                    out[entry(path, role, bases)] = path.stat().st_size
                except OSError:
                    out[entry(path, role, bases)] = -1
    return out


def data_files(datamodule) -> tuple[FileList | None, FileList | None, list[str]]:
    """(training files, evaluation files, problems) of ``datamodule`` (an SRDataModule): the
    files its training set (every scale) and its validation and test sets resolve to, through
    its own functions; a set that is missing is a problem, with the data module's message."""
    from sr_lightning.data.cache import DEFAULT_CACHE_DIR

    bases = [Path(os.path.abspath(Path(datamodule.root).expanduser()))]
    bases.append(Path(os.path.abspath(datamodule.cache_dir or DEFAULT_CACHE_DIR)))
    problems: list[str] = []
    train: FileList | None = {}
    try:
        for scale in datamodule.scales:
            train.update(listed(datamodule.train_pairs(scale), "train", bases))
    except (FileNotFoundError, ValueError, ImportError) as e:
        train = None
        problems.append(f"training set: {e}")
    evaluation: FileList = {}
    for what, names, split in (
        ("validation", datamodule.val_sets, "val"),
        ("test", datamodule.benchmarks, "test"),
    ):
        try:
            for data in datamodule.eval_sets(names, split):
                evaluation.update(listed(data.pairs, split, bases))
        except (FileNotFoundError, ValueError, ImportError) as e:
            problems.append(f"{what} set: {e}")
            return train, None, problems
    return train, evaluation, problems


def digest(files: FileList) -> Files:
    text = "\n".join(f"{name}\t{size}" for name, size in sorted(files.items()))
    return Files(len(files), hashlib.sha256(text.encode()).hexdigest())


def free_gb(path: str | Path) -> float:
    """Free space (GB) of the file system that holds ``path`` (its nearest existing folder)."""
    where = Path(os.path.abspath(Path(path).expanduser()))
    while not where.exists() and where != where.parent:
        where = where.parent
    return shutil.disk_usage(where).free / GB


def wandb_mode_of(cfg: DictConfig) -> str:
    """The mode of the run's W&B logger (``logger.*`` with a WandbLogger target), else off."""
    from sr_lightning.training.wandb_mode import wandb_mode

    for node in (cfg.get("logger") or {}).values():
        if node and str(node.get("_target_", "")).endswith("WandbLogger"):
            return str(node.get("mode") or wandb_mode())
    return "off"


def trainer_problems(cfg: DictConfig, world: int, device: torch.device, batch: int) -> list[str]:
    """What Lightning or the data module would refuse, or silently get wrong, on this launch:
    a GPU accelerator without a GPU, a process count other than devices x nodes, a global batch
    that does not split over the processes."""
    from sr_lightning.data.datamodule import per_device_batch

    problems = []
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    if accelerator in ("gpu", "cuda") and device.type != "cuda":
        problems.append(f"trainer.accelerator={accelerator} but this rank has no GPU")
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1)
    counted = isinstance(devices, int) and isinstance(nodes, int) and devices > 0
    if world > 1 and counted and devices * nodes != world:
        problems.append(
            f"trainer.devices x trainer.num_nodes = {devices} x {nodes}, but the launcher "
            f"started {world} processes"
        )
    try:
        per_device_batch(batch, world)
    except ValueError as e:
        problems.append(str(e))
    return problems


def local_report(
    overrides: list[str], launch: Launch, device: torch.device
) -> tuple[Row, dict[str, FileList]]:
    """This rank's row (its all-reduce fields left empty) and its file lists."""
    import hydra

    from sr_lightning.data.cache import DEFAULT_CACHE_DIR

    row = Row(launch.rank, launch.local_rank, socket.gethostname())
    lists: dict[str, FileList] = {}
    try:
        cfg = compose_train_config(overrides)
        row.wandb = wandb_mode_of(cfg)
        row.free["run folder"] = (cfg.paths.output_dir, free_gb(cfg.paths.output_dir))
        datamodule = hydra.utils.instantiate(cfg.data)
    except SystemExit as e:  # the command line refused (the message is on stderr)
        code = e.code if isinstance(e.code, str) else f"exit {e.code}, see this rank's stderr"
        row.problems.append(f"config: {code}")
        return row, lists
    except Exception as e:  # noqa: BLE001  (a config error: named in the table, not a traceback)
        row.problems.append(f"config: {type(e).__name__}: {e}")
        return row, lists
    cache = datamodule.cache_dir or DEFAULT_CACHE_DIR
    row.free["cache"] = (str(cache), free_gb(cache))
    row.problems += trainer_problems(cfg, launch.world, device, datamodule.batch_size)
    train, evaluation, problems = data_files(datamodule)
    row.problems += problems
    for kind, files in (("train", train), ("eval", evaluation)):
        if files is not None:
            lists[kind] = files
            setattr(row, kind, digest(files))
    return row, lists


# ---- the verdict -------------------------------------------------------------------------------
KINDS = {"train": "training files", "eval": "evaluation files"}


def file_difference(mine: FileList, theirs: FileList) -> str:
    """``11 files vs 12, missing train/T91/t1.png`` (this rank's vs rank 0's)."""
    missing = sorted(set(theirs) - set(mine))
    extra = sorted(set(mine) - set(theirs))
    resized = sorted(n for n in set(mine) & set(theirs) if mine[n] != theirs[n])
    parts = [f"{len(mine)} files vs {len(theirs)}"]
    for what, names in (("missing", missing), ("extra", extra), ("size differs", resized)):
        if names:
            more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
            parts.append(f"{what} {names[0]}{more}")
    return ", ".join(parts)


def differing(rows: list[Row]) -> dict[str, list[int]]:
    """Per kind of file list, the ranks whose checksum differs from rank 0's."""
    out: dict[str, list[int]] = {}
    first = rows[0]
    for kind in KINDS:
        ref = getattr(first, kind)
        ranks = [r.rank for r in rows[1:] if ref and getattr(r, kind) and getattr(r, kind) != ref]
        if ranks:
            out[kind] = ranks
    return out


def problems_of(
    rows: list[Row], lists: list[dict[str, FileList]] | None, min_free_gb: float
) -> list[str]:
    """Every problem, one line each, naming its rank and host; a problem every rank has is
    said once, for all ranks. ``lists``: the ranks' file lists (for the names of what
    differs), or None when every rank's checksums agree."""
    world = len(rows)
    expected = world * (world + 1) / 2
    per_rank: list[list[str]] = []
    for row in rows:
        mine = list(row.problems)
        if row.all_reduce != expected:
            mine.append(f"all-reduce gave {row.all_reduce}, expected {expected:g}")
        for what, (path, gb) in row.free.items():
            if gb < min_free_gb:
                mine.append(f"{gb:.1f} GB free for the {what} ({path}), under {min_free_gb:g} GB")
        per_rank.append(mine)
    for kind, ranks in differing(rows).items():
        for rank in ranks:
            detail = (
                file_difference(lists[rank][kind], lists[0][kind])
                if lists
                else f"{getattr(rows[rank], kind).count} files vs {getattr(rows[0], kind).count}"
            )
            per_rank[rank].append(f"{KINDS[kind]} differ from rank 0: {detail}")
    common = [p for p in per_rank[0] if world > 1 and all(p in mine for mine in per_rank)]
    out = [f"all ranks: {p}" for p in common]
    for row, mine in zip(rows, per_rank, strict=True):
        out += [f"rank {row.rank} (host {row.host}): {p}" for p in mine if p not in common]
    return out


def format_table(rows: list[Row]) -> str:
    """One row per rank, columns padded (Markdown)."""
    header = ["rank", "local", "host", "device", "all-reduce", "busbw GB/s"]
    header += ["train files", "eval files", "free GB (run, cache)", "W&B"]
    world = len(rows)
    expected = world * (world + 1) / 2

    def files(f: Files | None) -> str:
        return f"{f.count} {f.sha256[:12]}" if f else "-"

    lines = [header]
    for r in rows:
        reduce = "-" if r.all_reduce is None else "OK" if r.all_reduce == expected else "WRONG"
        free = ", ".join(f"{gb:.0f}" for _, gb in r.free.values()) or "-"
        busbw = "-" if r.busbw is None else f"{r.busbw:.2f}"
        lines.append(
            [str(r.rank), str(r.local_rank), r.host, r.device, reduce, busbw]
            + [files(r.train), files(r.eval), free, r.wandb]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["| " + " | ".join(map(str.ljust, line, widths)) + " |" for line in lines]
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def gather(obj: object) -> list:
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def as_row(data: dict) -> Row:
    for kind in KINDS:
        if data[kind] is not None:
            data[kind] = Files(**data[kind])
    return Row(**data)


# ---- the command -------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sr-preflight",
        description="Check every rank of a cluster job before training: run it under torchrun "
        "or srun with train.py's overrides. Exit 0: all good; 1: problems, each named.",
    )
    parser.add_argument("overrides", nargs="*", help="train.py's Hydra overrides")
    parser.add_argument(
        "--min-free-gb", type=float, default=10.0, help="free disk needed (default 10 GB)"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for every rank (default 60)"
    )
    parser.add_argument(
        "--bandwidth-mb", type=int, default=None, help="all-reduce size (default: GPU 64, CPU 16)"
    )
    args, unknown = parser.parse_known_args(argv)
    if {"-m", "--multirun"} & set(unknown):
        parser.error("a preflight checks one run: drop -m/--multirun")
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def run(args: argparse.Namespace, launch: Launch) -> int:
    """The checks, once the process group stands; the same exit code on every rank."""
    from sr_lightning.training.console import quiet_library_noise

    quiet_library_noise()
    device, name, device_problem = pick_device(launch.local_rank)
    row, lists = local_report(args.overrides, launch, device)
    row.device = name
    if device_problem:
        row.problems.insert(0, device_problem)
    device, group = collective_group(device)
    row.all_reduce = check_all_reduce(device, group)
    mb = args.bandwidth_mb or (64 if device.type == "cuda" else 16)
    row.busbw = bus_bandwidth(device, group, mb)
    rows = [as_row(r) for r in gather(asdict(row))]
    all_lists = gather(lists) if differing(rows) else None  # the names, only where needed
    problems = problems_of(rows, all_lists, args.min_free_gb)
    if launch.rank == 0:
        print(f"sr-preflight: {launch.world} rank(s), launched by {launch.launcher}")
        print(format_table(rows))
        for line in problems:
            print(line)
        print(f"preflight: {len(problems)} problem(s)" if problems else "preflight: all good")
        sys.stdout.flush()
    dist.barrier()  # no rank exits (and has its launcher stop the others) before rank 0 printed
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """0 when every rank is ready, 1 when any is not (every rank returns the same)."""
    args = parse_args(argv)
    try:
        launch = detect_launch()
    except (RuntimeError, ValueError, KeyError) as e:  # e.g. SLURM's variables contradict
        print(f"sr-preflight: cannot read the launch: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    where = f"sr-preflight: rank {launch.rank} (host {socket.gethostname()})"
    try:
        join(launch, args.timeout)
    except Exception as e:  # noqa: BLE001  (a launch that cannot form: said in one line)
        print(
            f"{where}: the process group of {launch.world} did not form within "
            f"{args.timeout:g} s ({launch.address}:{launch.port}): {type(e).__name__}: {e}",
            file=sys.stderr,
        )
        return 1
    try:
        return run(args, launch)
    except dist.DistError as e:  # a rank that died or hung half-way
        print(f"{where}: a collective failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
