"""SRDataModule: aligned patches, augmentation, single-scale batches, cache, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_dm
from PIL import Image

import sr_lightning.data.datasets as datasets_mod
from sr_lightning.core.inference import dihedral, dihedral_inverse
from sr_lightning.data.datamodule import SRDataModule, UnpaddedDistributedSampler
from sr_lightning.data.datasets import aligned_pair, folder_pairs
from sr_lightning.data.degradation import bicubic_downscale
from sr_lightning.data.io import ImageError, load_image
from sr_lightning.data.patches import PatchBatches


def assert_aligned(lr: torch.Tensor, hr: torch.Tensor, scale: int) -> None:
    """Downscaling the HR patch gives the LR patch (exactly, away from the crop border)."""
    down = bicubic_downscale(hr, scale).float()
    err = (down - lr.float())[..., 2:-2, 2:-2].abs()
    assert err.mean() < 0.5 and err.max() <= 2, (err.mean(), err.max())


@pytest.mark.parametrize("augment", [False, True])
def test_patches_are_aligned(data_root, cache_dir, augment):
    dm = make_dm(data_root, cache_dir, scales=[2, 3, 4], augment=augment)
    for batch in dm.train_dataloader():
        s = batch["scale"]
        assert batch["lr"].dtype == torch.uint8 and batch["lr"].shape == (4, 3, 16, 16)
        assert batch["hr"].shape == (4, 3, 16 * s, 16 * s)
        for lr, hr in zip(batch["lr"], batch["hr"], strict=True):
            assert_aligned(lr, hr, s)


def test_augmentation_is_the_eight_dihedral_transforms_on_both():
    """An image exactly one patch big: every output is dihedral(k) of it, LR and HR alike."""
    torch.manual_seed(0)
    lr = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    hr = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    data = PatchBatches({2: [(lr, hr)]}, 16, 8, 40, augment=True, seed=3)
    seen = set()
    for batch in data:
        for out_lr, out_hr in zip(batch["lr"], batch["hr"], strict=True):
            k = next(k for k in range(8) if torch.equal(out_lr, dihedral(lr, k)))
            assert torch.equal(out_hr, dihedral(hr, k))
            seen.add(k)
    assert seen == set(range(8))
    x = torch.arange(12).view(1, 3, 4)
    assert len({tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}) == 8
    for k in range(8):
        assert torch.equal(dihedral_inverse(dihedral(x, k), k), x)


def test_mdsr_batches_are_single_scale_and_cover_all(data_root, cache_dir):
    dm = make_dm(data_root, cache_dir, scales=[2, 3, 4], updates_per_epoch=30, num_workers=2)
    loader = dm.train_dataloader()
    scales = [b["scale"] for b in loader]
    assert len(scales) == 30 and set(scales) == {2, 3, 4}
    dm.train_data.epoch = 1  # what the data module does at each epoch, from the trainer
    scales2 = [b["scale"] for b in loader]
    assert scales2 != scales  # a new draw every epoch


def test_an_epoch_resumed_mid_way_replays_the_same_batches(data_root, cache_dir):
    """Batch k of epoch e depends on (seed, e, k) only: a run resumed at batch 5 of epoch 1
    sees exactly the batches the uninterrupted run saw, with or without workers."""
    dm = make_dm(data_root, cache_dir, scales=[2, 3], updates_per_epoch=9, num_workers=2)
    data = dm.train_data
    data.epoch, data.first_batch = 1, 0
    full = list(torch.utils.data.DataLoader(data, batch_size=None, num_workers=2))
    data.first_batch = 5
    tail = list(data)  # in-process, no workers
    assert len(full) == 9 and len(tail) == 4
    for a, b in zip(full[5:], tail, strict=True):
        assert a["scale"] == b["scale"] and torch.equal(a["lr"], b["lr"])
        assert torch.equal(a["hr"], b["hr"])
    data.epoch, data.first_batch = 2, 0
    assert not torch.equal(list(data)[0]["lr"], full[0]["lr"])  # another epoch, other patches


def test_ranks_agree_on_the_scale_and_split_the_images(data_root, cache_dir):
    dm = make_dm(data_root, cache_dir, scales=[2, 3, 4])
    images = dm.train_data.images
    ranks = [PatchBatches(images, 16, 4, 12, True, seed=1, rank=r, world_size=2) for r in (0, 1)]
    b0, b1 = (list(r) for r in ranks)
    assert [b["scale"] for b in b0] == [b["scale"] for b in b1]
    assert not torch.equal(b0[0]["lr"], b1[0]["lr"])
    order = ranks[0].image_order(123)
    per_rank = [order[(k * 2 + r) * 4 : (k * 2 + r + 1) * 4] for r in (0, 1) for k in range(12)]
    counts = torch.bincount(torch.cat(per_rank), minlength=5)
    assert counts.max() - counts.min() <= 1  # every image equally often


@pytest.mark.parametrize("world", [2, 4])
def test_the_global_batch_is_the_same_on_any_number_of_processes(data_root, cache_dir, world):
    """1 process x 8 patches and N processes x 8/N: rank r's batches are slice r of the one
    process's, bit for bit (scales too: MDSR), in every epoch and from a mid-epoch start."""
    images = make_dm(data_root, cache_dir, scales=[2, 3, 4]).train_data.images
    one = PatchBatches(images, 16, 8, 6, True, seed=3)
    ranks = [
        PatchBatches(images, 16, 8 // world, 6, True, seed=3, rank=r, world_size=world)
        for r in range(world)
    ]
    for epoch, first in [(0, 0), (1, 0), (2, 4)]:
        for data in (one, *ranks):
            data.epoch, data.first_batch = epoch, first
        whole, parts = list(one), [list(r) for r in ranks]
        for k, batch in enumerate(whole):
            assert {p[k]["scale"] for p in parts} == {batch["scale"]}
            for key in ("lr", "hr"):
                assert torch.equal(torch.cat([p[k][key] for p in parts]), batch[key])


def test_unpadded_sampler_scores_each_image_once():
    data = list(range(5))
    idx = [i for r in (0, 1) for i in UnpaddedDistributedSampler(data, 2, r)]
    assert sorted(idx) == [0, 1, 2, 3, 4]


def test_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    src = tmp_path / "hr"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(src / f"{i}.png")
    calls = []

    def counting_load(path):
        calls.append(path)
        return load_image(path)

    monkeypatch.setattr(datasets_mod, "load_image", counting_load)
    cache = tmp_path / "cache"
    pairs = folder_pairs(src)
    first = [aligned_pair(p, 2, cache) for p in pairs]
    assert len(calls) == 2
    second = [aligned_pair(p, 2, cache) for p in pairs]
    assert len(calls) == 2  # second run decodes nothing
    for (a, b), (c, d) in zip(first, second, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    new = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    Image.fromarray(new).save(src / "0.png")
    lr, hr = aligned_pair(pairs[0], 2, cache)
    assert len(calls) == 3  # the changed file only
    assert torch.equal(hr, torch.from_numpy(new).permute(2, 0, 1))
    assert torch.equal(lr, bicubic_downscale(hr, 2))


def test_sample_data_trains_and_validates(tmp_path):
    pytest.importorskip("skimage")
    dm = SRDataModule(
        root=str(tmp_path),
        scales=[3],
        patch_size=24,
        batch_size=2,
        num_workers=0,
        train_set="sample",
        val_sets=["sample"],
        updates_per_epoch=2,
        cache_dir=str(tmp_path / "cache"),
    )
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_data.images[3]) == 12 and [len(d) for d in dm.val_data] == [2]
    item = dm.val_data[0][0]
    assert item["hr"].shape[-2:] == tuple(3 * s for s in item["lr"].shape[-2:])


def write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_bad_images_are_named(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    write(tmp_path / "ok.png", good)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ImageError, match="corrupt.png: cannot decode"):
        load_image(tmp_path / "corrupt.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated.png"):
        load_image(tmp_path / "truncated.png")
    write(tmp_path / "gray.png", good[..., 0])
    assert load_image(tmp_path / "gray.png").shape == (1, 32, 32)
    write(tmp_path / "rgba.png", np.dstack([good, good[..., :1]]))
    with pytest.warns(UserWarning, match="rgba.png: dropping the alpha"):
        assert torch.equal(load_image(tmp_path / "rgba.png"), load_image(tmp_path / "ok.png"))
    Image.fromarray(good[..., 0].astype(np.uint16) * 200).save(tmp_path / "deep.png")
    with pytest.raises(ImageError, match="deep.png: unsupported pixel format"):
        load_image(tmp_path / "deep.png")


def test_bad_layouts_are_named(tmp_path):
    rng = np.random.default_rng(0)
    write(tmp_path / "benchmark/SetX/HR/a.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    write(tmp_path / "benchmark/SetX/LR_bicubic/X2/ax2.png", np.zeros((15, 16, 3), np.uint8))
    pair = datasets_mod.Pair(
        tmp_path / "benchmark/SetX/HR/a.png", tmp_path / "benchmark/SetX/LR_bicubic/X2/ax2.png"
    )
    with pytest.raises(ImageError, match=r"ax2.png: LR size \(15, 16\) does not match HR"):
        aligned_pair(pair, 2, tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images .* in .*empty"):
        folder_pairs(tmp_path / "empty")
    write(tmp_path / "small/a.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ImageError, match=r"a.png: LR size \(10, 10\) at x2 is smaller than"):
        SRDataModule(
            root=str(tmp_path), train_set=str(tmp_path / "small"), cache_dir=str(tmp_path / "c")
        ).prepare_data()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("patch_size", 0, "data.patch_size=0 must be a positive integer"),
        ("batch_size", -1, "data.batch_size=-1"),
        ("scales", [1], r"data.scales=\[1\] must be a non-empty list of scales >= 2"),
        ("protocol", "matlab", r"data.protocol='matlab': allowed values are \('auto', "),
    ],
)
def test_bad_config_values_name_the_key(tmp_path, key, value, match):
    with pytest.raises(ValueError, match=match):
        SRDataModule(root=str(tmp_path), **{key: value})


def test_sample_dir_drops_images_its_version_does_not_list(tmp_path):
    pytest.importorskip("skimage", reason="data=sample needs scikit-image")
    from sr_lightning.data.sample import SAMPLE_SPLITS, sample_dir

    root = sample_dir(tmp_path)
    (root / "val" / "chelsea.png").write_bytes((root / "val" / "coffee.png").read_bytes())
    sample_dir(tmp_path)  # e.g. an image moved from val to test by a newer version
    for split, names in SAMPLE_SPLITS.items():
        assert sorted(p.stem for p in (root / split).glob("*.png")) == sorted(names)
