"""Data-loader throughput: LR patches/s from the uint8 cache (batch 16, 48x48 LR, x2).

    python bench/data.py [--root ../shared/datasets] [--train-set T91/HR] [--workers 0 1 2]

Prints one line per worker count: the median over ``--repeats`` epochs of ``--batches``
batches each, timed from each epoch's first batch (starting the workers is not counted).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from sr_lightning.bench import loader_patches_per_second
from sr_lightning.data.datamodule import SRDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).parents[1].parent / "shared/datasets"))
    parser.add_argument(
        "--train-set", default="benchmark/B100/HR", help="DIV2K, sample or a folder"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    train_set = args.train_set
    if train_set not in ("DIV2K", "sample") and not Path(train_set).is_absolute():
        train_set = str(Path(args.root) / train_set)
    print(f"# data loader, batch 16, 48x48 LR, x2, train_set={args.train_set}")
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print("| workers | patches/s (median) |\n|---|---|")
    for workers in args.workers:
        dm = SRDataModule(
            root=args.root,
            scales=[2],
            patch_size=48,
            batch_size=16,
            num_workers=workers,
            train_set=train_set,
            val_sets=[],
            updates_per_epoch=args.batches,
        )
        dm.prepare_data()
        dm.setup("fit")
        print(f"| {workers} | {loader_patches_per_second(dm, args.repeats):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
