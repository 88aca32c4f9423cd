"""Training sets larger than one disk: a folder of HR images as LitData shards
(``data.train_set=shards``, written by ``sr-shard``), read by random access from a remote
through a bounded local cache, feeding the same patch pipeline (:class:`PatchBatches`).

Why LitData, and random access: the patches of the folder form are drawn from (epoch seed,
update k) and name image *i* of the sorted folder (``patches.py``), so the streamed form must
hand out image *i* on demand, in the folder's order. LitData's ``StreamingDataset`` supports
``dataset[i]`` (a random-access read of one item: a byte-range read on S3/R2, the item's chunk
copied into the cache otherwise); a sequential tar stream (WebDataset) cannot, and MosaicML
streaming's MDS could but pins numpy < 2.2. LitData is Lightning's own and installs here
without another torch (``pip install --no-deps litdata boto3 obstore``: its torchvision
requirement is unused by this reader; see README).

Layout of a shard set (a folder, or its copy in an object store): LitData's ``index.json`` and
``chunk-*.bin`` (one item per image, in :func:`list_images` order: ``name``, the HR image as a
lossless PNG of the pixels the folder form decodes, and optionally LR images made now by the
folder form's own degradation, ``--scale``), and :data:`MANIFEST` (count, names, shapes, a
SHA-256 per stored image and of ``index.json``, and a checksum of itself). The reader checks
the manifest when it opens a set and every item it reads; a set that does not match is refused,
naming it.

What a node caches: chunks copied from the remote (``local:DIR``, ``gs://``, ``azure://``) go
into ``<data.cache_dir>/streams/<set>/``; after each copy, the least recently read chunks are
deleted until the folder holds at most ``data.stream_cache_gb`` (shared by the node's ranks and
workers; the bound may be passed by one chunk per process while it copies). ``s3://`` and
``r2://`` are read by byte range and leave nothing there; a plain local path is read in place.
Decoded images are not kept (only the pair of the last patch, per process): each patch decodes
its image's PNG and, without stored LR, makes the LR image again.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sr_lightning.data.cache import DEFAULT_CACHE_DIR
from sr_lightning.data.datasets import align, check_scale, folder_pairs
from sr_lightning.data.degradation import check_degradation, degrade
from sr_lightning.data.io import ImageError, load_image, to_rgb

SHARDS = "shards"  # the value of data.train_set that reads data.shards_url
MANIFEST = "sr_manifest.json"
INDEX = "index.json"  # LitData's
FORMAT = "sr-lightning-shards/1"
PNG_LEVEL = 1  # zlib level: 2.4x faster to write than 6, 4% larger (a 2K photo)
INSTALL = "make install, or: pip install boto3 obstore && pip install --no-deps 'litdata>=0.2.76'"


class ShardSetError(RuntimeError):
    """A shard set that does not match its manifest (truncated, modified or mixed up)."""


def litdata() -> Any:
    """The ``litdata`` module, or an ImportError saying how to install it."""
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI call per process
    try:
        import litdata as ld
    except ImportError as e:
        raise ImportError(f"data.train_set={SHARDS} and sr-shard need LitData: {INSTALL}") from e
    return ld


# ---- images as stored -------------------------------------------------------------------
def encode_png(img: torch.Tensor) -> bytes:
    """Lossless PNG of a uint8 (C, H, W) image, C = 1 or 3."""
    arr = img.numpy()
    arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, "PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes) -> torch.Tensor:
    """The uint8 (C, H, W) image of :func:`encode_png`."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def lr_key(scale: int, degradation: str) -> str:
    """The item key of a stored LR image: ``lr_x2_bicubic``."""
    return f"lr_x{scale}_{degradation}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- writing (sr-shard) -----------------------------------------------------------------
def shard_item(path: Path, lrs: Sequence[tuple[int, str]]) -> dict[str, Any]:
    """The item of one image: its name, its HR pixels as the folder form decodes them
    (``load_image``) and the LR images ``lrs`` ((scale, degradation) pairs) made by the folder
    form's degradation (``degrade``, checked by ``align``)."""
    hr = load_image(path)
    item: dict[str, Any] = {"name": path.name, "hr": encode_png(hr)}
    for scale, degradation in lrs:
        check_scale(hr, scale, path)
        lr, _ = align(degrade(hr, scale, degradation, path.stem), hr, scale, path, path)
        item[lr_key(scale, degradation)] = encode_png(lr)
    item["shape"] = list(hr.shape)
    return item


def manifest_checksum(body: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON, without its ``checksum`` field."""
    rest = {k: v for k, v in body.items() if k != "checksum"}
    return sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())


def write_shards(
    folder: str | Path,
    out: str | Path,
    lrs: Sequence[tuple[int, str]] = (),
    chunk_mb: float = 8.0,
    workers: int = 1,
) -> dict[str, Any]:
    """Write the HR images of ``folder`` (and LR images ``lrs``) as a shard set in ``out``
    (a new or empty local folder), in the folder form's order; returns the manifest."""
    litdata()
    from litdata.streaming import Cache

    lrs = list(dict.fromkeys((int(s), str(d)) for s, d in lrs))
    for scale, degradation in lrs:
        check_degradation(degradation)
        if scale < 2:
            raise ValueError(f"--scale {scale}: scales are >= 2")
    paths = [p.hr for p in folder_pairs(folder)]  # the folder form's images, in its order
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: write a shard set into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    writer = Cache(str(out), chunk_bytes=int(chunk_mb * 1e6))
    images = []
    with warnings.catch_warnings():  # an image larger than chunk_mb: a chunk of its own
        warnings.filterwarnings("ignore", message="An item was larger than the target")
        for i, item in enumerate(shard_items(paths, lrs, workers)):
            shape = item.pop("shape")
            images.append({"name": item["name"], "shape": shape, "sha256": _shas(item)})
            writer[i] = item
        writer.done()
    writer.merge()
    manifest = {
        "format": FORMAT,
        "count": len(images),
        "source": str(Path(folder).expanduser().resolve()),
        "lr": [[s, d] for s, d in lrs],
        "index_sha256": sha256((out / INDEX).read_bytes()),
        "images": images,
    }
    manifest["checksum"] = manifest_checksum(manifest)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _shas(item: dict[str, Any]) -> dict[str, str]:
    return {k: sha256(v) for k, v in item.items() if isinstance(v, bytes)}


def shard_items(
    paths: Sequence[Path], lrs: Sequence[tuple[int, str]], workers: int
) -> Iterator[dict[str, Any]]:
    """:func:`shard_item` of every path, in order (over ``workers`` processes when > 1)."""
    make = partial(shard_item, lrs=list(lrs))
    if workers <= 1:
        yield from map(make, paths)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(make, paths)


# ---- reading ----------------------------------------------------------------------------
def is_remote(url: str) -> bool:
    """Whether ``url`` is read through a downloader (``local:DIR``, ``s3://``...), not in place."""
    return url.startswith("local:") or "://" in url


def fetch_file(url: str, name: str, scratch: Path) -> bytes:
    """The bytes of file ``name`` of shard set ``url`` (through LitData's downloader)."""
    if not is_remote(url):
        return (Path(url).expanduser() / name).read_bytes()
    from litdata.streaming.downloader import get_downloader

    dest = scratch / name
    get_downloader(url, str(scratch), []).download_file(f"{url.rstrip('/')}/{name}", str(dest))
    return dest.read_bytes()


def read_manifest(url: str, scratch_root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, LitData index) of shard set ``url``, checked against each other."""
    litdata()
    scratch_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=scratch_root, prefix="manifest-"))
    try:
        try:
            manifest = json.loads(fetch_file(url, MANIFEST, scratch))
        except Exception as e:  # a missing file reads differently on each store
            raise FileNotFoundError(
                f"data.shards_url={url}: no shard set there ({MANIFEST} not readable: {e}). "
                f"Write one with `sr-shard <folder of HR images> <dir>` and set "
                f"data.shards_url to <dir> (or to its copy in an object store)."
            ) from e
        index_bytes = fetch_file(url, INDEX, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    check_manifest(url, manifest, index_bytes)
    return manifest, json.loads(index_bytes)


def check_manifest(url: str, manifest: dict[str, Any], index_bytes: bytes) -> None:
    """Refuse a shard set whose manifest, index or chunk files do not match, naming it."""
    damaged = f"shard set {url} is damaged or modified"
    again = f"write it again with `sr-shard {manifest.get('source', '<folder>')} <dir>`"
    if manifest.get("format") != FORMAT:
        raise ShardSetError(f"{url}/{MANIFEST}: format {manifest.get('format')!r}, not {FORMAT}")
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise ShardSetError(f"{damaged}: {MANIFEST} does not match its checksum; {again}")
    if sha256(index_bytes) != manifest["index_sha256"]:
        raise ShardSetError(f"{damaged}: {INDEX} is not the one written with it; {again}")
    chunks = json.loads(index_bytes)["chunks"]
    count = sum(c["chunk_size"] for c in chunks)
    if not count == manifest["count"] == len(manifest["images"]):
        raise ShardSetError(
            f"{damaged}: {count} images in {INDEX}, {manifest['count']} in {MANIFEST}; {again}"
        )
    local = url.removeprefix("local:") if url.startswith("local:") or not is_remote(url) else ""
    for c in chunks if local else ():
        path = Path(local).expanduser() / c["filename"]
        size = path.stat().st_size if path.is_file() else None
        if size != c["chunk_bytes"]:
            raise ShardSetError(
                f"{damaged}: {path} holds {size} bytes, {c['chunk_bytes']} were written "
                f"(truncated or missing); {again}"
            )


@dataclass
class ChunkCache:
    """The node's chunk cache of a remote shard set: at most ``max_bytes`` in ``root``, the
    least recently read chunks deleted first (after each copy from the remote)."""

    root: Path
    max_bytes: int

    def touch(self, path: Path) -> None:
        """Record a read of ``path`` (its modification time orders the evictions)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)

    def files(self) -> list[tuple[Path, os.stat_result]]:
        """The files in ``root`` (those deleted meanwhile by another process left out)."""
        out = []
        for p in self.root.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                if p.is_file():
                    out.append((p, p.stat()))
        return out

    def size(self) -> int:
        return sum(st.st_size for _, st in self.files())

    def evict(self, keep: Path) -> None:
        """Delete the least recently read chunks but ``keep`` until ``root`` fits."""
        files = self.files()
        total = sum(st.st_size for _, st in files)
        for _, path, size in sorted((st.st_mtime_ns, p, st.st_size) for p, st in files):
            if total <= self.max_bytes:
                return
            if path == keep or not path.name.startswith("chunk-"):
                continue
            path.unlink(missing_ok=True)  # another process may have done it
            total -= size


class ShardSet:
    """A shard set opened for reading: its checked manifest; per process (each loader worker),
    a LitData ``StreamingDataset`` read by index through a :class:`ChunkCache`."""

    def __init__(self, url: str, cache_dir: Path | None = None, cache_bytes: int = 50 * 10**9):
        self.url = str(url)
        base = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
        self.manifest, index = read_manifest(self.url, base / "streams")
        self.images = self.manifest["images"]
        self.stored_lr = {(int(s), str(d)) for s, d in self.manifest["lr"]}
        chunks = index["chunks"]
        self.chunk_names = [c["filename"] for c in chunks]
        self.chunk_ends = np.cumsum([c["chunk_size"] for c in chunks]).tolist()
        self.cache = ChunkCache(base / "streams" / self.manifest["checksum"][:16], cache_bytes)
        largest = max((c["chunk_bytes"] for c in chunks), default=0)
        if is_remote(self.url) and largest > cache_bytes:
            raise ValueError(
                f"data.stream_cache_gb={cache_bytes / 1e9:g} is smaller than the largest chunk "
                f"of {self.url} ({largest / 1e6:.1f} MB): raise it, or write the set with a "
                f"smaller `sr-shard --chunk-mb`"
            )
        self._ds: Any = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.images)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None, "_pid": -1}  # each process opens its own

    def dataset(self) -> Any:
        """This process's ``StreamingDataset`` (a forked worker opens a new one)."""
        if self._ds is None or self._pid != os.getpid():
            self.cache.root.mkdir(parents=True, exist_ok=True)
            self._ds = litdata().StreamingDataset(self.url, cache_dir=str(self.cache.root))
            self._pid = os.getpid()
        return self._ds

    def chunk_path(self, i: int) -> Path | None:
        """Where the chunk of image ``i`` lies in the cache (None: read in place)."""
        if not is_remote(self.url):
            return None
        chunk = bisect.bisect_right(self.chunk_ends, i)
        return Path(self.dataset().input_dir.path) / self.chunk_names[chunk]

    def item(self, i: int) -> dict[str, Any]:
        """Item ``i`` (name, PNG bytes), checked against the manifest."""
        path = self.chunk_path(i)
        cached = path is not None and path.exists()
        for attempt in range(3):
            try:
                item = self.dataset()[i]
                break
            except FileNotFoundError:  # evicted by another process between check and read
                if attempt == 2:
                    raise
        if path is not None:
            self.cache.touch(path)
            if not cached:
                self.cache.evict(keep=path)
        self.check_item(i, item)
        return item

    def check_item(self, i: int, item: dict[str, Any]) -> None:
        entry = self.images[i]
        if item.get("name") != entry["name"]:
            raise ShardSetError(
                f"shard set {self.url}: image {i} is {item.get('name')!r}, its manifest says "
                f"{entry['name']!r} (the chunks and the manifest are of different sets)"
            )
        for key, digest in entry["sha256"].items():
            if key not in item or sha256(item[key]) != digest:
                raise ShardSetError(
                    f"shard set {self.url} is damaged or modified: image {entry['name']} "
                    f"({key}) does not match its checksum in {MANIFEST}"
                )

    def pair(self, i: int, scale: int, degradation: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(LR, HR) uint8 RGB of image ``i`` at ``scale``, as the folder form makes them: LR
        stored by ``sr-shard``, or made now by the folder form's degradation."""
        item, name = self.item(i), self.images[i]["name"]
        label = f"{self.url}#{name}"
        hr = decode_png(item["hr"])
        if list(hr.shape) != self.images[i]["shape"]:
            raise ShardSetError(f"{label}: decoded shape {list(hr.shape)}, manifest differs")
        key = lr_key(scale, degradation)
        if key in item:
            lr = decode_png(item[key])
        else:
            check_scale(hr, scale, label)
            lr = degrade(hr, scale, degradation, Path(name).stem)
        lr, hr = align(lr, hr, scale, label, label)
        return to_rgb(lr), to_rgb(hr)


class StreamedImage:
    """One image of a pair as :class:`PatchBatches` sees it: ``shape`` from the manifest (the
    patch decisions fetch nothing), pixels fetched when it is indexed (cropped)."""

    def __init__(self, images: ShardImages, i: int, which: int):
        self.images, self.i, self.which = images, i, which

    @property
    def shape(self) -> torch.Size:
        return self.images.shapes[self.i][self.which]

    def __getitem__(self, key: Any) -> torch.Tensor:
        return self.images.pair(self.i)[self.which][key]


class ShardImages(Sequence):
    """``images[scale]`` of :class:`PatchBatches` from a shard set: item ``i`` is (LR, HR) of
    image ``i`` at ``scale`` (RGB, HR cropped to LR size x ``scale``)."""

    def __init__(self, shards: ShardSet, scale: int, degradation: str = "bicubic"):
        self.shards, self.scale, self.degradation = shards, scale, degradation
        self.shapes = [lr_hr_shapes(e["shape"], scale) for e in shards.images]
        self._last: tuple[int, tuple[torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> tuple[StreamedImage, StreamedImage]:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        return StreamedImage(self, i, 0), StreamedImage(self, i, 1)

    def pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoded pair ``i`` (the last one is kept: LR and HR crops read it once)."""
        if self._last is None or self._last[0] != i:
            self._last = (i, self.shards.pair(i, self.scale, self.degradation))
        return self._last[1]


def lr_hr_shapes(hr_shape: Sequence[int], scale: int) -> tuple[torch.Size, torch.Size]:
    """RGB shapes of (LR, cropped HR) of an HR image of ``hr_shape`` at ``scale``: every
    degradation gives floor(HR / scale) (``degradation.py``)."""
    h, w = hr_shape[-2] // scale, hr_shape[-1] // scale
    return torch.Size((3, h, w)), torch.Size((3, h * scale, w * scale))


def shard_train_images(
    url: str | None,
    scales: Sequence[int],
    patch_size: int,
    degradation: str = "bicubic",
    cache_dir: Path | None = None,
    cache_gb: float = 50.0,
) -> dict[int, ShardImages]:
    """The training images of shard set ``url`` per scale for :class:`PatchBatches`, each
    checked to fit a patch (from the manifest's shapes, nothing fetched)."""
    if not url:
        raise ValueError(
            f"data.train_set={SHARDS} needs data.shards_url: the folder (or local:DIR, "
            f"s3://...) written by `sr-shard <folder of HR images> <dir>`"
        )
    if not cache_gb > 0:
        raise ValueError(f"data.stream_cache_gb={cache_gb!r} must be > 0")
    shards = ShardSet(str(url), cache_dir, int(cache_gb * 1e9))
    images = {}
    for scale in scales:
        images[scale] = ShardImages(shards, scale, degradation)
        for entry, (lr, _) in zip(shards.images, images[scale].shapes, strict=True):
            if min(entry["shape"][-2:]) < scale or min(lr[-2:]) < patch_size:
                raise ImageError(
                    f"{url}#{entry['name']}: LR size {tuple(lr[-2:])} at x{scale} is smaller "
                    f"than data.patch_size={patch_size}"
                )
    return images
