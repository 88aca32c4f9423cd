"""Crash-safe checkpoint writes and the divergence guard."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import make_dm
from lightning.fabric.plugins.io import torch_io

from sr_lightning.training.callbacks import AtomicCheckpointIO, DivergenceError, DivergenceGuard


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


class BlowUpAt(L.Callback):
    """Infinite weights before step ``step + 1``, as with far too high a learning rate; with
    ``once`` they are put back afterwards (a single bad batch)."""

    def __init__(self, step: int, once: bool = False):
        self.step, self.once, self.saved = step, once, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            weight = pl_module.net.tail[-1].weight
            self.saved = weight.detach().clone()
            with torch.no_grad():
                weight.fill_(float("inf"))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.once and trainer.global_step == self.step:  # the bad forward is done
            with torch.no_grad():
                pl_module.net.tail[-1].weight.copy_(self.saved)


def tiny_fit(tmp_path, data_root, cache_dir, callbacks: list, max_steps: int = 20):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from sr_lightning.models import EDSR
    from sr_lightning.training.lit_module import SRLitModule

    dm = make_dm(
        data_root,
        cache_dir,
        patch_size=12,
        batch_size=2,
        val_sets=[],
        benchmarks=[],
        updates_per_epoch=max_steps,
    )
    every_2 = ModelCheckpoint(
        dirpath=tmp_path, filename="step{step}", every_n_train_steps=2, save_top_k=-1
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        callbacks=[*callbacks, every_2],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = SRLitModule(EDSR(2, 1, 8))
    trainer.fit(module, datamodule=dm)
    return trainer, module


def test_divergence_stops_the_run_and_the_last_good_checkpoint_survives(
    tmp_path, data_root, cache_dir
):
    guard = DivergenceGuard(check_every_n_steps=1)
    with pytest.raises(DivergenceError, match="non-finite training loss at step 6"):
        tiny_fit(tmp_path, data_root, cache_dir, [BlowUpAt(5), guard])
    steps = {
        p: torch.load(p, map_location="cpu", weights_only=True) for p in tmp_path.glob("*.ckpt")
    }
    newest = max(steps.values(), key=lambda c: c["global_step"])
    assert newest["global_step"] == 4  # the step-6 checkpoint was not written on the way out
    assert all(v.isfinite().all() for v in newest["state_dict"].values() if v.is_floating_point())


def test_skip_mode_drops_a_non_finite_step_and_training_goes_on(tmp_path, data_root, cache_dir):
    class Snapshot(L.Callback):  # the trained weights just before and after step 4
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if trainer.global_step == 3:
                self.before = {k: v.clone() for k, v in pl_module.net.state_dict().items()}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 4:
                self.after = {k: v.clone() for k, v in pl_module.net.state_dict().items()}

    guard, snap = DivergenceGuard(action="skip"), Snapshot()
    callbacks = [snap, BlowUpAt(3, once=True), guard]
    trainer, module = tiny_fit(tmp_path, data_root, cache_dir, callbacks, max_steps=8)
    assert trainer.global_step == 8 and guard.skipped == 1  # 4 more steps after the bad one
    for key, value in snap.before.items():  # step 4 changed nothing
        assert torch.equal(snap.after[key], value), key
    assert all(v.isfinite().all() for v in module.net.state_dict().values())


def test_skip_mode_stops_a_run_that_keeps_diverging(tmp_path, data_root, cache_dir):
    guard = DivergenceGuard(action="skip", max_skipped=3)
    with pytest.raises(DivergenceError, match="non-finite gradients at 4 steps in a row"):
        tiny_fit(tmp_path, data_root, cache_dir, [BlowUpAt(5), guard])
    with pytest.raises(ValueError, match=r"divergence_guard.action='pause'.*\['stop', 'skip'\]"):
        DivergenceGuard(action="pause")
