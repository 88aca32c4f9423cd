"""Every evaluation switch of eval.py exists once (the model's and the data's, as in train.py)
and changes what eval.py computes: self-ensemble, tiles, the protocol, the degradation, the
scales of the checkpoint, res_scale of record-less weights, where the results go."""

from __future__ import annotations

import pytest
import torch
from helpers import read_json, run_eval_in_process, score

from sr_lightning.models import EDSR, MDSR


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict:
    """A tiny EDSR x2 and a tiny MDSR x2+x3, saved as authors' files (tensors only)."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    edsr, mdsr = EDSR(2, n_resblocks=1, n_feats=8), MDSR([2, 3], n_resblocks=1, n_feats=8)
    torch.save(edsr.state_dict(), folder / "edsr.pt")
    torch.save(mdsr.state_dict(), folder / "mdsr.pt")
    return {"edsr": (edsr, folder / "edsr.pt"), "mdsr": (mdsr, folder / "mdsr.pt")}


def evaluate(weights_file, data_root, cache_dir, out, *switches: str) -> list[dict]:
    return run_eval_in_process(
        [
            f"ckpt_path={weights_file}",
            f"data.root={data_root}",
            f"data.cache_dir={cache_dir}",
            "data.benchmarks=[Set5]",
            "data.num_workers=0",
            *switches,
        ],
        out,
    )


def test_each_eval_switch_changes_what_is_computed(weights, data_root, cache_dir, tmp_path):
    net, pt = weights["edsr"]
    (plain,) = evaluate(pt, data_root, cache_dir, tmp_path / "a")
    assert plain["self_ensemble"] is False and plain["scale"] == 2  # the checkpoint's scale
    assert plain["protocol"] == {
        "channels": "y", "border": 2, "lr_source": "file", "degradation": "bicubic",
    }  # fmt: skip
    written = read_json(tmp_path / "a" / "results.json")  # results_path's default
    assert written[0] == plain and [r["model"] for r in written] == [plain["model"], "bicubic"]

    (ensembled,) = evaluate(pt, data_root, cache_dir, tmp_path / "b", "model.self_ensemble=true")
    assert ensembled["self_ensemble"] is True
    assert abs(ensembled["psnr"] - plain["psnr"]) > 1e-3
    (by_hand,) = score(net, data_root, ["Set5"], [2], cache_dir=cache_dir, self_ensemble=True)
    assert ensembled["psnr"] == pytest.approx(by_hand["psnr"], abs=1e-4)

    # tiles overlapping by the receptive radius are exact; without context they are not
    (exact,) = evaluate(pt, data_root, cache_dir, tmp_path / "c", "model.val_tile=40")
    assert exact["psnr"] == pytest.approx(plain["psnr"], abs=1e-3)
    (seams,) = evaluate(
        pt, data_root, cache_dir, tmp_path / "d", "model.val_tile=40", "model.val_tile_overlap=0"
    )
    assert abs(seams["psnr"] - plain["psnr"]) > 1e-3

    (rgb,) = evaluate(pt, data_root, cache_dir, tmp_path / "e", "data.protocol=div2k")
    assert rgb["protocol"]["channels"] == "rgb" and rgb["protocol"]["border"] == 2 + 6
    assert abs(rgb["psnr"] - plain["psnr"]) > 1e-3

    (bd,) = evaluate(pt, data_root, cache_dir, tmp_path / "f", "data.degradation=bd")
    assert bd["protocol"]["degradation"] == "bd" and bd["protocol"]["lr_source"] == "generated"
    assert abs(bd["psnr"] - plain["psnr"]) > 1e-3

    (scaled,) = evaluate(pt, data_root, cache_dir, tmp_path / "g", "res_scale=0.5")
    assert abs(scaled["psnr"] - plain["psnr"]) > 1e-3  # record-less weights: res_scale counts

    where = tmp_path / "elsewhere" / "r.json"
    evaluate(pt, data_root, cache_dir, tmp_path / "h", f"results_path={where}")
    assert read_json(where)[0]["psnr"] == plain["psnr"]
    assert (where.parent / "per_image.csv").is_file()


def test_eval_scores_every_scale_of_the_checkpoint_unless_told(
    weights, data_root, cache_dir, tmp_path
):
    _, pt = weights["mdsr"]
    rows = evaluate(pt, data_root, cache_dir, tmp_path / "all")
    assert [r["scale"] for r in rows] == [2, 3]
    (three,) = evaluate(pt, data_root, cache_dir, tmp_path / "one", "data.scales=[3]")
    assert three["psnr"] == rows[1]["psnr"]
