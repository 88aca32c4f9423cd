"""train.py refuses a bad config before a single update, naming the value (in process: the
fast tier; an error's exit code and message on the command line: test_config_check.py,
test_reliability.py)."""

from __future__ import annotations

import re

import pytest
from helpers import run_train_in_process, tiny_args


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["model=edsr_large"], "Could not find 'model/edsr_large'"),
        (["model=mdsr_baseline", "data.scales=[2,8]"], "MDSR scale=8 is not supported"),
        (["data.patch_size=0"], "data.patch_size=0 must be a positive integer"),
        (
            ["data.batch_size=5", "trainer=ddp_cpu"],
            "data.batch_size=5 (the global batch) is not divisible by trainer.devices x "
            "trainer.num_nodes = 2",
        ),
        (  # a digit string is a device count too (Lightning accepts it)
            ["data.batch_size=5", "trainer=ddp_cpu", 'trainer.devices="2"'],
            "data.batch_size=5 (the global batch) is not divisible by trainer.devices x "
            "trainer.num_nodes = 2",
        ),
        (["model.net.norm=layer"], "model.net.norm='layer' is not supported"),
        (["model=bicubic"], "model=bicubic has nothing to train"),
    ],
    ids=["unknown-model", "mdsr-scale", "patch-size", "batch-split", "batch-split-str", "norm",
         "bicubic"],
)  # fmt: skip
def test_bad_config_fails_before_training(tmp_path, sample_cache, override, message):
    run = tmp_path / "run"
    with pytest.raises(Exception, match=re.escape(message)):
        run_train_in_process([*tiny_args(sample_cache), *override], run)
    assert not (run / "checkpoints" / "last.ckpt").exists()
    assert not list(run.glob("**/*.ckpt"))  # not a single update was saved
