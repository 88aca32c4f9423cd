"""An embedded sample data set: real photographs bundled with scikit-image (no download).

Only the losslessly stored PNG colour photos are used (the JPEG ones are unfit as HR). They are
written once as PNG files, cropped to multiples of 12 so that x2/x3/x4 divide, into
``<cache_dir>/sample/{train,val}/``; from there on they are an ordinary image folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cache import DEFAULT_CACHE_DIR

SAMPLE_TRAIN = ("astronaut", "coffee", "motorcycle_left", "motorcycle_right")
SAMPLE_VAL = ("chelsea", "immunohistochemistry")


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


def sample_dir(cache_dir: str | Path | None = None) -> Path:
    """Folder with ``train/`` and ``val/`` HR PNGs of the sample set (written on first use)."""
    from PIL import Image

    root = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR
    root = root / "sample"
    for split, names in (("train", SAMPLE_TRAIN), ("val", SAMPLE_VAL)):
        for name in names:
            path = root / split / f"{name}.png"
            if path.exists():
                continue
            img = _load(name)[..., :3]
            h, w = img.shape[0] // 12 * 12, img.shape[1] // 12 * 12
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(np.ascontiguousarray(img[:h, :w])).save(tmp)
            tmp.replace(path)
    return root
