"""Bad input, tried on purpose: random bytes, truncated and corrupt PNGs, 1x1, too-small, 16-bit,
float and decompression-bomb files through the image loader, the training data path and
sr-upscale. Every case ends in a correct result or a clear error naming the file: never a hang,
a crash, a traceback, gigabytes allocated for a tiny file or a silently wrong output."""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from sr_lightning.cli.upscale import main
from sr_lightning.core.inference import self_ensemble
from sr_lightning.core.metrics import quantize
from sr_lightning.data.datamodule import SRDataModule
from sr_lightning.data.datasets import eval_dataset
from sr_lightning.data.io import ImageError, load_image, to_rgb
from sr_lightning.models import EDSR

SIG = b"\x89PNG\r\n\x1a\n"
PIXELS = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)  # H, W, C


# ---- crafted files (bytes only: nothing large is ever allocated) ----------------------------
def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(w: int, h: int, *, depth: int = 8, color: int = 2, rows: bytes = b"") -> bytes:
    """A PNG whose IHDR declares ``w`` x ``h`` (color 0 gray, 2 RGB) and whose IDAT holds
    ``rows`` (filter byte + samples per row): a few bytes may declare billions of pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    idat = zlib.compress(rows or bytes(1000))
    return SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def crafted_tiff(w: int, h: int, bits: int, sample_format: int) -> bytes:
    """An uncompressed RGB TIFF with ``bits`` per sample (SampleFormat 1 uint, 3 float)."""
    n_tags = 10
    arrays = 8 + 2 + 12 * n_tags + 4  # BitsPerSample and SampleFormat (3 shorts each)
    data_at = arrays + 12
    data = bytes(w * h * 3 * bits // 8)

    def tag(code: int, kind: int, count: int, value: int) -> bytes:
        if kind == 3 and count == 1:
            return struct.pack("<HHIHH", code, kind, count, value, 0)
        return struct.pack("<HHII", code, kind, count, value)

    tags = [
        tag(256, 4, 1, w),
        tag(257, 4, 1, h),
        tag(258, 3, 3, arrays),
        tag(259, 3, 1, 1),  # no compression
        tag(262, 3, 1, 2),  # RGB
        tag(273, 4, 1, data_at),
        tag(277, 3, 1, 3),
        tag(278, 4, 1, h),
        tag(279, 4, 1, len(data)),
        tag(339, 3, 3, arrays + 6),
    ]
    head = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", n_tags) + b"".join(tags)
    head += struct.pack("<I", 0) + struct.pack("<3H", bits, bits, bits)
    return head + struct.pack("<3H", sample_format, sample_format, sample_format) + data


def encoded(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def flipped(data: bytes, i: int, mask: int = 0xFF) -> bytes:
    b = bytearray(data)
    b[i] ^= mask
    return bytes(b)


def with_crc_fixed(data: bytes, kind: bytes) -> bytes:
    """``data`` with the CRC of its first ``kind`` chunk recomputed (the damage passes CRC)."""
    at = data.index(kind)
    n = struct.unpack(">I", data[at - 4 : at])[0]
    crc = struct.pack(">I", zlib.crc32(data[at : at + 4 + n]))
    return data[: at + 4 + n] + crc + data[at + 8 + n :]


GOOD = encoded(PIXELS)
IDAT_DATA = GOOD.index(b"IDAT") + 4  # first byte of the compressed pixels
IDAT_END = IDAT_DATA + struct.unpack(">I", GOOD[IDAT_DATA - 8 : IDAT_DATA - 4])[0]  # its CRC next
PIL_LIMIT = Image.MAX_IMAGE_PIXELS
WARN_SIDE = int((1.5 * PIL_LIMIT) ** 0.5)  # between PIL's limit and 2x it: PIL only warns
RGB16_ROWS = b"".join(b"\x00" + bytes(range(4 * 6)) for _ in range(3))  # 4 px x 3 x 16 bit

# name -> (file content, what the error must say after the file name)
BAD = {
    "empty.png": (b"", "cannot decode image"),
    **{f"random{s}.png": (np.random.default_rng(s).bytes(700), "cannot decode") for s in range(4)},
    **{  # past the signature check: the PNG decoder itself sees the garbage
        f"sig_random{s}.png": (SIG + np.random.default_rng(s).bytes(700), "cannot decode")
        for s in range(2)
    },
    "idat_bitflip.png": (flipped(GOOD, (IDAT_DATA + IDAT_END) // 2, 0x01), "cannot decode"),
    "idat_bitflip_crc_fixed.png": (
        with_crc_fixed(flipped(GOOD, (IDAT_DATA + IDAT_END) // 2, 0x01), b"IDAT"),
        "cannot decode",
    ),
    "ihdr_crc.png": (flipped(GOOD, 29), "cannot decode"),  # IHDR's CRC: bytes 29-32
    "gray16.png": (encoded(PIXELS[..., 0].astype(np.uint16) * 257), "8-bit"),
    "rgb16.png": (crafted_png(4, 3, depth=16, rows=RGB16_ROWS), "8-bit"),  # PIL would narrow it
    "gray_float.tif": (encoded(PIXELS[..., 0].astype(np.float32) / 255, "TIFF"), "8-bit"),
    "rgb_float.tif": (crafted_tiff(4, 3, 32, 3), "8-bit"),
    "rgb16.tif": (crafted_tiff(4, 3, 16, 1), "8-bit"),
    "bomb.png": (crafted_png(100_000, 100_000), "too large"),
    "bomb_warn.png": (crafted_png(WARN_SIDE, WARN_SIDE), "too large"),
}


def write(folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    return folder / name


def refused(path: Path, says: str):
    """``pytest.raises`` for an ImageError that starts with the file's path and says ``says``."""
    return pytest.raises(ImageError, match=f"^{re.escape(str(path))}: .*{re.escape(says)}")


def exact_or_refused(path: Path) -> None:
    """Damage that the file format may not detect: the original pixels, or a named error."""
    try:
        img = load_image(path)
    except ImageError as e:
        assert str(e).startswith(f"{path}: cannot decode image"), e
        return
    assert np.array_equal(img.permute(1, 2, 0).numpy(), PIXELS), "silently wrong pixels"


# ---- the loader ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BAD))
def test_loader_refuses_bad_file(tmp_path, name):
    content, says = BAD[name]
    path = write(tmp_path, name, content)
    with refused(path, says):
        load_image(path)


@pytest.mark.parametrize(
    "cut",
    [
        0,
        1,
        8,
        20,
        33,
        40,
        IDAT_DATA + 3,
        (IDAT_DATA + IDAT_END) // 2,
        IDAT_END - 5,
        IDAT_END - 1,
        IDAT_END + 2,
        IDAT_END + 4,
        len(GOOD) - 1,
    ],
)
def test_loader_truncated_png(tmp_path, cut):
    """Cut inside the compressed pixels: refused. Cut later (zlib's checksum, IDAT's CRC, IEND):
    the pixels are complete, so the exact pixels (PIL skips the trailers) or refused."""
    path = write(tmp_path, f"cut{cut}.png", GOOD[:cut])
    if cut < IDAT_END - 4:  # the last 4 bytes of IDAT's data are zlib's adler32
        with refused(path, "cannot decode image"):
            load_image(path)
    else:
        exact_or_refused(path)


@pytest.mark.parametrize("seed", range(8))
def test_loader_damaged_png_is_exact_or_refused(tmp_path, seed):
    """1-3 random bytes overwritten anywhere (or only IDAT's CRC, seed 0)."""
    rng = np.random.default_rng(seed)
    data = bytearray(GOOD)
    if seed == 0:
        data[IDAT_END] ^= 0xFF
    for i in rng.integers(0, len(data), rng.integers(1 if seed else 0, 4)):
        data[i] = rng.integers(0, 256)
    exact_or_refused(write(tmp_path, f"damaged{seed}.png", bytes(data)))


@pytest.mark.parametrize("gray", [False, True])
def test_loader_one_pixel(tmp_path, gray):
    arr = np.array([[10]] if gray else [[[10, 200, 30]]], np.uint8)
    path = write(tmp_path, "one.png", encoded(arr))
    img = load_image(path)
    assert img.dtype == torch.uint8 and img.shape == ((1 if gray else 3), 1, 1)
    assert img.flatten().tolist() == ([10] if gray else [10, 200, 30])


@pytest.mark.parametrize("name", ["bomb.png", "bomb_warn.png"])
def test_bombs_are_refused_before_any_pixel_is_allocated(tmp_path, monkeypatch, name):
    content, _ = BAD[name]
    assert len(content) < 2000
    path = write(tmp_path, name, content)

    def no_decoding(self):
        raise AssertionError(f"PIL is allocating {self.size[0]}x{self.size[1]} px for {name}")

    monkeypatch.setattr(ImageFile.ImageFile, "load_prepare", no_decoding)
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        with refused(path, "refused, declared size is too large"):
            load_image(path)
    assert not leaked, [str(w.message) for w in leaked]  # PIL's DecompressionBombWarning included


# ---- the training and evaluation data path ---------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "says"),
    [
        ((20, 20, 3), "LR size (10, 10) at x2 is smaller than data.patch_size=48"),
        ((95, 200, 3), "LR size (47, 100) at x2 is smaller than data.patch_size=48"),
        ((1, 1, 3), "HR size (1, 1) is smaller than the scale x2"),
        ((1, 1), "HR size (1, 1) is smaller than the scale x2"),
    ],
)
def test_training_refuses_images_smaller_than_a_patch(tmp_path, shape, says):
    path = write(tmp_path / "train", "small.png", encoded(np.zeros(shape, np.uint8)))
    dm = SRDataModule(
        root=str(tmp_path),
        train_set=str(path.parent),
        scales=[2],
        patch_size=48,
        cache_dir=str(tmp_path / "cache"),
    )
    with refused(path, says):
        dm.prepare_data()


@pytest.mark.parametrize("name", ["cut.png", "random0.png", "rgb16.png", "bomb_warn.png"])
def test_training_names_a_bad_file_and_caches_nothing_for_it(tmp_path, name):
    folder = tmp_path / "train"
    write(folder, "a_good.png", encoded(np.zeros((100, 100, 3), np.uint8)))
    content, says = (GOOD[:100], "cannot decode") if name == "cut.png" else BAD[name]
    path = write(folder, name, content)
    cache = tmp_path / "cache"
    dm = SRDataModule(root=str(tmp_path), train_set=str(folder), scales=[2], cache_dir=str(cache))
    with refused(path, says):
        dm.prepare_data()
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["a_good", "a_good"]


@pytest.mark.parametrize(("side", "lr_side"), [(1, None), (2, 1), (3, 1)])
def test_eval_set_of_tiny_images(tmp_path, side, lr_side):
    path = write(tmp_path / "set", "tiny.png", encoded(np.full((side, side), 9, np.uint8)))
    ds = eval_dataset(tmp_path, str(path.parent), 2, cache_dir=tmp_path / "cache")
    if lr_side is None:  # no LR pixel at all: refused rather than a 0x0 tensor for the model
        with refused(path, "HR size (1, 1) is smaller than the scale x2"):
            ds[0]
        return
    item = ds[0]
    assert item["gray"] and item["lr"].shape == (3, lr_side, lr_side)
    assert item["hr"].shape == (3, 2 * lr_side, 2 * lr_side)


# ---- sr-upscale ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> tuple[Path, EDSR]:
    torch.manual_seed(0)
    net = EDSR(scale=2, n_resblocks=1, n_feats=8).eval()
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(net.state_dict(), path)  # the authors' format: a bare state_dict
    return path, net


@pytest.mark.parametrize("name", list(BAD))
def test_cli_refuses_bad_file_in_one_line(tmp_path, capsys, weights, name):
    content, says = BAD[name]
    path = write(tmp_path / "in", name, content)
    out = tmp_path / "out"
    assert main([str(path), "--weights", str(weights[0]), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    err = "".join(ln for ln in err.splitlines(True) if "no network record" not in ln)  # the guess
    assert err.startswith(f"error: {path}: ") and says in err and err.count("\n") == 1, err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args", [[], ["--self-ensemble"], ["--tile", "1"]], ids=str)
def test_cli_upscales_one_pixel_images(tmp_path, weights, args):
    rgb, gray = np.array([[[10, 200, 30]]], np.uint8), np.array([[77]], np.uint8)
    write(tmp_path / "in", "rgb.png", encoded(rgb))
    write(tmp_path / "in", "gray.png", encoded(gray))
    out, net = tmp_path / "out", weights[1]
    assert main([str(tmp_path / "in"), "--weights", str(weights[0]), "--out", str(out), *args]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["gray_x2.png", "rgb_x2.png"]
    for stem in ("rgb", "gray"):
        lr = to_rgb(load_image(tmp_path / "in" / f"{stem}.png"))
        with torch.no_grad():
            x = lr[None].float()
            y = self_ensemble(lambda t: net(t, 2), x) if "--self-ensemble" in args else net(x, 2)
            expected = quantize(y)[0]
        written = load_image(out / f"{stem}_x2.png")
        assert written.shape == (3, 2, 2)
        assert (written.float() - expected).abs().max() <= 1, (stem, written, expected)


# the exit code of a real process is the point: a bomb must end it with 1, not with a signal
@pytest.mark.slow
def test_cli_process_upscales_one_pixel_then_refuses_a_bomb(tmp_path, weights):
    """As a real process: the 1x1 image is upscaled to 2x2, then the bomb ends the run with exit
    code 1 (not a signal) and one line naming it (no traceback); nothing is written for it."""
    one = write(tmp_path / "in", "a_one.png", encoded(np.array([[[10, 200, 30]]], np.uint8)))
    bomb = write(tmp_path / "in", "b_bomb_warn.png", BAD["bomb_warn.png"][0])
    cmd = [sys.executable, "-m", "sr_lightning.cli.upscale", str(one), str(bomb)]
    cmd += ["--weights", str(weights[0]), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "upscaling" not in ln]
    lines = [ln for ln in lines if "no network record" not in ln]  # the res_scale guess
    assert lines == [ln for ln in lines if ln.startswith(f"error: {bomb}: refused")], proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_one_x2.png"]
    assert load_image(tmp_path / "out" / "a_one_x2.png").shape == (3, 2, 2)
