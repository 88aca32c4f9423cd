"""``sr-bench`` (also ``make bench``, ``bench/gpu.sh``): the benchmark tables, printed and
appended to BENCHMARKS.md (see :mod:`sr_lightning.bench.harness`)."""

from __future__ import annotations

import sys

from sr_lightning.bench.harness import main as bench


def main(argv: list[str] | None = None) -> int:
    bench(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
