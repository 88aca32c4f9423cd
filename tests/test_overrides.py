"""Each private API of Lightning, W&B, PIL and torch that our code relies on, pinned by a test:
one of these fails when an upgrade changes what the override depends on (the versions are
bounded in pyproject.toml), and the upstream behaviour an override works around is checked
too, so that an override the libraries no longer need shows up as a failure to remove it."""

from __future__ import annotations

import inspect
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def test_lightning_csv_writer_still_deletes_metrics_csv_and_has_our_hooks(tmp_path):
    """loggers._AppendingWriter overrides ExperimentWriter._check_log_dir_exists (Lightning
    deletes an existing metrics.csv: a resumed run lost its history) and reimplements save()
    on its ``metrics``/``metrics_keys``/``metrics_file_path`` attributes."""
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    (tmp_path / "metrics.csv").write_text("step,loss\n0,1.0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        writer = ExperimentWriter(log_dir=str(tmp_path))
    assert not (tmp_path / "metrics.csv").exists()  # still deleted: the override is needed
    assert writer.metrics == [] and writer.metrics_keys == []
    assert writer.metrics_file_path == str(tmp_path / "metrics.csv")
    assert ExperimentWriter.NAME_METRICS_FILE == "metrics.csv"
    assert ExperimentWriter.NAME_HPARAMS_FILE == "hparams.yaml"
    for name in ("_check_log_dir_exists", "log_hparams", "save", "log_metrics"):
        assert callable(getattr(ExperimentWriter, name)), name


def test_lightning_csv_logger_experiment_attributes(tmp_path):
    """loggers.CSVLogger.experiment builds the writer from ``_experiment``, ``_fs``,
    ``root_dir`` and ``log_dir``, under ``rank_zero_experiment``."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.logger import rank_zero_experiment  # noqa: F401

    logger = CSVLogger(save_dir=str(tmp_path), name="csv", version="")
    assert logger._experiment is None and hasattr(logger, "_fs")
    assert Path(logger.root_dir) == Path(logger.log_dir) == tmp_path / "csv"
    assert isinstance(inspect.getattr_static(CSVLogger, "experiment"), property)


def test_lightning_wandb_logger_private_state(tmp_path):
    """loggers.WandbLogger reads and sets ``_offline``, ``_wandb_init`` (the wandb.init
    kwargs), ``_experiment`` and ``_log_model``, and calls Lightning's ``experiment`` getter
    (``WandbLogger.experiment.fget``) to create the run."""
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="p", save_dir=str(tmp_path), mode="offline", log_model=False)
    assert logger._offline is False and logger._experiment is None
    assert logger._wandb_init["mode"] == "offline" and logger._wandb_init["project"] == "p"
    assert logger._log_model is False
    assert callable(inspect.getattr_static(WandbLogger, "experiment").fget)
    assert logger._wandb_init["resume"] == "allow"  # a given id continues its run
    # a pickled copy (ddp_spawn) carries ``_attach_id``, which our experiment getter checks
    assert '"_attach_id"' in inspect.getsource(WandbLogger.__getstate__)


def test_wandb_settings_we_read():
    """loggers._wandb_base_url reads the resolved server from wandb's setup singleton, and
    settings objects are pydantic models (``model_fields_set``)."""
    import wandb
    from wandb.sdk import wandb_setup

    assert str(wandb_setup.singleton().settings.base_url).startswith("http")
    settings = wandb.Settings(init_timeout=5)
    assert "init_timeout" in settings.model_fields_set
    assert isinstance(inspect.getattr_static(type(settings), "sync_dir"), property)  # fallback


def png_16bit() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def test_pil_tile_layout_shows_16_bit_samples_before_decoding():
    """data/io.check_bit_depth reads ``im.tile[i][3]`` (the decoder args, first the raw mode)
    before ``load()`` to refuse 16-bit PNGs that PIL would narrow to 8 bits."""
    with Image.open(io.BytesIO(png_16bit())) as im:
        args = im.tile[0][3]
        rawmode = args if isinstance(args, str) else args[0]
        assert ";16" in rawmode, im.tile
    assert issubclass(Image.DecompressionBombWarning, Warning)
    assert Image.MAX_IMAGE_PIXELS and Image.MAX_IMAGE_PIXELS > 0


def test_torch_checkpoint_io_and_dynamo_errors():
    """callbacks.AtomicCheckpointIO overrides TorchCheckpointIO.save_checkpoint(checkpoint,
    path, storage_options); lit_module.CompiledOrEager catches TorchDynamoException."""
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    params = list(inspect.signature(TorchCheckpointIO.save_checkpoint).parameters)
    assert params == ["self", "checkpoint", "path", "storage_options"]
    assert issubclass(torch._dynamo.exc.TorchDynamoException, Exception)


def test_lightning_sigterm_and_interrupt_handling_we_build_on():
    """cli.run_train reads ``trainer.received_sigterm`` and ``trainer.interrupted``;
    Lightning turns Ctrl-C into ``sys.exit(1)`` after ``on_exception`` (status INTERRUPTED)."""
    import lightning as L
    from lightning.pytorch.trainer import call

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    assert trainer.received_sigterm is False and trainer.interrupted is False
    source = inspect.getsource(call._call_and_handle_interrupt)
    assert "except KeyboardInterrupt" in source and "sys.exit(1)" in source


@pytest.mark.parametrize("name", ["lightning", "wandb", "PIL"])
def test_installed_versions_are_inside_the_pins(name):
    """The pins in pyproject.toml hold for what is installed (make install resolves them)."""
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet

    spec = {"lightning": ">=2.4,<2.7", "wandb": ">=0.17,<0.32", "PIL": ">=10,<14"}[name]
    dist = {"PIL": "pillow"}.get(name, name)
    assert version(dist) in SpecifierSet(spec)


def test_lightning_sigterm_handler_still_needs_replacing_under_ddp():
    """callbacks.Resumable replaces Lightning's SIGTERM handler during fit and sets
    ``trainer._signal_connector.received_sigterm`` on every rank at once. Needed while
    Lightning's handler runs a collective inside the signal handler and forwards the signal
    to the other ranks (a job-wide SIGTERM then reaches a rank twice: mismatched broadcasts,
    a hang), and while each rank stops on its own flag at the end of its step."""
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
    from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

    requeue = inspect.getsource(_SignalConnector._slurm_sigusr_handler_fn)  # we call it
    assert "hpc_save_path" in requeue and '"scontrol", "requeue"' in requeue
    params = list(inspect.signature(_SignalConnector._slurm_sigusr_handler_fn).parameters)
    assert len(params) == 3  # (self, signum, frame)
    register = inspect.getsource(_SignalConnector.register_signal_handlers)
    assert "environment.requeue_signal" in register and "environment.auto_requeue" in register
    assert "_accelerator_connector.cluster_environment" in register
    handler = inspect.getsource(_SignalConnector._sigterm_notifier_fn)
    assert "dist.broadcast" in handler and "launcher.kill" in handler
    assert "self.received_sigterm = True" in handler
    loop = inspect.getsource(_TrainingEpochLoop)  # the flag is read after on_train_batch_end
    batch_end = loop.index('_call_callback_hooks(trainer, "on_train_batch_end"')
    assert "and self.trainer.received_sigterm:" in loop[batch_end:]


def test_spawned_test_results_stay_in_the_workers():
    """cli.test_and_report tests in the main process when the strategy spawns its workers
    (ddp_spawn, a DDP job of a multirun): Lightning's spawn launcher sends back the weights
    and ``callback_metrics`` only, not attributes set on the module (the result rows)."""
    from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

    extra = inspect.getsource(_MultiProcessingLauncher.get_extra_results)
    assert "trainer.callback_metrics" in extra and "lightning_module" not in extra
