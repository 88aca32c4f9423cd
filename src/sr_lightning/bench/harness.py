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
import signal
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from sr_lightning.bench.data import data_module_rate
from sr_lightning.bench.infer import inference_ms_per_mp
from sr_lightning.bench.step import (
    compose_train_config,
    make_net,
    ours_step_times,
    plain_step_times,
    tier,
    variants,
)
from sr_lightning.bench.table import HEADER, Row, git_commit, machine, markdown, print_row
from sr_lightning.config.resolvers import PACKAGE_CHECKOUT, data_root
from sr_lightning.core.inference import convs_in_tf32, default_device
from sr_lightning.training.compile import CompiledOrEager
from sr_lightning.training.flops import matmul_peak, train_step_flops

MODELS = ("edsr_baseline", "edsr")  # presets of the model catalogue (paper Table 1)
PARTS = ("loader", "inference", "steps")  # the tables, cheapest first


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="sr-bench", description="The benchmark tables: training step, inference, data loader."
    )
    parser.add_argument("--device", default=default_device())
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
    parser.add_argument(
        "--data-root", default=str(data_root()), help="data.root (default: paths.data_dir)"
    )
    parser.add_argument("--train-set", default="benchmark/B100/HR")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=None, help="loader worker counts (config's)"
    )
    parser.add_argument("--loader-batches", type=int, default=100, help="per timed epoch")
    parser.add_argument("--peak-n", type=int, default=None, help="matmul side for the peak")
    parser.add_argument("--infer-size", type=int, default=None, help="LR side for inference")
    parser.add_argument("--infer-tile", type=int, default=64, help="LR tile of the tiled column")
    parser.add_argument("--infer-overlap", type=int, default=16, help="its LR context per side")
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="which tables to measure"
    )
    parser.add_argument(
        "--budget-s", type=float, default=None, help="stop starting new rows after this"
    )
    parser.add_argument(
        "--out", default=str(PACKAGE_CHECKOUT / "BENCHMARKS.md"), help="'' to not append"
    )
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
        self.workers = args.workers if args.workers is not None else [int(cfg.data.num_workers)]
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
            for part in PARTS:
                if part in self.args.only:
                    getattr(self, f"measure_{part}")()
        except TimeUp as e:
            self.notes.append(f"Cut short by the time limit ({e}): the rows above were measured.")
            print(f"# {self.notes[-1]}", flush=True)
        return self.report()

    def measure_loader(self) -> None:
        a = self.args
        modes = [(f"{n} workers", n, False) for n in self.workers]
        for name, workers, on_device in [*modes, ("data.on_device", 0, True)]:
            self.loader[name] = data_module_rate(
                a.data_root, self.train_set, a.batch, a.patch, workers, a.loader_batches,
                on_device,
            )  # fmt: skip
            print(f"# loader, {name}: {self.loader[name]:,.0f} patches/s", flush=True)

    def measure_inference(self) -> None:
        for model in self.args.models:
            default_size = {"edsr_baseline": 256, "edsr": 128}[model] // (1 if self.cuda else 2)
            size = self.args.infer_size or default_size
            for scale in (2, 4):
                cells = [model, f"x{scale}", f"{size}x{size}"]
                columns = [("fp32", 0), ("fp32", self.args.infer_tile)]
                columns += [("bf16", 0)] if self.cuda else []
                for precision, tile in columns:
                    ms = inference_ms_per_mp(
                        model, scale, self.device, size, precision=precision, tile=tile,
                        overlap=self.args.infer_overlap, net_args=self.net_args,
                    )  # fmt: skip
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
            f"data.num_workers={self.workers[0]}",
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
        tf32 = "; fp32 convolutions run in TF32" if convs_in_tf32() else ""
        fp32 = f" (fp32 matmul: {self.peak_fp32 / 1e12:.3f}{tf32})"
        head = (
            f"### {stamp}, {machine(self.device)}, torch {torch.__version__}, "
            f"commit {git_commit()}\n\n"
            f"`sr-bench --device {self.device}`: x2, "
            f"LR patch {a.patch}x{a.patch}{net}, "
            f"median of {a.steps} timed steps after {a.warmup} warm-up (EDSR: "
            f"{a.edsr_steps or (20 if cuda else 5)} after {a.warmup if cuda else 1}). "
            f"Every row's share is of one {dtype} matmul measured in the same run: "
            f"{self.peak / 1e12:.3f} TFLOP/s{fp32 if cuda else ''}."
            + (" *all off*: fp32, NCHW, eager, foreach Adam." if cuda else "")
        )
        parts = [head, markdown(HEADER, [r.cells() for r in self.step_rows])]
        if self.infer_rows:
            tiled = f"fp32 tiled ({a.infer_tile}, overlap {a.infer_overlap}) ms/MP"
            ih = ["model", "scale", "LR input", "fp32 ms/MP", tiled] + (
                ["bf16 ms/MP"] if cuda else []
            )
            infer = markdown(ih, self.infer_rows)
            parts.append(f"Inference (super_resolve), ms per output megapixel:\n\n{infer}")
        if self.loader:
            rates = "; ".join(f"{k}: **{v:,.0f} patches/s**" for k, v in self.loader.items())
            text = (
                f"Data module (train_set {a.train_set}, batch {a.batch}, LR patch {a.patch}): "
                f"{rates} delivered."
            )
            if fastest:  # the headroom needs a measured step
                text += (
                    f" The fastest EDSR-baseline step ({fastest.mode}) consumes {need:,.1f} "
                    "patches/s: "
                    + ", ".join(f"{k} {v / need:,.0f}x" for k, v in self.loader.items())
                    + " headroom."
                )
            parts.append(text)
        parts += self.notes
        text = "\n\n".join(parts) + "\n"
        print("\n" + text)
        if a.out:
            with open(a.out, "a") as f:
                f.write("\n" + text)
        return text
