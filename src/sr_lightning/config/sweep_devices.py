"""Parallel sweep jobs on one multi-GPU machine, each on its own device(s) (issue 23).

``python train.py -m hydra/launcher=parallel ...`` runs ``n_jobs`` jobs at once through Hydra's
joblib launcher (``conf/hydra/launcher/parallel.yaml``). The device pool is ``sweep_devices``
(``auto``: every visible GPU; ``N``: devices 0..N-1; a list: those ids); a job that trains on
``trainer.devices = d`` devices takes ``d`` of them, so ``n_jobs`` = pool size // d.

Which job gets which device is decided while the jobs run, not by job number: job ``n`` on
device ``n mod count`` would put a job on a device still busy when an earlier, shorter job on
another device frees its slot first. Each job instead holds a lock file
(``<sweep>/.devices/slot<i>.lock``, ``flock``) of a free slot from start to end, starting its
search at slot ``n mod slots``; the kernel releases the lock when the job's process ends,
however it ends. The job records its slot and devices in ``process.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, open_dict

log = logging.getLogger(__name__)

PARALLEL_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCKS = ".devices"  # in the sweep folder


def device_pool(spec: Any) -> list[int]:
    """The device ids of ``sweep_devices``: ``auto`` (every visible CUDA device; one slot on
    a machine without), a count N (0..N-1) or a list of ids."""
    if spec in (None, "auto"):
        import torch

        return list(range(torch.cuda.device_count())) or [0]
    if isinstance(spec, int) and not isinstance(spec, bool) and spec > 0:
        return list(range(spec))
    ids = list(spec) if isinstance(spec, list | tuple | ListConfig) else []
    if ids and all(isinstance(i, int) and i >= 0 for i in ids):
        return ids
    raise ValueError(
        f"sweep_devices={spec!r}: allowed values are auto, a number of devices (4) or a list of "
        "device ids ([0, 2])"
    )


def devices_per_job(trainer_devices: Any) -> int:
    """How many devices of the pool one job takes: ``trainer.devices`` when it is a number."""
    return trainer_devices if isinstance(trainer_devices, int) and trainer_devices > 0 else 1


def device_slots(spec: Any, trainer_devices: Any = 1) -> list[list[int]]:
    """The pool cut into one group of device ids per parallel job."""
    pool, per_job = device_pool(spec), devices_per_job(trainer_devices)
    if per_job > len(pool):
        raise ValueError(
            f"trainer.devices={per_job} per sweep job, but sweep_devices gives {len(pool)} "
            f"device(s) ({pool}): lower trainer.devices or widen sweep_devices"
        )
    return [pool[i : i + per_job] for i in range(0, len(pool) - per_job + 1, per_job)]


def parallel_jobs(spec: Any, trainer_devices: Any = 1) -> int:
    """``${sr_parallel_jobs:...}``, the launcher's ``n_jobs``: one job per slot."""
    return len(device_slots(spec, trainer_devices))


def launched_in_parallel() -> bool:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().launcher.get("_target_") == PARALLEL_LAUNCHER


@contextlib.contextmanager
def hold_a_free_device_slot(cfg: DictConfig, poll_s: float = 0.2) -> Iterator[dict | None]:
    """Under ``hydra/launcher=parallel``: wait for a free slot, hold it while the job runs and
    give the job its devices (``trainer.devices=[ids]`` on GPUs; on CPU, the slot is held and
    recorded and the job runs on the CPU). Elsewhere: nothing (yields None)."""
    if not launched_in_parallel():
        yield None
        return
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    slots = device_slots(cfg.get("sweep_devices", "auto"), cfg.trainer.devices)
    locks = Path(hydra.sweep.dir) / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    first = int(hydra.job.get("num", 0)) % len(slots)
    order = [(first + i) % len(slots) for i in range(len(slots))]
    waited = False
    while True:
        for slot in order:
            handle = open(locks / f"slot{slot}.lock", "a")  # noqa: SIM115  (held while training)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield give_the_job_its_devices(cfg, slot, slots[slot])
            finally:
                handle.close()  # releases the lock
            return
        if not waited:
            log.info("every device slot of the sweep is busy: waiting for one")
            waited = True
        time.sleep(poll_s)


def give_the_job_its_devices(cfg: DictConfig, slot: int, ids: list[int]) -> dict:
    """``trainer.devices = ids`` when the job trains on GPUs; the claim to record either way."""
    from sr_lightning.core.inference import default_device  # what "auto" trains on

    gpu = cfg.trainer.accelerator in ("gpu", "cuda") or (
        cfg.trainer.accelerator == "auto" and default_device() == "cuda"
    )
    if gpu:
        with open_dict(cfg):
            cfg.trainer.devices = list(ids)
    log.info("sweep job on device slot %d: %s", slot, f"cuda {ids}" if gpu else "CPU")
    return {"slot": slot, "devices": list(ids), "accelerator": "cuda" if gpu else "cpu"}
