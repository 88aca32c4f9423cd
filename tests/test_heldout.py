"""Test rows are never scored on the images that chose the checkpoint: the sample's held-out
``test`` split, DIV2K's test range apart from its validation range, and the
``"<set> (validation)"`` label of a test set that still shares images with validation."""

from __future__ import annotations

import csv
import inspect
import json
import multiprocessing

import numpy as np
import pytest
from helpers import CONF, make_dm, run_train_in_process, tiny_args
from omegaconf import OmegaConf
from PIL import Image

from sr_lightning.data.datamodule import VALIDATION_SUFFIX, SRDataModule
from sr_lightning.models import Bicubic
from sr_lightning.runs.results import format_table
from sr_lightning.training.evaluation import evaluate, save_results
from sr_lightning.training.lit_module import SRLitModule

HELD_OUT = {"chelsea", "immunohistochemistry"}
VALIDATION = {"astronaut", "coffee"}


def stems(folder) -> set[str]:
    return {p.stem for p in folder.glob("*.png")}


def test_sample_splits_are_disjoint_and_named(sample_cache):
    from sr_lightning.data.sample import SAMPLE_SPLITS, SAMPLE_TEST, SAMPLE_TRAIN, sample_dir

    root = sample_dir(sample_cache)
    assert root.name == "sample-v3"
    assert set(SAMPLE_SPLITS) == {"train", "val", "test"}
    for split, names in SAMPLE_SPLITS.items():
        assert stems(root / split) == set(names), split
    train, val, test = (set(SAMPLE_SPLITS[s]) for s in ("train", "val", "test"))
    assert (len(train), val, test) == (12, VALIDATION, HELD_OUT)
    assert not (train & val or train & test or val & test)
    assert {"motorcycle_left", "motorcycle_right"} <= train  # the stereo pair: one split
    assert set(SAMPLE_TEST) == HELD_OUT and "chelsea" not in SAMPLE_TRAIN
    # the data module reads each split where it belongs: validation on val, tests on test
    dm = SRDataModule(
        root=str(sample_cache),
        scales=[2],
        num_workers=0,
        train_set="sample",
        val_sets=["sample"],
        benchmarks=["sample"],
        cache_dir=str(sample_cache),
    )
    dm.setup("validate")
    dm.setup("test")
    assert [(d.name, {p.hr.stem for p in d.pairs}) for d in dm.val_data] == [("sample", VALIDATION)]
    assert [(d.name, {p.hr.stem for p in d.pairs}) for d in dm.test_data] == [("sample", HELD_OUT)]
    assert {p.hr.stem for p in dm.train_pairs(2)} == train
    dm.check_sets(train=False)  # finds and decodes all three splits' images


def test_a_run_tests_the_sample_on_held_out_photos_only(tmp_path, sample_cache, data_root):
    """The acceptance test: a tiny run validating on the sample's validation photos and
    testing on [sample, Set5] has no ``sample`` test row on astronaut or coffee."""
    run = tmp_path / "run"
    run_train_in_process(
        [
            *tiny_args(sample_cache),
            f"data.root={data_root}",
            "data.val_sets=[sample]",
            "data.benchmarks=[sample,Set5]",
            "trainer.max_epochs=1",
        ],
        run,
    )
    with open(run / "per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    sample = [r for r in rows if r["dataset"] == "sample"]
    assert sample and not [r for r in sample if r["image"] in VALIDATION]
    assert {r["image"] for r in sample} == HELD_OUT
    assert {r["dataset"] for r in rows} == {"sample", "Set5"}  # nothing shared: no label
    results = json.loads((run / "results.json").read_text())
    assert {(r["dataset"], r["n_images"]) for r in results} == {("sample", 2), ("Set5", 5)}


def write_images(folder, names, seed: int = 0) -> None:
    """Random 24x24 RGB PNGs ``<folder>/<name>.png``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")


def test_test_sets_that_share_validation_images_are_labelled(tmp_path):
    root = tmp_path / "data"
    write_images(root / "photos", ["a", "b", "c"])
    write_images(root / "others", ["d", "e"], seed=1)
    # DIV2K images 801-804 in the authors' merged layout (LR made by our imresize)
    write_images(root / "DIV2K" / "DIV2K_train_HR", [f"{i:04d}" for i in range(801, 805)], 2)
    kw = dict(root=str(root), scales=[2, 3], num_workers=0, cache_dir=str(tmp_path / "c"))

    def labels(**sets) -> list[str]:
        dm = SRDataModule(**kw, **sets)
        dm.setup("test")  # test-only: the validation sets are resolved for the comparison
        return [d.name for d in dm.test_data]

    same = labels(val_sets=["photos"], benchmarks=["photos", "others"])
    assert same == ["photos (validation)"] * 2 + ["others"] * 2  # each scale
    alias = labels(val_sets=[str(root / "photos")], benchmarks=["photos"])  # same files
    assert alias == ["photos (validation)"] * 2
    assert labels(val_sets=[], benchmarks=["photos"]) == ["photos"] * 2  # eval.py's case
    div2k = dict(val_sets=["DIV2K"], benchmarks=["DIV2K"], div2k_val_range=(801, 802))
    assert labels(**div2k, div2k_test_range=(803, 804)) == ["DIV2K"] * 2
    assert labels(**div2k, div2k_test_range=(801, 804)) == ["DIV2K (validation)"] * 2
    # after fitting, the validation sets built for it are the ones compared
    dm = SRDataModule(
        **kw, train_set="others", val_sets=["photos"], benchmarks=["photos"], patch_size=8
    )
    dm.setup("fit")
    dm.setup("test")
    assert [d.name for d in dm.test_data] == ["photos (validation)"] * 2
    # the label flows through the evaluation engine to every output without harm
    dm = SRDataModule(**kw, val_sets=["photos"], benchmarks=["photos"])
    rows, images = evaluate(SRLitModule(Bicubic([2, 3])), dm, "bicubic", "cpu")
    assert {r["dataset"] for r in rows} == {"photos (validation)"}
    save_results(rows, images, tmp_path / "out" / "results.json")
    with open(tmp_path / "out" / "per_image.csv", newline="") as f:
        per_image = list(csv.DictReader(f))
    assert len(per_image) == 6 and {r["dataset"] for r in per_image} == {"photos (validation)"}
    assert json.loads((tmp_path / "out" / "results.json").read_text())[0]["dataset"] == (
        "photos" + VALIDATION_SUFFIX
    )
    assert "| photos (validation) | x2 |" in format_table(rows)


def test_benchmark_listed_as_validation_and_test_is_labelled(data_root, cache_dir):
    dm = make_dm(data_root, cache_dir)  # val_sets=[Set5], benchmarks=[Set5]
    dm.setup("test")
    assert [d.name for d in dm.test_data] == ["Set5 (validation)"]
    dm = make_dm(data_root, cache_dir, val_sets=["Set14"])
    dm.setup("test")
    assert [d.name for d in dm.test_data] == ["Set5"]


def test_div2k_default_test_range_is_disjoint_from_validation(tmp_path):
    params = inspect.signature(SRDataModule).parameters
    val, test = params["div2k_val_range"].default, params["div2k_test_range"].default
    assert (tuple(val), tuple(test)) == ((801, 810), (811, 900))
    conf = OmegaConf.load(CONF / "data" / "div2k.yaml")
    for v, t in ((val, test), (conf.div2k_val_range, conf.div2k_test_range)):
        assert not set(range(v[0], v[1] + 1)) & set(range(t[0], t[1] + 1))
    assert list(conf.div2k_test_range) == [811, 900]
    dm = SRDataModule(root=str(tmp_path), benchmarks=["Set5", "DIV2K"])
    assert dm.describe_sets() == "validation: DIV2K 801-810; test: Set5, DIV2K 811-900"
    with pytest.raises(ValueError, match=r"data.div2k_test_range=\[900, 811\] .*test \[900, 811\]"):
        SRDataModule(root=str(tmp_path), div2k_test_range=(900, 811))


@pytest.mark.slow  # two processes
def test_two_processes_write_the_sample_cache_at_once(tmp_path):
    """Two processes (two cluster nodes on one shared cache) write the sample folder at the
    same time: both succeed, every image is whole, no temporary file is left behind."""
    pytest.importorskip("skimage", reason="data=sample needs scikit-image")
    from sr_lightning.data.sample import SAMPLE_SPLITS, sample_dir

    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=sample_dir, args=(tmp_path,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0]
    root = sample_dir(tmp_path)
    for split, names in SAMPLE_SPLITS.items():
        assert stems(root / split) == set(names)
        for path in (root / split).glob("*.png"):
            with Image.open(path) as im:
                im.verify()
    assert sorted(p.name for p in root.rglob("*") if p.is_file() and p.suffix != ".png") == []
