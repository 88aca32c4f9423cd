"""``model.compile`` and ``optim.ema_decay`` together (issue 22): the averaged weights move
every update, validation and the best checkpoint use them, and the compiled training forward
computes with whatever weights the network holds (after EMA swaps, ``load_state_dict`` and a
resume). CPU inductor compiles here; a tiny model keeps it to seconds."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import compose_config, hydra_config_cleared, tiny_args

from sr_lightning.config.build import build_training
from sr_lightning.config.rules import shape_train_config
from sr_lightning.models import build_net
from sr_lightning.runs.folder import RunFolder
from sr_lightning.training.compile import CompiledOrEager

DECAY = 0.5
X = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1)) * 255


def net_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Recorder(L.Callback):
    """Runs after the EMA callback: what the averaged copy and the module hold, when."""

    def __init__(self):
        self.raw, self.ema, self.at_validation, self.compiled_vs_eager = {}, {}, [], []

    def ema_net(self, trainer) -> torch.nn.Module:
        from lightning.pytorch.callbacks import WeightAveraging

        (cb,) = [c for c in trainer.callbacks if isinstance(c, WeightAveraging)]
        return cb._average_model.module.net

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with torch.no_grad():  # the compiled forward with the weights the network holds now
            diff = (module._train_forward(X) - module.net(X)).abs().max().item()
        self.compiled_vs_eager.append(diff)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.raw[trainer.global_step] = net_state(module.net)
        self.ema[trainer.global_step] = net_state(self.ema_net(trainer))

    def on_validation_epoch_start(self, trainer, module):
        if not trainer.sanity_checking:
            self.at_validation.append((trainer.global_step, net_state(module.net)))


def fit(overrides: list[str], run, recorder: Recorder, ckpt_path=None):
    with hydra_config_cleared():
        cfg = compose_config("train", overrides, output_dir=run)
        shape_train_config(cfg)
        L.seed_everything(cfg.seed, workers=True)
        trainer, module, datamodule = build_training(cfg, extra_callbacks=[recorder])
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, module


def assert_same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def test_a_compiled_forward_computes_with_weights_loaded_after_compiling():
    torch._dynamo.reset()  # no graphs or symbolic shapes left by earlier tests' compiles
    torch.manual_seed(0)
    net, other = (build_net("edsr_baseline", [2], n_resblocks=1, n_feats=8) for _ in range(2))
    forward = CompiledOrEager(net)
    before = forward(X)
    net.load_state_dict(other.state_dict())
    assert not forward.failed and forward.compiled is not None
    torch.testing.assert_close(forward(X), other(X), rtol=1e-4, atol=1e-3)
    assert (forward(X) - before).abs().max() > 1.0


@pytest.mark.slow
def test_compile_with_ema_averages_every_update_and_validates_and_resumes_with_it(
    tmp_path, sample_cache
):
    torch._dynamo.reset()
    run = tmp_path / "run"
    args = [
        *tiny_args(sample_cache),  # 2 epochs of 3 updates, validation after each epoch
        "model.compile=true",
        f"optim.ema_decay={DECAY}",
        "logger=csv",
        "test_after_fit=false",
    ]
    rec = Recorder()
    trainer, module = fit(args, run, rec)
    assert not module._train_forward.failed and module._train_forward.compiled is not None
    steps = sorted(rec.ema)
    assert steps == list(range(1, 7))
    # the averaged weights change at every update, as the EMA recursion says
    assert_same(rec.ema[1], rec.raw[1])  # the first update copies the weights
    for k in steps[1:]:
        expected = {n: DECAY * rec.ema[k - 1][n] + (1 - DECAY) * rec.raw[k][n] for n in rec.raw[k]}
        assert_same(rec.ema[k], expected, atol=1e-5)
        assert any((rec.ema[k][n] != rec.ema[k - 1][n]).any() for n in rec.ema[k])
    # validation runs on the averaged weights
    assert [s for s, _ in rec.at_validation] == [3, 6]
    for step, held in rec.at_validation:
        assert_same(held, rec.ema[step])
    # the compiled training forward follows the weights swapped back after each validation
    assert max(rec.compiled_vs_eager) < 1e-3
    # the best checkpoint holds the averaged weights of its step
    best = torch.load(RunFolder(run).best_checkpoint(), map_location="cpu", weights_only=False)
    net_weights = {k[4:]: v for k, v in best["state_dict"].items() if k.startswith("net.")}
    assert_same(net_weights, rec.ema[best["global_step"]])

    # resume from the last checkpoint for one more epoch: raw and averaged weights restored,
    # and the compiled forward computes with the loaded raw weights from its first step
    last = RunFolder(run).checkpoints / "last.ckpt"
    resumed = Recorder()
    fit([*args, "trainer.max_epochs=3"], run, resumed, ckpt_path=str(last))
    assert sorted(resumed.ema) == [7, 8, 9]
    expected = {n: DECAY * rec.ema[6][n] + (1 - DECAY) * resumed.raw[7][n] for n in rec.raw[6]}
    assert_same(resumed.ema[7], expected, atol=1e-5)
    assert max(resumed.compiled_vs_eager) < 1e-3
