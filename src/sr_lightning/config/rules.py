"""Config shaping: every rule that rewrites a ``train.py`` config before the run, one function
each, applied in order by :func:`shape_train_config`. Nothing else edits the composed config.

Also the rules of the command line before Hydra sees it (:func:`prepare_command_line`) and of a
sweep's job folders: where each job runs (:func:`sweep_job_folder`, Hydra's
``hydra.sweep.subdir``) and the check of a whole sweep against its folder before the launch
(:func:`refuse_a_sweep_its_folders_contradict`)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from sr_lightning.config.keys import REPO_CONF, ConfigKeyError, check_command_line
from sr_lightning.config.sweep_folders import (
    BASIC_SWEEPER,
    SWEEP_SUBDIR,
    flat_config,
    identity_differences,
    job_identity,
    jobs_held,
    listed_differences,
    place_sweep_job,
    run_environment_key,
    sweep_keys,
)
from sr_lightning.models.checkpoint import find_checkpoint
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.job import job_folders

log = logging.getLogger(__name__)

SWEEP_PREFIX = "sweep:x"
# DDP variants that tolerate parameters without a gradient in a step (MDSR's other scales)
FIND_UNUSED = {
    "auto": "ddp_find_unused_parameters_true",
    "ddp": "ddp_find_unused_parameters_true",
    "ddp_spawn": "ddp_spawn_find_unused_parameters_true",
}
SPAWNED = {
    "ddp": "ddp_spawn",
    "ddp_find_unused_parameters_true": "ddp_spawn_find_unused_parameters_true",
}
# Lightning's spellings that keep the weights in fp32 (bf16/16: its aliases of the -mixed ones)
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16", "16-mixed", "16")


def several_processes(cfg: DictConfig) -> bool:
    """Whether the run may start more than one process: any ``trainer.devices`` but 1 (or
    one device in a list), or several nodes. Counts (``-1``, ``auto``) are left to Lightning:
    the world size is read off the trainer once it exists."""
    devices = cfg.trainer.get("devices", 1)
    one = devices in (1, "1") or (isinstance(devices, list | ListConfig) and len(devices) == 1)
    return not one or cfg.trainer.get("num_nodes", 1) != 1


class ConfigRuleError(ValueError):
    """A config a rule refuses; the message names the key, the allowed values and what to do
    (``train.py`` prints it alone, no traceback, and exits 2)."""


def refuse_untrainable_model(cfg: DictConfig) -> None:
    if cfg.model.net.get("preset") == "bicubic":
        raise ConfigRuleError(
            "model=bicubic has nothing to train: score it with eval.py model=bicubic "
            "(train.py prints the bicubic rows next to every trained model)"
        )


def refuse_precision_that_casts_the_weights(cfg: DictConfig) -> None:
    """``trainer.precision`` keeps fp32 weights: validation, the test and ``eval.py`` run the
    network in fp32 (:func:`~sr_lightning.core.inference.super_resolve`), which a precision
    that casts the weights (bf16-true, 16-true, 64-true, transformer-engine) cannot run."""
    value = cfg.trainer.get("precision")
    if value is None or str(value) in PRECISIONS:
        return
    raise ConfigRuleError(
        f"trainer.precision={value!r}: allowed values are {list(PRECISIONS)}; a precision "
        "that casts the weights (bf16-true, 16-true, 64-true, transformer-engine) cannot run "
        "the fp32 evaluation (validation, test, eval.py): train in bf16-mixed or 16-mixed"
    )


def find_unused_parameters_for_multiscale(cfg: DictConfig) -> None:
    """MDSR trains one scale per step: the other scales' modules get no gradient, which DDP
    must be told about (else it stops with "parameters that were not used")."""
    if not several_processes(cfg) or len(cfg.data.scales) == 1:
        return
    strategy = cfg.trainer.get("strategy") or "auto"
    if strategy in FIND_UNUSED:
        log.info("multi-scale under DDP: trainer.strategy=%s", FIND_UNUSED[strategy])
        with open_dict(cfg):
            cfg.trainer.strategy = FIND_UNUSED[strategy]


def spawn_ddp_under_multirun(cfg: DictConfig) -> None:
    """Under ``-m``, run DDP as ``ddp_spawn``: Lightning's ``ddp`` launcher re-runs sys.argv
    in each child, so every rank would start the whole sweep again (see README)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not in_multirun():
        return
    if SLURMEnvironment.detect():  # srun started one process per rank: keep ddp
        return
    strategy = cfg.trainer.get("strategy")
    if strategy in SPAWNED:
        log.info("multirun: trainer.strategy=%s runs as %s", strategy, SPAWNED[strategy])
        with open_dict(cfg):
            cfg.trainer.strategy = SPAWNED[strategy]


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def finished_sweep_job(cfg: DictConfig) -> dict | None:
    """A job of a re-run multirun (the same command, the same ``hydra.sweep.dir``) that has
    already finished (``summary.json``: completed or diverged): its summary, so that it is not
    trained again. A job folder trained with another config is refused, naming the keys."""
    folder = RunFolder(cfg.paths.output_dir)
    if not in_multirun() or not folder.summary.is_file():
        return None
    check_same_job(cfg, folder)
    return folder.finished()


SAME_JOB_KEYS = ("data", "model.net", "optim")


def check_same_job(cfg: DictConfig, folder: RunFolder) -> None:
    recorded = folder.recorded_config
    if not recorded.is_file():
        return
    old, new = OmegaConf.load(recorded), cfg
    # what makes the job the job (the strategy, paths, init_from=sweep:x2 are shaped per run;
    # where the data lies and how it is loaded may change between the runs of a sweep)
    differ = [
        d
        for key in SAME_JOB_KEYS
        for d in _differences(_plain(old, key), _plain(new, key), f"{key}.")
        if not run_environment_key(d)
    ]
    if differ:
        raise ConfigRuleError(
            f"{folder.path} holds a job trained with another config "
            f"({', '.join(differ[:5])} differ): a sweep is continued only with the command "
            "that started it; use a new hydra.sweep.dir for a new sweep"
        )


def _plain(conf: DictConfig, key: str) -> object:
    node = OmegaConf.select(conf, key)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _differences(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for k in sorted(set(a) | set(b), key=str)
            for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


def continue_an_interrupted_sweep_job(cfg: DictConfig) -> None:
    """A job of a re-run multirun that was interrupted (killed, pre-empted) resumes from its
    newest checkpoint (``ckpt_path=last``); a job that never saved one starts again."""
    folder = RunFolder(cfg.paths.output_dir)
    if in_multirun() and cfg.ckpt_path is None and folder.newest_checkpoint():
        check_same_job(cfg, folder)
        log.info(
            "continuing the interrupted sweep job %s from its newest checkpoint", folder.path.name
        )
        with open_dict(cfg):
            cfg.ckpt_path = "last"


# ---- a sweep's job folders: one per job, found by what the job trains -----------------------


# Keys of a job's config that say where and how it runs, not what it trains: a sweep is run
# again or extended with other values of these (another machine or data copy, more loader
# workers, another logger) and its jobs stay the same jobs, in the same folders. A command
# that sweeps one of them (data.num_workers=0,2) makes it part of each job's identity.
def _varying(identities: list[dict[str, Any]]) -> set[str]:
    """The keys with more than one value among ``identities`` (the keys a sweep varies)."""
    seen: dict[str, set[str]] = {}
    for identity in identities:
        for k, v in identity.items():
            seen.setdefault(k, set()).add(json.dumps(v, sort_keys=True, default=str))
    return {k for k, values in seen.items() if len(values) > 1}


def _compose_sweep(config_name: str, overrides: list[str]):
    """``(sweep folder, the sweep's command-line overrides, its jobs' configs, the jobs held
    there)``, the jobs as Hydra's basic sweeper will launch them (in job-number order); None
    where there is nothing to check: another sweeper (Optuna proposes its jobs as it goes), a
    command line Hydra itself will refuse, or a sweep folder with no job folder yet."""
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(REPO_CONF), version_base="1.3", job_name=config_name):
            hydra = GlobalHydra.instance().hydra
            master = hydra.compose_config(
                config_name, overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False
            )
            sweep_dir = Path(str(master.hydra.sweep.dir))
            held = jobs_held(sweep_dir)
            if master.hydra.sweeper.get("_target_") != BASIC_SWEEPER or not held:
                return None
            task = [str(o) for o in master.hydra.overrides.task]
            params = [f"{k}={v}" for k, v in (master.hydra.sweeper.get("params") or {}).items()]
            parser = OverridesParser.create(config_loader=hydra.config_loader)
            batches = BasicSweeper.split_arguments(parser.parse_overrides(params + task), None)
            jobs = []
            for num, job_overrides in enumerate(batches[0]):
                job = hydra.config_loader.load_sweep_config(master, list(job_overrides))
                with open_dict(job):
                    job.hydra.job.num = num
                jobs.append(job)
            return sweep_dir, task, jobs, held
    except Exception:  # noqa: BLE001  (Hydra reports its own errors, with its own words)
        return None
    finally:
        GlobalHydra.instance().clear()


def refuse_a_sweep_its_folders_contradict(config_name: str, argv: list[str]) -> None:
    """``train.py -m ... hydra.sweep.dir=<a sweep folder with jobs>``: every job of the sweep
    is placed (:func:`place_sweep_job`) and checked against the folders there before Hydra
    launches or writes anything. Refused, in one message naming a folder and the keys, with
    exit code 2:

    - a setting the sweep does not vary (neither this command's jobs nor the folders' jobs
      have more than one value of it) that differs between them: ``trainer.max_steps``, the
      network's size, an edited experiment file; another sweep belongs in another folder;
    - a job whose folder (by its swept overrides) holds a job with another config;
    - two jobs of the command that would share a folder (the same job twice).

    A sweep run again or extended (``+seeds=three`` after ``+seeds=two``, one more value of a
    swept key) passes: its finished jobs are not trained again, interrupted ones resume, and
    the new ones get folders of their own. Command lines with Hydra flags other than ``-m``
    (``--config-dir``, ``--cfg``) are left to the check each job makes of its folder
    (:func:`sweep_job_folder`)."""
    args = argv[1:]
    if not {"-m", "--multirun"} & set(args):
        return
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return
    composed = _compose_sweep(config_name, [a for a in args if not a.startswith("-")])
    if composed is None:
        return
    sweep_dir, task, jobs, held = composed
    swept = sweep_keys(jobs[0], task)
    mine = [job_identity(flat_config(job), swept) for job in jobs]
    theirs = [(h, job_identity(h.config, swept)) for h in held if h.config is not None]
    varying = _varying(mine) | _varying([t for _, t in theirs])
    problems: dict[Path, str] = {}  # one line per folder
    for h, identity in theirs:  # the settings of the sweep: equal in every job, old and new
        keys = [k for k in identity_differences(identity, mine[0]) if k not in varying]
        if keys:
            problems[h.folder] = (
                f"{h.folder} holds a job with {listed_differences(identity, mine[0], keys)}"
            )
    placed: dict[str, list[int]] = {}
    ours = OmegaConf.to_container(jobs[0].hydra.sweep, resolve=False)["subdir"] == SWEEP_SUBDIR
    for num, job in enumerate(jobs):
        if ours:
            name, holder = place_sweep_job(job, held, task)
        else:  # hydra.sweep.subdir of one's own (${hydra.job.num}): its folder, whatever it holds
            name = str(OmegaConf.select(job, "hydra.sweep.subdir"))
            holder = next((h for h in held if h.folder.name == name and h.config), None)
            if holder and not identity_differences(job_identity(holder.config, swept), mine[num]):
                holder = None  # the same job
        placed.setdefault(name, []).append(num)
        if holder is not None and holder.folder not in problems:  # named as job #num
            problems[holder.folder] = (
                f"{holder.folder} holds another job than job #{num} of this command, with "
                f"{listed_differences(job_identity(holder.config, swept), mine[num])}"
            )
    for name, nums in placed.items():
        if len(nums) > 1 and sweep_dir / name not in problems:
            problems[sweep_dir / name] = (
                f"{sweep_dir / name} would hold jobs #{nums[0]} and #{nums[1]} of this command, "
                "which differ only in where or how they run: the same job twice"
            )
    if problems:
        first, *others = problems.values()
        more = f" (and {len(others)} more job folder{'s' * (len(others) > 1)})" if others else ""
        print(
            f"error: hydra.sweep.dir={sweep_dir}: {first}{more}. Nothing was launched "
            "or written. A sweep is run again, or extended with more seeds or more values of "
            "its swept keys, by the command that started it; other settings make another "
            "sweep: give it a new hydra.sweep.dir",
            file=sys.stderr,
        )
        raise SystemExit(2)


def resolve_last_checkpoint(cfg: DictConfig) -> None:
    """``ckpt_path=last``: the newest checkpoint in this run folder's ``checkpoints/`` (the
    epoch-end ``last.ckpt``, the every-N-steps ``step*.ckpt`` or ``preempted.ckpt``)."""
    if cfg.ckpt_path != "last":
        return
    folder = RunFolder(cfg.paths.output_dir)
    newest = folder.newest_checkpoint()
    if newest is None:
        raise FileNotFoundError(
            f"ckpt_path=last: no checkpoint in {folder.checkpoints}. To resume a run, start it in "
            "its own folder: python train.py hydra.run.dir=<that run's folder> ckpt_path=last"
        )
    with open_dict(cfg):
        cfg.ckpt_path = str(newest)


LIGHTNING_CKPT_WORDS = ("best", "last", "hpc", "registry")  # Lightning's own ckpt_path values


def resolve_checkpoint_pattern(cfg: DictConfig) -> None:
    """``ckpt_path=<run>/checkpoints/best-*.ckpt``: the one file a glob matches (several: an
    error listing them; none, or a missing file: "checkpoint not found", before anything is
    built). See :func:`~sr_lightning.models.checkpoint.find_checkpoint`."""
    value = cfg.get("ckpt_path")
    if value is None or str(value).split(":", 1)[0] in LIGHTNING_CKPT_WORDS:
        return
    with open_dict(cfg):
        cfg.ckpt_path = str(find_checkpoint(str(value)))


def resolve_sweep_init(cfg: DictConfig) -> None:
    """``model.init_from=sweep:x2``: the best checkpoint of the completed x2 job of this sweep
    (of the job with the same seed, when the sweep has several)."""
    init_from = str(cfg.model.get("init_from") or "")
    if not init_from.startswith(SWEEP_PREFIX):
        return
    scale = int(init_from[len(SWEEP_PREFIX) :])
    here = RunFolder(cfg.paths.output_dir)
    candidates = []
    for path in job_folders(here.path.parent):
        job = RunFolder(path)
        summary = job.read_summary() if job.path != here.path else None
        if not summary or summary.get("status") != "completed":
            continue
        if not job.recorded_config.is_file():
            continue
        recorded = OmegaConf.load(job.recorded_config)
        best = job.best_checkpoint()
        if list(recorded.data.scales) == [scale] and best:
            same_seed = recorded.get("seed") == cfg.get("seed")  # a seed sweep pairs by seed
            candidates.append((same_seed, best))
    if not candidates:
        raise FileNotFoundError(
            f"model.init_from=sweep:x{scale}: no completed x{scale} job with a best checkpoint "
            f"in {here.path.parent}; run the x{scale} stage first in the same sweep"
        )
    with open_dict(cfg):  # the same seed's x2 job first, else the last one
        cfg.model.init_from = str(sorted(candidates, key=lambda c: c[0])[-1][1])


def average_the_weights(cfg: DictConfig) -> None:
    """``optim.ema_decay=0.999``: Lightning's EMAWeightAveraging callback. Validation uses the
    averaged weights (so does the best-checkpoint choice), checkpoints hold them as their
    ``state_dict`` (what eval.py, sr-upscale and sr-export load) and the raw weights as
    ``current_model_state`` (what a resume continues from)."""
    decay = cfg.optim.get("ema_decay")
    if decay is None:
        return
    if not 0 < float(decay) < 1:
        raise ConfigRuleError(
            f"optim.ema_decay={decay} must be in (0, 1), e.g. 0.999 (or null: off)"
        )
    with open_dict(cfg):
        cfg.callbacks.ema = {
            "_target_": "lightning.pytorch.callbacks.EMAWeightAveraging",
            "decay": float(decay),
        }


RULES = (
    refuse_untrainable_model,
    refuse_precision_that_casts_the_weights,
    find_unused_parameters_for_multiscale,
    spawn_ddp_under_multirun,
    continue_an_interrupted_sweep_job,
    resolve_last_checkpoint,
    resolve_checkpoint_pattern,
    resolve_sweep_init,
    average_the_weights,
)


VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def restore_run_overrides(argv: list[str]) -> list[str]:
    """``train.py hydra.run.dir=<run> ckpt_path=last``: resume that run as it was configured.

    The command line gets the run's own overrides (``<run>/.hydra/overrides.yaml``) in front
    of the new ones, and ``hydra.output_subdir=null``: nothing the run recorded is rewritten
    before it has resumed. An override that is not one of the run's own would change the run
    half-way: it is refused, naming it and the run's. Any other command line is returned as it
    is.
    """
    args = argv[1:]
    run_dir = next((a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")), None)
    if "ckpt_path=last" not in args or run_dir is None or {"-m", "--multirun"} & set(args):
        return argv
    recorded_file = RunFolder(run_dir).overrides
    if not recorded_file.is_file():
        return argv  # not a run folder of ours: ckpt_path=last says what is missing
    recorded = [str(o) for o in OmegaConf.to_container(OmegaConf.load(recorded_file))]
    if args[: len(recorded)] == recorded:
        return argv  # restored already (a DDP rank, started by Lightning from this argv)
    by_key = {_override_key(o): o for o in recorded}
    new, conflicts, pending_value = [], [], False
    for arg in args:
        if pending_value or arg.startswith(("-", "hydra.", "ckpt_path=")):
            new.append(arg)
            pending_value = arg in VALUE_FLAGS
        elif by_key.get(_override_key(arg)) != arg:  # the value the run ended up with
            was = by_key.get(_override_key(arg))
            conflicts.append(f"{arg} (the run has {was or 'no such override'})")
    if conflicts:
        raise SystemExit(
            f"resume of {run_dir}: these overrides contradict the run's own ({recorded_file}): "
            + "; ".join(conflicts)
            + f". Resume it as it was: python train.py hydra.run.dir={run_dir} ckpt_path=last"
        )
    return [argv[0], *recorded, *new, "hydra.output_subdir=null"]


def shape_train_config(cfg: DictConfig) -> None:
    """Apply every rule to ``cfg`` in place (the order of :data:`RULES`)."""
    for rule in RULES:
        rule(cfg)


def prepare_command_line(config_name: str, argv: list[str]) -> list[str]:
    """What ``train.py`` / ``eval.py`` do before Hydra sees the command line: a resume gets
    its run's own overrides back (``train``), a misspelt key gets our did-you-mean, and a
    multirun into a sweep folder that holds jobs is checked against them (``train``)."""
    if config_name == "train":
        argv = restore_run_overrides(argv)
    try:
        check_command_line(config_name, argv)
    except ConfigKeyError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if config_name == "train":
        refuse_a_sweep_its_folders_contradict(config_name, argv)
    return argv


def evaluate_every_scale_of_the_network(cfg: DictConfig, scales: list[int]) -> None:
    """``eval.py`` with ``data.scales=null``: every scale the network has (bicubic: 2, 3, 4)."""
    if cfg.data.get("scales") is None:
        with open_dict(cfg):
            cfg.data.scales = list(scales)
