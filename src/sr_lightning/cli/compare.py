"""``sr-compare A B [--out DIR]``: how two runs differ, image by image, with paired intervals
(see :mod:`sr_lightning.analysis.compare`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sr_lightning.analysis.compare import compare


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sr-compare",
        description="How two runs differ, image by image, with paired 95% intervals.",
    )
    parser.add_argument("a", help="run folder or per_image.csv (A, the reference)")
    parser.add_argument("b", help="run folder or per_image.csv (B)")
    parser.add_argument("--out", help="where to write compare.md/png (default: B's folder)")
    args = parser.parse_args(argv)
    try:
        text, out = compare(args.a, args.b, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(text)
    print(
        f"wrote {out / 'compare.md'}" + (", compare.png" if (out / "compare.png").exists() else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
