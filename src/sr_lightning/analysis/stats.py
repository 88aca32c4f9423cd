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


MIN_RUNS = 3  # fewer training runs (seeds) than this: no run-level interval is given


def p_value(values: Sequence[float]) -> float:
    """Two-sided p of a one-sample t test of mean 0 (NaN below two values; zero spread gives
    0 around a non-zero mean, 1 around zero)."""
    from scipy import stats

    n, sd = len(values), sd_of(values)
    if n < 2:
        return math.nan
    mean = math.fsum(values) / n
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    return float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN)."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m, adjusted, running = len(order), [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def sd_of(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); NaN below two values."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = math.fsum(values) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def runs_for_power(sd: float, effect: float, level: float = 0.95, power: float = 0.8) -> int:
    """About how many runs (seeds) a paired t test over runs needs to detect ``effect`` with
    probability ``power``, given the run-to-run SD ``sd`` of the difference:
    the smallest n with (t_{1-a/2,n-1} + t_{power,n-1}) sd / sqrt(n) <= effect."""
    from scipy import stats

    if not math.isfinite(sd) or sd <= 0:
        return MIN_RUNS
    for n in range(2, 100_000):
        df = n - 1
        need = (stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(n)
        if need <= effect:
            return max(n, MIN_RUNS)
    return 100_000
