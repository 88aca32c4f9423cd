"""Data-loader throughput: LR patches/s of the data module (loader workers, or the
device-side pipeline), against what the training step consumes."""

from __future__ import annotations

import statistics
import time

from sr_lightning.data.datamodule import SRDataModule
from sr_lightning.training.flops import sync


def loader_patches_per_second(dm, repeats: int = 3) -> float:
    """Steady-state LR patches/s of ``dm.train_dataloader()`` (median over epochs; the clock
    starts at each epoch's first batch, so starting the workers is not counted; device-side
    batches are waited for)."""
    rates = []
    for _ in range(repeats):
        loader, n, start = dm.train_dataloader(), 0, None
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            n += batch["lr"].shape[0]
        sync(batch["lr"].device)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def data_module_rate(
    data_root: str,
    train_set: str,
    batch: int,
    patch: int,
    workers: int,
    batches: int = 100,
    on_device: bool = False,
) -> float:

    dm = SRDataModule(
        root=data_root,
        scales=[2],
        patch_size=patch,
        batch_size=batch,
        num_workers=workers,
        train_set=train_set,
        val_sets=[],
        benchmarks=[],
        updates_per_epoch=batches,
        on_device=on_device,
    )
    dm.prepare_data()
    dm.setup("fit")
    return loader_patches_per_second(dm)
