"""Writes that never stop a run: run records (summary, results, recorded config, CSV rewrites)
go to a temporary file renamed into place, so that a crash or a full disk leaves the old file
whole; a failed write is reported once per file (:class:`WriteErrors`) and training goes on.
Checkpoints are not written here: their errors must propagate (``AtomicCheckpointIO``)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class WriteErrors:
    """Reports the first failed write of each file of one log with a warning naming it; counts
    the later ones silently (a full disk fails every write)."""

    def __init__(self, log_name: str):
        self.log_name = log_name
        self.count = 0
        self.files: set[str] = set()

    def report(self, exc: OSError, path: str | os.PathLike | None = None) -> None:
        self.count += 1
        path = str(path or exc.filename or "?")
        if path in self.files:
            return
        self.files.add(path)
        hint = "disk full? " if exc.errno in DISK_FULL_ERRNOS else ""
        log.warning(
            "%s: cannot write %s (%s): %straining continues, this log is incomplete "
            "(further write errors of this file are not reported)",
            self.log_name,
            path,
            exc.strerror or exc,
            hint,
        )


RUN_RECORDS = WriteErrors("run record")  # summary.json, config.yaml, results.json, CSV rewrites


def write_atomically(path: str | os.PathLike, text: str, errors: WriteErrors = RUN_RECORDS) -> bool:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place: a crash or
    a full disk leaves the old file whole. A failed write is reported once (``errors``) and
    returns False; training goes on."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return True
    except OSError as e:
        errors.report(e, path)
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def truncate_quietly(path: str | os.PathLike, size: int) -> None:
    """Cut a partly appended write off ``path`` (best effort: needs no free space)."""
    with contextlib.suppress(OSError):
        os.truncate(path, size)
