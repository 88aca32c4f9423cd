"""Logging failures do not kill training: W&B unreachable or refusing -> offline with a warning;
a full disk under a log (metrics.csv, hparams.yaml, history.csv, W&B media) -> one warning per
file, training and checkpoints unaffected."""

from __future__ import annotations

import errno
import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
import torch
from helpers import REPO

import sr_lightning.training.loggers as loggers_mod
from sr_lightning.training.loggers import WandbLogger

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real key


def closed_port() -> int:
    """A localhost port nobody listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clean_wandb():
    """wandb in this process, with its global settings (read from the environment once, then
    updated by each wandb.init) reset before and after the test."""
    import wandb

    wandb.teardown()
    yield wandb
    if wandb.run is not None:
        wandb.finish()
    wandb.teardown()


@pytest.mark.slow
def test_train_falls_back_to_offline_when_wandb_is_unreachable(tmp_path):
    pytest.importorskip("skimage", reason="data=sample needs scikit-image (the [sample] extra)")
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("WANDB_", "HTTP"))}
    env.update(
        HOME=str(tmp_path),  # no ~/.netrc, no ~/.config/wandb/settings of the machine's user
        WANDB_API_KEY=FAKE_KEY,  # -> online mode
        WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
        NO_PROXY="127.0.0.1,localhost",
    )
    args = [
        "experiment=smoke",
        "logger=wandb",
        "model.net.n_resblocks=1",
        "model.net.n_feats=8",
        "data.patch_size=12",
        "data.batch_size=2",
        "data.updates_per_epoch=3",
        "trainer.max_epochs=1",
        "trainer.log_every_n_steps=1",
        "test_after_fit=false",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run}",
    ]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=REPO,
    )
    wall = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "logging offline instead" in out and "Connection refused" in out, out[-5000:]
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("run-*.wandb"))
    assert f"wandb sync {offline[0]}" in out
    assert not list((run / "wandb").glob("run-*"))  # no online run was attempted
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    # the whole run (imports, 3 steps, validation) takes ~20 s here; wandb's own retries of an
    # unreachable server take 90 s (its init_timeout) and then raise
    assert wall < 75, f"train.py took {wall:.0f} s"


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A W&B server that refuses every request (a wrong API key)."""

    requests = 0

    def _answer(self) -> None:
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"errors": [{"message": "invalid API key"}]}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args) -> None:
        pass


def test_wandb_server_refusing_the_key_falls_back_to_offline(tmp_path, caplog, clean_wandb):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    logger = WandbLogger(
        project="faults",
        save_dir=str(tmp_path),
        mode="online",
        settings={"base_url": url, "api_key": FAKE_KEY},
        init_timeout=10,
    )
    start = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="sr_lightning"):
            run = logger.experiment
        wall = time.monotonic() - start
        run.log({"x": 1.0})
        assert _Refusing.requests > 0  # it did try online
        assert run.settings.mode == "offline" and "offline-run-" in run.dir
    finally:
        # wandb's service exits while the server still answers: its last requests get their
        # 401 at once (against a server that is gone it retries them for ~4 s)
        clean_wandb.finish()
        clean_wandb.teardown()
        server.shutdown()
    assert wall < 30, wall
    [warning] = [r.getMessage() for r in caplog.records if "offline instead" in r.getMessage()]
    assert "wandb.init failed" in warning and "wandb sync " in warning


@pytest.mark.parametrize(
    ("kwargs", "env_mode"),
    [({"mode": "disabled"}, None), ({"mode": "offline"}, None), ({"offline": True}, None),
     ({}, "offline"), ({}, "dryrun")],
)  # fmt: skip
def test_offline_and_disabled_never_touch_the_network(
    tmp_path, monkeypatch, clean_wandb, kwargs, env_mode
):
    calls = []
    monkeypatch.setattr(loggers_mod.socket, "create_connection", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(loggers_mod, "_wandb_base_url", lambda s: calls.append(s))
    if env_mode:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    else:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = WandbLogger(project="faults", save_dir=str(tmp_path), **kwargs)
    logger.experiment.log({"x": 1.0})
    assert calls == []


def test_online_probes_first_and_falls_back_without_calling_wandb_online(
    tmp_path, monkeypatch, caplog, clean_wandb
):
    def refuse(address, timeout=None):
        calls.append(address)
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    calls = []
    monkeypatch.setattr(loggers_mod.socket, "create_connection", refuse)
    monkeypatch.setattr(loggers_mod.urllib.request, "getproxies", dict)  # no proxy
    logger = WandbLogger(
        project="faults", save_dir=str(tmp_path), mode="online",
        settings={"base_url": "https://wandb.example.org", "api_key": FAKE_KEY},
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="sr_lightning"):
        run = logger.experiment
    assert calls == [("wandb.example.org", 443)]
    assert run.settings.mode == "offline"
    assert any("wandb.example.org:443" in r.getMessage() for r in caplog.records)


def test_probe_gives_up_on_a_host_that_does_not_answer(monkeypatch):
    def hang(*args, **kwargs) -> socket.socket:
        time.sleep(5)  # a host that drops packets: the connect only returns after the timeout
        return socket.socket()

    monkeypatch.setattr(loggers_mod.socket, "create_connection", hang)
    monkeypatch.setattr(loggers_mod.urllib.request, "getproxies", dict)
    start = time.monotonic()
    reason = loggers_mod.probe_tcp("https://wandb.example.org", timeout=0.3)
    assert time.monotonic() - start < 2
    assert reason == "no answer from wandb.example.org:443 within 0.3 s"


def test_disk_full_logs_are_reported_and_training_goes_on(
    tmp_path, data_root, cache_dir, monkeypatch, caplog, clean_wandb
):
    """metrics.csv, hparams.yaml and history.csv are links to /dev/full (every write fails with
    ENOSPC from the kernel); W&B media files fail with ENOSPC. Checkpoints are on a good disk."""
    import lightning as L
    from helpers import make_dm
    from lightning.pytorch.callbacks import ModelCheckpoint

    from sr_lightning.models import EDSR
    from sr_lightning.training.callbacks import AtomicCheckpointIO, MetricHistory
    from sr_lightning.training.lit_module import SRLitModule
    from sr_lightning.training.loggers import CSVLogger

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    run = tmp_path / "run"
    (run / "csv").mkdir(parents=True)
    full = ["csv/metrics.csv", "csv/hparams.yaml", "history.csv"]
    for name in full:
        (run / name).symlink_to("/dev/full")

    def image_on_full_disk(*args, **kwargs):
        path = str(tmp_path / "media" / f"{time.monotonic_ns()}.png")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(clean_wandb, "Image", image_on_full_disk)
    dm = make_dm(data_root, cache_dir, patch_size=12, batch_size=2, updates_per_epoch=3)
    module = SRLitModule(EDSR(scale=2, n_resblocks=1, n_feats=8), n_image_panels=2)
    wandb_logger = WandbLogger(project="faults", save_dir=str(run), mode="offline")
    csv_logger = CSVLogger(save_dir=str(run), name="csv", version="", flush_logs_every_n_steps=1)
    history = MetricHistory(run_dir=str(run))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(run),
        plugins=[AtomicCheckpointIO()],
        logger=[wandb_logger, csv_logger],  # the first one gets the image panels
        callbacks=[
            ModelCheckpoint(
                dirpath=str(run / "checkpoints"),
                filename="best",
                monitor="val/psnr",
                mode="max",
                save_last=True,
            ),
            history,
        ],
    )
    with caplog.at_level(logging.WARNING, logger="sr_lightning"):
        trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 6 and trainer.state.finished

    warnings = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    for name in full:  # one warning per file, although every write failed
        named = [w for w in warnings if w.split(" (")[0].endswith(str(run / name))]
        assert len(named) == 1, warnings
        assert "disk full? training continues, this log is incomplete" in named[0]
    assert history.write_errors.count > 2  # each failure counted, one reported
    media = [w for w in warnings if w.startswith("W&B log")]
    assert len(media) == 1 and str(tmp_path / "media") in media[0], warnings
    assert wandb_logger.write_errors.count == 4  # 2 panels x 2 validations

    for name in ("last.ckpt", "best.ckpt"):
        ckpt = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == 6
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert history.final and history.best  # summary.json still gets its numbers


def in_forked_child(fn, *args) -> dict:
    """``fn(*args)`` (a JSON-able dict) in a forked child, so that its resource limits and
    signal dispositions never reach pytest; an exception comes back as ``{"error": ...}``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            os.close(read)
            try:
                result = fn(*args)
            except BaseException:
                result = {"error": traceback.format_exc()}
            with os.fdopen(write, "w") as f:
                json.dump(result, f)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return json.loads(out)


def _fill_past_the_limit(log_dir: Path) -> dict:
    """In a forked child: writes under RLIMIT_FSIZE; returns what happened."""
    import resource
    import signal
    from types import SimpleNamespace

    from sr_lightning.training.callbacks import MetricHistory
    from sr_lightning.training.loggers import _AppendingWriter

    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("sr_lightning").addHandler(handler)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    writer = _AppendingWriter(str(log_dir))
    writer.log_metrics({"loss": 0.5}, 0)
    writer.save()
    history = MetricHistory(str(log_dir))
    history._append(SimpleNamespace(is_global_zero=True, global_step=1), {"train/loss": 0.5})
    files = [Path(writer.metrics_file_path), history.path]
    before = [p.read_text() for p in files]
    limit = max(p.stat().st_size for p in files) + 40
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    for step in range(1, 20):  # an append that stops halfway
        writer.log_metrics({"loss": 0.25}, step)
    writer.save()
    for step in range(20, 30):  # a new key: the file is rewritten (to a temporary file)
        writer.log_metrics({"loss": 0.2, "val/psnr": 30.0}, step)
    writer.save()
    rows = {f"train/loss{i}": 0.123456789 for i in range(9)}
    for step in (2, 3):
        history._append(SimpleNamespace(is_global_zero=True, global_step=step), rows)
    return {
        "same": before == [p.read_text() for p in files],
        "errors": [writer.write_errors.count, history.write_errors.count],
        "files": sorted(os.listdir(log_dir)),
        "warnings": warnings,
    }


def test_efbig_cuts_a_failed_append_back_and_keeps_the_old_file(tmp_path):
    """Real EFBIG from the kernel (RLIMIT_FSIZE, in a forked child): an append that fails
    halfway is cut back to the last whole row, a failed header rewrite leaves the old file;
    one warning per file."""
    result = in_forked_child(_fill_past_the_limit, tmp_path)
    assert "error" not in result, result.get("error")
    assert result["same"], result  # byte-identical: no half row, no lost rows
    assert result["errors"] == [2, 2]
    assert result["files"] == ["history.csv", "metrics.csv"]  # no temporary file left
    warnings = result["warnings"]
    assert len(warnings) == 2, warnings
    assert all("File too large" in w and "disk full? training continues" in w for w in warnings)
    assert str(tmp_path / "metrics.csv") in warnings[0]
    assert str(tmp_path / "history.csv") in warnings[1]


def _rewrite_past_the_limit(folder: Path) -> dict:
    """In a forked child: the run records (summary.json, config.yaml, a CSV rewritten on
    resume) rewritten under RLIMIT_FSIZE; returns what happened."""
    import resource
    import signal

    from sr_lightning.runs.records import write_atomically
    from sr_lightning.training.callbacks.resume import drop_csv_rows_from

    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("sr_lightning").addHandler(handler)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    summary, config, history = folder / "summary.json", folder / "config.yaml", folder / "h.csv"
    assert write_atomically(summary, '{"status": "completed"}\n')
    assert write_atomically(config, "seed: 0\n")
    history.write_text("step,key,value\n" + "".join(f"{i},loss,0.5\n" for i in range(60)))
    before = {p.name: p.read_text() for p in (summary, config, history)}
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))
    wrote = [
        write_atomically(summary, '{"status": "failed", "error": "' + "x" * 200 + '"}\n'),
        write_atomically(config, "seed: 0\n" + "# comment\n" * 20),
        write_atomically(config, "seed: 1\n" + "# comment\n" * 20),  # reported once per file
    ]
    dropped = drop_csv_rows_from(history, "step", 30)
    return {
        "wrote": wrote,
        "dropped": dropped,
        "same": before == {p.name: p.read_text() for p in (summary, config, history)},
        "files": sorted(os.listdir(folder)),
        "warnings": warnings,
    }


def test_run_records_are_atomic_and_survive_a_full_disk(tmp_path):
    """summary.json, config.yaml and the resume-time CSV rewrite go through a temporary file:
    with the disk full (real EFBIG) the old file stays whole, one warning per file."""
    result = in_forked_child(_rewrite_past_the_limit, tmp_path)
    assert "error" not in result, result.get("error")
    assert result["wrote"] == [False, False, False] and result["dropped"] == 0
    assert result["same"], result
    assert result["files"] == ["config.yaml", "h.csv", "summary.json"]  # no temporary file
    warnings = result["warnings"]
    assert len(warnings) == 3, warnings
    assert all("run record: cannot write" in w and "disk full?" in w for w in warnings)
