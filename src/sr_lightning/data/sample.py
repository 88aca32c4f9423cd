"""An embedded sample data set: real photographs and textures bundled with scikit-image (no
download), for the quickstart and the CPU-sized sweeps.

Only the losslessly stored PNG images are used (the JPEG ones are unfit as HR): 14 for
training, colour photos and gray photos and textures (gray trains as RGB), and two colour
photos held out for validation and testing. They are written once as PNG files, cropped to
multiples of 12 so that x2/x3/x4 divide, into ``<cache_dir>/sample-v2/{train,val}/``; from
there on they are an ordinary image folder. (v2: the first version trained on 4 photos only,
on which a small EDSR saturates at +1.4 dB over bicubic.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sr_lightning.data.cache import DEFAULT_CACHE_DIR

SAMPLE_TRAIN = (
    "chelsea", "immunohistochemistry", "motorcycle_left", "motorcycle_right",  # colour photos
    "camera", "moon", "coins", "cell", "clock", "page", "text",  # gray photos and documents
    "brick", "grass", "gravel",  # gray textures
)  # fmt: skip
SAMPLE_VAL = ("astronaut", "coffee")  # held out: colour photos


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
    """Folder with ``train/`` and ``val/`` HR PNGs of the sample set (written on first use;
    an image this version does not list, e.g. moved to the other split, is removed)."""
    from PIL import Image

    root = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR
    root = root / "sample-v2"
    for split, names in (("train", SAMPLE_TRAIN), ("val", SAMPLE_VAL)):
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
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(np.ascontiguousarray(img[:h, :w])).save(tmp)
            tmp.replace(path)
    return root
