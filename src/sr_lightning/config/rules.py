"""Config shaping: every rule that rewrites a ``train.py`` config before the run, one function
each, applied in order by :func:`shape_train_config`. Nothing else edits the composed config."""

from __future__ import annotations

import logging
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from sr_lightning.config.keys import ConfigKeyError, check_command_line
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


def refuse_untrainable_model(cfg: DictConfig) -> None:
    if cfg.model.net.get("preset") == "bicubic":
        raise ValueError(
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
    raise ValueError(
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
    # what makes the job the job (the strategy, paths, init_from=sweep:x2 are shaped per run)
    differ = [
        d
        for key in SAME_JOB_KEYS
        for d in _differences(_plain(old, key), _plain(new, key), f"{key}.")
    ]
    if differ:
        raise ValueError(
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
        raise ValueError(f"optim.ema_decay={decay} must be in (0, 1), e.g. 0.999 (or null: off)")
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
    its run's own overrides back (``train``), and a misspelt key gets our did-you-mean."""
    if config_name == "train":
        argv = restore_run_overrides(argv)
    try:
        check_command_line(config_name, argv)
    except ConfigKeyError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return argv


def evaluate_every_scale_of_the_network(cfg: DictConfig, scales: list[int]) -> None:
    """``eval.py`` with ``data.scales=null``: every scale the network has (bicubic: 2, 3, 4)."""
    if cfg.data.get("scales") is None:
        with open_dict(cfg):
            cfg.data.scales = list(scales)
