"""No silent scientific mistakes (issue 24, item 5): ``model.init_from`` of another network
stops (unless ``model.init_from_partial``), more ranks than evaluation images works (a rank
with no image scores nothing), and a job still training is ``running``, not ``failed``."""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    compose_config,
    run_train_in_process,
    score,
    tiny_args,
    train,
    write_job,
)
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from sr_lightning.analysis.report import build_report
from sr_lightning.data.datamodule import NO_IMAGE, SRDataModule, eval_indices
from sr_lightning.models import EDSR, MDSR, record
from sr_lightning.models.checkpoint import init_from_checkpoint, load_network
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.job import HEARTBEAT_S, read_job, read_sweep, running
from sr_lightning.training.lit_module import SRLitModule


# ---- init_from a checkpoint of another network -----------------------------------------------
def save_ours(net: torch.nn.Module, path: Path) -> Path:
    """A checkpoint in our layout: ``net.*`` tensors and the network record."""
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "model_args": record(net)}, path)
    return path


def matching(src: torch.nn.Module, dst: torch.nn.Module) -> int:
    own, theirs = dst.state_dict(), src.state_dict()
    return sum(1 for k, v in theirs.items() if k in own and own[k].shape == v.shape)


def test_init_from_another_network_stops_naming_both_records_and_the_count(tmp_path, caplog):
    torch.manual_seed(0)
    src = EDSR(scale=2, n_resblocks=2, n_feats=8)
    path = save_ours(src, tmp_path / "x2.ckpt")
    dst = EDSR(scale=3, n_resblocks=1, n_feats=16)  # another depth and width: x3 "from x2"
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    n, total = matching(src, dst), len(dst.state_dict())
    assert 0 < n < 8  # the mean shift and a few biases, not the body
    with pytest.raises(ValueError) as refused:
        init_from_checkpoint(dst, path)
    said = str(refused.value)
    assert "'n_resblocks': 2, 'n_feats': 8" in said  # the checkpoint's record
    assert "'n_resblocks': 1, 'n_feats': 16" in said  # ours
    assert f"only {n} of this network's {total} tensors would load" in said
    assert "model.init_from_partial=true" in said
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())  # untouched
    with caplog.at_level(logging.WARNING, logger="sr_lightning"):
        loaded, kept = init_from_checkpoint(dst, path, allow_partial=True)
    assert len(loaded) == n and len(kept) == total - n
    assert "model.init_from_partial=true" in caplog.text
    norm = save_ours(EDSR(scale=2, n_resblocks=1, n_feats=16, norm="batch"), tmp_path / "bn.ckpt")
    with pytest.raises(ValueError, match="'norm': 'batch'"):
        init_from_checkpoint(EDSR(scale=3, n_resblocks=1, n_feats=16), norm)
    mdsr = save_ours(MDSR(scales=(2, 3), n_resblocks=1, n_feats=16), tmp_path / "mdsr.ckpt")
    with pytest.raises(ValueError, match="'arch': 'MDSR'"):
        init_from_checkpoint(EDSR(scale=3, n_resblocks=1, n_feats=16), mdsr)


def test_init_from_x2_to_x3_and_x4_still_loads_everything_but_the_upsampler(tmp_path):
    """The paper's case, with our record and with an authors' file (no record: shapes)."""
    torch.manual_seed(0)
    src = EDSR(scale=2, n_resblocks=2, n_feats=8)
    ours = save_ours(src, tmp_path / "x2.ckpt")
    authors = tmp_path / "edsr_x2.pt"
    torch.save(src.state_dict(), authors)
    for path, scale in ((ours, 3), (authors, 4)):
        dst = EDSR(scale=scale, n_resblocks=2, n_feats=8)
        loaded, kept = init_from_checkpoint(dst, path)
        assert kept and all(k.startswith("tail.0.") for k in kept)  # the new upsampler only
        assert "body.1.body.2.weight" in loaded and "head.0.weight" in loaded
    other = EDSR(scale=3, n_resblocks=4, n_feats=8)  # an authors' file of another depth
    with pytest.raises(ValueError, match="'n_resblocks': 2"):
        init_from_checkpoint(other, authors)


def test_init_from_through_the_config_refuses_and_init_from_partial_allows(tmp_path):
    """``model.init_from`` as train.py and a notebook instantiate it (``cfg.model``)."""
    save_ours(EDSR(scale=2, n_resblocks=2, n_feats=8), tmp_path / "x2.ckpt")
    overrides = [
        "experiment=quickstart",
        "model.net.n_resblocks=1",
        "model.net.n_feats=8",
        "data.scales=[3]",
        f"model.init_from={tmp_path}/x2*.ckpt",  # a glob, as ckpt_path takes
    ]
    with pytest.raises(InstantiationException, match="tensors would load"):
        instantiate(compose_config("train", overrides).model)
    module = instantiate(
        compose_config("train", [*overrides, "model.init_from_partial=true"]).model
    )
    assert isinstance(module, SRLitModule) and module.hparams.init_from_partial is True
    same = [o.replace("n_resblocks=1", "n_resblocks=2") for o in overrides]
    assert isinstance(instantiate(compose_config("train", same).model), SRLitModule)


# ---- more ranks than evaluation images ---------------------------------------------------------
@pytest.mark.parametrize(
    "lengths, world",
    [([2], 4), ([2, 2, 2], 4), ([5], 8), ([5, 14], 3), ([1, 0, 3], 2), ([10], 1), ([], 4)],
)
def test_each_image_is_scored_once_and_a_rank_without_one_scores_nothing(lengths, world):
    shares = [eval_indices(lengths, rank, world) for rank in range(world)]
    for k, n in enumerate(lengths):  # every image of every loader exactly once
        got = sorted(i for share in shares for i in share[k] if i != NO_IMAGE)
        assert got == list(range(n))
    counts = [sum(len(s) for s in share if s != [NO_IMAGE]) for share in shares]
    assert max(counts) - min(counts) <= 1  # balanced over the loaders together
    for rank, share in enumerate(shares):
        has_image = counts[rank] > 0
        assert has_image or not lengths or share[0] == [NO_IMAGE]
        assert all(NO_IMAGE not in s for s in share[1:])


def test_a_rank_without_images_gets_one_empty_item_and_the_others_the_images(
    sample_cache, monkeypatch
):
    """The data module's own loaders for 4 simulated ranks over the 2 validation photos x 3
    scales (MDSR) and x 1 scale (EDSR): each photo once; a rank without any: one NO_IMAGE."""
    for scales, expected_empty in (([2, 3, 4], 0), ([2], 2)):
        dm = SRDataModule(
            root="unused",
            scales=scales,
            train_set="sample",
            val_sets=["sample"],
            benchmarks=[],
            num_workers=0,
            cache_dir=str(sample_cache),
        )
        dm.setup("validate")
        seen, empty = [], 0
        for rank in range(4):
            monkeypatch.setattr(dm, "_rank_world", lambda rank=rank: (rank, 4))
            items = [(k, b) for k, loader in enumerate(dm.val_dataloader()) for b in loader]
            assert items, f"rank {rank} would skip the evaluation loop and its collectives"
            for k, batch in items:
                if int(batch["index"]) == NO_IMAGE:
                    empty += 1
                    assert len(items) == 1 and batch["lr"].shape[-1] == 1
                else:
                    seen.append((dm.val_data[k].scale, batch["name"][0]))
        names = sorted(p.hr.stem for p in dm.val_data[0].pairs)
        assert sorted(seen) == sorted((s, n) for s in scales for n in names)
        assert empty == expected_empty
    assert dm.allow_zero_length_dataloader_with_multiple_devices


@pytest.mark.slow
def test_mdsr_on_4_gloo_ranks_with_fewer_images_than_ranks(tmp_path, sample_cache):
    """``train.py experiment=quickstart model=mdsr trainer=ddp_cpu trainer.devices=4``, shrunk,
    validating on one photo (3 images over 3 scales: rank 3 has none) and testing on the
    2 held-out photos (6 images: some ranks without an image of a set). It trains, each image
    is counted once, and the test numbers equal a single-process evaluation."""
    from PIL import Image

    from sr_lightning.data.sample import sample_dir

    one = tmp_path / "one"
    one.mkdir()
    src = sorted((sample_dir(sample_cache) / "val").glob("*.png"))[0]
    Image.open(src).crop((0, 0, 96, 72)).save(one / "photo.png")
    run = tmp_path / "run"
    args = [*tiny_args(sample_cache), f"hydra.run.dir={run}", "model=mdsr"]
    args += ["trainer=ddp_cpu", "trainer.devices=4", "data.batch_size=4"]
    args += ["trainer.max_epochs=1", f"data.val_sets=[{one}]"]
    train(args, timeout=600)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 4
    with open(run / "csv" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("val/one/x2/n_images")]
    assert [[float(r[f"val/one/x{s}/n_images"]) for s in (2, 3, 4)] for r in logged] == [[1] * 3]
    with open(run / "per_image.csv") as f:
        tested = [(r["model"], r["scale"], r["image"]) for r in csv.DictReader(f)]
    assert len(tested) == len(set(tested)) == 12  # 2 photos x 3 scales x 2 models, each once
    rows = json.loads((run / "results.json").read_text())
    mdsr = [r for r in rows if r["model"] != "bicubic"]
    assert sorted((r["scale"], r["n_images"]) for r in mdsr) == [(2, 2), (3, 2), (4, 2)]
    net, _ = load_network(next((run / "checkpoints").glob("best-*.ckpt")))
    single = score(net, tmp_path, ["sample"], [2, 3, 4], model_name="m", cache_dir=sample_cache)
    for r in mdsr:
        (s,) = [x for x in single if x["scale"] == r["scale"]]
        assert r["psnr"] == pytest.approx(s["psnr"], abs=1e-3)


# ---- a job still training is "running" -----------------------------------------------------
def test_a_job_whose_process_lives_is_running_and_one_that_was_killed_failed(tmp_path):
    job = write_job(tmp_path / "0", ["seed=0"])
    job.write_process()  # this process, not ended
    assert running(job) and read_job(job.path).status == "running"
    job.end_process()
    assert read_job(job.path).status == "failed"  # ended without a summary
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"pid": child.pid, "host": socket.gethostname(), "ended": None}
        job.process.write_text(json.dumps(record))
        assert read_job(job.path).status == "running"
        child.kill()
        child.wait()
        assert read_job(job.path).status == "failed"  # kill -9: no summary, no process
    finally:
        child.kill()
    # a pid now used by another process (its start differs) is not the run's
    job.process.write_text(json.dumps({**record, "pid": os.getpid(), "start_ticks": 1}))
    assert read_job(job.path).status == "failed"


def test_a_resumed_job_is_running_though_its_folder_holds_the_last_attempts_summary(tmp_path):
    job = write_job(tmp_path / "0", ["seed=0"], {"status": "preempted", "best": {"val/psnr": 30}})
    job.write_process()
    resumed = read_job(job.path)
    assert resumed.status == "running" and resumed.error is None
    job.write_summary({"status": "completed", "best": {"val/psnr": 31.0}})
    job.end_process()
    assert read_job(job.path).status == "completed"


def test_on_another_host_or_without_a_process_record_recent_changes_mean_running(tmp_path):
    job = write_job(tmp_path / "0", ["seed=0"])
    job.process.write_text(json.dumps({"pid": 1, "host": "node-elsewhere", "ended": None}))
    job.log.write_text("step 10\n")
    assert read_job(job.path).status == "running"
    old = time.time() - HEARTBEAT_S - 60
    for p in (job.log, job.process):
        os.utime(p, (old, old))
    assert read_job(job.path).status == "failed"
    legacy = write_job(tmp_path / "1", ["seed=1"])  # a run of an older version: no record
    legacy.log.write_text("training\n")
    assert read_job(legacy.path).status == "failed"  # never got to training
    legacy.write_config("seed: 1\n")
    assert read_job(legacy.path).status == "running"
    assert not running(legacy, now=time.time() + HEARTBEAT_S + 60)


def test_the_report_shows_running_and_leaves_it_out_of_the_seed_statistics(tmp_path):
    pytest.importorskip("matplotlib")
    sweep = tmp_path / "sweep"
    for seed in range(3):
        best = {"val/psnr": 30.0 + seed, "val/Set5/x2/psnr": 30.0 + seed}
        write_job(sweep / str(seed), [f"seed={seed}"], {"status": "completed", "best": best})
    write_job(sweep / "3", ["seed=3"]).write_process()  # still training (this process)
    report = build_report(sweep)
    assert [r["status"] for r in report.rows] == ["completed"] * 3 + ["running"]
    assert [len(g.jobs) for g in report.groups] == [3]
    md = (sweep / "report.md").read_text()
    assert "job 3 still running (left out of the statistics" in md
    assert "| 3 | 3 | - | - | - | - | - | - | no | running |" in md
    assert "nan" not in md


@pytest.mark.slow
def test_a_real_run_reads_running_while_it_trains_and_completed_after(tmp_path, sample_cache):
    """In process: a callback reads the run folder mid-training (the report's reader)."""
    import lightning as L

    seen = []

    class ReadStatus(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            seen.append(read_job(trainer.default_root_dir).status)

    run = tmp_path / "run"
    from sr_lightning.config import build

    real = build.build_training
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            "sr_lightning.cli.train.build_training",
            lambda cfg: real(cfg, extra_callbacks=[ReadStatus()]),
        )
        args = [*tiny_args(sample_cache), "trainer.max_epochs=1", "test_after_fit=false"]
        run_train_in_process(args, run)
    assert seen and set(seen) == {"running"}
    assert [j.status for j in read_sweep(run)] == ["completed"]
    assert RunFolder(run).read_process()["ended"] is not None
