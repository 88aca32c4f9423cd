"""Sweeps spread over devices and clusters through Hydra's own launchers (issue 23): the joblib
launcher with a free device slot per running job, and submitit's local executor (the code path
of ``hydra/launcher=slurm``), each read back by the report."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, train
from omegaconf import OmegaConf

from sr_lightning.config.sweep_devices import (
    device_pool,
    device_slots,
    give_the_job_its_devices,
    parallel_jobs,
)

TINY_SWEEP = [
    "experiment=ablation_bn_smoke",
    "model.net.n_resblocks=1",
    "model.net.n_feats=8",
    "data.patch_size=12",
    "data.updates_per_epoch=5",
    "trainer.max_epochs=1",
]


def test_the_pool_is_cut_into_one_slot_per_job():
    assert device_pool(4) == [0, 1, 2, 3] and device_pool([0, 2]) == [0, 2]
    assert device_slots(4, 2) == [[0, 1], [2, 3]] and parallel_jobs(4, 2) == 2
    assert device_slots([1, 3, 5], 1) == [[1], [3], [5]] and parallel_jobs([1, 3, 5]) == 3
    assert device_slots(5, 2) == [[0, 1], [2, 3]]  # device 4 alone cannot hold a 2-device job
    with pytest.raises(ValueError, match=r"sweep_devices='many': allowed values are auto"):
        device_pool("many")
    with pytest.raises(ValueError, match=r"trainer.devices=4 per sweep job, but sweep_devices"):
        device_slots(2, 4)


def test_a_gpu_job_trains_on_its_slots_devices_a_cpu_job_keeps_its_trainer():
    gpu = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 2}})
    claim = give_the_job_its_devices(gpu, 1, [2, 3])
    assert list(gpu.trainer.devices) == [2, 3]
    assert claim == {"slot": 1, "devices": [2, 3], "accelerator": "cuda"}
    cpu = OmegaConf.create({"trainer": {"accelerator": "cpu", "devices": 1}})
    assert give_the_job_its_devices(cpu, 0, [0])["accelerator"] == "cpu"
    assert cpu.trainer.devices == 1


def report(sweep: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "sr_lightning.cli.report", str(sweep)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return (sweep / "report.md").read_text()


@pytest.mark.slow
def test_parallel_jobs_each_hold_their_own_device_slot(tmp_path, sample_cache):
    """4 jobs, 2 device slots, through ``hydra/launcher=parallel`` (joblib): two run at once,
    never two on one slot at the same time; every job records its slot; the report reads
    all four."""
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=parallel", "sweep_devices=2", *TINY_SWEEP, "+seeds=two"]
    train([*args, f"data.cache_dir={sample_cache}", f"hydra.sweep.dir={sweep}"])
    jobs = {}
    for process in sweep.glob("*/process.json"):
        record = json.loads(process.read_text())
        jobs[process.parent.name] = (record["device"]["slot"], record["started"], record["ended"])
    assert sorted(jobs) == [f"norm-{n}+seed-{s}" for n in ("batch", "none") for s in (0, 1)]
    assert {slot for slot, _, _ in jobs.values()} == {0, 1}
    overlapping = 0
    for (a, (slot_a, start_a, end_a)), (b, (slot_b, start_b, end_b)) in itertools.combinations(
        jobs.items(), 2
    ):
        if start_a < end_b and start_b < end_a:  # ran at the same time
            overlapping += 1
            assert slot_a != slot_b, (a, b, jobs)
    assert overlapping >= 1, jobs  # in parallel, not one after another
    table = report(sweep)
    assert all(name in table for name in jobs)


@pytest.mark.slow
def test_a_sweep_through_submitit_local_is_read_by_the_report(tmp_path, sample_cache):
    """``hydra/launcher=local`` (submitit's local executor: the code path of
    ``hydra/launcher=slurm``, one process per job)."""
    sweep = tmp_path / "sweep"
    train(["-m", "hydra/launcher=local", *TINY_SWEEP, f"data.cache_dir={sample_cache}",
           f"hydra.sweep.dir={sweep}"])  # fmt: skip
    assert (sweep / ".submitit").is_dir()  # submitit ran the jobs
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert sorted(summaries) == ["norm-batch", "norm-none"]
    assert {s["status"] for s in summaries.values()} == {"completed"}
    table = report(sweep)
    assert "| norm-batch | batch |" in table and "| norm-none | none |" in table
