"""``sr-download DATASET [--root DIR]``: DIV2K or the SR benchmark sets into the layout the
experiments read (resumable, verified; see :mod:`sr_lightning.data.download`). The default
root is the experiments' default ``data.root``: ``$SR_DATA_ROOT``, else ``<project>/data``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sr_lightning.config.resolvers import data_root
from sr_lightning.data.download import (
    DATASETS,
    DEFAULT_TIMEOUT,
    SCALES,
    DownloadError,
    fetch_dataset,
)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``sr-download``."""
    p = argparse.ArgumentParser(
        prog="sr-download",
        description="Download and unpack DIV2K or the SR benchmark sets into the layout the "
        "experiments read (resumable, verified).",
    )
    p.add_argument("dataset", choices=DATASETS, help="data set to fetch")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="data root (data.root; default: $SR_DATA_ROOT, else <project>/data)",
    )
    p.add_argument(
        "--scales",
        nargs="+",
        type=int,
        choices=SCALES,
        default=list(SCALES),
        help="DIV2K bicubic LR scales to fetch (the benchmark archive holds all)",
    )
    p.add_argument("--keep-archives", action="store_true", help="keep archives after unpacking")
    p.add_argument("--force", action="store_true", help="unpack again even if already done")
    p.add_argument("--base-url", help="mirror URL prefix replacing the official one")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="network timeout, s")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors go to stderr, no traceback)."""
    args = build_parser().parse_args(argv)
    root = args.root if args.root is not None else data_root()  # read now: $SR_DATA_ROOT
    try:
        dest = fetch_dataset(
            args.dataset,
            root,
            scales=args.scales,
            base_url=args.base_url,
            keep_archives=args.keep_archives,
            force=args.force,
            timeout=args.timeout,
        )
    except (DownloadError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume", file=sys.stderr)
        return 130
    print(f"done: {args.dataset} is in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
