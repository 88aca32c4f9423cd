"""Benchmark harness (``make bench``, ``bench/gpu.sh``): is the training step at the hardware's
limit, and how far ahead of plain PyTorch is it?

    python -m sr_lightning.bench [--device cpu|cuda] [--models edsr_baseline edsr] [--steps 20]

One table: training-step throughput of the plain eager fp32 NCHW step (the reference code's way:
same network, ``.item()`` on the loss every step, float batches copied from the host) next to
ours (the Lightning run of ``train.py``, data module and callbacks included, as configured by
default, plus variants); model FLOPs per step and the achieved fraction of the machine's peak,
measured in the same run with a large matmul (fp32 on CPU, bf16 on GPU); inference ms per output
megapixel; the data module's patches/s next to what the fastest step consumes. The rows are
printed and appended to BENCHMARKS.md with the date, machine, torch version and git commit.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from .models import build_net

REPO = Path(__file__).resolve().parents[2]
MODELS = ("edsr_baseline", "edsr")  # presets of the model catalogue (paper Table 1)


# ---- the machine's peak -------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of a large square matmul (median of ``repeats``): the practical peak."""
    n = n or (8192 if device.startswith("cuda") else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 3):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


# ---- model FLOPs --------------------------------------------------------------------------
def train_step_flops(net: nn.Module, batch: int, patch: int, scale: int) -> int:
    """FLOPs of one training step, counted from the convolutions' shapes (2 per multiply-add).

    Forward of every conv, plus in the backward pass the weight gradient of every trained conv
    and the input gradient of every conv whose input needs one (not the first: its input is the
    image). ReLU, additions, the loss and Adam are memory-bound and left out (< 1% of FLOPs).
    """
    total = 0

    def hook(module: nn.Conv2d, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        fwd = 2 * out.numel() * (module.in_channels // module.groups) * kh * kw
        total += fwd
        total += fwd if module.weight.requires_grad else 0
        total += fwd if inputs[0].requires_grad else 0

    meta = copy.deepcopy(net).to("meta").train()  # shapes only: nothing is computed
    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, nn.Conv2d)]
    try:
        meta(torch.empty(batch, 3, patch, patch, device="meta"), scale)
    finally:
        for h in handles:
            h.remove()
    return total


# ---- the plain step (the reference's way) ----------------------------------------------------
def make_net(model: str, scale: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return build_net(model, [scale])


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
    model: str, device: str, batch: int, patch: int, scale: int, steps: int, warmup: int
) -> list[float]:
    """Seconds per step of the plain eager fp32 NCHW loop, ``.item()`` every step."""
    net = make_net(model, scale).to(device).train()
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
                "+trainer.enable_model_summary=false",
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
        trainer, module, datamodule = build_training(cfg, extra_callbacks=[timer])
        trainer.fit(module, datamodule=datamodule)
        return timer.step_times()


# ---- inference and data -----------------------------------------------------------------------
@torch.inference_mode()
def inference_ms_per_mp(
    model: str, scale: int, device: str, size: int, repeats: int = 3, bf16: bool = False
) -> float:
    """ms per output megapixel of a whole ``size`` x ``size`` LR image (median of repeats)."""
    net = make_net(model, scale).to(device).eval()
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
    starts at each epoch's first batch, so starting the workers is not counted)."""
    rates = []
    for _ in range(repeats):
        loader, n, start = dm.train_dataloader(), 0, None
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            n += batch["lr"].shape[0]
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def data_module_rate(
    data_root: str, train_set: str, batch: int, patch: int, workers: int, batches: int = 100
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
            f"{self.step * 1000:,.0f}",
            f"{self.batch / self.step:,.{1 if self.batch / self.step >= 1 else 3}f}",
            f"{self.flops / 1e9:,.1f}",
            f"{rate / 1e12:.3f}",
            f"{100 * rate / self.peak:.0f}%",
            speedup,
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
]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
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


def variants(device: str) -> dict[str, list[str]]:
    """The step modes measured besides the plain one: ours as configured, and each speed-up on
    its own, so the table shows which one helps."""
    if device.startswith("cuda"):
        return {
            "ours fp32 (no bf16, NCHW, eager)": [
                "trainer.precision=32-true",
                "model.channels_last=false",
                "model.compile=false",
            ],
            "ours bf16 NCHW eager": ["model.channels_last=false", "model.compile=false"],
            "ours bf16 channels_last eager": ["model.channels_last=true", "model.compile=false"],
            "ours default": [],
            "ours bf16 channels_last compiled": ["model.channels_last=true", "model.compile=true"],
        }
    return {
        "ours default": [],
        "ours NCHW": ["model.channels_last=false"],
        "ours channels_last": ["model.channels_last=true"],
        "ours compiled": ["model.compile=true"],
    }


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument(
        "--edsr-batch", type=int, default=None, help="EDSR's batch (default: 16 GPU, 1 CPU)"
    )
    parser.add_argument(
        "--edsr-steps", type=int, default=None, help="EDSR's timed steps (default: 20 GPU, 5 CPU)"
    )
    parser.add_argument("--modes", nargs="*", default=None, help="subset of the step modes")
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "datasets"))
    parser.add_argument("--train-set", default="benchmark/B100/HR")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (config's)")
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"), help="'' to not append")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # Lightning's advice on worker counts etc.: not results
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    device, cuda = args.device, args.device.startswith("cuda")
    train_set = str(Path(args.data_root) / args.train_set)
    if not Path(train_set).is_dir():
        raise SystemExit(
            f"--train-set {train_set} not found: point --data-root at a folder holding it "
            "(../shared/datasets here; any folder of HR images works with --train-set)"
        )
    peak_dtype = torch.bfloat16 if cuda else torch.float32
    peak = matmul_peak(device, peak_dtype)
    peak_fp32 = matmul_peak(device, torch.float32) if cuda else peak
    print(f"# matmul peak: {peak / 1e12:.3f} TFLOP/s ({peak_dtype}), fp32 {peak_fp32 / 1e12:.3f}")
    modes = variants(device)
    chosen = args.modes if args.modes is not None else ["plain", *modes]
    step_rows: list[Row] = []
    for model in args.models:
        big = model == "edsr"
        batch = (args.edsr_batch or (16 if cuda else 1)) if big else args.batch
        steps = (args.edsr_steps or (20 if cuda else 5)) if big else args.steps
        warmup = min(args.warmup, 1) if big and not cuda else args.warmup
        flops = train_step_flops(make_net(model), batch, args.patch, 2)
        plain = None
        if "plain" in chosen:
            times = plain_step_times(model, device, batch, args.patch, 2, steps, warmup)
            plain = statistics.median(times)
            step_rows.append(Row(model, "plain eager fp32 NCHW", batch, times, flops, peak_fp32))
            print(markdown(HEADER, [step_rows[-1].cells()]).splitlines()[-1], flush=True)
        for name, overrides in modes.items():
            if name not in chosen:
                continue
            if args.workers is not None:
                overrides = [*overrides, f"data.num_workers={args.workers}"]
            try:
                times = ours_step_times(
                    model, device, batch, args.patch, steps, warmup, args.data_root, train_set,
                    overrides,
                )  # fmt: skip
            except Exception as e:  # a variant that cannot run here (e.g. no compiler)
                print(f"| {model} | {name} | failed: {type(e).__name__}: {e} |", flush=True)
                continue
            fp32 = "32-true" in " ".join(overrides) or not cuda
            row = Row(model, name, batch, times, flops, peak_fp32 if fp32 else peak, plain)
            step_rows.append(row)
            print(markdown(HEADER, [row.cells()]).splitlines()[-1], flush=True)

    infer_rows = []
    if not args.no_inference:
        for model in args.models:
            size = {"edsr_baseline": 256, "edsr": 128}[model] // (1 if cuda else 2)
            for scale in (2, 4):
                cells = [model, f"x{scale}", f"{size}x{size}"]
                cells.append(f"{inference_ms_per_mp(model, scale, device, size):,.1f}")
                if cuda:
                    bf16 = inference_ms_per_mp(model, scale, device, size, bf16=True)
                    cells.append(f"{bf16:,.1f}")
                infer_rows.append(cells)

    cfg = compose_train_config([f"paths.output_dir={tempfile.gettempdir()}"])
    workers = args.workers if args.workers is not None else int(cfg.data.num_workers)
    loader = data_module_rate(args.data_root, train_set, args.batch, args.patch, workers)
    baseline = [r for r in step_rows if r.model == "edsr_baseline"]
    fastest = min(baseline, key=lambda r: r.step, default=None)
    need = args.batch / fastest.step if fastest else float("nan")

    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = (
        f"### {stamp}, {machine(device)}, torch {torch.__version__}, commit {git_commit()}\n\n"
        f"`python -m sr_lightning.bench --device {device}`: x2, "
        f"LR patch {args.patch}x{args.patch}, "
        f"median of {args.steps} timed steps after {args.warmup} warm-up (EDSR: "
        f"{args.edsr_steps or (20 if cuda else 5)} after {args.warmup if cuda else 1}). "
        "Matmul peak measured in the same run: "
        f"{peak / 1e12:.3f} TFLOP/s ({str(peak_dtype).replace('torch.', '')}"
        + (f"; fp32 {peak_fp32 / 1e12:.3f}, used for the fp32 rows" if cuda else "")
        + ")."
    )
    parts = [head, markdown(HEADER, [r.cells() for r in step_rows])]
    if infer_rows:
        ih = ["model", "scale", "LR input", "fp32 ms/MP"] + (["bf16 ms/MP"] if cuda else [])
        infer = markdown(ih, infer_rows)
        parts.append(f"Inference, whole image, ms per output megapixel:\n\n{infer}")
    parts.append(
        f"Data module (train_set {args.train_set}, batch {args.batch}, {workers} workers): "
        f"**{loader:,.0f} patches/s** delivered; the fastest EDSR-baseline step consumes "
        f"{need:,.1f} patches/s: the loader has {loader / need:,.0f}x headroom."
    )
    text = "\n\n".join(parts) + "\n"
    print("\n" + text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)
    return text


if __name__ == "__main__":
    main()
