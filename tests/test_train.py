"""train.py end to end (tiny models, a few steps, CPU): Hydra, DDP, resume, W&B, EMA.

Subprocesses where the process is the point (the console and train.log, 2 gloo ranks, ``-m``,
the W&B service); the rest runs ``run_train`` in process (the same code, seconds less each).
Bad configs: tests/test_train_config.py (fast tier); MDSR under DDP and a bf16-mixed run on
this CPU: test_numbers.py."""

from __future__ import annotations

import csv
import json
import logging
import re

import pytest
import torch
from helpers import ckpt_step, run_train_in_process, score, tiny_args, train, write_job

pytestmark = pytest.mark.slow


def test_train_end_to_end_writes_results_and_checkpoints(tmp_path, sample_cache):
    run = tmp_path / "run"
    proc = train([*tiny_args(sample_cache), f"hydra.run.dir={run}", "optim.loss=l2"])
    rows = json.loads((run / "results.json").read_text())
    assert {r["model"] for r in rows} == {"edsr 1x8", "bicubic"}  # named by what it is
    assert all(r["dataset"] == "sample" and r["scale"] == 2 and r["n_images"] == 2 for r in rows)
    assert "| sample | x2 |" in proc.stdout
    ckpts = {p.name for p in (run / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    assert ckpt_step(run / "checkpoints" / "last.ckpt") == 6
    assert (run / "checkpoints" / "config.yaml").is_file()
    assert (run / "csv" / "metrics.csv").read_text().count("val/sample/x2/psnr") == 1
    # what a researcher sees: pictures, curves, per-image results, the run's own log lines
    from PIL import Image

    samples = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert samples == [
        f"sample_x2_{image}_step{step:07d}.png"
        for image in ("astronaut", "coffee")
        for step in (3, 6)
    ]
    for path in [*(run / "samples").glob("*.png"), run / "curves.png"]:
        with Image.open(path) as im:
            im.verify()
    with Image.open(run / "samples" / samples[0]) as im:  # thumbnail + 4 crops of 192 HR px,
        assert im.width >= 5 * 384 and im.height > 384  # shown x2 (test_pictures.py: layout)
    import csv

    with open(run / "per_image.csv", newline="") as f:
        per_image = list(csv.DictReader(f))
    assert {(r["model"], r["image"]) for r in per_image} == {  # the held-out test photos
        (m, i) for m in ("edsr 1x8", "bicubic") for i in ("chelsea", "immunohistochemistry")
    }
    for row in rows:  # results.json's mean is the mean of the per-image rows
        values = [float(r["psnr"]) for r in per_image if r["model"] == row["model"]]
        assert row["psnr"] == pytest.approx(sum(values) / len(values), abs=1e-4)
    said = proc.stdout + proc.stderr
    for noise in ("Warning", "LeafSpec", "litlogger", "exists and is not empty", "Total FLOPs"):
        assert noise not in said, noise  # a quiet console: no library noise, no warning
    log = (run / "train.log").read_text()
    assert "recipe: global batch 2" in log and "`Trainer.fit` stopped" in log
    assert "py.warnings" not in log
    assert proc.stdout.strip().splitlines()[-2:] == [
        f"pictures: 4 validation crops in {run / 'samples'}",
        f"curves: {run / 'curves.png'}",
    ]


def test_ddp_cpu_single_run_scores_each_image_once(tmp_path, sample_cache):
    """One 2-rank DDP run (gloo), three checks. A 3-image test set (a padding sampler would
    score one image twice): the DDP numbers equal a single-process evaluation of the same
    checkpoint. The world size is the trainer's, also for ``trainer.devices`` given as a digit
    string (Lightning accepts "2"): the global batch of 4 is 2 per rank, in the recipe line and
    in summary.json. The speed flags work under DDP: the ranks train the compiled
    channels_last step without falling back to eager, and the checkpoint holds the network
    once (net.*, no compiled or DDP wrapper)."""
    from PIL import Image

    from sr_lightning.data.sample import sample_dir
    from sr_lightning.models import EDSR
    from sr_lightning.models.checkpoint import load_weights

    three = tmp_path / "three"
    three.mkdir()
    for i, src in enumerate(sorted((sample_dir(sample_cache) / "train").glob("*.png"))[:3]):
        Image.open(src).crop((0, 0, 96 + 24 * i, 72)).save(three / f"{i}.png")
    run = tmp_path / "run"
    args = [*tiny_args(sample_cache), f"hydra.run.dir={run}", "trainer=ddp_cpu"]
    args += ['trainer.devices="2"', "data.batch_size=4", "trainer.max_epochs=1"]
    args += ["model.compile=true", "model.channels_last=true"]
    proc = train([*args, f"data.benchmarks=[{three}]"], timeout=600)
    assert "compiling failed" not in proc.stdout + proc.stderr
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3
    assert all(k.startswith(("net.", "eval_metrics.")) for k in last["state_dict"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "three"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["per_device_batch_size"] == 2
    assert summary["global_batch_size"] == 4 and summary["status"] == "completed"
    assert "recipe: global batch 4 = 2 devices x 2, " in (run / "train.log").read_text()
    rows = json.loads((run / "results.json").read_text())
    ddp = next(r for r in rows if r["model"] != "bicubic")
    assert ddp["n_images"] == 3
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    net = load_weights(EDSR(scale=2, n_resblocks=1, n_feats=8), best)
    single = score(net, tmp_path, [str(three)], [2], model_name="m", cache_dir=sample_cache)
    assert ddp["psnr"] == pytest.approx(single[0]["psnr"], abs=1e-3)
    assert ddp["ssim"] == pytest.approx(single[0]["ssim"], abs=1e-4)


def test_ddp_cpu_multirun_folders_and_a_diverged_job(tmp_path, sample_cache):
    """2 gloo ranks per job (ddp_spawn under -m): one folder per job, and the job whose loss
    blows up (raised in a spawned worker) is recorded as diverged while the sweep goes on."""
    sweep = tmp_path / "sweep"
    train(
        [
            "-m",
            *tiny_args(sample_cache),
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            "callbacks.divergence_guard.check_every_n_steps=1",
            "optim.lr=1e30,5e-4",
            f"hydra.sweep.dir={sweep}",
        ],
        timeout=600,
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["lr-0.0005", "lr-1e_30"]  # named by the swept value, as Hydra writes it
    completed, diverged = (json.loads((sweep / j / "summary.json").read_text()) for j in jobs)
    assert diverged["status"] == "diverged", diverged
    assert diverged["error"].startswith("non-finite training loss at step")
    assert completed["status"] == "completed"
    assert (sweep / "lr-0.0005" / "checkpoints" / "last.ckpt").is_file()
    tested = json.loads((sweep / "lr-0.0005" / "results.json").read_text())  # in the parent
    assert [(r["model"], r["n_images"]) for r in tested] == [("edsr 1x8", 2), ("bicubic", 2)]
    for job in jobs:
        cfg = (sweep / job / "checkpoints" / "config.yaml").read_text()
        assert "strategy: ddp_spawn" in cfg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no second sweep folder


def test_wandb_offline_without_network_and_a_resume_continues_its_run(tmp_path, sample_cache):
    """No key, no network: W&B logs offline, and the run's last lines name the folder and the
    ``wandb sync`` command. The resumed run (same folder) continues the same W&B run id."""
    from sr_lightning.training.loggers import run_id

    run = tmp_path / "run"
    env = {"HOME": str(tmp_path), "WANDB_MODE": None, "WANDB_API_KEY": None}
    args = [*tiny_args(sample_cache), f"hydra.run.dir={run}", "logger=wandb"]
    first = train([*args, "trainer.max_epochs=1"], env=env)
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob(f"run-{run_id(run)}.wandb"))
    assert len(list(runs[0].rglob("files/media/images/samples/**/*.png"))) == 2  # val crops
    last = first.stdout.strip().splitlines()[-2:]
    assert last == [
        f"W&B: offline run {run_id(run)} in {runs[0]}",
        f"  upload it with: wandb sync {runs[0]}",
    ]
    train([f"hydra.run.dir={run}", "ckpt_path=last"], env=env)  # the README's resume
    ids = sorted(p.name for p in (run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert ids == [f"run-{run_id(run)}.wandb"] * 2  # two offline segments of one W&B run


def test_training_longer_from_a_checkpoint_continues_exactly_and_ema_is_what_eval_scores(
    tmp_path, sample_cache, caplog
):
    """A run trained for 1 epoch, then for 2 from its checkpoint (a changed config: the
    checkpoint is given by path; ckpt_path=last refuses the new max_epochs) continues at the
    right step, logs each step once and ends equal to the run trained for 2 epochs at once.
    With optim.ema_decay, in both: the checkpoint's state_dict is the EMA of the weights
    (validated, tested, loaded by eval.py/sr-upscale), current_model_state the raw weights."""
    from sr_lightning.config.rules import prepare_command_line
    from sr_lightning.models.checkpoint import load_network

    args = [*tiny_args(sample_cache), "optim.ema_decay=0.5"]
    whole, half = tmp_path / "whole", tmp_path / "half"
    with caplog.at_level(logging.INFO, logger="sr_lightning"):
        run_train_in_process(args, whole)
    assert "EMA of the weights (decay 0.5)" in caplog.text  # the recipe line
    first = [*args, "trainer.max_epochs=1"]
    run_train_in_process(first, half)
    last = half / "checkpoints" / "last.ckpt"
    assert ckpt_step(last) == 3
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 3  # step-wise LR schedule state saved
    write_job(half, overrides=first)  # the run's own overrides, as train.py records them
    refused = re.escape("trainer.max_epochs=2 (the run has trainer.max_epochs=1)")
    with pytest.raises(SystemExit, match=refused):
        prepare_command_line("train", ["train.py", f"hydra.run.dir={half}", "ckpt_path=last",
                                       "trainer.max_epochs=2"])  # fmt: skip
    run_train_in_process([*args, f"ckpt_path={last}"], half)
    assert ckpt_step(last) == 6
    with open(half / "csv" / "metrics.csv") as f:
        logged = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert logged == sorted(set(logged)) and len(logged) == 6  # each step once, none lost

    a, b = (
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for run in (whole, half)
    )
    assert a["global_step"] == b["global_step"] == 6
    for key in ("state_dict", "current_model_state"):
        for name, value in a[key].items():
            torch.testing.assert_close(b[key][name], value, rtol=1e-5, atol=1e-6)
    weight = "net.head.0.weight"
    assert not torch.equal(a["state_dict"][weight], a["current_model_state"][weight])
    best = next((whole / "checkpoints").glob("best-*.ckpt"))
    net, _ = load_network(best, echo=pytest.fail)
    saved = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    torch.testing.assert_close(net.head[0].weight, saved[weight])  # the averaged weights
    (row,) = [
        r for r in json.loads((whole / "results.json").read_text()) if r["model"] != "bicubic"
    ]
    (again,) = score(net, tmp_path, ["sample"], [2], model_name="m", cache_dir=sample_cache)
    assert again["psnr"] == pytest.approx(row["psnr"], abs=1e-4)


def test_validation_by_wall_time_gives_time_to_psnr_points(tmp_path, sample_cache):
    """``trainer.val_check_interval="00:00:00:01"`` (Lightning's time string): validations
    inside one epoch, each in history.csv with its step and wall-clock minutes. The run is
    bounded by time too (4 s of a 100,000-update epoch), and validates on two 128 px crops
    (milliseconds), so that any machine gets several."""
    from PIL import Image

    from sr_lightning.data.sample import sample_dir

    crops = tmp_path / "crops"
    crops.mkdir()
    for src in sorted((sample_dir(sample_cache) / "train").glob("*.png"))[:2]:
        Image.open(src).crop((0, 0, 128, 128)).save(crops / src.name)
    run = tmp_path / "run"
    run_train_in_process(
        [
            *tiny_args(sample_cache),
            f"data.val_sets=[{crops}]",
            "data.updates_per_epoch=100000",
            "trainer.max_epochs=1",
            '+trainer.max_time="00:00:00:04"',
            'trainer.val_check_interval="00:00:00:01"',
            "callbacks.step_checkpoint.every_n_train_steps=100000",
            "test_after_fit=false",
        ],
        run,
    )
    with open(run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val_steps = [int(r["step"]) for r in rows if r["key"] == "val/crops/x2/psnr"]
    minutes = [float(r["value"]) for r in rows if r["key"] == "time/minutes"]
    inside = [s for s in val_steps if s < 100000]
    assert len(inside) >= 2, val_steps  # by time: the epoch never ended
    assert len(minutes) == len(val_steps) and minutes == sorted(minutes) and minutes[0] > 0
