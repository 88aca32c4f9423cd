"""sr-compare: two runs that differ only in seed, compared image by image (paired CI)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from helpers import run_train_in_process, tiny_args, write_job
from scipy import stats

from sr_lightning.cli.compare import main
from sr_lightning.runs.folder import RunFolder

SET5 = ["baby", "bird", "butterfly", "head", "woman"]


def per_image(run: Path) -> dict[str, float]:
    """image -> PSNR of the run's network, read by hand from its per-image CSV."""
    with open(RunFolder(run).per_image, newline="") as f:
        return {r["image"]: float(r["psnr"]) for r in csv.DictReader(f) if r["model"] != "bicubic"}


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory, data_root, cache_dir) -> tuple[Path, Path]:
    """Two real tiny runs, one epoch each (the later trainer.max_epochs wins), in process:
    no launcher is under test here."""
    root = tmp_path_factory.mktemp("seeds")
    runs = []
    for seed in (0, 1):
        run = root / f"seed{seed}"
        run_train_in_process(
            [*tiny_args(cache_dir), "trainer.max_epochs=1", f"seed={seed}",
             f"data.root={data_root}", "data.benchmarks=[Set5]"],
            run,
        )  # fmt: skip
        runs.append(run)
    return runs[0], runs[1]


@pytest.mark.slow
def test_compare_two_seeds_with_a_paired_ci_checked_by_hand(two_seeds, tmp_path, capsys):
    a, b = two_seeds
    assert main([str(a), str(b), "--out", str(tmp_path)]) == 0
    pa, pb = per_image(a), per_image(b)
    assert sorted(pa) == sorted(pb) == SET5
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
    if pb[worst] < pa[worst]:
        assert f"where B loses most: {worst} (" in md
        from PIL import Image

        with Image.open(tmp_path / "compare.png") as im:  # A | B | HR crops of that image
            im.verify()
    else:
        assert "B loses on no image" in md
    assert "Set5" in capsys.readouterr().out


def set5_rows(psnr: float, protocol: str = "Y, border 2, LR file") -> list[dict]:
    """Per-image rows of a network and of bicubic on Set5 x2 (the per_image.csv format)."""
    return [
        {"dataset": "Set5", "scale": 2, "image": image, "model": model, "psnr": value,
         "ssim": 0.9, "protocol": protocol, "hr_path": f"{image}_HR.png",
         "lr_path": f"{image}_LR.png"}
        for i, image in enumerate(SET5)
        for model, value in (("edsr 1x8", psnr + i / 10), ("bicubic", 30.0))
    ]  # fmt: skip


def test_compare_refuses_other_images_or_protocols(tmp_path, capsys):
    a = write_job(tmp_path / "a", per_image=set5_rows(31.0)).path
    fewer = write_job(
        tmp_path / "fewer", per_image=[r for r in set5_rows(31.5) if r["image"] != "bird"]
    ).path
    other = write_job(tmp_path / "other", per_image=set5_rows(31.5, "RGB, border 8, LR file"))
    same = write_job(tmp_path / "same", per_image=set5_rows(31.5)).path
    assert main([str(a), str(same), "--out", str(tmp_path / "out")]) == 0  # comparable
    assert "| Set5 | x2 | Y, border 2, LR file | 5 |" in capsys.readouterr().out
    assert main([str(a), str(fewer)]) == 1
    assert "image lists differ (only in A: ['bird']" in capsys.readouterr().err
    assert main([str(a), str(other.per_image)]) == 1  # a per-image CSV is a source too
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


def test_two_images_are_too_few_to_tell_and_a_win_everywhere_lists_no_loss(tmp_path, capsys):
    """+1.5 dB on 2 of 2 images: no interval, no verdict, and no "where B loses most"."""
    two = [r for r in set5_rows(31.0) if r["image"] in ("baby", "bird")]
    better = [{**r, "psnr": r["psnr"] + 1.5 * (r["model"] != "bicubic")} for r in two]
    a = write_job(tmp_path / "a", per_image=two).path
    b = write_job(tmp_path / "b", per_image=better).path
    assert main([str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "too few images to tell (2; needs 3 or more)" in md
    assert "no detectable difference" not in md and "2 / 0" in md
    assert "Set5 x2, B loses on no image" in md and "loses most" not in md
    assert not (tmp_path / "out" / "compare.png").exists()
