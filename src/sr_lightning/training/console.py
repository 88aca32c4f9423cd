"""What a run prints: the run's own lines on the console and in ``train.log``; library noise
that does not concern the user is dropped here, each filter with the reason it does not apply.
Real warnings still show (and land in ``train.log`` too).

Progress lines (:func:`log_progress`: the periodic training line, each validation, the test
table) go into the log files (Hydra's ``train.log`` / ``eval.log``) always, and onto the console
only when it is not a terminal (``tee``, ``nohup``, a SLURM ``.out``): a terminal has the
progress bar, and stays as quiet as that. Lines the console printed already (the result table)
go into the log files only."""

from __future__ import annotations

import logging
import multiprocessing
import sys
import warnings
from pathlib import Path
from typing import Any

# (message regex, why it does not apply to this suite)
IGNORED_WARNINGS = (
    (
        r"Checkpoint directory .* exists and is not empty",
        "each run folder owns its checkpoints/: train.py writes config.yaml there first, and a "
        "resumed run finds its own checkpoints in it",
    ),
    (
        r"Your `IterableDataset` has `__len__` defined",
        "data/patches.py splits the batches of an epoch between the workers itself, so the "
        "length is exact",
    ),
    (
        r"It is recommended to use `self.log\('(bicubic/)?(val|test)/",
        "the evaluation metrics are torchmetrics states summed over the ranks before they are "
        "logged: every rank logs the same number, there is nothing left to sync",
    ),
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        "Lightning 2.6's own code under torch 2.13, not a call of ours",
    ),
)
# Lightning's info lines that advertise products rather than describe the run
IGNORED_LOG_PREFIXES = ("💡 Tip:",)


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(IGNORED_LOG_PREFIXES)


def quiet_library_noise() -> None:
    """Install the filters above, and route Lightning's log lines (and Python warnings) through
    the root logger that Hydra configured, so that ``train.log`` holds them too; progress lines
    are routed as :func:`log_progress` says."""
    route_progress_lines()
    for message, _why in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    logging.captureWarnings(True)
    root = logging.getLogger()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lib = logging.getLogger(name)
        # Lightning adds a console handler of its own when imported before logging is set up
        if root.handlers:
            for handler in list(lib.handlers):
                if type(handler) is logging.StreamHandler:
                    lib.removeHandler(handler)
            lib.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropAdverts())


# where a progress line goes (the LogRecord attribute ROUTE)
ROUTE = "sr_route"
NOT_ON_A_TERMINAL = "not_on_a_terminal"  # log files, and a console that is not a terminal
FILES_ONLY = "files_only"  # log files only: the console printed it already
# Hydra's job logging format (hydra/conf/hydra/job_logging/default.yaml)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


class _ProgressRoute(logging.Filter):
    """On a console handler (a stream handler that is not a file's): drops the progress lines
    that are not for it (see :func:`log_progress`)."""

    def __init__(self, handler: logging.StreamHandler):
        super().__init__()
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        route = getattr(record, ROUTE, None)
        if route == FILES_ONLY:
            return False
        if route == NOT_ON_A_TERMINAL:
            return not is_terminal(getattr(self.handler, "stream", None))
        return True


def route_progress_lines() -> None:
    """Give every console handler of the root logger the :class:`_ProgressRoute` filter
    (idempotent; handlers added later get it at the next progress line)."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.StreamHandler) or isinstance(
            handler, logging.FileHandler
        ):
            continue
        if not any(isinstance(f, _ProgressRoute) for f in handler.filters):
            handler.addFilter(_ProgressRoute(handler))


def log_progress(logger: logging.Logger, msg: str, *args: Any, printed: bool = False) -> None:
    """``logger.info(msg, *args)`` as a progress line: into the log files always; onto the
    console only when it is not a terminal, or never with ``printed`` (the caller printed
    it)."""
    route_progress_lines()
    route = FILES_ONLY if printed else NOT_ON_A_TERMINAL
    logger.info(msg, *args, extra={ROUTE: route}, stacklevel=2)


def log_in_spawned_worker(run_dir: str | Path) -> None:
    """In a process started by ``spawn`` (a ``ddp_spawn`` worker), which inherits no logging
    set-up and no warning filter, send the log lines where Hydra's job logging sends the
    parent's (the run's ``train.log`` and stdout) and drop the same library noise. Elsewhere
    (Hydra configured logging, or the caller did) nothing changes."""
    root = logging.getLogger()
    if root.handlers or multiprocessing.parent_process() is None:
        return
    from sr_lightning.runs.folder import RunFolder

    formatter = logging.Formatter(LOG_FORMAT)
    path = RunFolder(run_dir).log
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if path.parent.is_dir():
        handlers.append(logging.FileHandler(path))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)  # Hydra's level
    quiet_library_noise()  # as train.py does in the parent: same filters, same routes
