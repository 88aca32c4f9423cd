"""A SIGTERM that stops a validation half-way with ``optim.ema_decay`` on: the module then holds
the averaged weights (EMAWeightAveraging swaps them in for validation), yet ``preempted.ckpt``
holds the raw weights as ``current_model_state`` and the averaged ones as ``state_dict``, and
the resume from it ends where the uninterrupted run ends (in process: the fast tier)."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import run_train_in_process, tiny_args
from lightning.pytorch.callbacks import WeightAveraging

from sr_lightning.training.callbacks import Resumable

UPDATES = 3  # per epoch: the first validation is at step 3
SEEN: dict[str, dict] = {}  # what the module and the averaged model held as validation began


class StopDuringValidation(L.Callback):
    """SIGTERM this process so that the validation after step ``step`` stops half-way:

    - ``flag``: the signal during the step before it; Resumable raises Lightning's SIGTERM
      flag at that step's end, and Lightning's validation loop stops after its first batch;
    - ``worker``: the signal during the validation, then the error of a data worker killed by
      the same signal, raised after the first validation batch.
    """

    def __init__(self, step: int, how: str):
        self.step, self.how = step, how

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.how == "flag" and trainer.global_step == self.step - 1:
            signal.raise_signal(signal.SIGTERM)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.global_step != self.step:
            return
        ema = next(c for c in trainer.callbacks if isinstance(c, WeightAveraging))
        SEEN["raw"] = clone(pl_module.state_dict())
        SEEN["ema"] = clone(ema._average_model.module.state_dict())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *a) -> None:
        if trainer.global_step != self.step or self.how != "worker":
            return
        SEEN["swapped_in"] = clone(pl_module.state_dict())  # what the module holds now
        signal.raise_signal(signal.SIGTERM)
        raise RuntimeError("DataLoader worker (pid 12345) is killed by signal: Terminated.")


def clone(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


def assert_same(a: dict, b: dict, exact: bool = True) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def args(cache: Path) -> list[str]:
    return [
        *tiny_args(cache),
        "data.num_workers=0",
        "data.val_sets=[sample]",  # 2 photos: 2 validation batches
        f"data.updates_per_epoch={UPDATES}",
        "optim.ema_decay=0.5",  # far from the raw weights after a few steps
        "callbacks.step_checkpoint.every_n_train_steps=100",
        "test_after_fit=false",
    ]


def last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample_cache) -> Path:
    run = tmp_path_factory.mktemp("ema_reference") / "run"
    run_train_in_process(args(sample_cache), run)
    return run


@pytest.mark.parametrize("how", ["flag", "worker"])
def test_preempted_checkpoint_holds_raw_and_averaged_weights_unswapped(
    tmp_path, sample_cache, reference, how
):
    SEEN.clear()
    run = tmp_path / "run"
    stop = [
        "+callbacks.stop._target_=test_preempt_ema.StopDuringValidation",
        f"+callbacks.stop.step={UPDATES}",
        f"+callbacks.stop.how={how}",
    ]
    with pytest.raises(SystemExit) as exit_info:
        run_train_in_process([*args(sample_cache), *stop], run)
    assert exit_info.value.code == 143  # pre-empted, not failed
    preempted = run / "checkpoints" / "preempted.ckpt"
    ckpt = torch.load(preempted, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == UPDATES
    assert differ(SEEN["raw"], SEEN["ema"])  # the test tells the two apart
    if how == "worker":  # the validation ran on the averaged weights when it stopped
        assert_same(SEEN["swapped_in"], SEEN["ema"])
    assert_same(ckpt["current_model_state"], SEEN["raw"])  # the raw weights, raw
    assert_same(ckpt["state_dict"], SEEN["ema"])  # the averaged weights, averaged
    assert (run / "summary.json").is_file()

    SEEN.clear()
    run_train_in_process([*args(sample_cache), f"ckpt_path={preempted}"], run)
    got, ref = last(run), last(reference)
    assert got["global_step"] == ref["global_step"] == 2 * UPDATES
    assert_same(got["current_model_state"], ref["current_model_state"], exact=False)
    assert_same(got["state_dict"], ref["state_dict"], exact=False)


class StopDuringTest(L.Callback):
    """SIGTERM during the test after fit (Lightning's own handler then: it sets the flag)."""

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *a) -> None:
        signal.raise_signal(signal.SIGTERM)


def test_a_stop_during_the_test_after_fit_leaves_the_checkpoints_of_fit(tmp_path, sample_cache):
    """The module then holds the best checkpoint's averaged weights (cli.train.test_and_report):
    no preempted.ckpt, whose raw weights they would become; ``ckpt_path=last`` takes the
    epoch-end last.ckpt, the raw and averaged weights where fit ended."""
    run = tmp_path / "run"
    overrides = [
        *args(sample_cache),
        "test_after_fit=true",
        "+callbacks.stop._target_=test_preempt_ema.StopDuringTest",
    ]
    with pytest.raises(SystemExit) as exit_info:
        run_train_in_process(overrides, run)
    assert exit_info.value.code == 143
    assert not (run / "checkpoints" / "preempted.ckpt").exists()
    assert last(run)["global_step"] == 2 * UPDATES


def test_a_stop_outside_validation_saves_without_swapping(tmp_path):
    """Resumable._raw_weights_in_place: no validation under way, nothing to put back; the
    checksum of a validation that has not swapped yet matches the module's weights."""
    module = torch.nn.Linear(2, 2)
    callback = Resumable(str(tmp_path))
    assert callback._raw_weights_in_place(trainer=None, pl_module=module)
    callback._raw_checksum = Resumable._checksum(module)
    assert callback._raw_weights_in_place(trainer=None, pl_module=module)
