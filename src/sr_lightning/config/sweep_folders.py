"""Sweep job folders (issue 24): a multirun job runs in the folder that holds the same job
already (a sweep run again or extended with more seeds or values), else in a new folder named
by its swept overrides (``norm-batch+seed-0``); never in a folder another job holds.
``config/rules.py`` checks a whole sweep against its folders before launching it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_lightning.runs.folder import RunFolder, job_folder_name
from sr_lightning.runs.job import job_folders

RUN_ENVIRONMENT_KEYS = (
    "task_name",
    "ckpt_path",
    "paths",
    "logger",
    "callbacks",
    "data.root",
    "data.cache_dir",
    "data.num_workers",
    "data.pin_memory",
    "model.compile",
    "model.channels_last",
    "model.val_tile",
    "model.val_tile_overlap",
    "trainer.default_root_dir",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.plugins",
    "trainer.benchmark",
    "trainer.log_every_n_steps",
    "trainer.enable_model_summary",
    "trainer.enable_progress_bar",
)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
SWEEP_SUBDIR = "${sr_sweep_job:}"  # conf/hydra/default.yaml: hydra.sweep.subdir


def run_environment_key(key: str, swept: tuple[str, ...] | list[str] = ()) -> bool:
    def under(prefix: str) -> bool:
        return key == prefix or key.startswith(prefix + ".")

    return any(under(e) for e in RUN_ENVIRONMENT_KEYS) and not any(under(s) for s in swept)


def flat_config(cfg: DictConfig | dict) -> dict[str, Any]:
    """``{"model.net.n_feats": 32, "data.scales": "${sr_preset:...}", ...}``: a job's config
    as Hydra composed it (unresolved, as its ``.hydra/config.yaml`` holds it; a list is one
    value), without the ``hydra`` node."""
    tree = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_config(cfg) else cfg
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix.rstrip(".")] = node

    walk({k: v for k, v in (tree or {}).items() if k != "hydra"}, "")
    return flat


def job_identity(flat: dict[str, Any], swept: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """What makes a sweep job the job: its composed config (:func:`flat_config`) but the
    :data:`RUN_ENVIRONMENT_KEYS` (except those the command sweeps)."""
    return {k: v for k, v in flat.items() if not run_environment_key(k, swept)}


def identity_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The keys both identities hold with other values. A key only one holds is no difference:
    the config files gained or lost it between the two runs, which says nothing of the job."""
    return [k for k in a if k in b and a[k] != b[k]]


@dataclass(frozen=True)
class HeldJob:
    """A job folder already in a sweep folder, and the config its job was composed with
    (``.hydra/config.yaml``, flattened; None when missing or unreadable)."""

    folder: Path
    config: dict[str, Any] | None


# a composed config holds these (one without them is empty or cut: being written, or broken)
COMPOSED_SECTIONS = ("seed", "data.", "model.", "optim.", "trainer.")


def jobs_held(sweep_dir: str | Path) -> list[HeldJob]:
    """The job folders of ``sweep_dir`` (none when it does not exist) with their configs."""
    if not Path(sweep_dir).is_dir():
        return []
    held = []
    for path in job_folders(sweep_dir):
        recorded = RunFolder(path).composed_config
        try:
            config = flat_config(OmegaConf.load(recorded)) if recorded.is_file() else None
        except Exception:  # noqa: BLE001  (a hand-edited file: not comparable)
            config = None
        if config is not None and not all(
            any(k == s or k.startswith(s) for k in config) for s in COMPOSED_SECTIONS
        ):
            config = None  # being written by a job started beside this one, or cut short
        held.append(HeldJob(path, config))
    return held


def place_sweep_job(
    job: DictConfig, held: list[HeldJob], sweep_overrides: list[str] | None = None
) -> tuple[str, HeldJob | None]:
    """Where multirun job ``job`` (its config with ``hydra``) runs: ``(folder name, None)``, or
    ``(folder name, the job that holds that folder)`` when another job holds it.

    The folder among ``held`` whose job has this job's identity (:func:`job_identity`: a sweep
    run again, or extended with more seeds or values, finds its jobs wherever they are, in
    folders of older versions named by number too); else a new folder named by the job's
    swept overrides (``norm-batch+seed-0``, :func:`~sr_lightning.runs.folder.job_folder_name`),
    or by its job number when nothing is swept. ``sweep_overrides``: the command line of the
    sweep (train.py before the launch); else Hydra's ``multirun.yaml`` in the sweep folder."""
    from sr_lightning.training.loggers import swept_keys, swept_values

    swept = swept_keys(job.hydra, sweep_overrides)
    mine = job_identity(flat_config(job), swept)
    for h in held:
        if h.config is not None and not identity_differences(job_identity(h.config, swept), mine):
            return h.folder.name, None
    name = job_folder_name(swept_values(job.hydra, sweep_overrides))
    name = name or str(OmegaConf.select(job, "hydra.job.num", default=0))
    holder = next((h for h in held if h.folder.name == name and h.config is not None), None)
    return name, holder


def sweep_job_folder(cfg: DictConfig) -> str:
    """``hydra.sweep.subdir`` (``${sr_sweep_job:}``, resolved by Hydra as it starts a job of a
    multirun): the job's folder in the sweep folder (:func:`place_sweep_job`). A folder that
    another job holds is refused before Hydra writes anything into it (``train.py -m`` refuses
    such a sweep before its first job: :func:`refuse_a_sweep_its_folders_contradict`)."""
    if not [k for k in cfg if k != "hydra"]:  # Hydra's node alone (HydraConfig.get()): placed
        placed = OmegaConf.select(cfg, "hydra.runtime.output_dir", default=None)
        return Path(str(placed)).name if placed else str(cfg.hydra.job.get("num", 0))
    sweep_dir = Path(str(cfg.hydra.sweep.dir))
    name, holder = place_sweep_job(cfg, jobs_held(sweep_dir))
    if holder is not None:
        swept = sweep_keys(cfg)
        mine, theirs = job_identity(flat_config(cfg), swept), job_identity(holder.config, swept)
        raise ValueError(
            f"{holder.folder} holds another job, with {listed_differences(theirs, mine)}: a "
            "sweep is extended only with the settings that started it; use a new "
            "hydra.sweep.dir for another sweep"
        )
    return name


def sweep_keys(job: DictConfig, sweep_overrides: list[str] | None = None) -> list[str]:
    from sr_lightning.training.loggers import swept_keys

    return swept_keys(job.hydra, sweep_overrides)


def listed_differences(
    theirs: dict[str, Any], mine: dict[str, Any], keys: list[str] | None = None
) -> str:
    """``trainer.max_steps=-1 (this command: 5), ...``: the folder's values, 5 keys at most."""
    keys = identity_differences(theirs, mine) if keys is None else keys

    def show(value: Any) -> str:
        text = "null" if value is None else str(value)
        return text if len(text) <= 40 else text[:37] + "..."

    shown = [f"{k}={show(theirs[k])} (this command: {show(mine[k])})" for k in keys[:5]]
    return ", ".join(shown) + (f" and {len(keys) - 5} more keys" if len(keys) > 5 else "")
