"""The precision questions of issue 22, on the device at hand (``bench/gpu.sh`` step 3):
``python -m sr_lightning.bench.precision [--device cuda] [--n-resblocks N --n-feats F ...]``.

1. the training step's time under bf16-mixed with and without the network's fp32 output
   (``model.net.fp32_output``), and under 32-true with TF32 on and off (``model.tf32``);
2. ``torch.compile`` with an EMA of the weights (the mechanism Lightning's EMAWeightAveraging
   uses: an AveragedModel updated after each step, weights swapped in place for validation,
   ``load_state_dict`` on resume): the average moves at every update and the compiled forward
   computes with whatever weights the network holds, for each compile mode given.
Prints markdown lines for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sr_lightning.bench.step import time_steps
from sr_lightning.core.inference import set_tf32
from sr_lightning.models import build_net
from sr_lightning.training.compile import CompiledOrEager


def step_ms(args: argparse.Namespace, bf16: bool, fp32_output: bool, tf32: bool) -> float:
    """Median ms of an Adam step of EDSR-baseline x2 (NHWC on CUDA), after warm-up."""
    torch.manual_seed(0)
    net_args = {"n_resblocks": args.n_resblocks, "n_feats": args.n_feats}
    net = build_net("edsr_baseline", [2], fp32_output=fp32_output, **net_args).to(args.device)
    nhwc = torch.channels_last if args.device == "cuda" else torch.contiguous_format
    net = net.to(memory_format=nhwc)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    lr = torch.randint(0, 256, (args.batch, 3, args.patch, args.patch), device=args.device)
    lr = lr.float().contiguous(memory_format=nhwc)
    hr = F.interpolate(lr, scale_factor=2, mode="nearest")
    amp = torch.autocast(args.device, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step(i: int) -> None:
        with amp:
            loss = F.l1_loss(net(lr), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    saved = set_tf32(tf32)
    try:
        times = time_steps(step, args.device, args.warmup, args.steps)
    finally:
        set_tf32(*saved)
    return 1000 * statistics.median(times)


def swap(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Swap parameter values in place, as EMAWeightAveraging does around validation."""
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        tmp = pb.data.clone()
        pb.data.copy_(pa.data)
        pa.data.copy_(tmp)


def compile_ema_check(args: argparse.Namespace, mode: str) -> str:
    """One line: does the compiled forward follow EMA swaps and loads, does the average move?"""
    torch.manual_seed(0)
    net = build_net("edsr_baseline", [2], n_resblocks=1, n_feats=16).to(args.device)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    forward = CompiledOrEager(net, mode)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    x = torch.rand(2, 3, 16, 16, device=args.device) * 255
    moved, worst = 0, 0.0
    for _ in range(4):
        loss = F.l1_loss(forward(x), F.interpolate(x, scale_factor=2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        before = [p.detach().clone() for p in ema.module.parameters()]
        ema.update_parameters(net)
        after = ema.module.parameters()
        moved += any((a != b).any().item() for a, b in zip(before, after, strict=True))
        swap(net, ema.module)  # validation on the average
        with torch.no_grad():
            worst = max(worst, (forward(x) - net(x)).abs().max().item())
        swap(net, ema.module)  # and back
    other = build_net("edsr_baseline", [2], n_resblocks=1, n_feats=16).to(args.device)
    net.load_state_dict(other.state_dict())  # a resume
    with torch.no_grad():
        worst = max(worst, (forward(x) - other(x)).abs().max().item())
    ok = moved == 4 and worst < 1e-2 and not forward.failed
    what = "eager fallback" if forward.failed else f"compiled ({mode})"
    return (
        f"- compile + EMA, {what}: the average moved at {moved} of 4 updates; compiled forward vs "
        f"eager after EMA swaps and a load_state_dict: max |diff| {worst:.2e} -> "
        f"{'OK' if ok else 'FAILED'}"
    )


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n-resblocks", type=int, default=16)
    p.add_argument("--n-feats", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile-modes", nargs="*", default=["default", "reduce-overhead"])
    args = p.parse_args(argv)
    size = f"{args.n_resblocks}x{args.n_feats}, batch {args.batch}, {args.patch}x{args.patch}"
    lines = [f"Precision questions (issue 22), EDSR {size} x2 on {args.device}, median step:"]
    out = step_ms(args, bf16=True, fp32_output=True, tf32=False)
    raw = step_ms(args, bf16=True, fp32_output=False, tf32=False)
    lines.append(
        f"- bf16-mixed: fp32 output {out:.2f} ms, bf16 output {raw:.2f} ms "
        f"(the fp32 output costs {100 * (out / raw - 1):+.1f}%)"
    )
    ieee = step_ms(args, bf16=False, fp32_output=True, tf32=False)
    tf32 = step_ms(args, bf16=False, fp32_output=True, tf32=True)
    lines.append(
        f"- 32-true: IEEE fp32 {ieee:.2f} ms, TF32 {tf32:.2f} ms (TF32 saves "
        f"{100 * (1 - tf32 / ieee):.1f}%; no TF32 on a CPU)"
    )
    lines += [compile_ema_check(args, mode) for mode in args.compile_modes]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
