"""Progress in log files (training/callbacks/progress.py, training/console.py): a run writing to
a file (tee, nohup, a SLURM .out) shows its progress, ``train.log`` always has it, and a terminal
stays as quiet as it was (the progress bar only)."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import REPO, run_train_in_process, tiny_args

from sr_lightning.training.callbacks import ProgressLog
from sr_lightning.training.callbacks import progress as progress_module
from sr_lightning.training.callbacks.progress import duration
from sr_lightning.training.console import LOG_FORMAT, log_progress

# tiny_args: 2 epochs of 3 updates; a line every 2 updates
EVERY_2 = "callbacks.progress_log.every_n_updates=2"
TRAINING_LINE = re.compile(
    r"update (\d+)/6 \(\d+%\), epoch [12]/2, loss [0-9.e+-]+, [0-9.]+ images/s, lr [0-9.e-]+, "
    r"elapsed \S+, ETA \S+"
)
VALIDATION_LINE = re.compile(
    r"validation at update (\d+) \(epoch \d+, \S+\): sample x2 PSNR [0-9.]+ dB / SSIM [0-9.]+ "
    r"\(bicubic [0-9.]+ / [0-9.]+, [+-][0-9.]+ dB\); val/psnr [0-9.]+ dB, "
    r"(new best|best [0-9.]+ dB at step \d+)"
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _handler(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


@pytest.fixture
def hydra_like_logging(tmp_path):
    """The root logger as Hydra's job logging sets it up (INFO, a file handler), with two
    consoles: a pipe (not a terminal) and a terminal."""
    root = logging.getLogger()
    pipe, terminal = io.StringIO(), _Terminal()
    handlers = [
        _handler(logging.FileHandler(tmp_path / "train.log")),
        _handler(logging.StreamHandler(pipe)),
        _handler(logging.StreamHandler(terminal)),
    ]
    level = root.level
    root.setLevel(logging.INFO)
    for h in handlers:
        root.addHandler(h)
    try:
        yield SimpleNamespace(log=tmp_path / "train.log", pipe=pipe, terminal=terminal)
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(level)


def _check_train_log(text: str) -> None:
    """Periodic lines with the update and the loss, a validation line per validation with
    PSNR/SSIM beside bicubic's and the best so far, fit's best step, the test table with the
    paths written."""
    updates = [int(m.group(1)) for m in TRAINING_LINE.finditer(text)]
    assert updates == [2, 4, 6], text
    validations = [int(m.group(1)) for m in VALIDATION_LINE.finditer(text)]
    assert validations == [3, 6], text
    assert re.search(r"fit done at update 6 after \S+: best = step [36] \(val/psnr", text), text
    assert re.search(r"testing edsr 1x8 \(best = step [36]\) on sample x2 \(2 images\)", text)
    assert "testing bicubic on sample x2 (2 images)" in text
    table = text.index("results on the test sets:\n| set | scale | protocol | edsr 1x8 | bicubic |")
    assert "| sample | x2 |" in text[table:]
    assert re.search(r"results written to \S+results\.json", text[table:])
    assert re.search(r"per-image results written to \S+per_image\.csv", text[table:])


def test_train_log_has_progress_validation_and_the_final_table(
    tmp_path, sample_cache, hydra_like_logging, capsys
):
    """A tiny run in process, with the handlers Hydra's job logging installs: the log file
    holds every progress line and the table; a console that is not a terminal the progress
    lines (the table it printed already: not twice); a terminal none of them."""
    run = tmp_path / "run"
    run_train_in_process([*tiny_args(sample_cache), EVERY_2], run)
    _check_train_log(hydra_like_logging.log.read_text())
    # the best so far travels in the checkpoint: a resumed run's lines go on from it
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["callbacks"]["ProgressLog"]["best_step"] in (3, 6)
    pipe = hydra_like_logging.pipe.getvalue()
    assert [int(m.group(1)) for m in TRAINING_LINE.finditer(pipe)] == [2, 4, 6]
    assert len(VALIDATION_LINE.findall(pipe)) == 2 and "best = step" in pipe
    assert "results on the test sets" not in pipe and "results written to" not in pipe
    printed = capsys.readouterr().out
    assert printed.count("| sample | x2 |") == 1
    assert len(re.findall(r"^results written to", printed, re.M)) == 1
    terminal = hydra_like_logging.terminal.getvalue()
    assert "recipe: global batch" in terminal  # the run's other lines still show
    for line in ("update 2/6", "validation at", "fit done", "testing ", "results "):
        assert line not in terminal, line


@pytest.mark.slow
def test_a_run_with_stdout_in_a_file_shows_its_progress(tmp_path, sample_cache):
    """``train.py ... > out.txt``: the file gets the progress and validation lines as the run
    goes; ``train.log`` has them too, and the final table with the paths written."""
    run = tmp_path / "run"
    out = tmp_path / "out.txt"
    args = [*tiny_args(sample_cache), EVERY_2, f"hydra.run.dir={run}"]
    with open(out, "w") as f:
        proc = subprocess.run(
            [sys.executable, str(REPO / "train.py"), *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, "WANDB_MODE": "disabled"},
            cwd=REPO,
            timeout=300,
        )
    console = out.read_text()
    assert proc.returncode == 0, console[-3000:]
    assert [int(m.group(1)) for m in TRAINING_LINE.finditer(console)] == [2, 4, 6], console
    assert len(VALIDATION_LINE.findall(console)) == 2
    assert console.count("| sample | x2 |") == 1  # printed once, not logged to it again
    _check_train_log((run / "train.log").read_text())


# ---- the callback's own rules, without a run ---------------------------------------------------


def test_bad_intervals_are_refused():
    with pytest.raises(ValueError, match="every_n_updates=0"):
        ProgressLog(every_n_updates=0)
    with pytest.raises(ValueError, match="every_s=-1"):
        ProgressLog(every_s=-1)
    ProgressLog(every_n_updates=None, every_s=None)  # both off: validation lines only


def test_duration():
    assert [duration(s) for s in (0.4, 45, 192, 7500)] == ["0s", "45s", "3m12s", "2h05m"]
    assert duration(float("inf")) == "?"


def _fake_trainer(step: int = 0) -> SimpleNamespace:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    return SimpleNamespace(
        global_step=step,
        is_global_zero=True,
        world_size=2,
        current_epoch=0,
        max_epochs=4,
        estimated_stepping_batches=40,
        accumulate_grad_batches=1,
        optimizers=[opt],
        callbacks=[],
        sanity_checking=False,
        default_root_dir=".",
    )


def _train(callback, trainer, steps, clock, seconds_per_step=1.0):
    batch = {"lr": torch.zeros(4, 3, 2, 2)}
    for _ in range(steps):
        clock[0] += seconds_per_step
        trainer.global_step += 1
        loss = torch.tensor(float(trainer.global_step))
        callback.on_train_batch_end(trainer, None, {"loss": loss}, batch, 0)


def test_the_loss_is_read_only_at_a_line(monkeypatch, caplog):
    """No host sync per step: the window's loss is summed as a tensor and read once a line
    (every 5 updates here, time off); the line has the window's mean loss and the global
    images/s (both ranks)."""
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    reads = []
    item, to_float = torch.Tensor.item, torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "item", lambda t: reads.append(1) or item(t))
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: reads.append(1) or to_float(t))
    callback, trainer = ProgressLog(every_n_updates=5, every_s=None), _fake_trainer()
    callback.on_train_start(trainer, None)
    with caplog.at_level(logging.INFO, logger=progress_module.log.name):
        _train(callback, trainer, 10, clock)
    assert len(reads) == 2  # one per line, none per step
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("update 5/40 (12%), epoch 1/4, loss 3, 8.0 images/s, lr 0.0005")
    assert lines[1].startswith("update 10/40 (25%), epoch 1/4, loss 8, 8.0 images/s")
    assert lines[1].endswith("elapsed 10s, ETA 30s")


def test_a_line_every_minute_when_updates_are_slow(monkeypatch, caplog):
    """Whichever comes first: 100 updates, or 60 s (20 s an update: every third update)."""
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    callback, trainer = ProgressLog(every_n_updates=100, every_s=60), _fake_trainer()
    callback.on_train_start(trainer, None)
    with caplog.at_level(logging.INFO, logger=progress_module.log.name):
        _train(callback, trainer, 7, clock, seconds_per_step=20.0)
    updates = [int(r.getMessage().split()[1].split("/")[0]) for r in caplog.records]
    assert updates == [3, 6]


def test_only_rank_zero_logs(monkeypatch, caplog):
    callback, trainer = ProgressLog(every_n_updates=1), _fake_trainer()
    trainer.is_global_zero = False
    callback.on_train_start(trainer, None)
    with caplog.at_level(logging.INFO, logger=progress_module.log.name):
        _train(callback, trainer, 3, [0.0])
    assert not caplog.records


def test_routes(hydra_like_logging):
    """A progress line: files and pipes, not a terminal; a printed one: files only; any other
    line: everywhere, as before."""
    log = logging.getLogger("sr_lightning.test_routes")
    log_progress(log, "progress %d", 1)
    log_progress(log, "table %d", 2, printed=True)
    log.info("plain %d", 3)
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = hydra_like_logging.log.read_text()
    assert "progress 1" in text and "table 2" in text and "plain 3" in text
    pipe = hydra_like_logging.pipe.getvalue()
    assert "progress 1" in pipe and "table 2" not in pipe and "plain 3" in pipe
    terminal = hydra_like_logging.terminal.getvalue()
    assert "progress 1" not in terminal and "table 2" not in terminal and "plain 3" in terminal
