"""``history.csv``, a run's metric history: one ``step,key,value`` row per logged value
(validation metrics and ``time/minutes`` at each validation, ``train/loss`` every N steps).
Written by ``training.callbacks.MetricHistory``; read by it (``curves.png``) and by
:mod:`.job`."""

from __future__ import annotations

import csv
from pathlib import Path

HEADER = "step,key,value\n"
Row = tuple[int, str, float]


def read_history(path: str | Path) -> list[Row]:
    """The rows of ``path`` (none if it is missing); malformed or truncated lines are skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                rows.append((int(float(r["step"])), str(r["key"]), float(r["value"])))
            except (KeyError, TypeError, ValueError):
                continue
    return rows
