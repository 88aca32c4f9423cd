"""A callback that records a digest of the patches each rank trains on per step (tests only)."""

import hashlib
from pathlib import Path

import lightning as L
import torch


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class BatchDigests(L.Callback):
    """Appends ``<step> <scale> <lr digest> <hr digest>`` to ``<dirpath>/digests-rank<r>.txt``."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        line = f"{trainer.global_step} {batch['scale']} {digest(batch['lr'])} {digest(batch['hr'])}"
        with open(self.dirpath / f"digests-rank{trainer.global_rank}.txt", "a") as f:
            f.write(line + "\n")
