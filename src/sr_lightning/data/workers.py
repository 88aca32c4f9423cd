"""Data loader workers that never outlive their trainer and never break a step half-way.

SLURM SIGTERMs every process of a job (see :func:`finish_step_on_sigterm`); a trainer killed
with SIGKILL (``kill -9``, the OOM killer, a node agent) cannot stop its workers, so the kernel
does (:func:`die_with_parent`), whatever state they are in (issue 24: a worker blocked on a
full queue lived on for 17 minutes after such a kill).
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

SIGTERM_GRACE_S = 30.0  # a worker SIGTERMed while its parent trains on stops after this
_PARENT_EXITING: Any = None


def parent_exit_flag() -> Any:
    """A shared-memory flag the main process sets when its interpreter exits (before
    multiprocessing's own exit handler SIGTERMs and joins the daemonic loader workers). A raw
    value, polled: a ``multiprocessing.Event`` would block its setter on waiters that died."""
    global _PARENT_EXITING
    if _PARENT_EXITING is None:
        _PARENT_EXITING = multiprocessing.RawValue("b", 0)
        atexit.register(setattr, _PARENT_EXITING, "value", 1)  # runs before multiprocessing's
    return _PARENT_EXITING


def finish_step_on_sigterm(parent_exiting: Any, worker_id: int) -> None:
    """SIGTERM handling of a data worker (its ``worker_init_fn``).

    SLURM sends SIGTERM to every process of a job: a worker must not die then, or the trainer's
    step breaks half-way (a worker killed by a signal makes torch raise in the main process at
    once). So a SIGTERM does not stop the worker while its parent trains: the trainer finishes
    the step, saves ``preempted.ckpt`` and shuts the loader down itself. But when the parent
    is exiting (Python's exit handler SIGTERMs its daemonic children, then waits for them), or
    has not stopped the worker within ``SIGTERM_GRACE_S``, the worker exits at once with status
    0 (which torch does not report as a crash): no process hangs at exit.
    """

    def wait_then_exit() -> None:
        deadline = time.monotonic() + SIGTERM_GRACE_S
        while not parent_exiting.value and time.monotonic() < deadline:
            time.sleep(0.05)
        os._exit(0)

    def on_sigterm(signum: int, frame: object) -> None:
        if parent_exiting.value:
            os._exit(0)
        threading.Thread(target=wait_then_exit, daemon=True).start()

    signal.signal(signal.SIGTERM, on_sigterm)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel SIGKILLs this process when the thread that started it dies (the
    trainer's main thread: Lightning iterates its loaders there). Elsewhere a no-op: torch's
    own watchdog (a worker polls its parent every 5 s while idle) is what remains."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): torch's watchdog still applies
    if os.getppid() != parent_pid:  # the parent died before prctl: no signal will come
        os._exit(0)


def init_worker(parent_pid: int, parent_exiting: Any, worker_id: int) -> None:
    """A loader worker's ``worker_init_fn``: dies with its trainer, finishes a step on SIGTERM."""
    die_with_parent(parent_pid)
    finish_step_on_sigterm(parent_exiting, worker_id)


def loader_worker_init() -> Callable[[int], None]:
    """The ``worker_init_fn`` of every loader of the data module (picklable)."""
    return partial(init_worker, os.getpid(), parent_exit_flag())
