"""Export: ONNX (dynamic axes, onnxruntime == PyTorch), TorchScript, torch.export, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sr_lightning.cli.export import main
from sr_lightning.data.io import load_image
from sr_lightning.models import EDSR, MDSR
from sr_lightning.models.export import (
    SUFFIXES,
    SingleScale,
    check_onnx,
    export_onnx,
    export_program,
    export_torchscript,
)

ATOL = 1e-3  # absolute, outputs in [0, 255]


def tiny_edsr() -> EDSR:
    torch.manual_seed(0)
    return EDSR(scale=2, n_resblocks=2, n_feats=16).eval()


def tiny_mdsr() -> MDSR:
    torch.manual_seed(1)
    return MDSR(scales=(2, 3, 4), n_resblocks=2, n_feats=16).eval()


def set5_crops(data_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1x3x40x52 crop of Set5 bird and a 2x3x33x47 batch of baby and woman crops (float)."""
    hr = data_root / "benchmark" / "Set5" / "HR"
    first = load_image(hr / "bird.png")[None, :, 100:140, 60:112].float()
    second = torch.stack(
        [load_image(hr / f"{name}.png")[:, 50:83, 30:77] for name in ("baby", "woman")]
    ).float()
    return first, second


def eager(model: torch.nn.Module, scale: int, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x, scale)


def onnx_dims(path: Path) -> list[str | int]:
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]


@pytest.mark.parametrize(("kind", "scale"), [("edsr", 2), ("mdsr", 3), ("mdsr", 4)])
def test_onnx_matches_pytorch_on_real_crops_of_two_sizes(data_root, tmp_path, kind, scale):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = tiny_edsr() if kind == "edsr" else tiny_mdsr()
    path = export_onnx(model, scale, tmp_path / f"{kind}_x{scale}.onnx", opset=17)
    assert path.is_file()
    assert onnx_dims(path) == ["batch", 3, "height", "width"]
    first, second = set5_crops(data_root)
    assert first.shape[-2:] != second.shape[-2:] and first.shape[0] != second.shape[0]
    # One exported file serves both shapes: the axes are dynamic, not baked in.
    for x in (first, second):
        diff = check_onnx(model, scale, path, x)
        assert diff <= ATOL, f"x{scale} {tuple(x.shape)}: onnxruntime differs by {diff}"


def test_onnx_records_scale_and_exporter(tmp_path):
    onnx = pytest.importorskip("onnx")
    path = export_onnx(tiny_mdsr(), 3, tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta == {"scale": "3", "model": "MDSR", "exporter": "classic"}
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["sr"]


def test_static_onnx_fixes_the_shape(tmp_path):
    pytest.importorskip("onnx")
    path = export_onnx(tiny_edsr(), 2, tmp_path / "static.onnx", dynamic=False)
    assert onnx_dims(path) == [2, 3, 32, 32]


def test_onnx_refuses_an_opset_without_depth_to_space(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(tiny_edsr(), 2, tmp_path / "old.onnx", opset=9)


def test_exported_program_must_be_named_pt2(tmp_path):
    with pytest.raises(ValueError, match=r"\*\.pt2"):
        export_program(tiny_edsr(), 2, tmp_path / "e.exported")


def test_single_scale_bakes_the_scale_and_rejects_others():
    model = tiny_mdsr()
    x = torch.rand(1, 3, 8, 8) * 255
    with torch.no_grad():
        assert torch.equal(SingleScale(model, 3)(x), model(x, 3))
    with pytest.raises(ValueError, match="x8"):
        SingleScale(model, 8)
    with pytest.raises(ValueError, match="x4"):
        SingleScale(tiny_edsr(), 4)


def test_torchscript_round_trip_equals_eager(data_root, tmp_path):
    model = tiny_mdsr()
    path = export_torchscript(model, 3, tmp_path / "m.pt")
    loaded = torch.jit.load(str(path))
    for x in set5_crops(data_root):
        with torch.no_grad():
            assert (loaded(x) - eager(model, 3, x)).abs().max() <= ATOL
    assert model.training is False


def test_exported_program_round_trip_equals_eager_at_new_sizes(data_root, tmp_path):
    model = tiny_edsr().train()  # export switches to eval and restores the mode
    path = export_program(model, 2, tmp_path / "e.pt2")
    assert model.training
    program = torch.export.load(str(path)).module()
    model.eval()
    for x in set5_crops(data_root):
        with torch.no_grad():
            assert (program(x) - eager(model, 2, x)).abs().max() <= ATOL


def test_cli_exports_onnx_with_the_given_weights(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    net = tiny_edsr()
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    out = tmp_path / "out" / "edsr_x2.onnx"
    argv = ["--model", "edsr_baseline", "--scale", "2", "--n-resblocks", "2", "--n-feats", "16"]
    assert main([*argv, "--weights", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file()
    assert "max abs diff" in capsys.readouterr().out
    x = torch.rand(1, 3, 19, 23) * 255
    assert check_onnx(net, 2, out, x) <= ATOL  # the file holds the checkpoint's weights


@pytest.mark.parametrize("fmt", ["torchscript", "exported"])
def test_cli_writes_other_formats_and_infers_the_network_from_weights(tmp_path, fmt):
    ckpt = tmp_path / "mdsr.pt"
    torch.save(tiny_mdsr().state_dict(), ckpt)  # authors' layout: a bare state_dict
    out = tmp_path / f"m{SUFFIXES[fmt]}"
    assert main(["--weights", str(ckpt), "--scale", "4", "--format", fmt, "--out", str(out)]) == 0
    assert out.is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "srcnn", "--scale", "2"], "unknown --model 'srcnn'"),
        (["--model", "edsr_baseline", "--scale", "2", "--format", "tflite"], "unknown --format"),
        (["--model", "mdsr_baseline", "--scale", "8"], "--scale 8"),
        (["--model", "edsr_baseline"], "needs --scale"),
        (["--model", "edsr_baseline", "--scale", "2", "--weights", "nope.pt"], "not found"),
        ([], "give --model"),
    ],
)
def test_cli_errors_return_1_with_a_message(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "never.onnx")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never.onnx").exists()


def test_cli_reports_weights_that_do_not_fit_the_preset(tmp_path, capsys):
    ckpt = tmp_path / "tiny.pt"
    torch.save(tiny_edsr().state_dict(), ckpt)
    argv = ["--model", "edsr_baseline", "--scale", "2", "--weights", str(ckpt)]
    assert main([*argv, "--out", str(tmp_path / "x.onnx")]) == 1
    assert "does not fit" in capsys.readouterr().err
