"""An embedded sample data set: real photographs and textures bundled with scikit-image (no
download), for the quickstart and the CPU-sized sweeps.

Only the losslessly stored PNG images are used (the JPEG ones are unfit as HR), in three
disjoint splits:

- ``train``: 12 images, colour photos (the motorcycle stereo pair, whose two views are nearly
  the same picture, stays together here), gray photos and documents, and gray textures (gray
  trains as RGB);
- ``val``: astronaut and coffee, two colour photos, which validation scores and which choose
  the best checkpoint;
- ``test``: chelsea and immunohistochemistry, two colour photos that neither train nor choose
  a checkpoint, so that a ``sample`` test row is a held-out number (scored on the validation
  photos, it would be biased upward by the choice of the checkpoint).

They are written once as PNG files, cropped to multiples of 12 so that x2/x3/x4 divide, into
``<cache_dir>/sample-v3/{train,val,test}/``; from there on they are an ordinary image folder.
(v2: 14 training images, and the test rows were scored on the validation photos; v1 trained on
4 photos only, on which a small EDSR saturates at +1.4 dB over bicubic.)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from sr_lightning.data.cache import DEFAULT_CACHE_DIR

VERSION = "sample-v3"
SAMPLE_TRAIN = (
    "motorcycle_left", "motorcycle_right",  # colour photos (a stereo pair: one split)
    "camera", "moon", "coins", "cell", "clock", "page", "text",  # gray photos and documents
    "brick", "grass", "gravel",  # gray textures
)  # fmt: skip
SAMPLE_VAL = ("astronaut", "coffee")  # held out, choose the checkpoint: colour photos
SAMPLE_TEST = ("chelsea", "immunohistochemistry")  # held out from both: colour photos
SAMPLE_SPLITS = {"train": SAMPLE_TRAIN, "val": SAMPLE_VAL, "test": SAMPLE_TEST}


def _load(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as e:
        raise ImportError(
            "data=sample needs scikit-image, which bundles the sample photographs: "
            "pip install -e '.[sample]' (make install includes it)"
        ) from e
    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(skimage.data, name)()


def _write_png(img: np.ndarray, path: Path) -> None:
    """``img`` as the PNG ``path``, atomically: written under a name of this process's own
    (pid and a random token, hidden, not ``*.png``, so that no other writer renames or removes
    it), then renamed over ``path``. Processes that share a cache (cluster nodes on one file
    system) may write the same image at once: each rename puts a whole file in place."""
    from PIL import Image

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sample_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder with ``train/``, ``val/`` and ``test/`` HR PNGs of the sample set (written on
    first use; an image this version does not list in a split, e.g. moved to another split,
    is removed from it)."""
    root = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR
    root = root / VERSION
    for split, names in SAMPLE_SPLITS.items():
        for stale in (root / split).glob("*.png"):
            if stale.stem not in names:
                stale.unlink(missing_ok=True)
        for name in names:
            path = root / split / f"{name}.png"
            if path.exists():
                continue
            img = _load(name)
            img = img[..., :3] if img.ndim == 3 else img  # RGBA -> RGB; gray stays gray
            h, w = img.shape[0] // 12 * 12, img.shape[1] // 12 * 12
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_png(np.ascontiguousarray(img[:h, :w]), path)
    return root
