"""sr-compare: two runs that differ only in seed, compared image by image (paired CI)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from helpers import tiny_args, train
from scipy import stats

from sr_lightning.cli.compare import main


def per_image(run: Path) -> dict[str, float]:
    with open(run / "per_image.csv", newline="") as f:
        return {r["image"]: float(r["psnr"]) for r in csv.DictReader(f) if r["model"] != "bicubic"}


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, data_root) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("seeds")
    cache = tmp_path_factory.mktemp("cache")
    runs = []
    for seed in (0, 1):
        run = root / f"seed{seed}"
        train(
            [*tiny_args(cache), f"hydra.run.dir={run}", f"seed={seed}", f"data.root={data_root}",
             "data.benchmarks=[Set5]"]
        )  # fmt: skip
        runs.append(run)
    return runs[0], runs[1]


@pytest.mark.slow
def test_compare_two_seeds_with_a_paired_ci_checked_by_hand(two_seeds, tmp_path, capsys):
    a, b = two_seeds
    assert main([str(a), str(b), "--out", str(tmp_path)]) == 0
    pa, pb = per_image(a), per_image(b)
    assert sorted(pa) == sorted(pb) == ["baby", "bird", "butterfly", "head", "woman"]
    diffs = [pb[i] - pa[i] for i in sorted(pa)]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    md = (tmp_path / "compare.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Set5 | x2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "Y, border 2, LR file" and cells[3] == "5"
    assert float(cells[4]) == pytest.approx(sum(pa.values()) / 5, abs=1e-3)
    assert float(cells[5]) == pytest.approx(sum(pb.values()) / 5, abs=1e-3)
    assert cells[6] == f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]"
    assert cells[7] == f"{sum(d > 0 for d in diffs)} / {sum(d < 0 for d in diffs)}"
    contains_zero = mean - half <= 0 <= mean + half
    assert cells[8].startswith("no detectable difference") == contains_zero
    worst = min(sorted(pa), key=lambda i: pb[i] - pa[i])
    assert f"where B loses most: {worst} (" in md
    from PIL import Image

    with Image.open(tmp_path / "compare.png") as im:  # A | B | HR crops of that image
        im.verify()
    assert "Set5" in capsys.readouterr().out


@pytest.mark.slow
def test_compare_refuses_other_images_or_protocols(two_seeds, tmp_path, capsys):
    a, b = two_seeds
    with open(b / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fewer = tmp_path / "fewer.csv"
    other = tmp_path / "other.csv"
    for path, keep, protocol in ((fewer, lambda r: r["image"] != "bird", None),
                                 (other, lambda r: True, "RGB, border 8, LR file")):  # fmt: skip
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(
                {**r, **({"protocol": protocol} if protocol else {})} for r in rows if keep(r)
            )
    assert main([str(a), str(fewer)]) == 1
    assert "image lists differ (only in A: ['bird']" in capsys.readouterr().err
    assert main([str(a), str(other)]) == 1
    assert "scored under different protocols" in capsys.readouterr().err


def test_verdict_states_the_winners_lead_with_its_own_interval():
    from sr_lightning.analysis.stats import mean_interval, verdict

    b_minus_a = mean_interval([-0.30, -0.20, -0.10, -0.20])  # A wins every pair
    text = verdict(b_minus_a, "l1", "l2")
    lead = mean_interval([0.30, 0.20, 0.10, 0.20])  # the same data as A - B
    assert text == f"l1 better by 0.200 dB, 95% CI [{lead.low:.3f}, {lead.high:.3f}]"
    assert 0 < lead.low < lead.high
    assert verdict(lead, "l1", "l2").startswith("l2 better by 0.200 dB, 95% CI [")
    assert verdict(mean_interval([-0.1, 0.2, 0.05]), "a", "b").startswith(
        "no detectable difference (b - a = +0.050 dB, 95% CI [-"
    )
