"""Decoded-image cache: uint8 ``.npy`` files, memory-mapped, rebuilt when a source changes.

PNG decoding costs far more than cropping a 48x48 patch, so every image is decoded (or
generated, for LR images made by our imresize) once, saved as a raw uint8 array and then
memory-mapped by every run and every data-loader worker. The cache key holds the path, size and
mtime of each source file, so editing or replacing a source builds a new entry.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

DEFAULT_CACHE_DIR = Path(os.environ.get("SR_LIGHTNING_CACHE", "~/.cache/sr_lightning")).expanduser()


def _signature(sources: Sequence[Path], tag: str) -> str:
    h = hashlib.sha1(tag.encode())
    for p in sources:
        st = Path(p).stat()
        h.update(f"|{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def cached_uint8(
    sources: Sequence[Path],
    tag: str,
    build: Callable[[], torch.Tensor],
    cache_dir: Path | None = None,
) -> torch.Tensor:
    """Return the uint8 tensor ``build()`` makes from ``sources``, from the cache when valid.

    The tensor is a copy-on-write memory map of ``<cache_dir>/<stem>-<tag>-<key>.npy``; writes are
    atomic (temp file + rename), so concurrent workers or ranks never read a partial file.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    stem = Path(sources[0]).stem
    path = cache_dir / f"{stem}-{tag}-{_signature(sources, tag)}.npy"
    if not path.exists():
        arr = build().numpy()
        if arr.dtype != np.uint8:
            raise TypeError(f"cache entries must be uint8, got {arr.dtype} for {path.name}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, path)
    return torch.from_numpy(np.load(path, mmap_mode="c"))
