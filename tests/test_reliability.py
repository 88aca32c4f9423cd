"""Reliability, round two: no hang at exit, configs from Python, fail fast and by name,
batch jobs that survive one bad file, atomic run records."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO, compose_config, run_eval_in_process, tiny_args, train
from hydra.utils import instantiate
from PIL import Image

from sr_lightning.cli.upscale import main as upscale
from sr_lightning.config.rules import prepare_command_line


def python(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, outside the repository, without $PROJECT_ROOT."""
    clean = {k: v for k, v in os.environ.items() if k != "PROJECT_ROOT"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, "WANDB_MODE": "disabled", **env},
        cwd="/",
    )


COMPOSE = f"""
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
import sr_lightning
with initialize_config_dir(config_dir={str(REPO / "conf")!r}, version_base="1.3"):
    cfg = compose("train", overrides=OVERRIDES)
"""


# the point is a process that exits: the interpreter's exit handler must not hang on the workers
@pytest.mark.slow
def test_a_held_train_loader_with_workers_does_not_hang_at_exit(tmp_path):
    """A script takes batches from the data module's loader (2 workers) and returns: Python's
    exit handler SIGTERMs the daemonic workers, which must exit (they used to ignore it)."""
    overrides = ["experiment=quickstart", "data.num_workers=2", f"data.cache_dir={tmp_path}"]
    code = (
        COMPOSE.replace("OVERRIDES", repr(overrides))
        + """
dm = instantiate(cfg.data)
dm.prepare_data()
dm.setup("fit")
loader = iter(dm.train_dataloader())
for _ in range(3):
    batch = next(loader)
print("got", tuple(batch["lr"].shape), flush=True)
"""
    )
    start = time.time()
    proc = python(code, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "got (8, 3, 32, 32)" in proc.stdout
    assert time.time() - start < 30


def test_configs_instantiate_from_python_outside_the_repo(tmp_path, monkeypatch):
    """In this process, from another folder and without $PROJECT_ROOT: the root is the
    checkout, and the data module, the LitModule (init_from included) and its network come out
    of the config (the fresh-interpreter version is the slow test below)."""
    from sr_lightning.models import EDSR

    torch.save(EDSR(scale=2, n_resblocks=1, n_feats=8).state_dict(), tmp_path / "x2.pt")
    monkeypatch.delenv("PROJECT_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(
        "train",
        [
            "experiment=quickstart",
            "model.net.n_resblocks=1",
            "model.net.n_feats=8",
            f"model.init_from={tmp_path / 'x2.pt'}",
        ],
    )
    assert cfg.paths.root_dir == str(REPO), cfg.paths.root_dir
    dm, module = instantiate(cfg.data), instantiate(cfg.model)
    assert (type(dm).__name__, type(module).__name__, type(module.net).__name__) == (
        "SRDataModule",
        "SRLitModule",
        "EDSR",
    )
    assert dm.scales == [2] and module.hparams.optim["lr"] == 0.0005
    assert cfg.trainer.max_epochs == 8


# the point is a fresh interpreter that imported nothing but the public package (its resolvers)
@pytest.mark.slow
def test_configs_compose_and_instantiate_from_python(tmp_path):
    """As a notebook: no $PROJECT_ROOT, nothing imported but the public package; the data
    module, the LitModule (init_from included) and its network come out of the config."""
    from sr_lightning.models import EDSR

    torch.save(EDSR(scale=2, n_resblocks=1, n_feats=8).state_dict(), tmp_path / "x2.pt")
    overrides = [
        "experiment=quickstart",
        "model.net.n_resblocks=1",
        "model.net.n_feats=8",
        f"model.init_from={tmp_path / 'x2.pt'}",
    ]
    code = (
        COMPOSE.replace("OVERRIDES", repr(overrides))
        + f"""
from omegaconf import OmegaConf
assert cfg.paths.root_dir == {str(REPO)!r}, cfg.paths.root_dir
dm = instantiate(cfg.data)
module = instantiate(cfg.model)
print(type(dm).__name__, type(module).__name__, type(module.net).__name__, dm.scales,
      module.hparams.optim["lr"], cfg.trainer.max_epochs)
"""
    )
    proc = python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SRDataModule SRLitModule EDSR [2] 0.0005 8" in proc.stdout


@pytest.mark.slow
def test_a_wrong_data_root_for_the_test_sets_fails_before_training(tmp_path, cache_dir):
    run = tmp_path / "run"
    args = [*tiny_args(cache_dir), f"hydra.run.dir={run}", "data.benchmarks=[Set5]"]
    proc = train([*args, f"data.root={tmp_path / 'nowhere'}"], check=False)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said[-3000:]
    assert f"benchmark Set5 not found: expected images in {tmp_path / 'nowhere'}" in said
    assert "sr-download benchmark" in said and "Traceback" not in said
    assert not list((run / "checkpoints").glob("*.ckpt"))  # not a single update was made


def test_a_misspelt_key_on_the_command_line_gets_our_did_you_mean(capsys):
    """What train.py and eval.py do with sys.argv before Hydra sees it: exit code 2 and our
    did-you-mean, before Hydra's own advice could be printed."""
    commands = [
        ("train", ["train.py", "-m", "model.net.n_resblock=4,8"]),
        ("eval", ["eval.py", "model.net.n_resblock=4"]),
    ]
    for config_name, argv in commands:
        with pytest.raises(SystemExit) as exit_:
            prepare_command_line(config_name, argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, err
        assert "model.net.n_resblock: unknown key for sr_lightning.models.build_net" in err
        assert "did you mean 'n_resblocks'?" in err


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01 not a checkpoint",
        b"PK\x03\x04" + b"\x00" * 40,
        "truncated",
        bytes([0x80, 0x02, 0x65]) + bytes(range(7, 250, 5)),  # a pickle header, then noise
    ],
    ids=["random", "zip", "truncated", "pickle-noise"],
)
def test_a_corrupt_weights_file_says_it_is_not_a_checkpoint(tmp_path, data_root, capsys, content):
    from sr_lightning.models import EDSR

    weights = tmp_path / "w.pt"
    if content == "truncated":
        torch.save(EDSR(scale=2, n_resblocks=1, n_feats=8).state_dict(), weights)
        weights.write_bytes(weights.read_bytes()[:300])
    else:
        weights.write_bytes(content)
    src = data_root / "benchmark" / "Set5" / "LR_bicubic" / "X2" / "birdx2.png"
    assert upscale([str(src), "--weights", str(weights), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"error: {weights}: not a checkpoint" in err and "Traceback" not in err, err


def test_upscale_writes_every_good_file_and_counts_the_bad_ones(tmp_path, data_root, capsys):
    from sr_lightning.models import EDSR

    torch.save(EDSR(scale=2, n_resblocks=1, n_feats=8).state_dict(), tmp_path / "w.pt")
    lr = data_root / "benchmark" / "Set5" / "LR_bicubic" / "X2"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a_bird", "c_head"):
        Image.open(lr / f"{name[2:]}x2.png").save(inputs / f"{name}.png")
    (inputs / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert upscale([str(inputs), "--weights", str(tmp_path / "w.pt"), "--res-scale", "1",
                    "--out", str(tmp_path / "out")]) == 1  # fmt: skip
    said = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_bird_x2.png",
        "c_head_x2.png",
    ]
    errors = [ln for ln in said.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(inputs / "b_broken.png") in errors[0], said.err
    assert "Traceback" not in said.err
    assert "2 image(s) written" in said.out and "1 failed" in said.out, said.out
    assert upscale([str(inputs / "a_bird.png"), "--weights", str(tmp_path / "w.pt"), "--res-scale",
                 "1", "--out", str(tmp_path / "out2")]) == 0  # fmt: skip


def test_eval_names_a_corrupt_image_and_reports_no_number(tmp_path, data_root, capsys, caplog):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("baby", "bird"):
        Image.open(data_root / "benchmark" / "Set5" / "HR" / f"{name}.png").save(
            folder / f"{name}.png"
        )
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    out = tmp_path / "r.json"
    args = ["model=bicubic", f"data.benchmarks=[{folder}]", "data.scales=[2]",
            f"data.cache_dir={tmp_path / 'c'}", f"results_path={out}"]  # fmt: skip
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_:
        run_eval_in_process(args, tmp_path / "run")
    assert exit_.value.code == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"{folder / 'corrupt.png'}: cannot decode image" in error.getMessage()
    assert error.exc_info is None  # named in one line, no traceback logged
    said = capsys.readouterr()
    assert "| mine |" not in said.out + said.err and not out.exists()  # no partial average
