"""Offline tests of the downloader against a local HTTP server with Range support."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_lightning.cli.download import main
from sr_lightning.data.download import (
    BENCHMARK,
    DIV2K_TRAIN_HR,
    Archive,
    ArchiveError,
    DownloadError,
    dataset_archives,
    download,
    extract_archive,
    fetch_dataset,
    install_archive,
    resolve_url,
    verify_archive,
)

# --------------------------------------------------------------------------------- server


@dataclass
class ServerState:
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    truncate: set[str] = field(default_factory=set)  # file names sent half-way, then closed
    ranges: bool = True  # False: ignore Range and answer 200 with the whole file


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with ``Range: bytes=N-`` support (206/416), request log, truncation."""

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "Not Found")
            return
        data = path.read_bytes()
        start, status = 0, 200
        if range_header and state.ranges:
            m = re.fullmatch(r"bytes=(\d+)-", range_header)
            assert m, range_header
            start, status = int(m.group(1)), 206
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))  # the full length, even if truncated
        self.end_headers()
        if path.name in state.truncate:
            body = body[: len(body) // 2]
        self.wfile.write(body)  # HTTP/1.0: the connection closes when the handler returns


@dataclass
class Server:
    url: str
    dir: Path
    state: ServerState


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(RangeHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.state = ServerState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/", served, httpd.state)  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------------- archives

RNG = np.random.default_rng(0)


def _png(size: int) -> tuple[bytes, np.ndarray]:
    pixels = RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue(), pixels


def _zip(path: Path, members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> bytes:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            zf.writestr(d, b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return path.read_bytes()


def _tar(path: Path, members: dict[str, bytes], mode: str = "w") -> bytes:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def make_div2k(served: Path) -> dict[str, np.ndarray]:
    """Tiny DIV2K zips (x2 only) named as the official ones; {path under root: pixels}."""
    expected: dict[str, np.ndarray] = {}
    for split, ids in (("train", ("0001", "0002")), ("valid", ("0801",))):
        hr, lr = {}, {}
        for i in ids:
            hr[f"DIV2K_{split}_HR/{i}.png"], expected[f"DIV2K/DIV2K_{split}_HR/{i}.png"] = _png(8)
            lr_name = f"DIV2K_{split}_LR_bicubic/X2/{i}x2.png"
            lr[lr_name], expected[f"DIV2K/{lr_name}"] = _png(4)
        _zip(served / f"DIV2K_{split}_HR.zip", hr, dirs=(f"DIV2K_{split}_HR/",))
        _zip(served / f"DIV2K_{split}_LR_bicubic_X2.zip", lr)
    return expected


def make_benchmark(served: Path) -> dict[str, np.ndarray]:
    """Tiny benchmark.tar (Set5: baby, HR + x2); {path under root: pixels}."""
    members, expected = {}, {}
    for name, size in (
        ("benchmark/Set5/HR/baby.png", 8),
        ("benchmark/Set5/LR_bicubic/X2/babyx2.png", 4),
    ):
        members[name], expected[name] = _png(size)
    _tar(served / "benchmark.tar", members)
    return expected


def _assert_images(root: Path, expected: dict[str, np.ndarray]) -> None:
    for rel, pixels in expected.items():
        with Image.open(root / rel) as im:
            np.testing.assert_array_equal(np.asarray(im), pixels, err_msg=rel)


def _local(name: str) -> Archive:
    return Archive(name, f"http://invalid.example/files/{name}")


# --------------------------------------------------------------------------------- tests


def test_archive_lists_and_base_url() -> None:
    names = [a.name for a in dataset_archives("div2k", [4, 2])]
    assert names == [
        "DIV2K_train_HR.zip",
        "DIV2K_valid_HR.zip",
        "DIV2K_train_LR_bicubic_X2.zip",
        "DIV2K_train_LR_bicubic_X4.zip",
        "DIV2K_valid_LR_bicubic_X2.zip",
        "DIV2K_valid_LR_bicubic_X4.zip",
    ]
    assert DIV2K_TRAIN_HR.url == "http://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip"
    assert dataset_archives("benchmark") == [BENCHMARK]
    assert BENCHMARK.url == "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
    assert resolve_url(BENCHMARK) == BENCHMARK.url
    assert resolve_url(BENCHMARK, "http://mirror/x") == "http://mirror/x/benchmark.tar"
    with pytest.raises(DownloadError, match="scale"):
        dataset_archives("div2k", [8])


def test_fetch_layout_and_pixels(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = {**make_div2k(server.dir), **make_benchmark(server.dir)}
    root = tmp_path / "data"
    div2k = fetch_dataset("div2k", root, scales=[2], base_url=server.url, progress=False)
    bench = fetch_dataset("benchmark", root, base_url=server.url, progress=False)
    assert (div2k, bench) == (root / "DIV2K", root / "benchmark")
    _assert_images(root, expected)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == sorted(expected)
    # archives removed after unpacking, markers left, nothing partial
    left = sorted(p.name for p in (root / "downloads").iterdir())
    assert left == sorted(f"{p.name}.done" for p in server.dir.iterdir())
    # unpinned archives: the computed sha256 is printed so it can be pinned
    digest = hashlib.sha256((server.dir / "benchmark.tar").read_bytes()).hexdigest()
    assert f"benchmark.tar: archive integrity OK, sha256 {digest}" in capsys.readouterr().out

    # done markers: a second run makes no request; --force redoes the work
    n = len(server.state.requests)
    (root / "benchmark/Set5/HR/baby.png").unlink()
    fetch_dataset("benchmark", root, base_url=server.url, progress=False)
    assert len(server.state.requests) == n
    assert not (root / "benchmark/Set5/HR/baby.png").exists()
    fetch_dataset("benchmark", root, base_url=server.url, force=True, keep_archives=True)
    assert len(server.state.requests) == n + 1
    _assert_images(root, expected)
    assert (root / "downloads/benchmark.tar").read_bytes() == (
        server.dir / "benchmark.tar"
    ).read_bytes()


def test_resume_sends_range(server: Server, tmp_path: Path) -> None:
    make_benchmark(server.dir)
    data = (server.dir / "benchmark.tar").read_bytes()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    half = len(data) // 2
    (downloads / "benchmark.tar.part").write_bytes(data[:half])
    pinned = Archive("benchmark.tar", BENCHMARK.url, hashlib.sha256(data).hexdigest(), len(data))
    path = download(pinned, downloads, base_url=server.url, progress=False)
    assert server.state.requests == [("/benchmark.tar", f"bytes={half}-")]
    assert path == downloads / "benchmark.tar"
    assert path.read_bytes() == data
    assert not (downloads / "benchmark.tar.part").exists()


def test_resume_of_complete_part_and_server_without_range(server: Server, tmp_path: Path) -> None:
    make_benchmark(server.dir)
    data = (server.dir / "benchmark.tar").read_bytes()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    part = downloads / "benchmark.tar.part"
    # complete .part: the server answers 416 and the file is taken as is
    part.write_bytes(data)
    assert download(BENCHMARK, downloads, base_url=server.url, progress=False).read_bytes() == data
    assert server.state.requests[-1][1] == f"bytes={len(data)}-"
    # a server that ignores Range (200): restart from zero, not append
    server.state.ranges = False
    (downloads / "benchmark.tar").unlink()
    part.write_bytes(b"x" * (len(data) // 2))
    assert download(BENCHMARK, downloads, base_url=server.url, progress=False).read_bytes() == data


def test_truncated_download_keeps_part(server: Server, tmp_path: Path) -> None:
    make_benchmark(server.dir)
    data = (server.dir / "benchmark.tar").read_bytes()
    downloads = tmp_path / "downloads"
    server.state.truncate.add("benchmark.tar")
    with pytest.raises(DownloadError, match="truncated") as err:
        download(BENCHMARK, downloads, base_url=server.url, progress=False)
    assert f"{server.url}benchmark.tar" in str(err.value)
    assert "resume" in str(err.value)
    part = downloads / "benchmark.tar.part"
    assert part.read_bytes() == data[: len(data) // 2]
    assert not (downloads / "benchmark.tar").exists()
    # the next run resumes from the kept bytes
    server.state.truncate.clear()
    assert download(BENCHMARK, downloads, base_url=server.url, progress=False).read_bytes() == data
    assert server.state.requests[-1][1] == f"bytes={len(data) // 2}-"


def _garbage_tar(path: Path) -> bytes:
    data = bytearray(_tar(path, {"a/one.png": b"1" * 100, "a/two.png": b"2" * 100}))
    data[1024:1536] = np.random.default_rng(1).integers(0, 256, 512, dtype=np.uint8).tobytes()
    return bytes(data)  # valid first member, garbage where the second header was


def _crc_zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a/one.png", b"A" * 200)
    data = bytearray(path.read_bytes())
    data[data.index(b"A" * 200) + 10] = ord("B")
    return bytes(data)  # structurally fine, bad CRC


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("random.zip", lambda p: np.random.default_rng(2).bytes(3000)),
        ("crc.zip", _crc_zip),
        ("random.tar", lambda p: np.random.default_rng(3).bytes(3000)),
        ("garbage.tar", _garbage_tar),
    ],
)
def test_corrupt_archive_rejected(server: Server, tmp_path: Path, name: str, make) -> None:
    (server.dir / name).write_bytes(make(tmp_path / name))
    root, out = tmp_path / "data", tmp_path / "data" / "out"
    with pytest.raises(ArchiveError, match="[Dd]elete") as err:
        install_archive(_local(name), root, out, base_url=server.url, progress=False)
    assert name in str(err.value)
    assert not out.exists()
    assert not (root / "downloads" / f"{name}.done").exists()
    assert not (root / "downloads" / name).exists()  # never renamed to the final name


def test_sha256_mismatch_rejected(server: Server, tmp_path: Path) -> None:
    make_benchmark(server.dir)
    data = (server.dir / "benchmark.tar").read_bytes()
    root = tmp_path / "data"
    wrong = Archive("benchmark.tar", BENCHMARK.url, sha256="0" * 64)
    with pytest.raises(ArchiveError, match="sha256") as err:
        install_archive(wrong, root, root, base_url=server.url, progress=False)
    assert "benchmark.tar" in str(err.value)
    assert not (root / "benchmark").exists()
    assert not (root / "downloads" / "benchmark.tar").exists()
    right = Archive("benchmark.tar", BENCHMARK.url, sha256=hashlib.sha256(data).hexdigest())
    verify_archive(root / "downloads" / "benchmark.tar.part", right.sha256, name=right.name)


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("evil", ["../evil.png", "/tmp/sr_lightning_evil.png", "a/../../evil.png"])
def test_path_traversal_refused(server: Server, tmp_path: Path, kind: str, evil: str) -> None:
    members = {"ok/good.png": b"good", evil: b"evil"}
    name = f"evil.{kind}"
    (_zip if kind == "zip" else _tar)(server.dir / name, members)
    root = tmp_path / "data"
    out = root / "out"
    with pytest.raises(ArchiveError, match="unsafe member path") as err:
        install_archive(_local(name), root, out, base_url=server.url, progress=False)
    assert name in str(err.value)
    assert not out.exists()
    assert not (root / "evil.png").exists() and not (tmp_path / "evil.png").exists()
    assert not Path("/tmp/sr_lightning_evil.png").exists()
    with pytest.raises(ArchiveError, match="unsafe"):
        extract_archive(server.dir / name, out)
    assert not out.exists()


def test_tar_gz_and_links(tmp_path: Path) -> None:
    src = tmp_path / "set.tar.gz"
    _tar(src, {"benchmark/Set5/HR/a.png": b"png"}, mode="w:gz")
    verify_archive(src)
    assert extract_archive(src, tmp_path / "out") == 1
    assert (tmp_path / "out/benchmark/Set5/HR/a.png").read_bytes() == b"png"
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo("benchmark/x.png")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(ArchiveError, match="links"):
        extract_archive(link, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_cli(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = make_benchmark(server.dir)
    root = tmp_path / "data"
    assert main(["benchmark", "--root", str(root), "--base-url", server.url]) == 0
    _assert_images(root, expected)
    assert "done" in capsys.readouterr().out

    # DIV2K is not served: HTTP 404, reported without a traceback
    assert main(["div2k", "--root", str(root), "--scales", "2", "--base-url", server.url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "404" in err and "DIV2K_train_HR.zip" in err
    assert "Traceback" not in err

    # a corrupt archive: status 1, the message names the file and says to delete it
    (server.dir / "DIV2K_train_HR.zip").write_bytes(b"not a zip at all" * 10)
    assert main(["div2k", "--root", str(root), "--scales", "2", "--base-url", server.url]) == 1
    err = capsys.readouterr().err
    assert "DIV2K_train_HR.zip" in err and "Delete" in err
    assert not (root / "DIV2K").exists()
