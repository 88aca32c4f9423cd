"""``last.ckpt`` holds the newest validation's state whether or not it improved (Lightning
2.6's ``save_last`` writes it only when a top-k checkpoint was saved at that step)."""

from __future__ import annotations

import pytest
import torch
from helpers import run_train_in_process, tiny_args

from sr_lightning.runs.folder import RunFolder


def test_last_ckpt_follows_every_validation_even_without_improvement(tmp_path, sample_cache):
    run = tmp_path / "run"
    # lr 0: every validation scores the same, so only the first one is a new best
    run_train_in_process([*tiny_args(sample_cache), "optim.lr=0", "test_after_fit=false"], run)
    folder = RunFolder(run)
    last = torch.load(folder.checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(folder.best_checkpoint(), map_location="cpu", weights_only=False)
    assert best["global_step"] == 3  # the first epoch's validation: never beaten
    assert last["global_step"] == 6  # 2 epochs of 3 updates: the final validation's
    assert sorted(p.name for p in folder.checkpoints.glob("last*.ckpt")) == ["last.ckpt"]


def test_best_values_are_one_validations_the_one_the_best_checkpoint_holds(tmp_path):
    """summary.json's ``best``: every metric of the validation with the highest ``val/psnr``
    (a later validation's higher SSIM is not mixed in)."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import ModelCheckpoint

    from sr_lightning.training.callbacks.history import MetricHistory

    history = MetricHistory(str(tmp_path))
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        checkpoint_callbacks=[
            ModelCheckpoint(monitor="step", mode="max"),
            ModelCheckpoint(monitor="val/psnr", mode="max"),
        ],
    )
    for step, psnr, ssim in [(1, 30.0, 0.90), (2, 31.0, 0.91), (3, 30.5, 0.95)]:
        trainer.global_step = step
        trainer.callback_metrics = {
            "val/psnr": torch.tensor(psnr),
            "val/sample/x2/ssim": torch.tensor(ssim),
        }
        history.on_validation_end(trainer, None)
    assert history.best == {"val/psnr": 31.0, "val/sample/x2/ssim": pytest.approx(0.91)}
    assert history.final["val/sample/x2/ssim"] == pytest.approx(0.95)
