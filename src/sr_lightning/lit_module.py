"""SRLitModule: the paper's training protocol (Sec. 4.1) around any EDSR-family network."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_state_dict
from .inference import self_ensemble, tiled_forward
from .metrics import SRMetrics, quantize

log = logging.getLogger(__name__)

LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


def receptive_radius(net: nn.Module) -> int:
    """An upper bound, in LR pixels, of how far a pixel's context reaches (sum of conv radii)."""
    return sum(m.kernel_size[0] // 2 for m in net.modules() if isinstance(m, nn.Conv2d))


def init_from_checkpoint(net: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``path`` whose name and shape match; keep the rest as initialised.

    This is the paper's x2 -> x3/x4 initialisation (Sec. 4.1): head and body come from the x2
    model, the upsampler of the new scale starts anew. Returns (loaded, not loaded) names.
    """
    state = load_state_dict(path)
    own = net.state_dict()
    loaded = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    net.load_state_dict({k: state[k] for k in loaded}, strict=False)
    kept = [k for k in own if k not in loaded]
    log.info("init_from %s: loaded %d tensors: %s", path, len(loaded), loaded)
    log.info("init_from %s: %d tensors keep their fresh init: %s", path, len(kept), kept)
    return loaded, kept


class CompiledOrEager:
    """``torch.compile(net)`` for the training step, falling back to the eager network (with a
    warning) where compiling fails: no C++ compiler or Triton, an unsupported platform.

    A plain object, not a module: the compiled wrapper's parameters are the network's, and the
    checkpoint keeps the ``net.*`` names. Evaluation stays eager (whole images of varying sizes
    would recompile for each new size).
    """

    def __init__(self, net: nn.Module):
        self.net = net
        self.compiled: Callable | None = None
        self.failed = False

    def __getstate__(self) -> dict:  # ddp_spawn pickles the module: compile again there
        return {"net": self.net, "compiled": None, "failed": self.failed}

    def _fall_back(self, error: BaseException) -> None:
        log.warning("model.compile=true: compiling failed, training eagerly instead (%s)", error)
        self.compiled, self.failed = None, True

    def __call__(self, *args: Any) -> torch.Tensor:
        if self.compiled is None and not self.failed:
            try:
                self.compiled = torch.compile(self.net)
            except Exception as e:  # e.g. torch.compile unsupported on this Python
                self._fall_back(e)
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except torch._dynamo.exc.TorchDynamoException as e:  # backend or tracing failure
                self._fall_back(e)
        return self.net(*args)


class SRLitModule(L.LightningModule):
    """L1 (or L2) loss, Adam, step-wise halving of the learning rate, benchmark validation.

    Batches arrive as uint8; they become float on the device (after the crop, never before).
    Validation/test metrics are logged as ``val/<Set>/x<s>/psnr|ssim`` and ``val/psnr`` (first
    set, first scale, the checkpoint criterion); each image counts once, also under DDP.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: str = "l1",
        lr: float = 1e-4,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        lr_decay_steps: int = 200_000,
        lr_gamma: float = 0.5,
        rgb_range: float = 255.0,
        init_from: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        val_tile: int = 0,
        val_tile_overlap: int | None = None,
        self_ensemble: bool = False,
        n_image_panels: int = 4,
    ):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"optim.loss={loss!r}: allowed values are {list(LOSSES)}")
        self.save_hyperparameters(ignore=["net"])
        if init_from:
            init_from_checkpoint(net, init_from)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        # not a submodule (the checkpoint holds the network once, as net.*)
        self._train_forward = CompiledOrEager(net) if compile else net.__call__
        self.loss_fn = LOSSES[loss]
        self.tile_overlap = val_tile_overlap or receptive_radius(net)
        self.eval_names: list[tuple[str, int]] = []
        self.eval_metrics = nn.ModuleList()
        self.test_rows: list[dict] = []

    # ---- helpers ------------------------------------------------------------------------
    def memory_format(self, lr: torch.Tensor) -> torch.Tensor:
        """The network's input layout: NHWC with ``model.channels_last``."""
        return (
            lr.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else lr
        )

    def forward(self, lr: torch.Tensor, scale: int) -> torch.Tensor:
        return self.net(self.memory_format(lr), scale)

    def to_float(self, img: torch.Tensor) -> torch.Tensor:
        return img.float() * (self.hparams.rgb_range / 255.0)

    def predict_image(self, lr: torch.Tensor, scale: int, ensemble: bool = False) -> torch.Tensor:
        """Whole-image SR of a float LR batch: tiled (exact) and optionally self-ensembled."""

        def fwd(x: torch.Tensor) -> torch.Tensor:
            return tiled_forward(
                lambda t: self(t, scale), x, scale, self.hparams.val_tile, self.tile_overlap
            )

        return self_ensemble(fwd, lr) if ensemble else fwd(lr)

    # ---- training -----------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        lr, hr = self.to_float(batch["lr"]), self.to_float(batch["hr"])
        sr = self._train_forward(self.memory_format(lr), batch["scale"])
        loss = self.loss_fn(sr.float(), hr)
        # loggers read the value every log_every_n_steps; the progress bar would read it (a
        # host-device sync) every step, so it gets it only at logging steps
        self.log("train/loss", loss)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log("loss", loss, prog_bar=True, logger=False)
        return loss

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before 2026-11-27 held the network twice (``_forward.*``)."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("_forward.")]:
            del state[key]

    def configure_optimizers(self) -> dict:
        params = [p for p in self.net.parameters() if p.requires_grad]  # mean shift is frozen
        opt = torch.optim.Adam(
            params,
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            eps=self.hparams.eps,
            fused=True,  # one kernel for all parameters (CUDA and CPU)
        )
        sched = torch.optim.lr_scheduler.StepLR(
            opt, step_size=self.hparams.lr_decay_steps, gamma=self.hparams.lr_gamma
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- evaluation ---------------------------------------------------------------------
    def _setup_eval(self, sets: Sequence[Any]) -> None:
        self.eval_names = [(ds.name, ds.scale) for ds in sets]
        rgb = self.hparams.rgb_range
        self.eval_metrics = nn.ModuleList(SRMetrics(s, rgb) for _, s in self.eval_names)
        self.eval_metrics.to(self.device)

    def on_validation_epoch_start(self) -> None:
        self._setup_eval(self.trainer.datamodule.val_data)

    def on_test_epoch_start(self) -> None:
        self._setup_eval(self.trainer.datamodule.test_data)
        self.test_rows = []

    def _eval_step(self, batch: dict, dataloader_idx: int, ensemble: bool) -> torch.Tensor:
        name, scale = self.eval_names[dataloader_idx]
        sr = self.predict_image(self.to_float(batch["lr"]), scale, ensemble)
        self.eval_metrics[dataloader_idx].update(sr, batch["hr"], batch["gray"])
        return sr

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        sr = self._eval_step(batch, dataloader_idx, ensemble=False)
        if dataloader_idx == 0 and batch_idx < self.hparams.n_image_panels:
            self._log_panel(batch, sr, batch_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx, ensemble=self.hparams.self_ensemble)

    def _log_eval(self, stage: str) -> list[dict]:
        rows = []
        for (name, scale), metric in zip(self.eval_names, self.eval_metrics, strict=True):
            out = metric.compute()  # synced over ranks: every image counted once
            metric.reset()
            for key in ("psnr", "ssim", "count"):
                label = "n_images" if key == "count" else key
                self.log(f"{stage}/{name}/x{scale}/{label}", out[key].float(), sync_dist=False)
            rows.append(
                {
                    "dataset": name,
                    "scale": scale,
                    "psnr": round(out["psnr"].item(), 4),
                    "ssim": round(out["ssim"].item(), 5),
                    "self_ensemble": bool(stage == "test" and self.hparams.self_ensemble),
                    "n_images": int(out["count"].item()),
                }
            )
        if rows:
            self.log(f"{stage}/psnr", float(rows[0]["psnr"]), prog_bar=True, sync_dist=False)
        return rows

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self.test_rows = self._log_eval("test")

    def _log_panel(self, batch: dict, sr: torch.Tensor, index: int) -> None:
        """LR (nearest-upscaled) | bicubic | SR | HR centre crops, to loggers that take images."""
        logger = self.logger
        if logger is None or not hasattr(logger, "log_image") or self.trainer.sanity_checking:
            return
        from .models import Bicubic

        name, scale = self.eval_names[0]
        lr = self.to_float(batch["lr"])
        size = min(96, lr.shape[-2], lr.shape[-1])
        y0, x0 = (lr.shape[-2] - size) // 2, (lr.shape[-1] - size) // 2
        lr_c = lr[..., y0 : y0 + size, x0 : x0 + size]
        crop = (slice(y0 * scale, (y0 + size) * scale), slice(x0 * scale, (x0 + size) * scale))
        tiles = [
            F.interpolate(lr_c, scale_factor=scale, mode="nearest"),
            Bicubic(scales=(scale,), rgb_range=self.hparams.rgb_range)(lr_c, scale),
            sr[..., crop[0], crop[1]],
            self.to_float(batch["hr"])[..., crop[0], crop[1]],
        ]
        panel = torch.cat([quantize(t, self.hparams.rgb_range) for t in tiles], dim=-1)
        logger.log_image(
            key=f"val/{name}/x{scale}/panel{index}",
            images=[panel[0].byte().permute(1, 2, 0).cpu().numpy()],
            caption=["LR | bicubic | SR | HR"],
            step=self.global_step,
        )
