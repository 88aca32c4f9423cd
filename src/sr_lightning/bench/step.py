"""The training step, timed two ways: the plain eager fp32 NCHW step of the reference code
(``.item()`` on every loss, float batches from the host) and ours, ``train.py``'s own Lightning
run (data module and callbacks included), as configured and with each speed-up switched."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from sr_lightning.config.build import build_training
from sr_lightning.config.resolvers import PACKAGE_CHECKOUT
from sr_lightning.models import build_net
from sr_lightning.training.compile import CompiledOrEager
from sr_lightning.training.flops import sync


def make_net(model: str, scale: int = 2, net_args: dict | None = None) -> nn.Module:
    """The catalogue's ``model``; ``net_args`` (n_resblocks, n_feats) shrink it for dry runs."""
    torch.manual_seed(0)
    return build_net(model, [scale], **(net_args or {}))


def host_batches(
    batch: int, patch: int, scale: int, n: int = 4
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Float32 (LR, HR) batches on the host, as the reference's DataLoader hands them over."""
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randint(0, 256, (batch, 3, patch, patch), generator=g).float(),
            torch.randint(0, 256, (batch, 3, patch * scale, patch * scale), generator=g).float(),
        )
        for _ in range(n)
    ]


def time_steps(step: Callable[[int], None], device: str, warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` calls ``step(i)`` after ``warmup`` untimed ones, the device
    synchronised around each call (what every step timing of the benchmarks measures)."""
    times = []
    for i in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        step(i)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def plain_step_times(
    model: str,
    device: str,
    batch: int,
    patch: int,
    scale: int,
    steps: int,
    warmup: int,
    net_args: dict | None = None,
) -> list[float]:
    """Seconds per step of the plain eager fp32 NCHW loop, ``.item()`` every step."""
    net = make_net(model, scale, net_args).to(device).train()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    data = host_batches(batch, patch, scale)

    def step(i: int) -> None:
        lr, hr = (t.to(device) for t in data[i % len(data)])
        loss = F.l1_loss(net(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # the reference logs the loss every step: a host sync

    return time_steps(step, device, warmup, steps)


class StepTimer(L.Callback):
    """Time between the ends of consecutive steps: on GPU with CUDA events (no host sync in
    the step; gaps where the GPU waits for the host or the loader are counted), on CPU with
    the host clock."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.marks: list = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_times(self) -> list[float]:
        marks = self.marks[self.warmup :]
        if marks and isinstance(marks[0], torch.cuda.Event):
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(marks, marks[1:], strict=False)]
        return [b - a for a, b in zip(marks, marks[1:], strict=False)]


class ForeachAdam(L.Callback):
    """Adam without its fused kernel (torch's multi-tensor ``foreach`` default) for the rows
    that turn fused Adam off: ``configure_optimizers`` always fuses, so the bench switches
    the flag Adam reads at each step."""

    def on_train_start(self, trainer, pl_module) -> None:
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["fused"] = False


@dataclass(frozen=True)
class Knobs:
    """The speed-ups of our training step, each on or off: bf16 autocast (GPU), channels_last,
    fused Adam, a ``torch.compile`` mode (None: eager), the device-side patch pipeline."""

    bf16: bool
    channels_last: bool
    fused_adam: bool
    compile: str | None = None
    on_device: bool = False

    def overrides(self, cuda: bool) -> list[str]:
        out = [
            f"model.channels_last={str(self.channels_last).lower()}",
            f"model.compile={self.compile or 'false'}",
            f"data.on_device={str(self.on_device).lower()}",
        ]
        if cuda:  # the CPU trainer is always fp32 (this CPU has no native bf16)
            out.append(f"trainer.precision={'bf16-mixed' if self.bf16 else '32-true'}")
        return out


def default_knobs(device: str) -> Knobs:
    """What ``train.py`` does by default (conf/trainer, conf/model; a test checks the two)."""
    cuda = device.startswith("cuda")
    return Knobs(bf16=cuda, channels_last=cuda, fused_adam=True)


def tier(name: str, knobs: Knobs) -> int:
    """Measuring order: 0 default +- one speed-up, 1 the same compiled (each compile takes a
    minute or more), 2 all off and each speed-up alone, 3 the same compiled."""
    return 2 * name.startswith("ours all off") + (knobs.compile is not None)


def variants(device: str, compile_modes: list[str] | None = None) -> dict[str, Knobs]:
    """The step modes measured besides the plain one, by :func:`tier`: ours as configured,
    then with each speed-up off (or, for those off by default, on); on GPU, where several are
    on by default, also everything off and each speed-up alone. ``compile_modes``: default
    all modes on GPU, ``default`` on CPU."""
    cuda = device.startswith("cuda")
    default = default_knobs(device)
    off = Knobs(bf16=False, channels_last=False, fused_adam=False)
    switches = [("bf16", "bf16", True)] if cuda else []
    switches += [("channels_last", "channels_last", True), ("fused Adam", "fused_adam", True)]
    if compile_modes is None:
        compile_modes = list(CompiledOrEager.MODES) if cuda else ["default"]
    switches += [(f"compile {m}", "compile", m) for m in compile_modes]
    rows = {"ours default": default}
    for name, key, on in switches:
        if getattr(default, key) == on:
            rows[f"ours default, no {name}"] = replace(default, **{key: getattr(off, key)})
        else:
            rows[f"ours default + {name}"] = replace(default, **{key: on})
    rows["ours default + data.on_device"] = replace(default, on_device=True)
    if cuda:
        rows["ours all off (fp32 NCHW eager, foreach Adam)"] = off
        for name, key, on in switches:
            rows[f"ours all off + {name}"] = replace(off, **{key: on})
    unique: dict[Knobs, str] = {}
    for name, knobs in rows.items():
        unique.setdefault(knobs, name)  # the same setting twice: keep the first name
    ordered = sorted(unique.items(), key=lambda item: tier(item[1], item[0]))
    return {name: knobs for knobs, name in ordered}


def compose_train_config(overrides: list[str]):
    """``conf/train.yaml`` with ``overrides``, as ``train.py`` would see it (no Hydra run)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(PACKAGE_CHECKOUT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def ours_step_times(
    model: str,
    device: str,
    batch: int,
    patch: int,
    steps: int,
    warmup: int,
    data_root: str,
    train_set: str,
    overrides: list[str],
    fused_adam: bool = True,
) -> list[float]:
    """Seconds per step of ``train.py`` as configured (plus ``overrides``), measured in a fit."""
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_train_config(
            [
                f"model={model}",
                "logger=csv",
                f"paths.output_dir={out}",
                f"data.root={data_root}",
                f"data.train_set={train_set}",
                "data.val_sets=[]",
                "data.benchmarks=[]",
                f"data.batch_size={batch}",
                f"data.patch_size={patch}",
                f"data.updates_per_epoch={warmup + steps + 1}",
                "trainer.max_epochs=1",
                f"trainer.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}",
                "trainer.enable_model_summary=false",
                # file writers off: a benchmark run leaves nothing behind
                "~callbacks.best_checkpoint",
                "~callbacks.step_checkpoint",
                "~callbacks.history",
                "~callbacks.resumable",
                "~callbacks.progress_bar",
                "+trainer.enable_progress_bar=false",
                *overrides,
            ]
        )
        timer = StepTimer(warmup)
        extra = [timer] if fused_adam else [timer, ForeachAdam()]
        trainer, module, datamodule = build_training(cfg, extra_callbacks=extra)
        trainer.fit(module, datamodule=datamodule)
        return timer.step_times()
