"""Download and unpack DIV2K and the SR benchmark sets (Set5, Set14, B100, Urban100).

Usage::

    sr-download div2k --root DIR [--scales 2 3 4] [--keep-archives]
    sr-download benchmark --root DIR

Each archive is streamed to ``<root>/downloads/<name>.part`` (an interrupted download is resumed
with an HTTP ``Range`` request), checked (size, then sha256 where pinned, else the archive's own
integrity), renamed to ``<name>`` and unpacked into the layout :mod:`.datasets` reads::

    <root>/DIV2K/DIV2K_train_HR/0001.png, <root>/DIV2K/DIV2K_train_LR_bicubic/X2/0001x2.png
    <root>/benchmark/<Set>/HR/<stem>.png, <root>/benchmark/<Set>/LR_bicubic/X2/<stem>x2.png

``<root>/downloads/<name>.done`` marks an unpacked archive, skipped unless ``--force``.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import struct
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0
USER_AGENT = "sr-lightning-downloader/0.1 (python-urllib)"


@dataclass(frozen=True)
class Archive:
    """A downloadable archive: file name, official URL, pinned sha256 and size (None: unknown)."""

    name: str
    url: str
    sha256: str | None = None
    size: int | None = None


DIV2K_URL = "http://data.vision.ee.ethz.ch/cvl/DIV2K/"
BENCHMARK_URL = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
SCALES = (2, 3, 4)

# Official archives. Their sha256 could not be looked up offline: None means the archive is
# verified by its own integrity (zip CRCs, tar structure) and the computed sha256 is printed.
DIV2K_TRAIN_HR = Archive("DIV2K_train_HR.zip", DIV2K_URL + "DIV2K_train_HR.zip")
DIV2K_VALID_HR = Archive("DIV2K_valid_HR.zip", DIV2K_URL + "DIV2K_valid_HR.zip")
DIV2K_TRAIN_LR = {
    s: Archive(f"DIV2K_train_LR_bicubic_X{s}.zip", f"{DIV2K_URL}DIV2K_train_LR_bicubic_X{s}.zip")
    for s in SCALES
}
DIV2K_VALID_LR = {
    s: Archive(f"DIV2K_valid_LR_bicubic_X{s}.zip", f"{DIV2K_URL}DIV2K_valid_LR_bicubic_X{s}.zip")
    for s in SCALES
}
BENCHMARK = Archive("benchmark.tar", BENCHMARK_URL)

DATASETS = ("div2k", "benchmark")


class DownloadError(RuntimeError):
    """A download or unpacking step failed; the message says what to do about it."""


class ArchiveError(DownloadError):
    """An archive is corrupt, fails its checksum or holds unsafe member paths."""


def dataset_archives(dataset: str, scales: Iterable[int] = SCALES) -> list[Archive]:
    """The archives of ``dataset`` ("div2k": HR plus the LR zips of ``scales``; "benchmark")."""
    if dataset == "benchmark":
        return [BENCHMARK]
    if dataset != "div2k":
        raise DownloadError(f"unknown data set {dataset!r}; allowed values: {list(DATASETS)}")
    scales = sorted(set(scales))
    bad = [s for s in scales if s not in SCALES]
    if bad:
        raise DownloadError(f"DIV2K has no bicubic LR archive for scale(s) {bad}; use {SCALES}")
    return [
        DIV2K_TRAIN_HR,
        DIV2K_VALID_HR,
        *(DIV2K_TRAIN_LR[s] for s in scales),
        *(DIV2K_VALID_LR[s] for s in scales),
    ]


def dataset_dir(dataset: str, root: str | Path) -> Path:
    """Folder the archives of ``dataset`` unpack into (their top folders land inside it)."""
    root = Path(root).expanduser()
    return root / "DIV2K" if dataset == "div2k" else root


def resolve_url(archive: Archive, base_url: str | None = None) -> str:
    """``archive.url``, or its file name joined to ``base_url`` when one is given."""
    if not base_url:
        return archive.url
    file_name = PurePosixPath(urlsplit(archive.url).path).name or archive.name
    return base_url.rstrip("/") + "/" + file_name


def archive_format(name: str) -> str:
    """ "zip" or "tar" from a file name (``.part`` ignored); ArchiveError for anything else."""
    name = name.lower().removesuffix(".part")
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        return "tar"
    raise ArchiveError(f"{name}: unsupported archive type (expected .zip, .tar or .tar.gz)")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------- download


class _Progress:
    """Byte progress: a tqdm bar on a terminal, else a line per 10 % (or per 100 MiB)."""

    def __init__(self, label: str, total: int | None, initial: int, enabled: bool) -> None:
        self.label, self.total, self.done, self.enabled = label, total, initial, enabled
        self.bar: Any = None
        self.next_report = self._step(initial)
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
            )

    def _step(self, done: int) -> int:
        step = max(self.total // 10, 1) if self.total else 100 << 20
        return (done // step + 1) * step

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.done >= self.next_report:
            self.next_report = self._step(self.done)
            total = f" / {self.total / 2**20:.1f} MiB" if self.total else " MiB"
            print(f"{self.label}: {self.done / 2**20:.1f}{total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _header_int(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header; None where absent or ``*``."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    first, total = m.groups()
    return (int(first) if first else None), (int(total) if total != "*" else None)


def _fetch(
    url: str, part: Path, expected: int | None, timeout: float, progress: bool, retry: bool = True
) -> None:
    """Stream ``url`` into ``part``, resuming from its current size; raise unless complete."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    opener = urllib.request.build_opener()  # built per call: honours the current proxy settings
    try:
        response = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        _, remote_total = _content_range(e.headers.get("Content-Range"))
        e.close()
        if e.code == 416 and have:  # nothing left to send: the .part is already complete
            if remote_total in (None, have) and expected in (None, have):
                return
            if retry:  # the .part does not match the remote file: start over
                part.unlink()
                return _fetch(url, part, expected, timeout, progress, retry=False)
        raise DownloadError(
            f"{url}: HTTP {e.code} {e.reason}. Check the URL (or --base-url) and re-run."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"cannot download {url}: {reason}. Check the network (or --base-url) and re-run; "
            "a partial download is resumed."
        ) from None

    with response:
        length = _header_int(response.headers.get("Content-Length"))
        if response.status == 206:
            first, total = _content_range(response.headers.get("Content-Range"))
            if first != have:
                response.close()
                if not retry:
                    raise DownloadError(f"{url}: the server answered a resume request wrongly")
                part.unlink()
                return _fetch(url, part, expected, timeout, progress, retry=False)
            if total is None and length is not None:
                total = have + length
            mode = "ab"
        else:
            if have:
                print(f"{url}: the server cannot resume; downloading from the start", flush=True)
            have, total, mode = 0, length, "wb"
        if expected is not None and total is not None and total != expected:
            raise ArchiveError(
                f"{url} is {total} bytes, expected {expected}: not the official archive. "
                "Check the URL (or --base-url)."
            )
        total = total if total is not None else expected
        bar = _Progress(part.name.removesuffix(".part"), total, have, progress)
        done = have
        try:
            with open(part, mode) as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise DownloadError(
                f"download of {url} interrupted after {done} of {total or '?'} bytes ({e}); "
                f"the partial file {part} is kept: re-run the same command to resume."
            ) from None
        finally:
            bar.close()
    if total is not None and done < total:
        raise DownloadError(
            f"download of {url} is truncated: got {done} of {total} bytes (the connection closed "
            f"early); the partial file {part} is kept: re-run the same command to resume."
        )
    if total is not None and done > total:
        raise ArchiveError(
            f"{part} has {done} bytes but {url} has {total}; delete {part} and re-run."
        )


def download(
    archive: Archive,
    downloads: str | Path,
    *,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Fetch ``archive`` to ``downloads/<name>`` via a resumable ``.part`` file, verified.

    Raises DownloadError (network, HTTP, truncation: the ``.part`` is kept for resume) or
    ArchiveError (wrong size, sha256 mismatch, corrupt archive). Returns the final path.
    """
    return _download(archive, downloads, base_url, timeout, progress)[0]


def _download(
    archive: Archive, downloads: str | Path, base_url: str | None, timeout: float, progress: bool
) -> tuple[Path, str]:
    """:func:`download`, also returning the verified sha256."""
    url = resolve_url(archive, base_url)
    downloads = Path(downloads).expanduser()
    downloads.mkdir(parents=True, exist_ok=True)
    part = downloads / f"{archive.name}.part"
    final = downloads / archive.name
    print(f"downloading {url} -> {final}", flush=True)
    _fetch(url, part, archive.size, timeout, progress)
    digest = verify_archive(part, archive.sha256, name=archive.name)
    part.replace(final)
    return final, digest


# --------------------------------------------------------------------------------- verify


def _corrupt(path: Path, detail: object) -> ArchiveError:
    return ArchiveError(
        f"{path} is corrupt or not a valid archive ({detail}). Delete it and re-run to download "
        "it again."
    )


# Everything a damaged zip/tar/gzip stream can raise while being read.
_READ_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
    KeyError,
)


def _check_tar(tf: tarfile.TarFile, path: Path) -> None:
    """Read every member of an open tar; bytes after the last member must be zero blocks."""
    for member in tf:  # lazily: each member's data is read right after its header
        if member.isfile():
            src = tf.extractfile(member)
            assert src is not None
            with src:
                while src.read(CHUNK):
                    pass
    # tarfile stops silently at a broken header after the first; catch garbage/truncation here
    stream: IO[bytes] = tf.fileobj  # type: ignore[assignment]
    stream.seek(tf.offset)
    while chunk := stream.read(CHUNK):
        if chunk.count(0) != len(chunk):
            raise _corrupt(path, f"damaged tar data after byte {tf.offset}")


def verify_archive(path: str | Path, sha256: str | None = None, *, name: str | None = None) -> str:
    """Check ``path`` against ``sha256``, or (None) its integrity; return the computed sha256.

    ``name`` gives the archive type when ``path`` is a ``.part`` file. Raises ArchiveError.
    """
    path = Path(path)
    label = name or path.name
    fmt = archive_format(label)
    digest = sha256_file(path)
    if sha256 is not None:
        if digest != sha256.strip().lower():
            raise ArchiveError(
                f"{path}: sha256 {digest} does not match the expected {sha256} (corrupt download "
                "or not the official archive). Delete it and re-run to download it again."
            )
        return digest
    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
            if bad is not None:
                raise _corrupt(path, f"CRC error in member {bad!r}")
        else:
            with tarfile.open(path, "r:*") as tf:
                _check_tar(tf, path)
    except ArchiveError:
        raise
    except _READ_ERRORS as e:
        raise _corrupt(path, e) from None
    print(f"{label}: archive integrity OK, sha256 {digest} (pin it as Archive.sha256)", flush=True)
    return digest


# --------------------------------------------------------------------------------- extract


def _safe_parts(member: str, archive: Path) -> tuple[str, ...]:
    """Path components of an archive member; ArchiveError for absolute paths or ``..``."""
    name = member.replace("\\", "/")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or re.match(r"[A-Za-z]:", name):
        raise ArchiveError(
            f"{archive}: refusing unsafe member path {member!r} (absolute or containing '..'); "
            "nothing was extracted. The archive is not trustworthy: delete it."
        )
    return tuple(p for p in pure.parts if p not in ("", "."))


def _write(src: IO[bytes], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)


def extract_archive(path: str | Path, dest: str | Path, *, name: str | None = None) -> int:
    """Unpack a zip or tar archive into ``dest``; return the number of files written.

    Every member is checked first (no absolute paths, no ``..``, tar: only files and folders),
    so an unsafe archive writes nothing. Raises ArchiveError.
    """
    path, dest = Path(path), Path(dest).expanduser()
    fmt = archive_format(name or path.name)
    count = 0
    try:
        if fmt == "zip":
            with zipfile.ZipFile(path) as zf:
                plan = [(info, _safe_parts(info.filename, path)) for info in zf.infolist()]
                for info, parts in plan:
                    if info.is_dir():
                        dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)
                    elif parts:
                        _write(zf.open(info), dest.joinpath(*parts))
                        count += 1
        else:
            with tarfile.open(path, "r:*") as tf:
                members = tf.getmembers()
                for m in members:
                    parts = _safe_parts(m.name, path)
                    if not (m.isfile() or m.isdir()):
                        raise ArchiveError(
                            f"{path}: refusing member {m.name!r} (links and special files are "
                            "not allowed); nothing was extracted. Delete the archive."
                        )
                for m in members:
                    parts = _safe_parts(m.name, path)
                    if m.isdir():
                        dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)
                    elif parts:
                        src = tf.extractfile(m)
                        assert src is not None
                        _write(src, dest.joinpath(*parts))
                        count += 1
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, struct.error) as e:
        raise _corrupt(path, e) from None
    return count


# --------------------------------------------------------------------------------- install


def install_archive(
    archive: Archive,
    root: str | Path,
    extract_to: str | Path,
    *,
    base_url: str | None = None,
    keep_archive: bool = False,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> bool:
    """Download (into ``<root>/downloads``), verify and unpack one archive into ``extract_to``.

    Skipped when ``<root>/downloads/<name>.done`` exists, unless ``force``. An archive already
    in ``<root>/downloads`` (``keep_archive``) is re-verified instead of downloaded again.
    Returns True when the archive was unpacked, False when skipped.
    """
    downloads = Path(root).expanduser() / "downloads"
    marker = downloads / f"{archive.name}.done"
    if marker.exists() and not force:
        print(f"{archive.name}: already extracted ({marker}); skipping (--force redoes it)")
        return False
    final = downloads / archive.name
    if final.exists():
        print(f"{archive.name}: using the downloaded {final}", flush=True)
        digest = verify_archive(final, archive.sha256)
    else:
        final, digest = _download(archive, downloads, base_url, timeout, progress)
    n = extract_archive(final, extract_to, name=archive.name)
    print(f"{archive.name}: extracted {n} files into {Path(extract_to)}", flush=True)
    marker.write_text(f"{digest}  {archive.name}\n")
    if not keep_archive:
        final.unlink()
    return True


def fetch_dataset(
    dataset: str,
    root: str | Path,
    *,
    scales: Iterable[int] = SCALES,
    base_url: str | None = None,
    keep_archives: bool = False,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> Path:
    """Download and unpack ``dataset`` ("div2k" or "benchmark") under ``root``; its folder."""
    archives = dataset_archives(dataset, scales)
    dest = dataset_dir(dataset, root)
    for archive in archives:
        install_archive(
            archive,
            root,
            dest,
            base_url=base_url,
            keep_archive=keep_archives,
            force=force,
            timeout=timeout,
            progress=progress,
        )
    return dest / "benchmark" if dataset == "benchmark" else dest
