"""Numbers you can trust: one evaluation path (fp32 whatever the trainer's precision),
checkpoints that record their network, the protocol of each data set, the global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import REPO, score, train
from PIL import Image

from sr_lightning.cli.upscale import main as upscale
from sr_lightning.core.metrics import psnr_ssim
from sr_lightning.data.datasets import aligned_pair, benchmark_pairs
from sr_lightning.data.io import load_image
from sr_lightning.models import MDSR, Bicubic, record
from sr_lightning.models.checkpoint import init_from_checkpoint, load_network
from sr_lightning.runs.results import format_table

SRC = REPO / "src" / "sr_lightning"


def tiny_run_args(data_root: Path, cache: Path, run: Path) -> list[str]:
    """A few dozen updates on the sample photos, validated and tested on real Set5."""
    return [
        "experiment=quickstart",
        "model.net.n_resblocks=2",
        "model.net.n_feats=16",
        "data.patch_size=12",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.updates_per_epoch=12",
        "trainer.max_epochs=2",
        f"data.root={data_root}",
        "data.val_sets=[Set5]",
        "data.benchmarks=[Set5]",
        f"data.cache_dir={cache}",
        "~callbacks.progress_bar",
        f"hydra.run.dir={run}",
    ]


def upscaled_psnr(data_root: Path, weights: Path, scale: int, out: Path, *extra: str) -> float:
    """Mean PSNR of ``sr-upscale``'s PNGs of Set5 x``scale`` against HR, benchmark protocol."""
    pairs = benchmark_pairs(data_root, "Set5", scale)
    inputs = [str(p.lr) for p in pairs]
    args = ["--weights", str(weights), "--scale", str(scale), "--out", str(out), *extra]
    assert upscale([*inputs, *args]) == 0
    values = []
    for pair in pairs:
        _, hr = aligned_pair(pair, scale)
        sr = load_image(out / f"{pair.lr.stem}_x{scale}.png")
        psnr, _ = psnr_ssim(sr[None].double(), hr[None], channels="y", border=scale)
        values.append(psnr.item())
    return sum(values) / len(values)


@pytest.mark.slow
def test_res_scale_model_in_bf16_with_ensemble_agrees_everywhere(tmp_path, data_root, cache_dir):
    """EDSR 2x16 with res_scale 0.1, trained under bf16-mixed, tested with the self-ensemble:
    results.json, eval.py (fp32) on the best checkpoint and sr-upscale's PNGs scored by our
    metrics agree to 0.001 dB; the checkpoint records res_scale=0.1 (no guess). Also the
    suite's bf16-mixed run on a CPU. train.py and eval.py run in this process (the same code as
    the scripts); 3 updates an epoch: a bf16 step is emulated on this CPU (~0.5 s each)."""
    from helpers import run_eval_in_process, run_train_in_process

    run = tmp_path / "run"
    extra = ["model.net.res_scale=0.1", "trainer.precision=bf16-mixed", "model.self_ensemble=true"]
    extra += ["data.updates_per_epoch=3"]
    run_train_in_process([*tiny_run_args(data_root, cache_dir, run), *extra], run)
    (row,) = [r for r in json.loads((run / "results.json").read_text()) if r["model"] != "bicubic"]
    assert row["model"] == "edsr 2x16 rs0.1" and row["self_ensemble"] is True
    assert row["protocol"] == {
        "channels": "y",
        "border": 2,
        "lr_source": "file",
        "degradation": "bicubic",
    }
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    net, rec = load_network(best, echo=pytest.fail)  # a record: nothing is guessed
    assert rec["res_scale"] == 0.1 and net.model_args["res_scale"] == 0.1
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    assert ckpt["protocols"] == {"Set5/x2": row["protocol"]}

    (fp32,) = run_eval_in_process(
        [
            f"ckpt_path={best}",
            f"data.root={data_root}",
            "data.benchmarks=[Set5]",
            "model.self_ensemble=true",
            f"data.cache_dir={cache_dir}",
        ],
        tmp_path / "eval",
    )
    assert fp32["psnr"] == pytest.approx(row["psnr"], abs=1e-3)
    assert fp32["ssim"] == pytest.approx(row["ssim"], abs=1e-5)
    assert fp32["protocol"] == row["protocol"]
    up = upscaled_psnr(data_root, best, 2, tmp_path / "up", "--self-ensemble")
    assert up == pytest.approx(row["psnr"], abs=1e-3)
    with pytest.raises(ValueError, match=r"res_scale=1.0 contradicts .*record \(res_scale=0.1"):
        load_network(best, res_scale=1.0)


@pytest.mark.slow
def test_mdsr_trains_and_scores_its_three_scales_everywhere(tmp_path, data_root, cache_dir):
    """model=mdsr_baseline trains x2, x3 and x4 by itself; its checkpoint criterion is the mean
    over the scales; eval.py scores every scale of the checkpoint; sr-upscale agrees. train.py
    and eval.py run in this process (the same code as the scripts)."""
    from helpers import run_eval_in_process, run_train_in_process

    run = tmp_path / "run"
    run_train_in_process([*tiny_run_args(data_root, cache_dir, run), "model=mdsr_baseline"], run)
    rows = [r for r in json.loads((run / "results.json").read_text()) if r["model"] != "bicubic"]
    assert [(r["model"], r["scale"]) for r in rows] == [("mdsr 2x16", s) for s in (2, 3, 4)]
    summary = json.loads((run / "summary.json").read_text())
    final = summary["final"]
    mean = sum(final[f"val/Set5/x{s}/psnr"] for s in (2, 3, 4)) / 3
    assert final["val/psnr"] == pytest.approx(mean, abs=1e-4)
    assert summary["model_args"]["scales"] == [2, 3, 4]

    best = next((run / "checkpoints").glob("best-*.ckpt"))
    evaluated = run_eval_in_process(  # no data.scales: every scale the checkpoint has
        [
            f"ckpt_path={best}",
            f"data.root={data_root}",
            "data.benchmarks=[Set5]",
            f"data.cache_dir={cache_dir}",
        ],
        tmp_path / "eval",
    )
    assert [r["scale"] for r in evaluated] == [2, 3, 4]
    for row, again in zip(rows, evaluated, strict=True):
        assert again["psnr"] == pytest.approx(row["psnr"], abs=1e-3)
        assert (
            again["protocol"]
            == row["protocol"]
            == {
                "channels": "y",
                "border": row["scale"],
                "lr_source": "file",
                "degradation": "bicubic",
            }
        )
        up = upscaled_psnr(data_root, best, row["scale"], tmp_path / f"up{row['scale']}")
        assert up == pytest.approx(row["psnr"], abs=1e-3)


@pytest.mark.slow
def test_mdsr_recipe_and_the_global_batch_under_ddp(tmp_path, data_root, cache_dir):
    """``model=mdsr`` composes x2+x3+x4 and 650 epochs. ``model=mdsr_baseline
    trainer.devices=2`` as typed (2 CPU ranks, no strategy given) trains the mixed scales (MDSR
    leaves the other scales' modules without gradient at each step: DDP is told) and tests each
    scale; ``data.batch_size=8`` is 4 patches per rank per step, logged as the recipe and
    recorded in summary.json."""
    from helpers import compose_config

    cfg = compose_config("train", ["model=mdsr"])  # what ``train.py model=mdsr`` composes
    assert list(cfg.data.scales) == [2, 3, 4] and cfg.trainer.max_epochs == 650
    assert cfg.model.net.n_resblocks == 80 and cfg.data.batch_size == 16

    run = tmp_path / "run"
    args = tiny_run_args(data_root, cache_dir, run)
    args += [
        "model=mdsr_baseline",
        "model.net.n_resblocks=1",
        "model.net.n_feats=8",
        "trainer.devices=2",
        "data.batch_size=8",
        "data.updates_per_epoch=4",
        "trainer.max_epochs=1",
        "+callbacks.probe._target_=batch_probe.BatchSizes",
        f"+callbacks.probe.dirpath={tmp_path / 'probe'}",
    ]
    proc = train(args, env={"PYTHONPATH": str(REPO / "tests" / "plugins")})
    assert "trainer.strategy=ddp_find_unused_parameters_true" in proc.stdout + proc.stderr
    assert "recipe: global batch 8 = 2 devices x 4, lr 0.0005 (not rescaled)" in proc.stdout
    for rank in (0, 1):
        lines = (tmp_path / "probe" / f"batches-rank{rank}.txt").read_text().split("\n")[:-1]
        assert [line.split() for line in lines] == [[str(k), "4", "4"] for k in range(4)]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["global_batch_size"], summary["per_device_batch_size"]) == (8, 4)
    assert summary["world_size"] == 2 and summary["model_args"]["scales"] == [2, 3, 4]
    rows = json.loads((run / "results.json").read_text())  # each scale tested, on Set5
    assert sorted((r["model"], r["scale"], r["n_images"]) for r in rows) == [
        (model, scale, 5) for model in ("bicubic", "mdsr 1x8") for scale in (2, 3, 4)
    ]


def div2k_folder(data_root: Path, root: Path) -> Path:
    """A DIV2K-layout folder (``DIV2K/DIV2K_train_HR/0801.png`` ...) of real Set14 photos."""
    hr_dir = root / "DIV2K" / "DIV2K_train_HR"
    hr_dir.mkdir(parents=True)
    for i, name in enumerate(("comic", "monarch", "zebra")):
        Image.open(data_root / "benchmark" / "Set14" / "HR" / f"{name}.png").save(
            hr_dir / f"{801 + i:04d}.png"
        )
    return root


def test_div2k_is_scored_on_rgb_with_border_scale_plus_6(tmp_path, data_root):
    root = div2k_folder(data_root, tmp_path / "data")
    kwargs = {"model_name": "bicubic", "div2k_test_range": (801, 803), "cache_dir": tmp_path / "c"}
    (row,) = score(Bicubic(), root, ["DIV2K"], [3], **kwargs)
    assert row["protocol"] == {
        "channels": "rgb",
        "border": 9,
        "lr_source": "imresize",
        "degradation": "bicubic",
    }
    assert row["n_images"] == 3
    # by hand: MATLAB bicubic of our LR, all three channels, 9 pixels cut on each side
    from sr_lightning.data.datasets import div2k_pairs

    by_hand = []
    for pair in div2k_pairs(root, 3, 801, 803):
        lr, hr = aligned_pair(pair, 3, tmp_path / "c")
        sr = Bicubic()(lr[None].float(), 3)
        by_hand.append(psnr_ssim(sr, hr[None], channels="rgb", border=9)[0].item())
    assert row["psnr"] == pytest.approx(sum(by_hand) / 3, abs=1e-4)
    (forced,) = score(Bicubic(), root, ["DIV2K"], [3], protocol="benchmark", **kwargs)
    assert forced["protocol"] == {
        "channels": "y",
        "border": 3,
        "lr_source": "imresize",
        "degradation": "bicubic",
    }
    assert abs(forced["psnr"] - row["psnr"]) > 0.5  # Y vs RGB: the protocols differ a lot
    table = format_table([row, forced])
    assert "| DIV2K | x3 | RGB, border 9, LR imresize | " in table
    assert "| DIV2K | x3 | Y, border 3, LR imresize | " in table  # two lines, never one


def test_report_never_puts_two_protocols_in_one_column(tmp_path):
    from helpers import write_job

    from sr_lightning.analysis.report import build_report

    sweep = tmp_path / "sweep"
    for job, (channels, border, psnr) in enumerate([("y", 2, 30.0), ("rgb", 8, 28.0)]):
        proto = {"channels": channels, "border": border, "lr_source": "file"}
        summary = {
            "status": "completed",
            "best": {"val/DIV2K/x2/psnr": psnr},
            "protocols": {"DIV2K/x2": proto},
        }
        write_job(sweep / str(job), [f"data.protocol={channels}"], summary)
    report = build_report(sweep)
    columns = [c for c in report.columns if c.startswith("val/") and "/psnr" in c]
    assert columns == [
        "val/DIV2K/x2/psnr [Y, border 2, LR file]",
        "val/DIV2K/x2/psnr [RGB, border 8, LR file]",
    ]
    assert [[r[c] for c in columns] for r in report.rows] == [[30.0, None], [None, 28.0]]
    assert "DIV2K x2 PSNR (RGB, border 8, LR file)" in report.paths[0].read_text()


def lightning_ckpt(net: torch.nn.Module, path: Path, rec: dict | None) -> Path:
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "model_args": rec, "global_step": 1}, path)
    return path


def test_a_record_that_contradicts_the_tensors_names_both(tmp_path):
    from sr_lightning.models import EDSR

    net = EDSR(scale=2, n_resblocks=2, n_feats=8, res_scale=0.1)
    good = lightning_ckpt(net, tmp_path / "good.ckpt", record(net))
    rebuilt, rec = load_network(good, echo=pytest.fail)
    assert rec == record(net) and rebuilt.model_args == net.model_args
    lie = {**record(net), "n_feats": 16, "scales": [4]}
    bad = lightning_ckpt(net, tmp_path / "bad.ckpt", lie)
    with pytest.raises(ValueError) as err:
        load_network(bad)
    msg = str(err.value)
    assert "contradicts the tensors" in msg and "bad.ckpt" in msg
    assert "n_feats: record 16, tensors 8" in msg and "scales: record [4], tensors [2]" in msg


def test_weights_without_a_record_print_the_res_scale_guess(tmp_path):
    from sr_lightning.models import EDSR

    torch.save(
        EDSR(scale=2, n_resblocks=2, n_feats=8, res_scale=0.1).state_dict(), tmp_path / "a.pt"
    )
    said: list[str] = []
    _, rec = load_network(tmp_path / "a.pt", echo=said.append)
    assert rec["res_scale"] == 1.0 and "res_scale=1.0 guessed" in said[0]
    assert "--res-scale" in said[0]
    _, rec = load_network(tmp_path / "a.pt", res_scale=0.1, echo=said.append)
    assert rec["res_scale"] == 0.1 and len(said) == 1  # given: nothing to guess
    torch.save(EDSR(scale=2, n_resblocks=16, n_feats=64).state_dict(), tmp_path / "b.pt")
    _, rec = load_network(tmp_path / "b.pt", echo=said.append)
    assert rec["res_scale"] == 1.0 and "the edsr_baseline preset has these shapes" in said[1]


def test_init_from_maps_mdsr_modules_by_scale(tmp_path):
    torch.manual_seed(0)
    src = MDSR(scales=(2, 3, 4), n_resblocks=1, n_feats=8)
    torch.save(src.state_dict(), tmp_path / "mdsr.pt")
    dst = MDSR(scales=(2, 4), n_resblocks=1, n_feats=8)
    loaded, kept = init_from_checkpoint(dst, tmp_path / "mdsr.pt")
    assert kept == []  # every tensor of the (2, 4) model has its scale in the file
    for a, b in [(dst.upsample[1], src.upsample[2]), (dst.pre_process[1], src.pre_process[2])]:
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)
    assert torch.equal(dst.upsample[0][0].weight, src.upsample[0][0].weight)


def test_eval_refuses_a_random_trainable_network(tmp_path, capsys, caplog):
    import logging

    from helpers import run_eval_in_process  # eval.py with no override, in this process

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_:
        run_eval_in_process([], tmp_path)
    assert exit_.value.code == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    said = error.getMessage() + "".join(capsys.readouterr())
    assert "model=edsr_baseline without ckpt_path= would score a randomly initialised" in said
    assert error.exc_info is None and "Traceback" not in said  # one line, no traceback
    assert not (tmp_path / "results.json").exists()
