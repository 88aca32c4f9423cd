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
