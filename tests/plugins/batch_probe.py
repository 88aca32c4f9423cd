"""A callback that records the patches each rank trains on per step (tests only)."""

from pathlib import Path

import lightning as L


class BatchSizes(L.Callback):
    """Appends ``<step> <patches>`` lines to ``<dirpath>/batches-rank<r>.txt``."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / f"batches-rank{trainer.global_rank}.txt", "a") as f:
            f.write(f"{trainer.global_step} {batch['lr'].shape[0]} {batch['hr'].shape[0]}\n")
