"""What a run prints: the run's own lines on the console and in ``train.log``; library noise
that does not concern the user is dropped here, each filter with the reason it does not apply.
Real warnings still show (and land in ``train.log`` too)."""

from __future__ import annotations

import logging
import warnings

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
    the root logger that Hydra configured, so that ``train.log`` holds them too."""
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
