"""Crash-safe checkpoint writes and the divergence guard."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.plugins.io import torch_io

from sr_lightning.callbacks import AtomicCheckpointIO


def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.ones(3)}, path)

    def crash_midway(checkpoint, filepath):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch_io, "_atomic_save", crash_midway)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"weights": torch.zeros(3)}, path)
    restored = torch.load(path, weights_only=True)
    assert torch.equal(restored["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_divergence_stops_the_run_and_the_last_good_checkpoint_survives(
    tmp_path, data_root, cache_dir
):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from sr_lightning.callbacks import DivergenceError, DivergenceGuard
    from sr_lightning.data.datamodule import SRDataModule
    from sr_lightning.lit_module import SRLitModule
    from sr_lightning.models import EDSR

    class BlowUpAt(L.Callback):
        """The weights become infinite before step 6, as with far too high a learning rate."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == 5:
                with torch.no_grad():
                    pl_module.net.tail[-1].weight.fill_(float("inf"))

    dm = SRDataModule(
        root=str(data_root),
        train_set=str(data_root / "benchmark" / "Set5" / "HR"),
        val_sets=[],
        benchmarks=[],
        patch_size=12,
        batch_size=2,
        num_workers=0,
        updates_per_epoch=20,
        cache_dir=str(cache_dir),
    )
    every_2 = ModelCheckpoint(
        dirpath=tmp_path, filename="step{step}", every_n_train_steps=2, save_top_k=-1
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=20,
        logger=False,
        callbacks=[BlowUpAt(), DivergenceGuard(check_every_n_steps=1), every_2],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(DivergenceError, match="non-finite training loss at step 6"):
        trainer.fit(SRLitModule(EDSR(2, 1, 8)), datamodule=dm)
    steps = {
        p: torch.load(p, map_location="cpu", weights_only=True) for p in tmp_path.glob("*.ckpt")
    }
    newest = max(steps.values(), key=lambda c: c["global_step"])
    assert newest["global_step"] == 4  # the step-6 checkpoint was not written on the way out
    assert all(v.isfinite().all() for v in newest["state_dict"].values() if v.is_floating_point())
