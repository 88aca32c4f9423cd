"""The evaluation pipeline reproduces the paper's bicubic rows (Table 3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import REPO, run_eval_in_process, score
from PIL import Image

from sr_lightning.data.datasets import benchmark_pairs, eval_dataset
from sr_lightning.models import EDSR, Bicubic
from sr_lightning.models.checkpoint import load_weights

# ../shared/paper/EDSR-facts.md, Table 3, "Bicubic" column: (PSNR, SSIM)
PAPER_BICUBIC = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}


def test_bicubic_reproduces_paper_table(data_root, cache_dir):
    rows = score(
        Bicubic(),
        data_root,
        ["Set5", "Set14"],
        [2, 3, 4],
        model_name="bicubic",
        device="cpu",
        cache_dir=cache_dir,
    )
    assert len(rows) == 6
    for row in rows:
        psnr, ssim = PAPER_BICUBIC[row["dataset"], row["scale"]]
        assert row["n_images"] == {"Set5": 5, "Set14": 14}[row["dataset"]]
        assert abs(row["psnr"] - psnr) <= 0.02, row
        assert abs(row["ssim"] - ssim) <= 0.001, row


def test_set14_gray_image_is_flagged(data_root, cache_dir):
    data = eval_dataset(data_root, "Set14", 2, cache_dir)
    gray = {item["name"] for item in data if item["gray"]}
    assert gray == {"bridge"}  # `man` is stored as RGB with R=G=B: scored as colour


def test_generated_lr_equals_shipped_and_is_cached(data_root, tmp_path):
    """Urban100 ships no LR: it is generated with imresize, and equals MATLAB where both exist."""
    shipped = eval_dataset(data_root, "Set5", 3, tmp_path)
    missing = [p.__class__(p.hr, None) for p in benchmark_pairs(data_root, "Set5", 3)]
    generated = shipped.__class__("Set5", missing, 3, tmp_path)
    for a, b in zip(shipped, generated, strict=True):
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert len(list(tmp_path.glob("*-lrx3-*.npy"))) == 5


def test_eval_cli_writes_table_and_json(data_root, tmp_path, capsys):
    out = tmp_path / "bicubic.json"
    returned = run_eval_in_process(
        [
            "model=bicubic",
            f"data.root={data_root}",
            "data.benchmarks=[Set5]",
            "data.scales=[2,4]",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"results_path={out}",
        ],
        tmp_path / "run",
    )
    assert "| Set5 | x2 | Y, border 2, LR file | 33.67 / 0.9303 |" in capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert rows[0] == {
        "dataset": "Set5",
        "scale": 2,
        "psnr": pytest.approx(33.66, abs=0.02),
        "ssim": pytest.approx(0.9299, abs=0.001),
        "model": "bicubic",
        "self_ensemble": False,
        "n_images": 5,
        "protocol": {"channels": "y", "border": 2, "lr_source": "file", "degradation": "bicubic"},
    }
    assert [r["scale"] for r in rows] == [2, 4]
    assert rows == json.loads(json.dumps(returned))  # the file holds the rows it returned


# the script itself (argv check, @hydra.main, its logging) and the exit codes of a real process
@pytest.mark.slow
def test_eval_py_writes_results_and_exits_1_naming_a_corrupt_image(data_root, tmp_path):
    def eval_py(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "eval.py"), "model=bicubic", f"data.root={data_root}",
             "data.scales=[2]", f"data.cache_dir={tmp_path / 'cache'}", *args],
            capture_output=True, text=True, timeout=300, cwd=REPO,
        )  # fmt: skip

    run = tmp_path / "run"
    proc = eval_py("data.benchmarks=[Set5]", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| Set5 | x2 | Y, border 2, LR file | 33.67 / 0.9303 |" in proc.stdout
    (row,) = json.loads((run / "results.json").read_text())  # results_path's default
    assert (row["dataset"], row["scale"], row["n_images"]) == ("Set5", 2, 5)
    assert (run / "per_image.csv").is_file()

    folder = tmp_path / "mine"
    folder.mkdir()
    Image.open(data_root / "benchmark" / "Set5" / "HR" / "bird.png").save(folder / "bird.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    proc = eval_py(f"data.benchmarks=[{folder}]", f"hydra.run.dir={tmp_path / 'bad'}")
    said = proc.stdout + proc.stderr
    assert proc.returncode == 1, said[-3000:]
    assert f"{folder / 'corrupt.png'}: cannot decode image" in said and "Traceback" not in said
    assert "| mine |" not in said and not (tmp_path / "bad" / "results.json").exists()

    proc = eval_py("model.self_ensembel=true", f"hydra.run.dir={tmp_path / 'typo'}")
    assert proc.returncode == 2, proc.stderr[-3000:]  # our did-you-mean, before Hydra's advice
    assert "did you mean 'self_ensemble'?" in proc.stderr
    assert "To append to your config use +" not in proc.stderr


def test_missing_data_set_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        eval_dataset(tmp_path, "Set5", 2)
    msg = str(err.value)
    assert str(tmp_path / "benchmark" / "Set5" / "HR") in msg
    assert "sr-download benchmark" in msg
    with pytest.raises(ValueError, match="unknown data set 'Set6'"):
        eval_dataset(tmp_path, "Set6", 2)


def test_model_without_the_scale_is_refused(data_root):
    with pytest.raises(ValueError, match=r"data.scales=\[3\]: the model supports only x\[2\]"):
        score(EDSR(scale=2, n_resblocks=1, n_feats=8), data_root, ["Set5"], [3], model_name="m")


def test_checkpoint_loading_is_strict_and_safe(tmp_path):
    model = EDSR(scale=2, n_resblocks=2, n_feats=8)
    path = tmp_path / "authors.pt"
    torch.save(model.state_dict(), path)
    fresh = load_weights(EDSR(scale=2, n_resblocks=2, n_feats=8), path)
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())
    with pytest.raises(ValueError, match=r"does not fit this EDSR.*another shape"):
        load_weights(EDSR(scale=4, n_resblocks=2, n_feats=8), path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_weights(model, tmp_path / "junk.pt")


def test_eval_cli_with_an_authors_checkpoint_and_self_ensemble(data_root, tmp_path):
    torch.manual_seed(0)
    net = EDSR(scale=4, n_resblocks=1, n_feats=8)
    torch.save(net.state_dict(), tmp_path / "edsr_tiny_x4.pt")  # authors' format
    out = tmp_path / "r.json"
    run_eval_in_process(
        [
            f"ckpt_path={tmp_path / 'edsr_tiny_x4.pt'}",
            f"data.root={data_root}",
            "data.benchmarks=[Set5]",
            "data.scales=[4]",
            "model.self_ensemble=true",
            f"results_path={out}",
        ],
        tmp_path / "run",
    )
    row, bicubic = json.loads(out.read_text())  # the network's row, bicubic's beside it
    assert row["model"] == "EDSR (1x8) x4" and row["self_ensemble"] is True
    assert (bicubic["model"], bicubic["self_ensemble"]) == ("bicubic", False)
    assert row["n_images"] == 5
    expected = score(net, data_root, ["Set5"], [4], model_name="m", self_ensemble=True)
    assert row["psnr"] == pytest.approx(expected[0]["psnr"], abs=1e-4)
