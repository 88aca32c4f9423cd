"""Confidence intervals for SR results: t-based, as for small samples (a few seeds, a few
images). Used by ``sr-compare`` (paired per-image differences) and the sweep report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its two-sided ``level`` confidence interval (t-based)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    @property
    def contains_zero(self) -> bool:
        return self.low <= 0 <= self.high

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """The mean and its t interval (NaN bounds for fewer than two values)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def verdict(diff: Interval, a: str = "A", b: str = "B", unit: str = "dB") -> str:
    """``B better by 0.12 dB, CI [0.05, 0.19]`` or ``no detectable difference (...)``."""
    level = f"{diff.level:.0%} CI"
    if math.isnan(diff.low) or diff.contains_zero:
        ci = f"{level} [{diff.low:+.3f}, {diff.high:+.3f}]"
        return f"no detectable difference ({b} - {a} = {diff.mean:+.3f} {unit}, {ci})"
    if diff.mean > 0:
        return f"{b} better by {diff.mean:.3f} {unit}, {level} [{diff.low:.3f}, {diff.high:.3f}]"
    # the interval of the winner's lead, a - b: the same numbers, negated and swapped
    return f"{a} better by {-diff.mean:.3f} {unit}, {level} [{-diff.high:.3f}, {-diff.low:.3f}]"
