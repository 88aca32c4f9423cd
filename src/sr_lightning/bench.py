"""Benchmark harness (``make bench``, ``bench/gpu.sh``): is the training step at the hardware's
limit, and how far ahead of plain PyTorch is it?

    python -m sr_lightning.bench [--device cpu|cuda] [--models edsr_baseline edsr] [--steps 20]

One table: training-step throughput of the plain eager fp32 NCHW step (the reference code's way:
same network, ``.item()`` on the loss every step, float batches copied from the host) next to
ours (the Lightning run of ``train.py``, data module and callbacks included, as configured by
default, then with each speed-up off and each on its own: bf16, channels_last, fused Adam, the
``torch.compile`` modes, the device-side patch pipeline); model FLOPs per step and the achieved
fraction of the machine's peak, measured in the same run with a large matmul (fp32 on CPU, bf16
on GPU); peak GPU memory; inference ms per output megapixel; the data module's patches/s (loader
workers and ``data.on_device``) next to what the fastest step consumes. The rows are printed and
appended to BENCHMARKS.md with the date, machine, driver, torch version and git commit.
``--budget-s`` (and SIGTERM) end the measurements early and still write the table: the rows
are ordered so that the cheap eager ones come first and the compiled ones (minutes) last.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import signal
import statistics
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from .flops import matmul_peak, sync, train_step_flops
from .lit_module import CompiledOrEager
from .models import build_net

REPO = Path(__file__).resolve().parents[2]
MODELS = ("edsr_baseline", "edsr")  # presets of the model catalogue (paper Table 1)

__all__ = ["main", "matmul_peak", "train_step_flops", "variants"]


class TimeUp(BaseException):
    """The time budget is spent (``--budget-s`` or SIGTERM): stop measuring, write the table."""


def peak_memory(device: str, reset: bool = False) -> float | None:
    """GiB of the most GPU memory allocated since the last reset (None on CPU)."""
    if not device.startswith("cuda"):
        return None
    if reset:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return None
    return torch.cuda.max_memory_allocated() / 2**30


# ---- the plain step (the reference's way) ----------------------------------------------------
def make_net(model: str, scale: int = 2, net_args: dict | None = None) -> nn.Module:
    """The catalogue's ``model``; ``net_args`` (n_resblocks, n_feats) shrink it for dry runs."""
    torch.manual_seed(0)
    return build_net(model, [scale], **(net_args or {}))


def host_batches(
    batch: int, patch: int, scale: int, n: int = 4
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Float32 (LR, HR) batches on the host, as the reference's DataLoader hands them over."""
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, 256, (batch, 3, patch, patch), generator=g).float(),
            torch.randint(0, 256, (batch, 3, patch * scale, patch * scale), generator=g).float(),
        )
        for _ in range(n)
    ]


def plain_step_times(
    model: str,
    device: str,
    batch: int,
    patch: int,
    scale: int,
    steps: int,
    warmup: int,
    net_args: dict | None = None,
) -> list[float]:
    """Seconds per step of the plain eager fp32 NCHW loop, ``.item()`` every step."""
    net = make_net(model, scale, net_args).to(device).train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    data = host_batches(batch, patch, scale)
    times = []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        lr, hr = (t.to(device) for t in data[i % len(data)])
        loss = F.l1_loss(net(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # the reference logs the loss every step: a host sync
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


# ---- our step: train.py's Lightning run, data module and callbacks included ------------------
class StepTimer(L.Callback):
    """Time between the ends of consecutive steps: on GPU with CUDA events (no host sync in
    the step; gaps where the GPU waits for the host or the loader are counted), on CPU with
    the host clock."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.marks: list = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_times(self) -> list[float]:
        marks = self.marks[self.warmup :]
        if marks and isinstance(marks[0], torch.cuda.Event):
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(marks, marks[1:], strict=False)]
        return [b - a for a, b in zip(marks, marks[1:], strict=False)]


class ForeachAdam(L.Callback):
    """Adam without its fused kernel (torch's multi-tensor ``foreach`` default) for the rows
    that turn fused Adam off: ``configure_optimizers`` always fuses, so the bench switches
    the flag Adam reads at each step."""

    def on_train_start(self, trainer, pl_module) -> None:
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["fused"] = False


@dataclass(frozen=True)
class Knobs:
    """The speed-ups of our training step, each on or off: bf16 autocast (GPU), channels_last,
    fused Adam, a ``torch.compile`` mode (None: eager), the device-side patch pipeline."""

    bf16: bool
    channels_last: bool
    fused_adam: bool
    compile: str | None = None
    on_device: bool = False

    def overrides(self, cuda: bool) -> list[str]:
        out = [
            f"model.channels_last={str(self.channels_last).lower()}",
            f"model.compile={self.compile or 'false'}",
            f"data.on_device={str(self.on_device).lower()}",
        ]
        if cuda:  # the CPU trainer is always fp32 (this CPU has no native bf16)
            out.append(f"trainer.precision={'bf16-mixed' if self.bf16 else '32-true'}")
        return out


def default_knobs(device: str) -> Knobs:
    """What ``train.py`` does by default (conf/trainer, conf/model; a test checks the two)."""
    cuda = device.startswith("cuda")
    return Knobs(bf16=cuda, channels_last=cuda, fused_adam=True)


def tier(name: str, knobs: Knobs) -> int:
    """Measuring order: 0 default +- one speed-up, 1 the same compiled (each compile takes a
    minute or more), 2 all off and each speed-up alone, 3 the same compiled."""
    return 2 * name.startswith("ours all off") + (knobs.compile is not None)


def variants(device: str, compile_modes: list[str] | None = None) -> dict[str, Knobs]:
    """The step modes measured besides the plain one, by :func:`tier`: ours as configured,
    then with each speed-up off (or, for those off by default, on); on GPU, where several are
    on by default, also everything off and each speed-up alone. ``compile_modes``: default
    all modes on GPU, ``default`` on CPU."""
    cuda = device.startswith("cuda")
    default = default_knobs(device)
    off = Knobs(bf16=False, channels_last=False, fused_adam=False)
    switches = [("bf16", "bf16", True)] if cuda else []
    switches += [("channels_last", "channels_last", True), ("fused Adam", "fused_adam", True)]
    if compile_modes is None:
        compile_modes = list(CompiledOrEager.MODES) if cuda else ["default"]
    switches += [(f"compile {m}", "compile", m) for m in compile_modes]
    rows = {"ours default": default}
    for name, key, on in switches:
        if getattr(default, key) == on:
            rows[f"ours default, no {name}"] = replace(default, **{key: getattr(off, key)})
        else:
            rows[f"ours default + {name}"] = replace(default, **{key: on})
    rows["ours default + data.on_device"] = replace(default, on_device=True)
    if cuda:
        rows["ours all off (fp32 NCHW eager, foreach Adam)"] = off
        for name, key, on in switches:
            rows[f"ours all off + {name}"] = replace(off, **{key: on})
    unique: dict[Knobs, str] = {}
    for name, knobs in rows.items():
        unique.setdefault(knobs, name)  # the same setting twice: keep the first name
    ordered = sorted(unique.items(), key=lambda item: tier(item[1], item[0]))
    return {name: knobs for knobs, name in ordered}


def compose_train_config(overrides: list[str]):
    """``conf/train.yaml`` with ``overrides``, as ``train.py`` would see it (no Hydra run)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def ours_step_times(
    model: str,
    device: str,
    batch: int,
    patch: int,
    steps: int,
    warmup: int,
    data_root: str,
    train_set: str,
    overrides: list[str],
    fused_adam: bool = True,
) -> list[float]:
    """Seconds per step of ``train.py`` as configured (plus ``overrides``), measured in a fit."""
    from .cli import build_training

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_train_config(
            [
                f"model={model}",
                "logger=csv",
                f"paths.output_dir={out}",
                f"data.root={data_root}",
                f"data.train_set={train_set}",
                "data.val_sets=[]",
                "data.benchmarks=[]",
                f"data.batch_size={batch}",
                f"data.patch_size={patch}",
                f"data.updates_per_epoch={warmup + steps + 1}",
                "trainer.max_epochs=1",
                f"trainer.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}",
                "trainer.enable_model_summary=false",
                # file writers off: a benchmark run leaves nothing behind
                "~callbacks.best_checkpoint",
                "~callbacks.step_checkpoint",
                "~callbacks.history",
                "~callbacks.resumable",
                "~callbacks.progress_bar",
                "+trainer.enable_progress_bar=false",
                *overrides,
            ]
        )
        timer = StepTimer(warmup)
        extra = [timer] if fused_adam else [timer, ForeachAdam()]
        trainer, module, datamodule = build_training(cfg, extra_callbacks=extra)
        trainer.fit(module, datamodule=datamodule)
        return timer.step_times()


# ---- inference and data -----------------------------------------------------------------------
@torch.inference_mode()
def inference_ms_per_mp(
    model: str,
    scale: int,
    device: str,
    size: int,
    repeats: int = 3,
    bf16: bool = False,
    net_args: dict | None = None,
) -> float:
    """ms per output megapixel of a whole ``size`` x ``size`` LR image (median of repeats)."""
    net = make_net(model, scale, net_args).to(device).eval()
    if device.startswith("cuda"):
        net = net.to(memory_format=torch.channels_last)
    lr = torch.rand(1, 3, size, size, device=device) * 255
    times = []
    for i in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=bf16):
            net(lr)
        sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000 / (size * size * scale * scale / 1e6)


def loader_patches_per_second(dm, repeats: int = 3) -> float:
    """Steady-state LR patches/s of ``dm.train_dataloader()`` (median over epochs; the clock
    starts at each epoch's first batch, so starting the workers is not counted; device-side
    batches are waited for)."""
    rates = []
    for _ in range(repeats):
        loader, n, start = dm.train_dataloader(), 0, None
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            n += batch["lr"].shape[0]
        sync(batch["lr"].device)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def data_module_rate(
    data_root: str,
    train_set: str,
    batch: int,
    patch: int,
    workers: int,
    batches: int = 100,
    on_device: bool = False,
) -> float:
    from .data.datamodule import SRDataModule

    dm = SRDataModule(
        root=data_root,
        scales=[2],
        patch_size=patch,
        batch_size=batch,
        num_workers=workers,
        train_set=train_set,
        val_sets=[],
        benchmarks=[],
        updates_per_epoch=batches,
        on_device=on_device,
    )
    dm.prepare_data()
    dm.setup("fit")
    return loader_patches_per_second(dm)


# ---- the table --------------------------------------------------------------------------------
@dataclass
class Row:
    model: str
    mode: str
    batch: int
    times: list[float]
    flops: int
    peak: float
    plain: float | None = None  # median step time of the plain step, for the speed-up
    memory: float | None = None  # peak GPU memory, GiB

    @property
    def step(self) -> float:
        return statistics.median(self.times)

    def cells(self) -> list[str]:
        rate = self.flops / self.step
        speedup = f"{self.plain / self.step:.2f}x" if self.plain else ""
        return [
            self.model,
            self.mode,
            str(self.batch),
            f"{self.step * 1000:,.{1 if self.step < 0.1 else 0}f}",
            f"{self.batch / self.step:,.{1 if self.batch / self.step >= 1 else 3}f}",
            f"{self.flops / 1e9:,.1f}",
            f"{rate / 1e12:.3f}",
            f"{100 * rate / self.peak:.0f}%",
            speedup,
            f"{self.memory:.2f}" if self.memory is not None else "",
        ]


HEADER = [
    "model",
    "step",
    "batch",
    "ms/step (median)",
    "patches/s",
    "GFLOP/step",
    "TFLOP/s",
    "of matmul peak",
    "vs plain",
    "peak GPU GiB",
]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def machine(device: str) -> str:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        try:
            driver = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                .stdout.split("\n")[0]
                .strip()
            )
        except (OSError, subprocess.SubprocessError):
            driver = ""
        return (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), driver {driver or '?'}, "
            f"CUDA {torch.version.cuda}"
        )
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO).returncode
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "?"
    except OSError:
        return "?"


def print_row(cells: list[str]) -> None:
    print(markdown(HEADER, [cells]).splitlines()[-1], flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument(
        "--edsr-batch",
        type=int,
        default=None,
        help="EDSR's batch (default: 16 GPU, halved until the plain step fits; 1 CPU)",
    )
    parser.add_argument(
        "--edsr-steps", type=int, default=None, help="EDSR's timed steps (default: 20 GPU, 5 CPU)"
    )
    parser.add_argument("--modes", nargs="*", default=None, help="subset of the step modes")
    parser.add_argument(
        "--compile-modes",
        nargs="*",
        default=None,
        choices=CompiledOrEager.MODES,
        help="torch.compile modes measured (default: all on GPU, 'default' on CPU; none: eager)",
    )
    parser.add_argument("--n-resblocks", type=int, default=None, help="network size (dry runs)")
    parser.add_argument("--n-feats", type=int, default=None, help="network size (dry runs)")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--train-set", default="benchmark/B100/HR")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (config's)")
    parser.add_argument("--loader-batches", type=int, default=100, help="per timed epoch")
    parser.add_argument("--peak-n", type=int, default=None, help="matmul side for the peak")
    parser.add_argument("--infer-size", type=int, default=None, help="LR side for inference")
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="stop starting new rows after this"
    )
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"), help="'' to not append")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")  # Lightning's advice on worker counts etc.: not results
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    def out_of_time(signum: int, frame: object) -> None:
        raise TimeUp(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, out_of_time)  # `timeout` in bench/gpu.sh
    try:
        return Bench(args).run()
    finally:
        signal.signal(signal.SIGTERM, previous)


class Bench:
    """One run of the harness: the measurements in order of cost, then the report."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.monotonic()
        self.device, self.cuda = args.device, args.device.startswith("cuda")
        self.train_set = str(Path(args.data_root) / args.train_set)
        if not Path(self.train_set).is_dir():
            raise SystemExit(
                f"--train-set {self.train_set} not found: point --data-root at a folder holding "
                "it (../shared/datasets here; any folder of HR images works with --train-set)"
            )
        sizes = (("n_resblocks", args.n_resblocks), ("n_feats", args.n_feats))
        self.net_args = {k: v for k, v in sizes if v}
        self.modes = variants(self.device, args.compile_modes)
        self.chosen = args.modes if args.modes is not None else ["plain", *self.modes]
        cfg = compose_train_config([f"paths.output_dir={tempfile.gettempdir()}"])
        self.workers = args.workers if args.workers is not None else int(cfg.data.num_workers)
        self.step_rows: list[Row] = []
        self.infer_rows: list[list[str]] = []
        self.loader: dict[str, float] = {}
        self.notes: list[str] = []

    def run(self) -> str:
        self.peak_dtype = torch.bfloat16 if self.cuda else torch.float32
        self.peak = matmul_peak(self.device, self.peak_dtype, n=self.args.peak_n)
        self.peak_fp32 = (
            matmul_peak(self.device, torch.float32, n=self.args.peak_n) if self.cuda else self.peak
        )
        print(
            f"# matmul peak: {self.peak / 1e12:.3f} TFLOP/s ({self.peak_dtype}), "
            f"fp32 {self.peak_fp32 / 1e12:.3f}",
            flush=True,
        )
        try:  # cheap and always wanted first: the loader and inference; then the steps
            self.measure_loader()
            self.measure_inference()
            self.measure_steps()
        except TimeUp as e:
            self.notes.append(f"Cut short by the time limit ({e}): the rows above were measured.")
            print(f"# {self.notes[-1]}", flush=True)
        return self.report()

    def measure_loader(self) -> None:
        a = self.args
        for name, on_device in ((f"{self.workers} workers", False), ("data.on_device", True)):
            self.loader[name] = data_module_rate(
                a.data_root, self.train_set, a.batch, a.patch, self.workers, a.loader_batches,
                on_device,
            )  # fmt: skip
            print(f"# loader, {name}: {self.loader[name]:,.0f} patches/s", flush=True)

    def measure_inference(self) -> None:
        if self.args.no_inference:
            return
        for model in self.args.models:
            default_size = {"edsr_baseline": 256, "edsr": 128}[model] // (1 if self.cuda else 2)
            size = self.args.infer_size or default_size
            for scale in (2, 4):
                cells = [model, f"x{scale}", f"{size}x{size}"]
                for bf16 in (False, True) if self.cuda else (False,):
                    ms = inference_ms_per_mp(
                        model, scale, self.device, size, bf16=bf16, net_args=self.net_args
                    )
                    cells.append(f"{ms:,.1f}")
                self.infer_rows.append(cells)

    def jobs(self) -> list[tuple[str, str]]:
        """(model, mode) in the order measured: the plain steps, then every model's modes
        :func:`tier` by tier (``--budget-s`` cuts the costly tail)."""
        jobs = [(model, "plain") for model in self.args.models if "plain" in self.chosen]
        for level in range(4):
            for model in self.args.models:
                jobs += [
                    (model, name)
                    for name, knobs in self.modes.items()
                    if name in self.chosen and tier(name, knobs) == level
                ]
        return jobs

    def measure_steps(self) -> None:
        a, device = self.args, self.device
        sizes: dict[str, tuple[int, int, int]] = {}  # model: batch, timed steps, warm-up steps
        for model in a.models:
            big = model == "edsr"
            batch = (a.edsr_batch or (16 if self.cuda else 1)) if big else a.batch
            steps = (a.edsr_steps or (20 if self.cuda else 5)) if big else a.steps
            sizes[model] = (batch, steps, min(a.warmup, 1) if big and not self.cuda else a.warmup)
        plain: dict[str, float] = {}
        skipped = []
        for model, name in self.jobs():
            if a.budget_s is not None and time.monotonic() - self.started > a.budget_s:
                skipped.append(f"{model} {name}")
                continue
            peak_memory(device, reset=True)
            if name == "plain":
                times = self.plain(model, sizes)
                plain[model] = statistics.median(times)
                mode = "plain eager fp32 NCHW"
            else:
                try:
                    times = self.ours(model, name, *sizes[model])
                except Exception as e:  # a variant that cannot run here (e.g. no compiler)
                    print(f"| {model} | {name} | failed: {type(e).__name__}: {e} |", flush=True)
                    continue
                mode = name
            batch = sizes[model][0]
            flops = train_step_flops(make_net(model, 2, self.net_args), batch, a.patch, 2)
            speedup = plain.get(model) if name != "plain" else None
            row = Row(model, mode, batch, times, flops, self.peak, speedup)
            row.memory = peak_memory(device)
            self.step_rows.append(row)
            print_row(row.cells())
        if skipped:
            self.notes.append(
                f"Not measured (time budget {a.budget_s:.0f} s): {', '.join(skipped)}."
            )
            print(f"# {self.notes[-1]}", flush=True)

    def plain(self, model: str, sizes: dict[str, tuple[int, int, int]]) -> list[float]:
        """The plain step's times; EDSR's batch is halved until it fits (``sizes`` keeps it)."""
        batch, steps, warmup = sizes[model]
        while True:
            try:
                return plain_step_times(
                    model, self.device, batch, self.args.patch, 2, steps, warmup, self.net_args
                )
            except torch.cuda.OutOfMemoryError:
                if batch == 1 or self.args.edsr_batch or model != "edsr":
                    raise
                print(f"# {model}: batch {batch} does not fit, trying {batch // 2}", flush=True)
                batch //= 2
                sizes[model] = (batch, steps, warmup)
                peak_memory(self.device, reset=True)

    def ours(self, model: str, name: str, batch: int, steps: int, warmup: int) -> list[float]:
        knobs, a = self.modes[name], self.args
        if knobs.compile is not None:  # fresh caches: no recompile limit, no other mode's graphs
            torch._dynamo.reset()
        overrides = [
            *knobs.overrides(self.cuda),
            *(f"model.net.{k}={v}" for k, v in self.net_args.items()),
            f"data.num_workers={self.workers}",
            f"++callbacks.throughput.peak_tflops={self.peak / 1e12}",  # measured once, here
        ]
        return ours_step_times(
            model, self.device, batch, a.patch, steps, warmup, a.data_root, self.train_set,
            overrides, knobs.fused_adam,
        )  # fmt: skip

    def report(self) -> str:
        """The block for BENCHMARKS.md: printed, appended to ``--out``, returned."""
        a, cuda = self.args, self.cuda
        baseline = [r for r in self.step_rows if r.model == "edsr_baseline"]
        fastest = min(baseline, key=lambda r: r.step, default=None)
        need = fastest.batch / fastest.step if fastest else float("nan")
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        dtype = str(self.peak_dtype).replace("torch.", "")
        net = "".join(f", {k} {v}" for k, v in self.net_args.items())
        tf32 = "; fp32 convolutions run in TF32" if torch.backends.cudnn.allow_tf32 else ""
        fp32 = f" (fp32 matmul: {self.peak_fp32 / 1e12:.3f}{tf32})"
        head = (
            f"### {stamp}, {machine(self.device)}, torch {torch.__version__}, "
            f"commit {git_commit()}\n\n"
            f"`python -m sr_lightning.bench --device {self.device}`: x2, "
            f"LR patch {a.patch}x{a.patch}{net}, "
            f"median of {a.steps} timed steps after {a.warmup} warm-up (EDSR: "
            f"{a.edsr_steps or (20 if cuda else 5)} after {a.warmup if cuda else 1}). "
            f"Every row's share is of one {dtype} matmul measured in the same run: "
            f"{self.peak / 1e12:.3f} TFLOP/s{fp32 if cuda else ''}."
            + (" *all off*: fp32, NCHW, eager, foreach Adam." if cuda else "")
        )
        parts = [head, markdown(HEADER, [r.cells() for r in self.step_rows])]
        if self.infer_rows:
            ih = ["model", "scale", "LR input", "fp32 ms/MP"] + (["bf16 ms/MP"] if cuda else [])
            infer = markdown(ih, self.infer_rows)
            parts.append(f"Inference, whole image, ms per output megapixel:\n\n{infer}")
        if self.loader:
            rates = "; ".join(f"{k}: **{v:,.0f} patches/s**" for k, v in self.loader.items())
            consumer = f"({fastest.mode}) consumes {need:,.1f}" if fastest else "(not measured)"
            parts.append(
                f"Data module (train_set {a.train_set}, batch {a.batch}, LR patch {a.patch}): "
                f"{rates} delivered. The fastest EDSR-baseline step {consumer} patches/s: "
                + ", ".join(f"{k} {v / need:,.0f}x" for k, v in self.loader.items())
                + " headroom."
            )
        parts += self.notes
        text = "\n\n".join(parts) + "\n"
        print("\n" + text)
        if a.out:
            with open(a.out, "a") as f:
                f.write("\n" + text)
        return text


if __name__ == "__main__":
    main()
