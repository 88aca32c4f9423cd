"""``sr-shard FOLDER OUT [--scale S ...]``: a folder of HR images as a shard set that every node
of a cluster streams (``data.train_set=shards data.shards_url=OUT``, or OUT's copy in an object
store), with the same patches as ``data.train_set=FOLDER`` (see :mod:`sr_lightning.data.shards`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sr_lightning.data.degradation import DEGRADATIONS
from sr_lightning.data.shards import MANIFEST, ShardSetError, write_shards


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``sr-shard``."""
    p = argparse.ArgumentParser(
        prog="sr-shard",
        description="Write a folder of HR images as LitData shards plus a checked manifest, "
        "for data.train_set=shards (random access, bounded node cache, same patches).",
    )
    p.add_argument("folder", type=Path, help="folder of HR images (as data.train_set=FOLDER)")
    p.add_argument("out", type=Path, help="new or empty local folder for the shard set")
    p.add_argument(
        "--scale",
        nargs="+",
        type=int,
        default=[],
        help="also store LR images at these scales, made now as the folder form makes them "
        "(default: HR only; each node then makes the LR image of every patch it cuts)",
    )
    p.add_argument(
        "--degradation",
        choices=DEGRADATIONS,
        default="bicubic",
        help="degradation of the stored LR images (data.degradation)",
    )
    p.add_argument("--chunk-mb", type=float, default=8.0, help="target chunk size, MB")
    p.add_argument("--workers", type=int, default=1, help="processes encoding images")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors go to stderr, no traceback)."""
    args = build_parser().parse_args(argv)
    lrs = [(s, args.degradation) for s in args.scale]
    try:
        manifest = write_shards(args.folder, args.out, lrs, args.chunk_mb, args.workers)
    except (ImportError, OSError, ValueError, ShardSetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in args.out.iterdir()) / 1e6
    print(
        f"done: {manifest['count']} images ({size:.1f} MB) in {args.out}, manifest {MANIFEST}.\n"
        f"Train on it with data.train_set=shards data.shards_url={args.out.resolve()} "
        f"(or the URL of its copy: s3://..., gs://...; local:DIR streams a local copy)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
