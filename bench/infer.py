"""Inference speed: ms per output megapixel, EDSR-baseline and EDSR at x2/x4, fp32.

    python bench/infer.py [--repeats 3]

Random-init weights (speed does not depend on them); LR input 128x128 for EDSR-baseline and
64x64 for EDSR (43M parameters: ~80 MFLOP per LR pixel). Tiled = 64x64 LR tiles with 16 px of
context (``--tile 64 --tile-overlap 16``). Median of ``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from sr_lightning.bench import make_net
from sr_lightning.inference import tiled_forward

SIZES = {"edsr_baseline": 128, "edsr": 64}  # LR input side


@torch.inference_mode()
def ms_per_mp(net: torch.nn.Module, lr: torch.Tensor, scale: int, tile: int, repeats: int) -> float:
    def run() -> None:
        tiled_forward(lambda t: net(t), lr, scale, tile=tile, overlap=16)

    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    megapixels = lr.shape[-2] * lr.shape[-1] * scale * scale / 1e6
    return statistics.median(times) * 1000 / megapixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(SIZES))
    args = parser.parse_args()
    print(
        f"# inference fp32, {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print("| model | scale | LR input | untiled ms/MP | tiled (64, overlap 16) ms/MP |")
    print("|---|---|---|---|---|")
    for name in args.models:
        size = SIZES[name]
        for scale in (2, 4):
            net = make_net(name, scale).eval()
            lr = torch.rand(1, 3, size, size) * 255
            plain = ms_per_mp(net, lr, scale, 0, args.repeats)
            tiled = ms_per_mp(net, lr, scale, 64, args.repeats)
            print(
                f"| {name} | x{scale} | {size}x{size} | {plain:,.0f} | {tiled:,.0f} |", flush=True
            )


if __name__ == "__main__":
    main()
