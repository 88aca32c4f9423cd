"""Seeds as a sweep axis: jobs that differ only in ``seed`` form a group; a group's metric is
its mean over seeds with a 95% t interval; two settings of a swept key (an ablation pair)
are compared at the level of the training run: per seed, the mean over a set's images of
B - A, then a t interval over the seeds, with a plain verdict, its power and the set's role
(primary or secondary, Holm-corrected).

Used by :mod:`.report` (``train.py -m ... seed=0,1,2`` or ``+seeds=three``). Run-to-run
noise in SR (0.01-0.1 dB, more at small budgets) decides rankings that a single seed cannot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from sr_lightning.analysis.stats import (
    MIN_RUNS,
    Interval,
    holm,
    mean_interval,
    p_value,
    runs_for_power,
    sd_of,
    verdict,
)
from sr_lightning.runs.job import Job

SEED = "seed"
POWER_EFFECT = 0.1  # dB: the effect size the power line speaks of
VALIDATION = "(validation)"  # the label suffix of a test set scored on validation images
TRAIN_MINUTES = "time/train_minutes"  # training time without validation (history.csv)


@dataclass
class Group:
    """The completed jobs of one setting (the overrides but ``seed``)."""

    setting: dict[str, str]
    jobs: list[Job]

    def describe(self, keys: list[str]) -> str:
        return ", ".join(f"{k}={self.setting.get(k, '-')}" for k in keys) or "all jobs"

    def interval(self, key: str) -> Interval | None:
        values = [j.best[key] for j in self.jobs if isinstance(j.best.get(key), int | float)]
        return mean_interval(values) if values else None


def seed_groups(jobs: list[Job]) -> list[Group]:
    """Completed jobs grouped by their overrides other than ``seed``, in first-seen order."""
    groups: dict[tuple, Group] = {}
    for job in jobs:
        if job.status != "completed":
            continue
        setting = {k: v for k, v in job.overrides.items() if k != SEED}
        key = tuple(sorted(setting.items()))
        groups.setdefault(key, Group(setting, [])).jobs.append(job)
    return list(groups.values())


def seeds_swept(jobs: list[Job]) -> bool:
    return len({j.overrides.get(SEED) for j in jobs}) > 1


def group_lines(groups: list[Group], keys: list[str], psnr_columns: list[str], title) -> list[str]:
    """A markdown table: one row per setting, n and mean [95% CI] per PSNR column (the best
    validation PSNR: the images that chose the checkpoint, so never a verdict)."""
    head = ["setting", "n", *(f"best validation {title(c)} mean [95% CI]" for c in psnr_columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        cells = [g.describe(keys), str(len(g.jobs))]
        for c in psnr_columns:
            iv = g.interval(c)
            cells.append("-" if iv is None else f"{iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


@dataclass(frozen=True)
class Pairing:
    """Setting ``b`` against the reference ``a`` (they differ in ``key`` only) on one (set,
    scale). The experimental unit is the training run: per seed, the mean over the set's
    images of B - A; the interval is a t interval over those per-seed values (df = seeds - 1).
    The images of one seed are repeated measures of one network, never replicates."""

    key: str
    a: Group
    b: Group
    dataset: str
    scale: int
    per_seed: dict[str, float]  # seed -> mean over the set's images of B - A
    n_images: int
    image_sd: float  # SD of B - A across images within a seed, averaged over seeds
    primary: bool = True  # the sweep's first test set; the others are secondary
    p_holm: float = math.nan  # secondary sets: Holm-adjusted over the pair's secondary sets
    family: int = 1  # how many secondary sets the Holm correction covers

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)

    @property
    def diff(self) -> Interval | None:
        """The run-level interval, or None below :data:`MIN_RUNS` seeds."""
        values = list(self.per_seed.values())
        return mean_interval(values) if len(values) >= MIN_RUNS else None

    @property
    def p(self) -> float:
        return p_value(list(self.per_seed.values()))

    @property
    def seed_sd(self) -> float:
        return sd_of(list(self.per_seed.values()))

    @property
    def detected(self) -> bool:
        """A difference at the run level: the primary set's 95% interval excludes 0; a
        secondary set's Holm-adjusted p is below 0.05."""
        iv = self.diff
        if iv is None:
            return False
        return not iv.contains_zero if self.primary else self.p_holm < 0.05

    def lines(self, effect: float = POWER_EFFECT) -> list[str]:
        """The verdict line and its evidence: per-seed differences, what the sweep can rule
        out and how many seeds an effect of ``effect`` dB would take, the image spread."""
        va, vb = self.a.setting.get(self.key, "-"), self.b.setting.get(self.key, "-")
        a, b = f"{self.key}={va}", f"{self.key}={vb}"
        role = "primary"
        if not self.primary:
            role = f"secondary, Holm over {self.family} set{'s' if self.family > 1 else ''}"
            role += f": adjusted p {self.p_holm:.3f}" if self.diff is not None else ""
        head = (
            f"- {b} vs {va}, {self.dataset} x{self.scale} [{role}], {self.n_seeds} seeds x "
            f"{self.n_images} images"
        )
        per_seed = ", ".join(f"{d:+.3f}" for d in self.per_seed.values())
        evidence = [f"  - per seed (B - A, mean over {self.n_images} images): {per_seed}"]
        iv = self.diff
        if iv is None:
            return [
                f"{head}: cannot give an interval at the run level with {self.n_seeds} "
                f"seed{'s' if self.n_seeds != 1 else ''} (needs {MIN_RUNS} or more)",
                *evidence,
            ]
        ci = f"95% CI [{iv.low:+.3f}, {iv.high:+.3f}]"
        if self.detected or iv.contains_zero:
            what = verdict(iv, a=a, b=b)
        else:  # the unadjusted interval excludes 0, Holm does not
            what = (
                f"no detectable difference after Holm's correction ({b} - {a} = "
                f"{iv.mean:+.3f} dB, unadjusted {ci})"
            )
        lines = [f"{head}: {what}; t over seeds, df {self.n_seeds - 1}", *evidence]
        if not self.detected:
            needed = runs_for_power(self.seed_sd, effect)
            lines.append(
                f"  - power: this sweep rules out B - A below {iv.low:+.3f} or above "
                f"{iv.high:+.3f} dB; detecting {effect:g} dB would take about {needed} seeds "
                f"(80% power, seed-to-seed SD of the difference {self.seed_sd:.3f} dB)"
            )
        lines.append(
            f"  - across images, for these trainings (not the verdict): SD of B - A "
            f"{self.image_sd:.3f} dB over the {self.n_images} images"
        )
        return lines


def pairings(groups: list[Group], keys: list[str], set_order: list[str]) -> list[Pairing]:
    """Every ablation pair: for each swept key, each two settings that differ in that key only
    (the later value against the earlier), compared wherever both scored the same (set,
    scale). Per scale, the first set of ``set_order`` (the sweep's first test set) not
    scored on validation images is the primary; the others are secondary, Holm-corrected
    among themselves."""
    out = []
    for key in keys:
        values = list(dict.fromkeys(g.setting.get(key) for g in groups))
        rank = {v: i for i, v in enumerate(values)}
        for a in groups:
            for b in groups:
                rest_a = {k: v for k, v in a.setting.items() if k != key}
                rest_b = {k: v for k, v in b.setting.items() if k != key}
                if rest_a == rest_b and rank[a.setting.get(key)] < rank[b.setting.get(key)]:
                    out += _with_roles(_paired(key, a, b), set_order)
    return out


def _paired(key: str, a: Group, b: Group) -> list[Pairing]:
    by_seed_a = {j.overrides.get(SEED, "0"): j.per_image for j in a.jobs}
    by_seed_b = {j.overrides.get(SEED, "0"): j.per_image for j in b.jobs}
    seeds = sorted(set(by_seed_a) & set(by_seed_b), key=_seed_order)
    diffs: dict[tuple[str, int], dict[str, list[float]]] = {}
    for seed in seeds:
        ia, ib = by_seed_a[seed], by_seed_b[seed]
        for k in sorted(set(ia) & set(ib)):
            diffs.setdefault(k[:2], {}).setdefault(seed, []).append(ib[k] - ia[k])
    out = []
    for (ds, sc), per_seed in diffs.items():
        n_images = max(len(d) for d in per_seed.values())
        spreads = [sd_of(d) for d in per_seed.values() if len(d) > 1]
        out.append(
            Pairing(
                key, a, b, ds, sc,
                per_seed={s: math.fsum(d) / len(d) for s, d in per_seed.items()},
                n_images=n_images,
                image_sd=math.fsum(spreads) / len(spreads) if spreads else math.nan,
            )
        )  # fmt: skip
    return out


def _with_roles(pairs: list[Pairing], set_order: list[str]) -> list[Pairing]:
    """Primary first, then the secondary sets with Holm-adjusted p, per scale."""
    rank = {name: i for i, name in enumerate(set_order)}
    out = []
    for scale in dict.fromkeys(p.scale for p in pairs):
        here = sorted(
            (p for p in pairs if p.scale == scale),
            key=lambda p: (p.dataset.endswith(VALIDATION), rank.get(p.dataset, len(rank))),
        )
        first, rest = here[0], here[1:]
        adjusted = holm([p.p for p in rest])
        out.append(first)
        out += [
            replace(p, primary=False, p_holm=q, family=len(rest))
            for p, q in zip(rest, adjusted, strict=True)
        ]
    return out


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if seed.lstrip("-").isdigit() else (1 << 30, seed)


def set_order(jobs: list[Job]) -> list[str]:
    """Test sets in the order the jobs scored them (``data.benchmarks``): the first one is the
    sweep's primary set."""
    return list(dict.fromkeys(ds for j in jobs for ds, _, _ in j.per_image))


def group_curve(group: Group, x_key: str | None, key: str = "val/psnr", points: int = 50):
    """The mean and 95% interval over seeds of ``key`` against ``x_key`` (None: updates;
    else a history key such as ``time/train_minutes``), as ``(xs, intervals)``. Seeds that
    validated at different points (validation by wall time) are interpolated onto a common
    grid over the range all of them cover; None if they share no range."""
    import numpy as np

    curves = []
    for job in group.jobs:
        ys = dict(job.curve(key))
        xs = ys if x_key is None else dict(job.curve(x_key))
        steps = sorted(s for s in ys if s in xs)
        if not steps:
            return None
        curves.append(
            ([float(s) if x_key is None else xs[s] for s in steps], [ys[s] for s in steps])
        )
    if all(c[0] == curves[0][0] for c in curves):
        grid = curves[0][0]
    else:
        low, high = max(c[0][0] for c in curves), min(c[0][-1] for c in curves)
        if high <= low:
            return None
        grid = list(np.linspace(low, high, points))
    values = [np.interp(grid, x, y) for x, y in curves]
    return grid, [mean_interval([float(v[i]) for v in values]) for i in range(len(grid))]


def plot_groups(groups: list[Group], keys: list[str], out: Path, key: str = "val/psnr") -> Path:
    """``val_psnr_groups.png``: per setting, the mean validation PSNR over seeds against
    updates and against training minutes (validation excluded where the runs logged
    ``time/train_minutes``, else wall-clock minutes, labelled so), with its 95% band
    (time-to-PSNR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    every_job = [j for g in groups for j in g.jobs]
    train_only = bool(every_job) and all(j.curve(TRAIN_MINUTES) for j in every_job)
    minutes_key = TRAIN_MINUTES if train_only else "time/minutes"
    minutes_label = (
        "training minutes (validation excluded)"
        if train_only
        else "wall-clock minutes (validation included)"
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100, sharey=True)
    for g in groups:
        label = f"{g.describe(keys)} (n={len(g.jobs)})"
        for ax, x_key in zip(axes, (None, minutes_key), strict=True):
            curve = group_curve(g, x_key, key)
            if curve is None:
                continue
            xs, ivs = curve
            mean = [iv.mean for iv in ivs]
            low = [iv.low if iv.n > 1 else iv.mean for iv in ivs]
            high = [iv.high if iv.n > 1 else iv.mean for iv in ivs]
            line = ax.plot(xs, mean, marker="o" if len(xs) < 20 else None, markersize=3,
                           label=label)[0]  # fmt: skip
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
    for ax, xlabel in zip(axes, ("updates", minutes_label), strict=True):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{key} (dB), mean and 95% CI over seeds")
    if axes[0].lines:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "val_psnr_groups.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
