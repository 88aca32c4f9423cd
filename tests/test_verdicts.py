"""Ablation verdicts at the level of the training run (issue 21): per seed, the mean over a
set's images of B - A; a t interval over seeds (df = seeds - 1); the first test set primary,
the others Holm-corrected; power said plainly; no interval below 3 seeds.

The sweeps are real run folders: one tiny run trained by ``train.py`` (in process), copied
into every job folder, its overrides and per-image PSNRs then rewritten through the run
folder's own writers so that B - A is known exactly."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from helpers import run_train_in_process, tiny_args, write_job

from sr_lightning.analysis.report import build_report
from sr_lightning.analysis.seeds import Group, group_curve
from sr_lightning.analysis.stats import holm, p_value, runs_for_power
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.job import read_job
from sr_lightning.runs.records import write_atomically
from sr_lightning.runs.results import read_per_image, write_per_image


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, sample_cache) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    run_train_in_process([*tiny_args(sample_cache), "logger=csv"], run)
    assert RunFolder(run).read_summary()["status"] == "completed"
    return run


# Per image PSNR of setting A (a network per seed); B = A + the seed's shift on every image.
BASE = {"Set14": [28.0 + 0.37 * i for i in range(6)], "Set5": [31.0, 33.5, 29.25, 30.0]}


def sweep_with_shifts(trained: Path, sweep: Path, shifts: list[float], sets=("Set14", "Set5")):
    """2 settings (model.net.norm=batch then none) x len(shifts) seeds; in seed s, every image
    of every set scores ``shifts[s]`` dB more with norm=none than with norm=batch, on top of
    a seed-specific level (networks of different seeds differ)."""
    template = read_per_image(trained)[0]
    job = 0
    for norm in ("batch", "none"):
        for seed, shift in enumerate(shifts):
            folder = sweep / str(job)
            shutil.copytree(trained, folder)
            rows = []
            for name in sets:
                for i, psnr in enumerate(BASE[name]):
                    value = psnr + 0.2 * seed + (shift if norm == "none" else 0.0)
                    rows.append({**template, "dataset": name, "scale": 2, "image": f"img{i}",
                                 "psnr": value})  # fmt: skip
            run = RunFolder(folder)
            write_per_image(rows, run.per_image)
            write_atomically(run.overrides, f"- model.net.norm={norm}\n- seed={seed}\n")
            job += 1
    return build_report(sweep)


def test_shifts_that_change_sign_between_seeds_are_no_detectable_difference(trained_run, tmp_path):
    """+0.30/+0.25/-0.05 dB by seed, constant within a seed: the image-pooled interval of the
    old report called this a difference (every image of a seed agrees); over 3 runs it is not."""
    report = sweep_with_shifts(trained_run, tmp_path / "sweep", [0.30, 0.25, -0.05])
    primary, secondary = report.pairs
    assert (primary.dataset, primary.primary, secondary.dataset, secondary.primary) == (
        "Set14", True, "Set5", False,
    )  # fmt: skip
    assert primary.per_seed == pytest.approx({"0": 0.30, "1": 0.25, "2": -0.05})
    iv = primary.diff
    assert (iv.n, iv.mean) == (3, pytest.approx(0.5 / 3))
    sd = math.sqrt(((0.3 - 0.5 / 3) ** 2 + (0.25 - 0.5 / 3) ** 2 + (-0.05 - 0.5 / 3) ** 2) / 2)
    assert iv.high - iv.mean == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-5)
    assert not primary.detected and not secondary.detected
    md = (tmp_path / "sweep" / "report.md").read_text()
    assert (
        "model.net.norm=none vs batch, Set14 x2 [primary], 3 seeds x 6 images: no detectable" in md
    )
    assert "t over seeds, df 2" in md
    assert "per seed (B - A, mean over 6 images): +0.300, +0.250, -0.050" in md
    assert f"rules out B - A below {iv.low:+.3f} or above {iv.high:+.3f} dB" in md
    assert f"detecting 0.1 dB would take about {runs_for_power(sd, 0.1)} seeds" in md
    assert "Set5 x2 [secondary, Holm over 1 set: adjusted p" in md
    assert "Primary set: Set14 (the first test set)" in md
    assert "across images, for these trainings (not the verdict): SD of B - A 0.000 dB" in md


def test_shifts_that_agree_between_seeds_are_a_difference(trained_run, tmp_path):
    report = sweep_with_shifts(trained_run, tmp_path / "sweep", [0.30, 0.31, 0.29])
    primary, secondary = report.pairs
    assert primary.detected and secondary.detected
    assert primary.diff.mean == pytest.approx(0.30)
    md = (tmp_path / "sweep" / "report.md").read_text()
    assert "[primary], 3 seeds x 6 images: model.net.norm=none better by 0.300 dB" in md
    assert "power:" not in md  # a detected difference needs no power line


def test_two_seeds_give_no_run_level_interval(trained_run, tmp_path):
    report = sweep_with_shifts(trained_run, tmp_path / "sweep", [0.30, 0.31])
    pair, secondary = report.pairs
    assert pair.diff is None and not pair.detected and not secondary.detected
    md = (tmp_path / "sweep" / "report.md").read_text()
    assert "cannot give an interval at the run level with 2 seeds (needs 3 or more)" in md
    assert "adjusted p" not in md  # no p from 2 runs either


def test_the_first_test_set_is_primary_even_when_a_later_one_is_larger(trained_run, tmp_path):
    report = sweep_with_shifts(trained_run, tmp_path / "sweep", [0.3, 0.2, 0.1], ("Set5", "Set14"))
    assert [(p.dataset, p.primary) for p in report.pairs] == [("Set5", True), ("Set14", False)]


def test_holm_and_p_value_match_scipy():
    from scipy import stats

    values = [0.3, 0.25, -0.05]
    assert p_value(values) == pytest.approx(stats.ttest_1samp(values, 0).pvalue)
    # three p-values: sorted 0.01 (x3), 0.02 (x2), 0.04 (x1), made monotone
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    kept, missing = holm([0.5, math.nan])
    assert kept == 0.5 and math.isnan(missing)


def test_runs_for_power_grows_with_the_noise_and_meets_its_definition():
    from scipy import stats

    n = runs_for_power(0.2, 0.1)
    need = lambda k: (stats.t.ppf(0.975, k - 1) + stats.t.ppf(0.8, k - 1)) * 0.2 / math.sqrt(k)  # noqa: E731
    assert need(n) <= 0.1 < need(n - 1)
    assert runs_for_power(0.4, 0.1) > n > runs_for_power(0.05, 0.1) >= 3


def test_time_to_psnr_interpolates_seeds_that_validated_at_different_points(tmp_path):
    """Validation by wall time: three seeds validated at different updates and minutes. The
    curve over seeds is not empty; at a shared point it is the mean of the seeds' values."""
    jobs = []
    for seed, steps in enumerate([(100, 200, 300), (90, 210, 310), (110, 190, 290)]):
        history = []
        for k, step in enumerate(steps):
            history += [(step, "val/psnr", 30.0 + k + 0.1 * seed)]
            history += [(step, "time/minutes", step / 10 + 1.0)]
            history += [(step, "time/train_minutes", step / 10)]
        write_job(tmp_path / str(seed), [f"seed={seed}"], {"status": "completed"}, history)
        jobs.append(read_job(tmp_path / str(seed)))
    group = Group({}, jobs)
    xs, ivs = group_curve(group, None)
    assert xs[0] == pytest.approx(110) and xs[-1] == pytest.approx(290)
    assert all(iv.n == 3 for iv in ivs)
    xs, ivs = group_curve(group, "time/train_minutes")
    assert xs[0] == pytest.approx(11.0) and xs[-1] == pytest.approx(29.0)
    # at 20 train minutes: seed 0 at step 200 (31.0); seed 1 between 9 and 21 minutes;
    # seed 2 between 19 and 29 minutes: linear interpolation of each
    at = min(range(len(xs)), key=lambda i: abs(xs[i] - 20.0))
    x = xs[at]
    s0 = 30.0 + (x - 10) / 10 if x < 20 else 31.0 + (x - 20) / 10
    s1 = 30.1 + (x - 9) / 12
    s2 = 30.2 + (x - 11) / 8 if x < 19 else 31.2 + (x - 19) / 10
    assert ivs[at].mean == pytest.approx((s0 + s1 + s2) / 3)
