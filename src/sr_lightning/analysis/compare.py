"""How two runs really differ, image by image: ``sr-compare A B [--out DIR]``.

A and B are run folders (their ``per_image.csv``, written by ``train.py``'s test and by
``eval.py``) or per-image CSVs. Per set and scale: the mean PSNR of each, the mean paired
difference B - A with its 95% t confidence interval over the images (below 3 images: "too
few images to tell"), wins and losses, and up to five images where B loses most.
Run-to-run noise in SR is 0.01-0.1 dB: an interval that holds 0 says the two cannot be told
apart on these images. Writes ``compare.md`` and, for two run folders, ``compare.png``: the
crops of the image where B loses most, from both networks.
Refuses pairs whose image lists or protocols differ, naming what differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from sr_lightning.analysis.stats import MIN_RUNS, Interval, mean_interval, verdict
from sr_lightning.core.inference import receptive_radius, super_resolve
from sr_lightning.core.metrics import quantize
from sr_lightning.data.datasets import Pair, aligned_pair
from sr_lightning.data.io import to_rgb
from sr_lightning.models.checkpoint import load_network
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.results import read_per_image
from sr_lightning.training.pictures import centre_box, labelled_row, save_png


@dataclass(frozen=True)
class Comparison:
    """One (set, scale) of a paired comparison."""

    dataset: str
    scale: int
    protocol: str
    images: list[str]
    a: list[float]
    b: list[float]

    @property
    def diffs(self) -> list[float]:
        return [y - x for x, y in zip(self.a, self.b, strict=True)]

    @property
    def diff(self) -> Interval:
        return mean_interval(self.diffs)

    @property
    def wins(self) -> int:
        return sum(d > 0 for d in self.diffs)

    @property
    def losses(self) -> int:
        return sum(d < 0 for d in self.diffs)

    def worst(self, k: int = 5) -> list[tuple[str, float]]:
        """Up to ``k`` images where B loses (most negative B - A first); none if B never
        loses."""
        lost = [(name, d) for name, d in zip(self.images, self.diffs, strict=True) if d < 0]
        return sorted(lost, key=lambda t: t[1])[:k]

    def verdict(self) -> str:
        """The paired verdict, or ``too few images to tell`` below :data:`MIN_RUNS` images."""
        if len(self.images) < MIN_RUNS:
            return f"too few images to tell ({len(self.images)}; needs {MIN_RUNS} or more)"
        return verdict(self.diff)


def pair_up(a_rows: list[dict], b_rows: list[dict]) -> list[Comparison]:
    """Group by (set, scale); refuse when the images or the protocols differ."""

    def groups(rows: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
        out: dict[tuple[str, int], dict[str, dict]] = {}
        for r in rows:
            out.setdefault((r["dataset"], int(r["scale"])), {})[r["image"]] = r
        return out

    ga, gb = groups(a_rows), groups(b_rows)
    if set(ga) != set(gb):
        raise ValueError(f"A scored (set, scale) {sorted(ga)}, B {sorted(gb)}: not comparable")
    out = []
    for key in sorted(ga):
        ia, ib = ga[key], gb[key]
        if set(ia) != set(ib):
            only_a, only_b = sorted(set(ia) - set(ib)), sorted(set(ib) - set(ia))
            raise ValueError(
                f"{key[0]} x{key[1]}: the image lists differ (only in A: {only_a[:5]}, only in "
                f"B: {only_b[:5]})"
            )
        images = sorted(ia)
        protocols = {ia[i]["protocol"] for i in images} | {ib[i]["protocol"] for i in images}
        if len(protocols) > 1:
            raise ValueError(f"{key[0]} x{key[1]}: scored under different protocols {protocols}")
        a = [float(ia[i]["psnr"]) for i in images]
        b = [float(ib[i]["psnr"]) for i in images]
        out.append(Comparison(key[0], key[1], protocols.pop(), images, a, b))
    return out


def markdown(comparisons: Sequence[Comparison], a: str, b: str) -> str:
    lines = [
        f"# {b} (B) vs {a} (A)",
        "",
        "| set | scale | protocol | n | A PSNR | B PSNR | B - A [95% CI] | wins / losses "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        d = c.diff
        lines.append(
            f"| {c.dataset} | x{c.scale} | {c.protocol} | {d.n} | {sum(c.a) / d.n:.3f} | "
            f"{sum(c.b) / d.n:.3f} | {d} | {c.wins} / {c.losses} | {c.verdict()} |"
        )
    for c in comparisons:
        worst = ", ".join(f"{name} ({diff:+.3f})" for name, diff in c.worst())
        where = f"where B loses most: {worst}" if worst else "B loses on no image"
        lines += ["", f"{c.dataset} x{c.scale}, {where}"]
    return "\n".join(lines) + "\n"


def worst_image_png(comparison: Comparison, a: Path, b: Path, out: Path) -> Path | None:
    """Crops of the image where B loses most, through both runs' best checkpoints."""
    ckpts = [RunFolder(run).best_checkpoint() for run in (a, b)]
    if not all(ckpts):
        return None
    name, _ = comparison.worst(1)[0]
    rows = {r["image"]: r for r in read_per_image(b)}
    row = rows[name]
    pair = Pair(
        Path(row["hr_path"]), None if row["lr_path"] == "imresize" else Path(row["lr_path"])
    )
    lr, hr = aligned_pair(pair, comparison.scale)
    lr = to_rgb(lr).float()[None]
    top, left, side = centre_box(*lr.shape[-2:])
    tiles, labels, s = [], [], comparison.scale
    for label, ckpt in zip(("A", "B"), ckpts, strict=True):
        net, _ = load_network(ckpt, echo=lambda m: None)
        m = receptive_radius(net)
        y0, x0 = max(top - m, 0), max(left - m, 0)
        crop = lr[
            ..., y0 : min(top + side + m, lr.shape[-2]), x0 : min(left + side + m, lr.shape[-1])
        ]
        sr = super_resolve(net.eval(), crop * (net.rgb_range / 255.0), s)[0]
        oy, ox = (top - y0) * s, (left - x0) * s
        tiles.append(quantize(sr[:, oy : oy + side * s, ox : ox + side * s], net.rgb_range))
        values = comparison.a if label == "A" else comparison.b
        psnr = values[comparison.images.index(name)]
        labels.append(f"{label} {psnr:.2f} dB (image)")
    hr_crop = to_rgb(hr)[:, top * s : (top + side) * s, left * s : (left + side) * s]
    tiles.append(hr_crop.float())
    labels.append("HR")
    row_img = labelled_row([t.to(torch.uint8) for t in tiles], labels)
    return save_png(row_img, out / "compare.png")


def compare(a: str | Path, b: str | Path, out: str | Path | None = None) -> tuple[str, Path]:
    """Compare runs ``a`` and ``b``; returns (markdown, the folder written into)."""
    comparisons = pair_up(read_per_image(a), read_per_image(b))
    a, b = Path(a), Path(b)
    out = Path(out) if out else (b if b.is_dir() else b.parent)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(comparisons, str(a), str(b))
    (out / "compare.md").write_text(text)
    if a.is_dir() and b.is_dir() and comparisons:
        losing = [c for c in comparisons if c.worst(1)]
        if losing:
            worst_image_png(min(losing, key=lambda c: c.worst(1)[0][1]), a, b, out)
    return text, out
