"""The learning-rate schedule (``optim.lr_milestones`` / ``optim.lr_decay_steps``) counts
updates, is the one the recipe line states, refuses bad values; the MDSR ablation gives each
scale as many updates as one single-scale EDSR (paper Sec. 3.3)."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers import compose_with_hydra, hydra_config_cleared, task_config
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from sr_lightning.config.keys import check_keys
from sr_lightning.data.patches import PatchBatches
from sr_lightning.models import build_net
from sr_lightning.training.lit_module import OptimRecipe, SRLitModule
from sr_lightning.training.summary import recipe_line

LR = 1e-4


def tiny_module(**optim) -> SRLitModule:
    net = build_net("edsr_baseline", scales=[2], n_resblocks=1, n_feats=8)
    return SRLitModule(net, optim={"lr": LR, **optim})


def lrs_after(module: SRLitModule, counts: list[int]) -> dict[int, float]:
    """The learning rate after each of ``counts`` updates (optimizer + scheduler steps)."""
    config = module.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"  # stepped per update, not per epoch
    out, done = {}, 0
    for n in sorted(counts):
        for _ in range(n - done):
            opt.step()
            sched.step()
        done = n
        out[n] = opt.param_groups[0]["lr"]
    return out


def test_milestones_multiply_the_lr_at_those_update_counts():
    lrs = lrs_after(tiny_module(lr_milestones=[5, 8]), [0, 4, 5, 6, 7, 8, 9])
    assert lrs == pytest.approx(
        {0: LR, 4: LR, 5: LR / 2, 6: LR / 2, 7: LR / 2, 8: LR / 4, 9: LR / 4}, rel=1e-12
    )


def test_milestones_win_over_lr_decay_steps():
    module = tiny_module(lr_milestones=[4], lr_decay_steps=2, lr_gamma=0.1)
    lrs = lrs_after(module, [0, 2, 3, 4, 5, 8])
    assert lrs == pytest.approx({0: LR, 2: LR, 3: LR, 4: LR / 10, 5: LR / 10, 8: LR / 10})


def test_periodic_form_multiplies_every_lr_decay_steps_updates():
    lrs = lrs_after(tiny_module(lr_decay_steps=3), [0, 2, 3, 4, 5, 6, 7, 9])
    assert lrs == pytest.approx(
        {0: LR, 2: LR, 3: LR / 2, 4: LR / 2, 5: LR / 2, 6: LR / 4, 7: LR / 4, 9: LR / 8}
    )


def test_empty_milestones_keep_the_lr_constant():
    assert lrs_after(tiny_module(lr_milestones=[]), [0, 50]) == pytest.approx({0: LR, 50: LR})


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_the_trainer_steps_the_schedule_per_update_not_per_batch_or_epoch():
    """8 batches with gradients accumulated over 2: 4 updates; the milestone 3 is an update
    count, so the lr is halved for the 4th update and after it, whatever the epoch length."""
    module = tiny_module(lr_milestones=[3])
    gen = torch.Generator().manual_seed(0)
    batches = [
        {
            "lr": torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=gen),
            "hr": torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=gen),
            "scale": 2,
        }
        for _ in range(8)
    ]
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == 4
    assert sched.last_epoch == 4
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(LR / 2)


@pytest.mark.parametrize(
    ("optim", "schedule"),
    [
        ({}, "halved every 200000 updates"),
        ({"lr_milestones": [200000]}, "halved at updates [200000]"),
        ({"lr_milestones": [100, 300], "lr_gamma": 0.1}, "x0.1 at updates [100, 300]"),
        ({"lr_decay_steps": 1500, "lr_gamma": 0.1}, "x0.1 every 1500 updates"),
        ({"lr_milestones": []}, "constant"),
        ({"lr_gamma": 1.0}, "constant"),
    ],
)
def test_the_recipe_line_states_the_schedule_in_use(optim, schedule):
    recipe = OptimRecipe.from_mapping({"lr": 1e-4, **optim})
    trainer = SimpleNamespace(
        world_size=1, num_devices=1, num_nodes=1, max_epochs=650, precision="bf16-mixed",
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )  # fmt: skip
    datamodule = SimpleNamespace(batch_size=16, updates_per_epoch=1000, scales=[2], patch_size=48)
    module = SimpleNamespace(recipe=recipe, hparams={"tf32": False}, net=SimpleNamespace())
    module.net.fp32_output = True
    line = recipe_line(trainer, module, datamodule)
    assert f"lr 0.0001 (not rescaled), {schedule}, L1 loss, 650 epochs x 1000 updates" in line
    assert line.endswith("precision bf16-mixed, fp32 output")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([200, 100], "strictly increasing"),
        ([100, 100], "strictly increasing"),
        ([-5], "-5 is not a positive integer"),
        ([0, 100], "0 is not a positive integer"),
        ([2.0e5], "200000.0 is not a positive integer"),
        ([True], "True is not a positive integer"),
        ("200000", "a list of update counts"),
        (200000, "a list of update counts"),
    ],
)
def test_bad_milestones_are_refused_naming_the_key(value, why):
    with pytest.raises(ValueError, match="optim.lr_milestones=") as e:
        OptimRecipe.from_mapping({"lr_milestones": value})
    assert why in str(e.value)


@pytest.mark.parametrize("steps", [0, -200000, None, 1.5])
def test_periodic_form_needs_a_positive_lr_decay_steps(steps):
    with pytest.raises(ValueError, match=r"optim.lr_decay_steps=.* optim.lr_milestones=null"):
        OptimRecipe.from_mapping({"lr_decay_steps": steps})
    OptimRecipe.from_mapping({"lr_decay_steps": steps, "lr_milestones": [10]})  # not used


def test_milestones_from_the_command_line_reach_the_recipe():
    cfg = compose_with_hydra("train", ["optim.lr_milestones=[200000,400000]"])
    check_keys(cfg, "train")
    recipe = OptimRecipe.from_mapping(cfg.optim)
    assert recipe.lr_milestones == (200000, 400000)
    assert OptimRecipe.from_mapping(OmegaConf.create({"lr_milestones": None})).lr_milestones is None


# ---- the MDSR ablation: equal updates per scale ---------------------------------------------

SINGLE_SCALE = {"x2": 2, "x3_scratch": 3, "x4_scratch": 4}  # the EDSR stages of the sweeps


def budget(overrides: list[str]) -> SimpleNamespace:
    """Updates, per-scale updates, validation and checkpoint cadence (in updates), schedule."""
    full = compose_with_hydra("train", overrides)
    with hydra_config_cleared():
        cfg = task_config(full)
        check_keys(full, "train")
        t, d = cfg.trainer, cfg.data
        assert t.val_check_interval is None and t.max_steps == -1  # validation at epoch ends
        updates = t.max_epochs * d.updates_per_epoch
        return SimpleNamespace(
            sweep=str(full.hydra.sweeper.params["+stage"]),
            scales=list(d.scales),
            updates=updates,
            per_scale=updates / len(d.scales),
            val_every=t.check_val_every_n_epoch * d.updates_per_epoch,
            ckpt_every=cfg.callbacks.step_checkpoint.every_n_train_steps,
            schedule=OptimRecipe.from_mapping(cfg.optim),
            updates_per_epoch=d.updates_per_epoch,
            max_epochs=t.max_epochs,
        )


@pytest.mark.parametrize(
    ("experiment", "mdsr_stage", "edsr_updates", "cadence"),
    [
        ("ablation_mdsr_smoke", "mdsr_equal_per_scale_smoke", 600, 200),
        ("ablation_mdsr", "mdsr_equal_per_scale", 100_000, 1000),
    ],
)
def test_mdsr_ablation_gives_each_scale_the_updates_of_one_edsr(
    experiment, mdsr_stage, edsr_updates, cadence
):
    edsrs = {s: budget([f"experiment={experiment}", f"+stage={s}"]) for s in SINGLE_SCALE}
    mdsr = budget([f"experiment={experiment}", f"+stage={mdsr_stage}"])
    assert mdsr.sweep == f"x2,x3_scratch,x4_scratch,{mdsr_stage}"  # the sweep's default
    assert mdsr.scales == [2, 3, 4]
    for stage, edsr in edsrs.items():
        assert edsr.scales == [SINGLE_SCALE[stage]]
        assert edsr.updates == edsr_updates
        assert mdsr.per_scale == edsr.updates
        assert mdsr.val_every == edsr.val_every == cadence
        assert mdsr.ckpt_every == edsr.ckpt_every == cadence
        # the schedule stretched 3x: the k-th update of a scale sees the EDSRs' k-th lr
        assert edsr.schedule.lr_milestones is mdsr.schedule.lr_milestones is None
        assert mdsr.schedule.lr_decay_steps == 3 * edsr.schedule.lr_decay_steps
        assert mdsr.schedule.lr == edsr.schedule.lr
    control = budget([f"experiment={experiment}", "+stage=mdsr_equal_updates"])
    assert control.scales == [2, 3, 4] and control.updates == edsr_updates


def test_mdsr_batches_draw_each_scale_about_equally_often():
    """The premise of the 3x budget: one scale per batch, uniform among x2, x3, x4. Over the
    smoke MDSR stage's 9 epochs of 200 batches each scale gets 600 +- 10% batches."""
    mdsr = budget(["experiment=ablation_mdsr_smoke", "+stage=mdsr_equal_per_scale_smoke"])
    batches = PatchBatches({s: [] for s in mdsr.scales}, 24, 8, mdsr.updates_per_epoch, seed=0)
    counts = dict.fromkeys(mdsr.scales, 0)
    for epoch in range(mdsr.max_epochs):
        batches.epoch = epoch
        for k in range(mdsr.updates_per_epoch):
            counts[batches.batch_scale(batches.epoch_seed(), k)] += 1
    assert sum(counts.values()) == 1800
    assert all(abs(n - 600) <= 60 for n in counts.values()), counts
