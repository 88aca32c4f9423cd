"""``time/train_minutes`` in history.csv: the training minutes without validation, beside
``time/minutes`` (validations included) at each validation, and carried across a resume."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import run_train_in_process, tiny_args

from sr_lightning.training.callbacks import MetricHistory

PAUSE = 0.1  # seconds per step (3 an epoch) and per validation batch (2 photos)


class Slow(L.Callback):
    """Each epoch trains for >= 0.3 s and validates for >= 0.2 s."""

    def on_train_batch_end(self, *args) -> None:
        time.sleep(PAUSE)

    def on_validation_batch_end(self, *args) -> None:
        time.sleep(PAUSE)


def args(cache: Path) -> list[str]:
    return [
        *tiny_args(cache),  # 2 epochs of 3 updates: a validation at steps 3 and 6
        "data.val_sets=[sample]",
        "test_after_fit=false",
        "+callbacks.slow._target_=test_train_minutes.Slow",
    ]


def clocks(run: Path) -> list[tuple[int, float, float]]:
    """``(step, minutes, train_minutes)`` of each validation row of history.csv."""
    with open(run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    minutes = {int(r["step"]): float(r["value"]) for r in rows if r["key"] == "time/minutes"}
    train = {int(r["step"]): float(r["value"]) for r in rows if r["key"] == "time/train_minutes"}
    assert minutes.keys() == train.keys()
    return [(s, minutes[s], train[s]) for s in sorted(minutes)]


def test_train_minutes_leave_out_the_validations(tmp_path, sample_cache):
    run = tmp_path / "run"
    run_train_in_process(args(sample_cache), run)
    rows = clocks(run)
    assert [s for s, _, _ in rows] == [3, 6]
    for i, (_, minutes, train) in enumerate(rows, start=1):
        assert 0 < train < minutes
        assert train >= i * 3 * PAUSE / 60 - 1e-4  # the steps so far
        # every validation so far took >= 2 x PAUSE (the current one up to its end)
        assert minutes - train >= i * 2 * PAUSE / 60 - 1e-4
    (_, _, train_1), (_, _, train_2) = rows
    assert train_2 - train_1 >= 3 * PAUSE / 60 - 1e-4  # the second epoch's steps
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if "MetricHistory" in k)
    assert 0 < state["train_minutes"] < state["minutes"]


def test_train_minutes_go_on_across_a_resume(tmp_path, sample_cache):
    """Resumed from the epoch-1 checkpoint: both clocks start from the checkpoint's values."""
    run = tmp_path / "run"
    run_train_in_process([*args(sample_cache), "trainer.max_epochs=1"], run)
    [(_, minutes_1, train_1)] = clocks(run)
    ckpt = run / "checkpoints" / "last.ckpt"
    run_train_in_process([*args(sample_cache), f"ckpt_path={ckpt}"], run)
    rows = clocks(run)
    assert [s for s, _, _ in rows] == [3, 6]
    (_, minutes_2, train_2) = rows[1]
    assert train_1 < train_2 < minutes_2 and minutes_1 < minutes_2
    assert train_2 - train_1 >= 3 * PAUSE / 60 - 1e-4
    assert minutes_2 - train_2 >= 2 * 2 * PAUSE / 60 - 1e-4  # both validations left out


def test_clocks_of_a_checkpoint_from_before_train_minutes():
    """An older checkpoint has no ``train_minutes``: its minutes (validations included) stand
    in, so that train_minutes <= minutes holds after the resume."""
    history = MetricHistory(run_dir="unused")
    history.load_state_dict({"best": {}, "final": {}, "minutes": 2.5})
    assert history.clocks() == (2.5, 2.5)
    history.load_state_dict({"best": {}, "final": {}, "minutes": 2.5, "train_minutes": 2.0})
    assert history.clocks() == (2.5, 2.0)


@pytest.mark.parametrize("validating", [False, True])
def test_a_checkpoint_taken_during_validation_leaves_it_out(validating):
    history = MetricHistory(run_dir="unused")
    history._started = time.monotonic() - 60  # trained for a minute
    if validating:
        history._validating_since = time.monotonic() - 30  # half of it in this validation
    minutes, train = history.state_dict()["minutes"], history.state_dict()["train_minutes"]
    assert minutes == pytest.approx(1.0, abs=0.01)
    assert train == pytest.approx(0.5 if validating else 1.0, abs=0.01)
