"""``trainer.precision`` must keep the weights in fp32: validation, the test and eval.py run the
network in fp32 (core.inference.super_resolve), which a precision that casts the weights
(bf16-true, 16-true, 64-true, transformer-engine) cannot run. train.py refuses one before
training, naming the key, its value and the allowed values."""

from __future__ import annotations

import re

import pytest
from helpers import compose_config, hydra_config_cleared, run_train_in_process, tiny_args

from sr_lightning.config.rules import PRECISIONS, refuse_precision_that_casts_the_weights

ALLOWED = "allowed values are ['32-true', '32', 'bf16-mixed', 'bf16', '16-mixed', '16']"


def test_bf16_true_is_refused_before_training(tmp_path, sample_cache):
    run = tmp_path / "run"
    message = f"trainer.precision='bf16-true': {ALLOWED}; a precision that casts the weights"
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        run_train_in_process([*tiny_args(sample_cache), "trainer.precision=bf16-true"], run)
    assert "fp32 evaluation" in str(refused.value)
    assert not list(run.glob("**/*.ckpt")) and not (run / "summary.json").exists()


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("16-true", "'16-true'"),
        ("64-true", "'64-true'"),
        ("64", "64"),  # Lightning's alias of 64-true (an int in the config)
        ("transformer-engine", "'transformer-engine'"),
        ("bf16-truee", "'bf16-truee'"),  # a typo is named the same way
    ],
)
def test_every_precision_that_casts_the_weights_is_refused(tmp_path, value, shown):
    with hydra_config_cleared():
        cfg = compose_config("train", [f"trainer.precision={value}"], tmp_path / "run")
        with pytest.raises(ValueError, match=re.escape(f"trainer.precision={shown}: {ALLOWED}")):
            refuse_precision_that_casts_the_weights(cfg)


@pytest.mark.parametrize("value", [*PRECISIONS, "null"])
def test_precisions_with_fp32_weights_pass(tmp_path, value):
    with hydra_config_cleared():
        cfg = compose_config("train", [f"trainer.precision={value}"], tmp_path / "run")
        refuse_precision_that_casts_the_weights(cfg)


@pytest.mark.parametrize("trainer", ["default", "gpu", "cpu", "ddp", "ddp_cpu", "slurm"])
def test_the_shipped_trainers_pass(tmp_path, trainer):
    with hydra_config_cleared():
        cfg = compose_config("train", [f"trainer={trainer}"], tmp_path / "run")
        refuse_precision_that_casts_the_weights(cfg)


@pytest.mark.parametrize(("conv", "expected"), [("ieee", False), ("tf32", True)])
def test_the_throughput_peak_reads_the_convolutions_tf32_setting(conv, expected):
    """callbacks.throughput measures its matmul in TF32 where fp32 convolutions run in TF32.
    torch's new setting (training/precision.py, evaluation) made the legacy getter raise:
    ``cudnn.allow_tf32`` with convolutions and RNNs set apart."""
    import torch

    from sr_lightning.core.inference import convs_in_tf32

    backends = torch.backends.cudnn
    saved = backends.conv.fp32_precision, backends.rnn.fp32_precision
    try:
        backends.conv.fp32_precision, backends.rnn.fp32_precision = conv, "tf32"
        if conv == "ieee":
            with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
                backends.allow_tf32  # noqa: B018  (what the callback read before)
        assert convs_in_tf32() is expected
    finally:
        backends.conv.fp32_precision, backends.rnn.fp32_precision = saved


@pytest.mark.slow
def test_train_py_prints_the_refusal_alone_and_exits_2(tmp_path, sample_cache):
    """As typed: one ``error:`` line naming the key, no Hydra traceback, exit code 2."""
    from helpers import train

    args = [*tiny_args(sample_cache), "trainer.precision=bf16-true", f"hydra.run.dir={tmp_path}"]
    refused = train(args, check=False)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"error: trainer.precision='bf16-true': {ALLOWED}" in refused.stderr
    assert "Traceback" not in refused.stderr and "HYDRA_FULL_ERROR" not in refused.stderr
