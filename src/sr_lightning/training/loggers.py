"""Loggers whose failures never stop training.

- :class:`CSVLogger`: appends safely across processes (resume, the ``ddp_spawn`` test worker);
  a failed write (disk full) is reported once and leaves ``metrics.csv`` readable.
- :class:`WandbLogger`: falls back to offline mode when the W&B server cannot be reached or
  refuses the run, and reports a failed media write (disk full) instead of raising; names,
  groups and tags its run after the run (:func:`run_labels`): a sweep job by its swept
  overrides, in one group per sweep.

Checkpoints are not written here: their errors must propagate (see ``AtomicCheckpointIO``).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import re
import socket
import threading
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers import WandbLogger as _WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from sr_lightning.runs.records import WriteErrors, truncate_quietly

log = logging.getLogger(__name__)


class _AppendingWriter(ExperimentWriter):
    """``metrics.csv`` writer that merges the header of an existing file into its keys, and
    whose failed writes (disk full) are reported once and never corrupt the file.

    Lightning's writer only knows the keys its own copy logged; when another process (a resumed
    run, or the ``ddp_spawn`` worker of ``trainer.test``, which gets a pickled copy) adds a key,
    it rewrites the file with its own keys only and fails on the older rows ("dict contains
    fields not in fieldnames"). It also rewrites the file in place when a key is new (a full
    disk then loses every row) and retries failed rows forever. Here a new file is written
    directly, an append that fails is cut back to the last whole row, a header change is
    written to a temporary file renamed into place, and the rows of a failed save are dropped.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir=log_dir)
        self.write_errors = WriteErrors("CSV log")

    def _check_log_dir_exists(self) -> None:
        """Keep an existing ``metrics.csv`` (Lightning deletes it: a resumed run lost its past)."""

    def log_hparams(self, params: dict[str, Any]) -> None:
        try:
            super().log_hparams(params)
        except OSError as e:
            self.write_errors.report(e, os.path.join(self.log_dir, self.NAME_HPARAMS_FILE))

    def save(self) -> None:
        if not self.metrics:
            return
        try:
            self._save(self.metrics_file_path)
        except OSError as e:
            self.write_errors.report(e, self.metrics_file_path)
        self.metrics = []

    def _save(self, path: str) -> None:
        header: list[str] = []
        if os.path.isfile(path):
            with open(path, newline="") as f:
                header = [k for k in f.readline().strip().split(",") if k]
        known = set(header)
        new_keys = (set(self.metrics_keys) | set().union(*self.metrics)) - known
        if not header:  # a new (or empty) file
            self.metrics_keys = sorted(new_keys)
            try:
                self._write(path, "w", self.metrics_keys, self.metrics, header=True)
            except OSError:
                truncate_quietly(path, 0)
                raise
        elif new_keys:  # the header changes: rewrite the whole file, atomically
            self.metrics_keys = sorted(known | new_keys)
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            tmp = os.path.join(self.log_dir, f".{self.NAME_METRICS_FILE}.tmp-{os.getpid()}")
            try:
                self._write(tmp, "w", self.metrics_keys, rows + self.metrics, header=True)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        else:
            self.metrics_keys = header
            size = os.path.getsize(path)
            try:
                self._write(path, "a", header, self.metrics, header=False)
            except OSError:
                truncate_quietly(path, size)
                raise

    @staticmethod
    def _write(path: str, mode: str, keys: list[str], rows: list[dict], header: bool) -> None:
        with open(path, mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            if header:
                writer.writeheader()
            writer.writerows(rows)


class CSVLogger(_CSVLogger):
    """:class:`lightning.pytorch.loggers.CSVLogger` that appends safely across processes and
    survives a full disk (see :class:`_AppendingWriter`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if not isinstance(self._experiment, _AppendingWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


# modes in which wandb.init talks to the server
_ONLINE_MODES = ("online", "run", "shared")


def _wandb_base_url(init_settings: Any) -> str:
    """The server wandb.init would use: its ``settings``, else wandb's global settings
    ($WANDB_BASE_URL, ``wandb login --host``'s settings file, wandb's default)."""
    if isinstance(init_settings, dict) and init_settings.get("base_url"):
        return str(init_settings["base_url"])
    if init_settings is not None and "base_url" in getattr(init_settings, "model_fields_set", ()):
        return str(init_settings.base_url)
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url)  # loads settings, starts nothing
    except Exception:
        return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def probe_tcp(url: str, timeout: float) -> str | None:
    """None when a TCP connection to the host of ``url`` (or to its proxy) opens within
    ``timeout`` seconds (name lookup included), else why not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        return f"bad W&B base URL {url!r}: {e}"
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxy_parts.hostname or "", proxy_parts.port or 80
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"cannot connect to {host}:{port} ({e})")

    # in a thread: the name lookup of create_connection has no timeout of its own
    thread = threading.Thread(target=connect, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout:g} s"


def run_id(save_dir: str | os.PathLike) -> str:
    """The W&B run id of a run folder: 16 hex digits of its absolute path."""
    import hashlib

    return hashlib.sha1(str(Path(save_dir).resolve()).encode()).hexdigest()[:16]


def network_name(naming: Mapping[str, Any], with_scales: bool = True) -> str | None:
    """The network of ``naming`` (``preset`` and the ``model.net`` sizes) as a results table
    names it (``edsr_baseline``, ``edsr 4x32``, ``mdsr``), with its scales: ``edsr 4x32 x2``."""
    from sr_lightning.models.catalogue import describe, get_preset

    preset = naming.get("preset")
    if not preset:
        return None
    try:
        arch = get_preset(str(preset)).arch
        rec = {
            "arch": arch,
            "n_resblocks": int(naming["n_resblocks"]),
            "n_feats": int(naming["n_feats"]),
            "res_scale": float(naming["res_scale"]),
            "norm": str(naming.get("norm") or "none"),
        }
        name = describe(rec)
    except (ValueError, KeyError, TypeError):  # an unknown preset, a size not given
        name = str(preset)
    scales = naming.get("scales")
    if isinstance(scales, str | int):
        scales = [scales]
    if scales and with_scales:
        name += " " + " ".join(f"x{s}" for s in scales)
    return name


def swept_keys(hydra_cfg: Any, sweep_overrides: Sequence[str] | None = None) -> list[str]:
    """The config keys a multirun sweeps: its sweeper's ``params`` (``+seeds=two``, an
    experiment's, Optuna's) and the sweeps of its command line (``model.net.norm=batch,none``):
    ``sweep_overrides`` where given (train.py, before the launch), else read from the sweep
    folder's ``multirun.yaml`` (written by Hydra's basic sweeper)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    lines = [f"{k}={v}" for k, v in (OmegaConf.select(hydra_cfg, "sweeper.params") or {}).items()]
    sweep_dir = OmegaConf.select(hydra_cfg, "sweep.dir")
    multirun = Path(str(sweep_dir)) / "multirun.yaml"
    if sweep_overrides is not None:
        lines += [str(o) for o in sweep_overrides]
    elif sweep_dir and multirun.is_file():
        with contextlib.suppress(Exception):  # unreadable: the sweeper's params still count
            saved = OmegaConf.load(multirun)
            lines += [str(o) for o in OmegaConf.select(saved, "hydra.overrides.task") or []]
    parser = OverridesParser.create()
    keys: list[str] = []
    for line in lines:
        try:
            override = parser.parse_overrides([line])[0]
        except Exception:
            continue
        if override.is_sweep_override() and override.key_or_group not in keys:
            keys.append(override.key_or_group)
    return keys


def sweep_job_name(hydra_cfg: Any) -> str | None:
    """``norm=batch,seed=0``: this job's values of the swept keys (:func:`swept_values`)."""
    return ",".join(f"{k}={v}" for k, v in swept_values(hydra_cfg).items()) or None


def swept_values(hydra_cfg: Any, sweep_overrides: Sequence[str] | None = None) -> dict[str, str]:
    """``{"norm": "batch", "seed": "0"}``: this job's values of the swept keys, as written, in
    the order of its overrides, each key by its last part unless two swept keys share it. The
    W&B run name and the job's folder (``runs/folder.py`` ``job_folder_name``) are made of it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    swept = swept_keys(hydra_cfg, sweep_overrides)
    parser = OverridesParser.create()
    values: dict[str, str] = {}
    for line in OmegaConf.select(hydra_cfg, "overrides.task") or []:
        try:
            override = parser.parse_overrides([str(line)])[0]
        except Exception:
            continue
        if override.key_or_group in swept and not override.is_sweep_override():
            # as written (1e-3, not 0.001)
            text = str(line).partition("=")[2]
            values[override.key_or_group] = text or override.get_value_element_as_str()
    last = {k: re.split(r"[./]", k)[-1] for k in values}
    shared = {v for v in last.values() if list(last.values()).count(v) > 1}
    return {(last[k] if last[k] not in shared else k): v for k, v in values.items()}


def run_labels(naming: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """W&B's ``name``, ``group`` and ``tags`` for this run, from Hydra's config and ``naming``
    (``task_name``, the ``model.net`` preset and sizes, the scales; conf/logger/wandb.yaml):

    - a job of a multirun: name = its swept overrides (``norm=batch,seed=0``), group = the
      sweep (``<task_name>/<sweep folder name>``: a sweep extended in its folder keeps it);
    - a single run: name = the network (``edsr 4x32 x2``), no group;
    - tags: the experiment (``hydra.runtime.choices.experiment``, else ``task_name``), the
      model preset and the network.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    naming = naming or {}
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    task = str(naming.get("task_name") or "") or None
    network = network_name(naming)
    net = network_name(naming, with_scales=False)
    experiment = OmegaConf.select(hydra_cfg, "runtime.choices.experiment") if hydra_cfg else None
    labels: dict[str, Any] = {"name": network, "group": None}
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN:
        job = OmegaConf.select(hydra_cfg, "job.num")
        labels["name"] = sweep_job_name(hydra_cfg) or f"{network or task or 'job'} #{job}"
        sweep = Path(str(OmegaConf.select(hydra_cfg, "sweep.dir") or "")).name
        labels["group"] = "/".join(dict.fromkeys(p for p in (task, sweep) if p)) or None
    preset = naming.get("preset")
    tags = [str(t) for t in (experiment or task, preset, net) if t]
    labels["tags"] = [t[:64] for t in dict.fromkeys(tags)]  # W&B takes up to 64 characters
    return labels


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


class WandbLogger(_WandbLogger):
    """:class:`lightning.pytorch.loggers.WandbLogger` that never stops training.

    In an online mode, before ``wandb.init``: a TCP connection to the W&B host (or proxy) must
    open within ``probe_timeout`` seconds, and ``wandb.init`` gets ``init_timeout`` (unless
    $WANDB_INIT_TIMEOUT or ``settings`` set one). When the probe or ``wandb.init`` fails (no
    network, server down or erroring, bad API key), it warns once and logs offline instead
    (``wandb sync <dir>`` uploads it later); should that fail too, W&B is disabled for the
    run. Offline and disabled modes never touch the network. A failed write of logged media
    (disk full) is reported once and dropped.

    With ``naming`` (conf/logger/wandb.yaml passes it), a ``name``, ``group`` or ``tags`` left
    ``None`` is the run's (:func:`run_labels`): a sweep job is named by its swept overrides,
    in one group per sweep.
    """

    def __init__(
        self,
        *args: Any,
        init_timeout: float | None = 30.0,
        probe_timeout: float = 3.0,
        group: str | None = None,
        tags: Sequence[str] | None = None,
        naming: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        given = {"name": kwargs.get("name"), "group": group, "tags": tags}
        if naming is not None:
            labels = run_labels(naming)
            given = {k: v if v is not None else labels.get(k) for k, v in given.items()}
        if given["name"] is not None:
            kwargs["name"] = given["name"]
        if given["group"] is not None:
            kwargs["group"] = given["group"]
        if given["tags"] is not None:
            kwargs["tags"] = [str(t) for t in given["tags"]]
        if not (args or kwargs.get("id") or kwargs.get("version")) and kwargs.get("save_dir"):
            # one W&B run per run folder: a resumed run (same folder) continues it, online or
            # offline (Lightning passes resume="allow")
            kwargs["id"] = run_id(kwargs["save_dir"])
        super().__init__(*args, **kwargs)
        self._init_timeout = init_timeout
        self._probe_timeout = probe_timeout
        self.write_errors = WriteErrors("W&B log")

    def _requested_mode(self) -> str:
        if self._offline:
            return "offline"
        settings, mode = self._wandb_init.get("settings"), self._wandb_init.get("mode")
        if not mode and isinstance(settings, dict):
            mode = settings.get("mode")
        elif not mode and "mode" in getattr(settings, "model_fields_set", ()):
            mode = settings.mode
        return str(mode or os.environ.get("WANDB_MODE") or "online")

    def _with_init_timeout(self, settings: Any) -> Any:
        if self._init_timeout is None or os.environ.get("WANDB_INIT_TIMEOUT"):
            return settings
        if settings is None:
            return {"init_timeout": self._init_timeout}
        if isinstance(settings, dict):
            return {"init_timeout": self._init_timeout, **settings}
        if "init_timeout" not in getattr(settings, "model_fields_set", {"init_timeout"}):
            settings.init_timeout = self._init_timeout
        return settings

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        new = self._experiment is None
        run = self._create_run()
        if new and run is not None and hasattr(run, "define_metric"):
            with contextlib.suppress(Exception):  # the dashboard shows the best, not the last
                run.define_metric("val/psnr", summary="max")
        return run

    def _create_run(self) -> Any:
        import wandb

        create = _WandbLogger.experiment.fget  # Lightning's: wandb.init, define_metric
        # a pickled copy (a ddp_spawn worker) attaches to its parent's run: Lightning's way
        attached = getattr(self, "_attach_id", None) is not None
        if self._experiment is not None or wandb.run is not None or attached:
            return create(self)
        mode = self._requested_mode()
        if mode not in _ONLINE_MODES:
            self._log_model = False  # checkpoints are artifacts only online (no copies here)
            # passed explicitly: wandb reads $WANDB_MODE once per process, and no network
            # must be touched whatever its global settings say
            self._wandb_init["mode"] = "offline" if mode == "dryrun" else mode
            try:
                return create(self)
            except Exception as e:  # e.g. a misspelt mode
                self._discard_failed_run()
                return self._fall_back(create, f"wandb.init(mode={mode!r}) failed: {_short(e)}")
        url = _wandb_base_url(self._wandb_init.get("settings"))
        reason = probe_tcp(url, self._probe_timeout)
        if reason is None:
            settings = self._wandb_init.get("settings")
            self._wandb_init["settings"] = self._with_init_timeout(settings)
            try:
                return create(self)
            except Exception as e:  # CommError, AuthenticationError, UsageError, timeouts
                reason = f"wandb.init failed: {_short(e)}"
                self._wandb_init["settings"] = settings
                self._discard_failed_run()
        return self._fall_back(create, f"W&B server {url} unusable: {reason}")

    def _discard_failed_run(self) -> None:
        import wandb

        self._experiment = None
        if wandb.run is not None:
            with contextlib.suppress(Exception):
                wandb.finish(exit_code=1)

    def _fall_back(self, create: Any, reason: str) -> Any:
        self._wandb_init["mode"] = "offline"
        # the failed online attempt keeps its id "in use" in wandb's service: a fresh one
        self._wandb_init.pop("id", None)
        self._log_model = False  # checkpoints cannot be uploaded offline
        try:
            run = create(self)
        except Exception as e:
            self._discard_failed_run()
            self._wandb_init["mode"] = "disabled"
            log.warning(
                "%s; offline mode failed too (%s): W&B logging is disabled for this run "
                "(training continues)",
                reason,
                _short(e),
            )
            return create(self)
        sync_dir = getattr(run.settings, "sync_dir", None) or Path(run.dir).parent
        log.warning(
            "%s; logging offline instead (training continues) to %s. "
            "Upload it later with: wandb sync %s",
            reason,
            sync_dir,
            sync_dir,
        )
        return run

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        try:
            super().log_hyperparams(params)
        except OSError as e:
            self._report(e)

    @rank_zero_only
    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        try:
            super().log_metrics(metrics, step)
        except OSError as e:  # media (wandb.Image files) copied into the run folder
            self._report(e)

    @rank_zero_only
    def log_image(self, key: str, images: list[Any], step: int | None = None, **kwargs) -> None:
        try:
            super().log_image(key, images, step, **kwargs)
        except OSError as e:  # wandb.Image writes each image to a file
            self._report(e)

    def _report(self, exc: OSError) -> None:
        """One warning per folder (each image has its own file name)."""
        where = os.path.dirname(exc.filename) if isinstance(exc.filename, str) else None
        if not where and self._experiment is not None:
            where = getattr(self._experiment, "dir", None)
        self.write_errors.report(exc, where or "the W&B run folder")
