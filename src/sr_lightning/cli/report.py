"""``sr-report DIR [--out] [--wandb]`` (also ``make report SWEEP=DIR``): the tables and plots
of a Hydra multirun or of one run folder (see :mod:`sr_lightning.analysis.report`)."""

from __future__ import annotations

import argparse
import sys

from sr_lightning.analysis.report import build_report


def main(argv: list[str] | None = None) -> int:
    """0 on success, 1 (message on stderr) on a missing or empty sweep."""
    parser = argparse.ArgumentParser(
        prog="sr-report", description="Tables and plots of a Hydra multirun or of one run folder."
    )
    parser.add_argument("sweep_dir", help="a Hydra multirun folder (holds 0/, 1/, ...)")
    parser.add_argument("--out", help="where to write the report (default: the sweep folder)")
    parser.add_argument("--wandb", action="store_true", help="also log the table to W&B")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.sweep_dir, args.out, wandb=args.wandb)
    except (OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.paths[0].read_text())
    print("wrote " + ", ".join(str(p) for p in report.paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
