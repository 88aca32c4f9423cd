"""Pictures a researcher reads (issue 24, item 7): the sample panel (crop where SR and bicubic
differ most, 160-256 px of HR shown enlarged, labels in strips of their own, the crop marked on
a thumbnail, |SR - HR|), zero-padded sample names, curves titled with set, scale and run and
the best step marked, and eval.py's table with bicubic beside the network, headed by it.
Real images: the embedded sample photos (scikit-image)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import run_eval_in_process, run_train_in_process, score, tiny_args, write_job
from PIL import Image

from sr_lightning.core.inference import super_resolve
from sr_lightning.core.metrics import psnr_ssim
from sr_lightning.core.protocol import Protocol
from sr_lightning.models import EDSR, Bicubic
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.history import read_history
from sr_lightning.runs.results import protocol_label
from sr_lightning.training.pictures import (
    BACKGROUND,
    DIFF_GAIN,
    DISPLAY,
    MARK,
    MAX_CROP_SIDE,
    MIN_CROP_SIDE,
    Box,
    busiest_box,
    crop_size,
    curves_title,
    plot_curves,
    sample_panel,
    window_sums,
)

Y_BORDER_2 = Protocol("y", 2)


def photo(sample_cache, name: str = "coffee", scale: int = 2):
    """(LR, HR) uint8 (3, h, w) of a sample validation photo, and its whole-image bicubic."""
    from sr_lightning.data.datasets import Pair, aligned_pair
    from sr_lightning.data.io import to_rgb
    from sr_lightning.data.sample import sample_dir

    hr_path = sample_dir(sample_cache) / "val" / f"{name}.png"
    lr, hr = (to_rgb(t) for t in aligned_pair(Pair(hr_path, None), scale))
    bicubic = super_resolve(Bicubic([scale]), lr[None].float(), scale)[0]
    return lr, hr, bicubic


def plant_texture(img: torch.Tensor, box: Box, seed: int = 0) -> torch.Tensor:
    """``img`` (3, H, W) float with a noise texture (+-40) added inside ``box``."""
    out = img.clone()
    g = torch.Generator().manual_seed(seed)
    noise = (torch.rand(3, box.height, box.width, generator=g) - 0.5) * 80
    out[:, box.top : box.bottom, box.left : box.right] += noise
    return out.clamp(0, 255)


# ---- the crop -------------------------------------------------------------------------------
def test_the_crop_is_160_to_256_px_of_hr_or_the_whole_smaller_image():
    assert crop_size(504, 504) == (192, 192)
    assert crop_size(2040, 1356) == (192, 192)
    assert crop_size(170, 600) == (170, 170)  # the shorter side, still >= 160
    assert crop_size(150, 400) == (150, 400)  # below 160 px: the whole image
    assert crop_size(1000, 1000, side=1000) == (MAX_CROP_SIDE, MAX_CROP_SIDE)
    assert crop_size(1000, 1000, side=64) == (MIN_CROP_SIDE, MIN_CROP_SIDE)


def test_window_sums_are_the_brute_force_sums_and_ties_go_to_the_first_window():
    g = torch.Generator().manual_seed(1)
    weight = torch.rand(23, 31, generator=g, dtype=torch.float64)
    sums = window_sums(weight, 5, 7)
    brute = torch.tensor(
        [[weight[t : t + 5, l : l + 7].sum().item() for l in range(25)] for t in range(19)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(sums, brute)
    assert busiest_box(torch.zeros(40, 50), 10, 10) == Box(0, 0, 10, 10)  # flat: first
    twins = torch.zeros(40, 50)
    twins[20:30, 5:15] = twins[5:15, 30:40] = 1  # two equal peaks: the upper one
    assert busiest_box(twins, 10, 10) == Box(5, 30, 10, 10)


@pytest.mark.parametrize("where", [(300, 40), (10, 520), (170, 260)])
def test_the_crop_lands_on_the_texture_sr_adds_to_a_real_photo(sample_cache, where):
    """coffee x2 (600x396): SR = bicubic + a 48 px textured patch somewhere; the 192 px crop
    covers the patch wherever it is, also far from the centre."""
    _, hr, bicubic = photo(sample_cache, "coffee")
    patch = Box(*where, 48, 48)
    sr = plant_texture(bicubic, patch)
    panel = sample_panel(sr, bicubic, hr, Y_BORDER_2)
    assert (panel.crop.height, panel.crop.width) == (192, 192)
    assert panel.crop.contains(patch), (panel.crop, patch)
    assert sample_panel(sr, bicubic, hr, Y_BORDER_2).crop == panel.crop  # deterministic


def test_on_a_smooth_image_the_crop_covers_the_planted_patch_not_the_centre():
    """A smooth gradient (SR = bicubic but for a textured patch near a corner): the crop is
    the window holding the patch, not the centre."""
    ramp = torch.linspace(40, 200, 400)
    smooth = torch.stack([ramp[None, :].expand(300, 400)] * 3).contiguous()
    patch = Box(230, 330, 40, 40)
    sr = plant_texture(smooth, patch)
    panel = sample_panel(sr, smooth, smooth.to(torch.uint8), Y_BORDER_2)
    assert panel.crop.contains(patch) and panel.crop.height == 192
    centre = Box((300 - 192) // 2, (400 - 192) // 2, 192, 192)
    assert panel.crop != centre


# ---- the panel's layout ---------------------------------------------------------------------
def test_panel_layout_labels_in_strips_tiles_untouched_crop_marked_on_the_thumbnail(
    sample_cache,
):
    _, hr, bicubic = photo(sample_cache, "astronaut")
    sr = plant_texture(bicubic, Box(60, 300, 40, 40))  # a crop off the centre
    panel = sample_panel(sr, bicubic, hr, Y_BORDER_2, title="sample x2, astronaut, step 1200")
    img, layout, crop = panel.image, panel.layout, panel.crop
    assert img.shape == (layout.height, layout.width, 3) and img.dtype == np.uint8
    assert len(layout.tiles) == len(layout.labels) == 5  # thumbnail, bicubic, SR, HR, |SR-HR|
    assert panel.zoom == 2 and crop.height == crop.width == 192  # shown at 384 px

    # every label strip lies above its own tile and overlaps no tile; strips hold text
    for label, tile in zip(layout.labels, layout.tiles, strict=True):
        assert label.bottom == tile.top and label.left == tile.left
        assert not any(label.overlaps(t) for t in layout.tiles)
        assert not layout.title.overlaps(tile) and not layout.title.overlaps(label)
        assert (label.of(img, axis=0) < 128).any()  # the text is there
    # each column is a separate box: no two tiles or strips share a pixel
    boxes = [*layout.labels, *layout.tiles]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    # nothing is drawn outside the title, the strips and the tiles (text stays in its strip)
    ink = np.zeros(img.shape[:2], bool)
    for box in [layout.title, *boxes]:
        ink[box.top : box.bottom, box.left : box.right] = True
    assert (img[~ink] == BACKGROUND).all()

    # the crops are the exact pixels (nearest-neighbour x2), with no text on them
    def shown(t: torch.Tensor) -> np.ndarray:
        t = t.round().clamp(0, 255).to(torch.uint8)
        return t.repeat_interleave(2, -2).repeat_interleave(2, -1).permute(1, 2, 0).numpy()

    sr_q = (sr + 0.5).floor().clamp(0, 255)
    bic_q = (bicubic + 0.5).floor().clamp(0, 255)
    for tile, expected in zip(layout.tiles[1:4], (bic_q, sr_q, hr.float()), strict=True):
        assert np.array_equal(tile.of(img, axis=0), shown(crop.of(expected)))
    diff = (crop.of(sr_q) - crop.of(hr.float())).abs().mean(0, keepdim=True) * DIFF_GAIN
    assert np.array_equal(
        layout.tiles[4].of(img, axis=0), shown(diff.clamp(0, 255).expand(3, -1, -1))
    )

    # the thumbnail: the whole image fitted in DISPLAY px, the crop's rectangle where it lies
    thumb = layout.tiles[0]
    f = DISPLAY / max(hr.shape[-2:])
    assert (thumb.height, thumb.width) == (DISPLAY, DISPLAY)  # astronaut is square
    m = panel.marker
    assert abs(m.top - (thumb.top + crop.top * f)) <= 1
    assert abs(m.left - (thumb.left + crop.left * f)) <= 1
    assert abs(m.height - crop.height * f) <= 2 and abs(m.width - crop.width * f) <= 2
    assert thumb.contains(m)
    edge = img[m.top, m.left : m.right]  # the rectangle's top edge is drawn in MARK
    assert (edge == MARK).all()

    # the labels' numbers are the crop's PSNRs under the protocol
    for key, tensor in (("bicubic", bic_q), ("SR", sr_q)):
        expected = psnr_ssim(
            crop.of(tensor)[None], crop.of(hr)[None].float(), channels="y", border=2
        )[0].item()
        assert panel.psnr[key] == pytest.approx(expected)
        assert f"{key} {expected:.2f} dB" in panel.caption
    assert panel.caption.startswith("sample x2, astronaut, step 1200: ")


def test_a_small_image_is_shown_whole_and_enlarged():
    g = torch.Generator().manual_seed(0)
    hr = (torch.rand(3, 96, 120, generator=g) * 255).round()
    bicubic = hr.flip(-1)
    panel = sample_panel(hr, bicubic, hr.to(torch.uint8), Y_BORDER_2)
    assert panel.crop == Box(0, 0, 96, 120) and panel.zoom == DISPLAY // 120
    tile = panel.layout.tiles[2]  # SR
    assert (tile.height, tile.width) == (96 * panel.zoom, 120 * panel.zoom)
    assert panel.psnr["SR"] == float("inf")


# ---- names and curves ---------------------------------------------------------------------
def test_sample_names_carry_the_step_in_seven_digits(tmp_path):
    path = RunFolder(tmp_path).sample("sample", 2, "coffee", 1200)
    assert path == tmp_path / "samples" / "sample_x2_coffee_step0001200.png"


def test_curves_are_titled_with_set_scale_and_run_and_mark_the_best_step(tmp_path):
    history = []
    points = ((100, 30.1, 1.0), (200, 31.4, 2.0), (300, 31.4, 3.0), (400, 31.2, 4.0))
    for step, psnr, minutes in points:
        history += [
            (step, "val/sample/x2/psnr", psnr),
            (step, "val/sample/x2/bicubic_psnr", 29.5),
            (step, "val/Set5/x2/psnr", psnr + 2),
            (step, "val/psnr", psnr),
            (step, "val/bicubic_psnr", 29.5),
            (step, "time/minutes", minutes),
        ]
    run = write_job(tmp_path / "run", history=history)
    out = plot_curves(read_history(run.history), run.curves, run="quickstart, run_1, edsr 1x8")
    with Image.open(out) as im:
        title, best = im.text["Title"], im.text["Description"]
    assert title == "validation PSNR on sample x2 | run quickstart, run_1, edsr 1x8"
    assert best == "best = step 200 (31.40 dB)"  # the first of equal bests: the checkpoint's
    mdsr = [(1, f"val/Set14/x{s}/psnr", 30.0) for s in (4, 2, 3)] + [(1, "val/psnr", 30.0)]
    assert curves_title(mdsr) == "validation PSNR on Set14 x2, x3, x4"


def test_a_tiny_run_leaves_panels_and_curves_named_and_titled(tmp_path, sample_cache):
    """The training path: samples/ named with 7-digit steps, each the panel of its image;
    curves.png titled with set, scale and run folder, the best step its summary's."""
    run = tmp_path / "run_pictures"
    run_train_in_process([*tiny_args(sample_cache), "test_after_fit=false"], run)
    names = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert names == [
        f"sample_x2_{i}_step{s:07d}.png" for i in ("astronaut", "coffee") for s in (3, 6)
    ]
    with Image.open(run / "samples" / names[0]) as im:
        assert im.height > 2 * 192 and im.width >= 5 * 2 * 192  # 192 px of HR, shown x2
    with Image.open(run / "curves.png") as im:
        title, best = im.text["Title"], im.text["Description"]
    assert title.startswith("validation PSNR on sample x2 | run ")
    assert "run_pictures" in title and "edsr 1x8" in title
    summary = json.loads((run / "summary.json").read_text())
    steps = {s: v for s, k, v in read_history(run / "history.csv") if k == "val/psnr"}
    best_step = min(s for s, v in steps.items() if v == summary["best"]["val/psnr"])
    assert best.startswith(f"best = step {best_step} (")


# ---- eval.py's table --------------------------------------------------------------------------
def test_eval_table_has_bicubic_beside_the_network_headed_by_it(tmp_path, sample_cache, capsys):
    torch.manual_seed(0)
    pt = tmp_path / "edsr_tiny_x2.pt"
    torch.save(EDSR(scale=2, n_resblocks=1, n_feats=8).state_dict(), pt)  # no record: shapes
    common = ["data=sample", f"data.cache_dir={sample_cache}", "data.num_workers=0"]
    returned = run_eval_in_process([*common, f"ckpt_path={pt}"], tmp_path / "eval")
    table = capsys.readouterr().out
    rows = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [r["model"] for r in rows] == ["EDSR (1x8) x2", "bicubic"]
    assert returned == rows[:1]  # run_eval returns the network's rows
    expected = score(
        Bicubic([2]), tmp_path, ["sample"], [2], model_name="bicubic", cache_dir=sample_cache
    )
    assert rows[1]["psnr"] == expected[0]["psnr"] and rows[1]["ssim"] == expected[0]["ssim"]
    header = "| set | scale | protocol | EDSR (1x8) x2 | bicubic |"
    assert header in table and "edsr_tiny_x2" not in table  # the network, not the file stem
    net, bic = rows
    line = (
        f"| sample | x2 | {protocol_label(net)} | {net['psnr']:.2f} / {net['ssim']:.4f} | "
        f"{bic['psnr']:.2f} / {bic['ssim']:.4f} |"
    )
    assert line in table, table


def test_network_heading_names_preset_size_and_scales():
    from sr_lightning.cli.eval import network_heading
    from sr_lightning.models import build_net, record

    assert network_heading(record(build_net("edsr_baseline"))) == "EDSR baseline (16x64) x2"
    assert network_heading(record(build_net("edsr", scales=[4]))) == "EDSR (32x256) x4"
    assert network_heading(record(build_net("mdsr_baseline"))) == "MDSR baseline (16x64) x2, x3, x4"
    bn = record(build_net("edsr_baseline", n_resblocks=4, n_feats=32, norm="batch"))
    assert network_heading(bn) == "EDSR (4x32, bn) x2"
    rs = record(build_net("edsr_baseline", res_scale=0.1))
    assert network_heading(rs) == "EDSR baseline (16x64, res_scale 0.1) x2"


def test_run_label_names_the_folder_a_sweep_job_with_its_sweep_and_the_network(tmp_path):
    from sr_lightning.training.callbacks.history import run_label
    from sr_lightning.training.lit_module import SRLitModule

    module = SRLitModule(EDSR(scale=2, n_resblocks=1, n_feats=8))
    assert run_label(RunFolder(tmp_path / "2026-01-02_03-04-05_6"), module) == (
        "2026-01-02_03-04-05_6, edsr 1x8"
    )
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's, per sweep
    assert run_label(RunFolder(tmp_path / "sweep" / "3")) == "sweep/3"
    assert run_label(RunFolder(tmp_path / "sweep" / "norm-batch+seed-0")) == (
        "sweep/norm-batch+seed-0"
    )
