"""The network's output is fp32 under autocast (issue 22): bf16 speeds up the body and never
quantises the image the L1 loss sees. In bf16 the grid above 128 is the integers."""

from __future__ import annotations

import pytest
import torch

from sr_lightning.models import build_net


def whole_fraction(y: torch.Tensor) -> float:
    """The share of output values in (128, 255) that are whole numbers."""
    inside = y[(y > 128) & (y < 255)].float()
    assert inside.numel() > 1000  # enough values to judge
    return (inside == inside.round()).float().mean().item()


@pytest.mark.parametrize("preset", ["edsr_baseline", "mdsr_baseline"])
def test_under_bf16_autocast_the_output_is_fp32_and_not_on_the_integer_grid(preset):
    torch.manual_seed(0)
    scale = 2
    x = torch.rand(2, 3, 24, 24) * 255
    outputs = {}
    for fp32_output in (True, False):
        torch.manual_seed(0)
        net = build_net(preset, [scale], n_resblocks=2, n_feats=16, fp32_output=fp32_output)
        # a trained network's output sits near its input: lift the last conv's bias so most
        # values land in (128, 255) where bf16 has no fractional part
        with torch.no_grad():
            (net.tail[1] if preset.startswith("edsr") else net.tail[0]).bias.add_(80.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x, scale)
        outputs[fp32_output] = y
    assert outputs[True].dtype == torch.float32
    assert whole_fraction(outputs[True]) < 0.02
    assert outputs[False].dtype == torch.bfloat16  # the switch kept for the comparison
    assert whole_fraction(outputs[False]) > 0.9
    # the same network: the fp32 output differs from the bf16 one by bf16 rounding only
    torch.testing.assert_close(outputs[True], outputs[False].float(), atol=1.0, rtol=0.01)


def test_fp32_output_keeps_the_gradient_and_changes_nothing_without_autocast():
    torch.manual_seed(0)
    net = build_net("edsr_baseline", [2], n_resblocks=1, n_feats=8)
    x = torch.rand(1, 3, 12, 12) * 255
    plain = net(x)
    net.fp32_output = False
    torch.testing.assert_close(net(x), plain, rtol=0, atol=0)
    net.fp32_output = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (net(x) - 100).abs().mean()
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_the_precision_a_run_reports_names_tf32_and_the_output():
    from sr_lightning.training.precision import precision_label

    assert precision_label("bf16-mixed", False, True, True) == "bf16-mixed, fp32 output"
    assert precision_label("bf16-mixed", False, False, True) == "bf16-mixed, bf16 output"
    assert precision_label("16-mixed", True, False, True) == "16-mixed, fp16 output"
    assert precision_label("32-true", True, True, True) == "32-true, TF32 convs and matmuls"
    assert precision_label("32-true", False, True, True) == "32-true, IEEE fp32"
    assert precision_label("32-true", True, True, False) == "32-true, IEEE fp32"  # no TF32 on CPU


@pytest.mark.parametrize("tf32", [False, True])
def test_model_tf32_sets_the_fp32_math_of_training_and_the_summary_says_which(
    tf32, tmp_path, sample_cache
):
    """model.tf32 decides torch's fp32 setting of convs and matmuls at fit start (the default,
    false, is IEEE even though torch defaults cuDNN convs to TF32); summary.json says it."""
    from helpers import run_train_in_process, tiny_args

    from sr_lightning.core.inference import convs_in_tf32, set_tf32
    from sr_lightning.runs.folder import RunFolder

    saved = set_tf32(not tf32)  # the opposite of what is asked
    try:
        run = tmp_path / "run"
        args = [*tiny_args(sample_cache), "trainer.max_epochs=1", f"model.tf32={tf32}"]
        run_train_in_process([*args, "test_after_fit=false", "logger=csv"], run)
        assert convs_in_tf32() is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
        assert torch.backends.cudnn.allow_tf32 is tf32  # the legacy getter torch.export reads
    finally:
        set_tf32(*saved)
    summary = RunFolder(run).read_summary()
    assert summary["precision"] == "32-true, IEEE fp32"  # this CPU has no TF32
