"""Seeds as a sweep axis: jobs that differ only in ``seed`` form a group; a group's metric is
its mean over seeds with a 95% t interval; two settings of a swept key (an ablation pair)
are compared image by image, paired by seed and image, with a plain verdict.

Used by :mod:`.report` (``train.py -m ... seed=0,1,2`` or ``+seeds=three``). Run-to-run
noise in SR (0.01-0.1 dB, more at small budgets) decides rankings that a single seed cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sr_lightning.analysis.stats import Interval, mean_interval, verdict
from sr_lightning.runs.job import Job

SEED = "seed"


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
    """A markdown table: one row per setting, n and mean [95% CI] per PSNR column."""
    head = ["setting", "n", *(f"{title(c)} mean [95% CI]" for c in psnr_columns)]
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
    """Setting ``b`` against the reference ``a`` (they differ in ``key`` only)."""

    key: str
    a: Group
    b: Group
    dataset: str
    scale: int
    diff: Interval
    n_seeds: int
    n_images: int

    def line(self) -> str:
        va, vb = self.a.setting.get(self.key, "-"), self.b.setting.get(self.key, "-")
        what = verdict(self.diff, a=f"{self.key}={va}", b=f"{self.key}={vb}")
        return (
            f"- {self.key}={vb} vs {va}, {self.dataset} x{self.scale} ({self.n_seeds} seeds x "
            f"{self.n_images} images, paired): {what}"
        )


def pairings(groups: list[Group], keys: list[str]) -> list[Pairing]:
    """Every ablation pair: for each swept key, each two settings that differ in that key only
    (the later value against the earlier), compared wherever both scored the same (set,
    scale), image by image, paired by seed."""
    out = []
    for key in keys:
        values = list(dict.fromkeys(g.setting.get(key) for g in groups))
        rank = {v: i for i, v in enumerate(values)}
        for a in groups:
            for b in groups:
                rest_a = {k: v for k, v in a.setting.items() if k != key}
                rest_b = {k: v for k, v in b.setting.items() if k != key}
                if rest_a == rest_b and rank[a.setting.get(key)] < rank[b.setting.get(key)]:
                    out += _paired(key, a, b)
    return out


def _paired(key: str, a: Group, b: Group) -> list[Pairing]:
    by_seed_a = {j.overrides.get(SEED, "0"): j.per_image for j in a.jobs}
    by_seed_b = {j.overrides.get(SEED, "0"): j.per_image for j in b.jobs}
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    diffs: dict[tuple[str, int], list[float]] = {}
    images: dict[tuple[str, int], set[str]] = {}
    for seed in seeds:
        ia, ib = by_seed_a[seed], by_seed_b[seed]
        for k in sorted(set(ia) & set(ib)):
            diffs.setdefault(k[:2], []).append(ib[k] - ia[k])
            images.setdefault(k[:2], set()).add(k[2])
    return [
        Pairing(key, a, b, ds, sc, mean_interval(d), len(seeds), len(images[ds, sc]))
        for (ds, sc), d in diffs.items()
        if len(d) >= 2
    ]


def plot_groups(groups: list[Group], keys: list[str], out: Path, key: str = "val/psnr") -> Path:
    """``val_psnr_groups.png``: per setting, the mean validation PSNR over seeds against
    updates and against wall-clock minutes, with its 95% CI band (time-to-PSNR)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100, sharey=True)
    for g in groups:
        per_step: dict[int, list[float]] = {}
        minutes: dict[int, list[float]] = {}
        for job in g.jobs:
            for step, value in job.curve(key):
                per_step.setdefault(step, []).append(value)
            for step, value in job.curve("time/minutes"):
                minutes.setdefault(step, []).append(value)
        steps = sorted(s for s, v in per_step.items() if len(v) == len(g.jobs))
        if not steps:
            continue
        ivs = [mean_interval(per_step[s]) for s in steps]
        mean = [iv.mean for iv in ivs]
        low = [iv.low if iv.n > 1 else iv.mean for iv in ivs]
        high = [iv.high if iv.n > 1 else iv.mean for iv in ivs]
        label = f"{g.describe(keys)} (n={len(g.jobs)})"
        xs = {"updates": steps, "minutes": [_mean(minutes.get(s, [float("nan")])) for s in steps]}
        for ax, x in zip(axes, xs.values(), strict=True):
            line = ax.plot(x, mean, marker="o", markersize=3, label=label)[0]
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    for ax, xlabel in zip(axes, ("updates", "wall-clock minutes"), strict=True):
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


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
