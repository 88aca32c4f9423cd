"""``last.ckpt`` holds the newest validation's state whether or not it improved (Lightning
2.6's ``save_last`` writes it only when a top-k checkpoint was saved at that step)."""

from __future__ import annotations

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
