"""Sharded, streamed training sets (``data/shards.py``, ``sr-shard``, ``data.train_set=shards``).

T91 images (a subset, for speed) are sharded with ``sr-shard`` into a folder that serves as the
"remote" (``local:DIR``: LitData copies chunks from it into the node cache, as from an object
store); the patches streamed from it equal the folder's for the same seed (x2 from stored LR
images, x3 from LR made per patch), the node cache stays within ``data.stream_cache_gb``, and
damaged sets are refused, naming what is wrong.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_dm

from sr_lightning.cli import shard
from sr_lightning.data.datamodule import SRDataModule
from sr_lightning.data.patches import PatchBatches
from sr_lightning.data.shards import MANIFEST, ShardSet, ShardSetError

pytest.importorskip("litdata", reason="sharded training sets need LitData (the [stream] extra)")

N_IMAGES = 24  # of T91's 91: the same checks, a quarter of the imresize work
SCALES = [2, 3]  # x2 stored by sr-shard, x3 made per patch: both read paths
CACHE_GB = 0.0006  # a 0.6 MB node cache for a 1.6 MB set: chunks are evicted, fetched again


@pytest.fixture(scope="module")
def t91(data_root, tmp_path_factory) -> Path:
    """A folder of the first ``N_IMAGES`` T91 HR images."""
    src = data_root / "T91" / "HR"
    if not src.is_dir():
        pytest.skip(f"T91 not found at {src} (see ../shared/datasets/README.md)")
    folder = tmp_path_factory.mktemp("T91")
    for p in sorted(src.glob("*.png"))[:N_IMAGES]:
        shutil.copy(p, folder / p.name)
    return folder


@pytest.fixture(scope="module")
def remote(t91, tmp_path_factory) -> Path:
    """``sr-shard`` of ``t91`` with LR x2 stored, in small chunks (a dozen)."""
    out = tmp_path_factory.mktemp("remote") / "t91-shards"
    assert shard.main([str(t91), str(out), "--scale", "2", "--chunk-mb", "0.3"]) == 0
    return out


def first_batches(data: PatchBatches, epochs: int, n: int) -> list[dict]:
    out = []
    for epoch in range(epochs):
        data.epoch = epoch
        batches = iter(data)
        out += [next(batches) for _ in range(n)]
    return out


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x["scale"] == y["scale"], k
        assert x["lr"].dtype == y["lr"].dtype == torch.uint8
        assert torch.equal(x["lr"], y["lr"]) and torch.equal(x["hr"], y["hr"]), f"batch {k}"


def test_streamed_patches_equal_folder_patches(data_root, t91, remote, tmp_path):
    """Same seed, same epochs: every LR and HR patch of the first batches equal, in process,
    for rank 1 of 2, and through two loader workers; the node cache stays within its bound."""
    common = dict(scales=SCALES, patch_size=12, batch_size=4, updates_per_epoch=5, seed=7)
    folder = make_dm(data_root, tmp_path / "cache-folder", train_set=str(t91), **common)
    streamed = make_dm(
        data_root,
        tmp_path / "cache-node",
        train_set="shards",
        shards_url=f"local:{remote}",
        stream_cache_gb=CACHE_GB,
        **common,
    )
    want = first_batches(folder.train_data, epochs=2, n=4)
    assert {b["scale"] for b in want} == set(SCALES)  # both read paths are compared
    assert_same_batches(first_batches(streamed.train_data, epochs=2, n=4), want)

    def rank1(images: dict) -> PatchBatches:
        return PatchBatches(images, 12, 2, 5, seed=7, rank=1, world_size=2)

    assert_same_batches(
        first_batches(rank1(streamed.train_data.images), 1, 3),
        first_batches(rank1(folder.train_data.images), 1, 3),
    )
    streamed.num_workers = 2  # forked workers open their own streams
    folder.train_data.epoch = streamed.train_data.epoch = 0
    assert_same_batches(list(streamed.train_dataloader()), list(iter(folder.train_data)))

    cache = streamed.train_data.images[2].shards.cache
    assert 0 < cache.size() <= CACHE_GB * 1e9


def test_node_cache_stays_within_its_bound(remote, tmp_path):
    """Reading every image twice from a set 3x the bound: after every read the node cache holds
    at most the bound, and evicted chunks are fetched again, intact."""
    set_bytes = sum(p.stat().st_size for p in remote.glob("chunk-*.bin"))
    bound = set_bytes // 3
    shards = ShardSet(f"local:{remote}", tmp_path, bound)
    sizes = []
    for i in [*range(len(shards)), *reversed(range(len(shards)))]:
        assert shards.item(i)["name"] == shards.images[i]["name"]
        sizes.append(shards.cache.size())
    assert 0 < max(sizes) <= bound
    in_place = ShardSet(str(remote), tmp_path / "in-place", bound)  # a folder: read where it is
    assert in_place.item(0)["name"] == shards.images[0]["name"]
    assert in_place.cache.size() == 0
    with pytest.raises(ValueError, match=r"data\.stream_cache_gb=0\.0001 is smaller than"):
        ShardSet(f"local:{remote}", tmp_path, 100_000)


def copy_set(remote: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(remote, out)
    return out


def test_truncated_or_missing_chunk_is_refused(remote, tmp_path):
    broken = copy_set(remote, tmp_path)
    chunk = sorted(broken.glob("chunk-*.bin"))[1]
    chunk.write_bytes(chunk.read_bytes()[:-10])
    with pytest.raises(ShardSetError, match=rf"damaged.*{chunk.name} holds .* \(truncated"):
        ShardSet(f"local:{broken}", tmp_path / "cache")
    chunk.unlink()
    with pytest.raises(ShardSetError, match=rf"{chunk.name} holds None bytes"):
        ShardSet(str(broken), tmp_path / "cache")


def test_modified_image_is_refused_when_read(remote, tmp_path):
    broken = copy_set(remote, tmp_path)
    chunk = broken / "chunk-0-0.bin"
    data = bytearray(chunk.read_bytes())
    data[-100] ^= 0xFF  # inside the last image of the chunk, same size
    chunk.write_bytes(bytes(data))
    shards = ShardSet(f"local:{broken}", tmp_path / "cache")
    with pytest.raises(ShardSetError, match=r"modified: image t\w+\.png \(\w+\) does not match"):
        for i in range(len(shards)):
            shards.item(i)


def test_modified_manifest_or_index_is_refused(remote, tmp_path):
    broken = copy_set(remote, tmp_path)
    manifest = json.loads((broken / MANIFEST).read_text())
    manifest["images"] = manifest["images"][:-1]  # a truncated list of images
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ShardSetError, match=rf"{MANIFEST} does not match its checksum"):
        ShardSet(f"local:{broken}", tmp_path / "cache")
    shutil.copy(remote / MANIFEST, broken / MANIFEST)
    index = json.loads((broken / "index.json").read_text())
    index["chunks"] = index["chunks"][:-1]
    (broken / "index.json").write_text(json.dumps(index))
    with pytest.raises(ShardSetError, match=r"index\.json is not the one written with it"):
        ShardSet(f"local:{broken}", tmp_path / "cache")


def test_missing_shards_name_the_key_and_the_command(data_root, tmp_path):
    args = dict(root=str(data_root), train_set="shards", cache_dir=str(tmp_path), num_workers=0)
    with pytest.raises(ValueError, match=r"data\.train_set=shards needs data\.shards_url"):
        SRDataModule(**args).load_train_images()
    with pytest.raises(FileNotFoundError, match=r"data\.shards_url=.*no shard set there.*sr-shard"):
        SRDataModule(**args, shards_url=str(tmp_path / "nothing")).load_train_images()
    with pytest.raises(ValueError, match=r"data\.on_device=true .* data\.train_set=shards"):
        SRDataModule(**args, on_device=True)


def test_sr_shard_refuses_a_folder_in_use(t91, remote, capsys):
    assert shard.main([str(t91), str(remote)]) == 1
    assert "is not empty: write a shard set into a new folder" in capsys.readouterr().err
