"""The suite's callbacks, one concern a module (conf/callbacks names them by ``_target_``)."""

from sr_lightning.training.callbacks.divergence import DivergenceError, DivergenceGuard
from sr_lightning.training.callbacks.history import MetricHistory
from sr_lightning.training.callbacks.progress import ProgressLog
from sr_lightning.training.callbacks.resume import AtomicCheckpointIO, Resumable
from sr_lightning.training.callbacks.throughput import ImagesPerSecond

__all__ = [
    "AtomicCheckpointIO",
    "DivergenceError",
    "DivergenceGuard",
    "ImagesPerSecond",
    "MetricHistory",
    "ProgressLog",
    "Resumable",
]
