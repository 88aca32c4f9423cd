"""SRLitModule: the paper's training protocol (Sec. 4.1) around any EDSR-family network."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from sr_lightning.core.inference import receptive_radius, set_tf32, super_resolve
from sr_lightning.core.metrics import SRMetrics
from sr_lightning.data.datamodule import is_no_image
from sr_lightning.models import Bicubic, record
from sr_lightning.models.checkpoint import PROTOCOLS_KEY, RECORD_KEY, init_from_checkpoint
from sr_lightning.runs.folder import RunFolder
from sr_lightning.runs.records import RUN_RECORDS
from sr_lightning.runs.results import EvalResult
from sr_lightning.training.compile import CompiledOrEager
from sr_lightning.training.pictures import sample_panel, save_png

log = logging.getLogger(__name__)

LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss}


@dataclass(frozen=True)
class OptimRecipe:
    """The optimisation of paper Sec. 4.1 (the ``optim`` config group): L1 loss, Adam
    (0.9, 0.999, 1e-8), learning rate 1e-4 halved every 2e5 updates.

    The schedule counts updates (optimizer steps) and multiplies the learning rate by
    ``lr_gamma``: at each update count of ``lr_milestones`` (MultiStepLR), or, with
    ``lr_milestones=None``, every ``lr_decay_steps`` updates (StepLR, the paper's wording).
    Milestones, when given, win: ``lr_decay_steps`` is then not used. ``lr_milestones=[]``
    keeps the learning rate constant.
    """

    loss: str = "l1"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_decay_steps: int | None = 200_000
    lr_milestones: tuple[int, ...] | None = None
    lr_gamma: float = 0.5
    ema_decay: float | None = None  # EMA of the weights (config_rules.average_the_weights)

    @classmethod
    def from_mapping(cls, optim: Mapping[str, Any] | None) -> OptimRecipe:
        optim = dict(optim or {})
        allowed = [f.name for f in fields(cls)]
        unknown = [k for k in optim if k not in allowed]
        if unknown:
            raise ValueError(f"optim.{unknown[0]}: unknown key; allowed keys: {allowed}")
        if "betas" in optim:
            optim["betas"] = tuple(float(b) for b in optim["betas"])
        return cls(**optim)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"optim.loss={self.loss!r}: allowed values are {list(LOSSES)}")
        if self.lr_milestones is not None:
            object.__setattr__(self, "lr_milestones", _milestones(self.lr_milestones))
        elif not _positive_int(self.lr_decay_steps):
            raise ValueError(
                f"optim.lr_decay_steps={self.lr_decay_steps!r} with optim.lr_milestones=null: "
                "the learning rate is decayed every optim.lr_decay_steps updates, a positive "
                "integer (e.g. 200000); or give optim.lr_milestones, a list of update counts"
            )

    @property
    def schedule(self) -> str:
        """The schedule in words: ``halved every 200000 updates``, ``halved at updates
        [200000]``, ``x0.1 at updates [100, 200]``, ``constant``."""
        if self.lr_gamma == 1 or self.lr_milestones == ():
            return "constant"
        factor = "halved" if self.lr_gamma == 0.5 else f"x{self.lr_gamma:g}"
        if self.lr_milestones is None:
            return f"{factor} every {self.lr_decay_steps} updates"
        return f"{factor} at updates {list(self.lr_milestones)}"


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _milestones(value: Any) -> tuple[int, ...]:
    """``optim.lr_milestones``: strictly increasing positive update counts, else an error."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(
            f"optim.lr_milestones={value!r}: a list of update counts (e.g. [200000]), or null "
            "for every optim.lr_decay_steps updates"
        )
    values = list(value)
    bad = [m for m in values if not _positive_int(m)]
    if bad:
        raise ValueError(
            f"optim.lr_milestones={values}: {bad[0]!r} is not a positive integer; the "
            "milestones are update counts (optimizer steps), e.g. [200000]"
        )
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(
            f"optim.lr_milestones={values}: the update counts must be strictly increasing"
        )
    return tuple(values)


class SRLitModule(L.LightningModule):
    """The paper's training protocol (Sec. 4.1) around any catalogued network ``net``: L1 (or
    L2) loss, Adam, a step schedule of the learning rate (``optim``: :class:`OptimRecipe`),
    and whole-image validation/testing through :func:`~sr_lightning.core.inference.super_resolve`
    (fp32 whatever ``trainer.precision``; ``self_ensemble`` at test for EDSR+ / MDSR+).

    Batches arrive as uint8; they become float on the device (after the crop, never before).
    Metrics are logged as ``val/<Set>/x<s>/psnr|ssim`` and ``val/psnr``, the checkpoint
    criterion: the first validation set, averaged over the network's scales (one scale for
    EDSR; x2, x3, x4 for MDSR). Each image counts once, also under DDP. Checkpoints carry the
    network's record (``model_args``) and each validation set's protocol (``protocols``).
    ``log_prefix`` keys the logged metrics apart (the bicubic rows: ``bicubic/test/...``).
    """

    def __init__(
        self,
        net: nn.Module,
        optim: Mapping[str, Any] | None = None,
        init_from: str | None = None,
        channels_last: bool = False,
        compile: bool | str = False,
        self_ensemble: bool = False,
        val_tile: int = 0,
        val_tile_overlap: int | None = None,
        n_image_panels: int = 4,
        log_prefix: str = "",
        tf32: bool = False,
        init_from_partial: bool = False,
    ):
        super().__init__()
        recipe = OptimRecipe.from_mapping(optim)
        self.save_hyperparameters(ignore=["net", "optim"])
        self.hparams["optim"] = asdict(recipe)  # plain values: loads with weights_only=True
        self.recipe = recipe
        if init_from:
            init_from_checkpoint(net, init_from, allow_partial=init_from_partial)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        # not a submodule (the checkpoint holds the network once, as net.*)
        mode = CompiledOrEager.mode_of(compile)  # refuses a bad model.compile before training
        self._train_forward = CompiledOrEager(net, mode) if mode else net.__call__
        self.loss_fn = LOSSES[recipe.loss]
        self.tile_overlap = receptive_radius(net) if val_tile_overlap is None else val_tile_overlap
        self.eval_sets: list[Any] = []
        self.eval_metrics = nn.ModuleList()
        self.val_results: list[EvalResult] = []
        self.test_results: list[EvalResult] = []
        self.test_images: list[dict] = []  # per-image rows of the last test
        self.per_image: list[dict] = []
        # the bicubic level of each validation set, measured once (the curves' reference line)
        self.bicubic_levels: dict[tuple[str, int], tuple[float, float]] = {}
        self.bicubic_metrics: dict[int, SRMetrics] = {}

    def on_fit_start(self) -> None:
        """fp32 is IEEE fp32 on the device unless ``model.tf32`` (training/precision.py)."""
        set_tf32(bool(self.hparams.tf32))

    # ---- helpers ------------------------------------------------------------------------
    def memory_format(self, lr: torch.Tensor) -> torch.Tensor:
        """The network's input layout: NHWC with ``model.channels_last``."""
        return (
            lr.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else lr
        )

    def forward(self, lr: torch.Tensor, scale: int) -> torch.Tensor:
        return self.net(self.memory_format(lr), scale)

    @property
    def rgb_range(self) -> float:
        return float(getattr(self.net, "rgb_range", 255.0))

    def to_float(self, img: torch.Tensor) -> torch.Tensor:
        return img.float() * (self.rgb_range / 255.0)

    def predict_image(self, lr: torch.Tensor, scale: int, ensemble: bool = False) -> torch.Tensor:
        """Whole-image fp32 SR of a float LR batch: tiled (exact) and optionally ensembled."""
        return super_resolve(
            self.net,
            lr,
            scale,
            ensemble=ensemble,
            tile=self.hparams.val_tile,
            overlap=self.tile_overlap,
            channels_last=self.hparams.channels_last,
        )

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

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The network's record and the validation protocols travel with the weights."""
        checkpoint[RECORD_KEY] = record(self.net)
        sets = getattr(self.trainer.datamodule, "val_data", None) or self.eval_sets
        checkpoint[PROTOCOLS_KEY] = {f"{d.name}/x{d.scale}": d.protocol.as_dict() for d in sets}

    def configure_optimizers(self) -> dict:
        r = self.recipe
        params = [p for p in self.net.parameters() if p.requires_grad]  # mean shift is frozen
        opt = torch.optim.Adam(
            params,
            lr=r.lr,
            betas=r.betas,
            eps=r.eps,
            fused=True,  # one kernel for all parameters (CUDA and CPU)
        )
        # stepped after every optimizer step ("interval": "step"): the schedule counts updates
        if r.lr_milestones is not None:
            sched = torch.optim.lr_scheduler.MultiStepLR(
                opt, milestones=list(r.lr_milestones), gamma=r.lr_gamma
            )
        else:
            sched = torch.optim.lr_scheduler.StepLR(
                opt, step_size=r.lr_decay_steps, gamma=r.lr_gamma
            )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- evaluation ---------------------------------------------------------------------
    def _setup_eval(self, sets: Sequence[Any], stage: str) -> None:
        self.eval_sets = list(sets)
        self.eval_metrics = nn.ModuleList(SRMetrics(d.protocol, self.rgb_range) for d in sets)
        self.eval_metrics.to(self.device)
        self.per_image = []
        self.bicubic_metrics = {
            i: SRMetrics(d.protocol, self.rgb_range, sync_on_compute=True).to(self.device)
            for i, d in enumerate(sets)
            if stage == "val" and (d.name, d.scale) not in self.bicubic_levels
        }

    def on_validation_epoch_start(self) -> None:
        self._setup_eval(self.trainer.datamodule.val_data, "val")

    def on_test_epoch_start(self) -> None:
        self._setup_eval(self.trainer.datamodule.test_data, "test")

    def _eval_step(self, batch: dict, dataloader_idx: int, ensemble: bool) -> torch.Tensor:
        data = self.eval_sets[dataloader_idx]
        lr = self.to_float(batch["lr"])
        sr = self.predict_image(lr, data.scale, ensemble)
        metric = self.eval_metrics[dataloader_idx]
        psnr, ssim = metric.score(sr, batch["hr"], batch["gray"])
        metric.update(psnr, ssim)
        if dataloader_idx in self.bicubic_metrics:
            level = self.bicubic_metrics[dataloader_idx]
            up = super_resolve(self.bicubic, lr, data.scale)
            level.update(*level.score(up, batch["hr"], batch["gray"]))
        for index, p, s in zip(batch["index"].tolist(), psnr.tolist(), ssim.tolist(), strict=True):
            pair = data.pairs[index]
            self.per_image.append(
                {
                    "dataset": data.name,
                    "scale": data.scale,
                    "image": pair.hr.stem,
                    "psnr": p,
                    "ssim": s,
                    "protocol": data.protocol.label,
                    "hr_path": str(pair.hr),
                    "lr_path": str(pair.lr) if pair.lr else "imresize",
                }
            )
        return sr

    @property
    def bicubic(self) -> nn.Module:
        scales = sorted({d.scale for d in self.eval_sets})
        return Bicubic(scales, rgb_range=self.rgb_range)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if is_no_image(batch):  # a rank with no image of any set (more ranks than images)
            return
        sr = self._eval_step(batch, dataloader_idx, ensemble=False)
        if dataloader_idx == 0 and batch_idx < self.hparams.n_image_panels:
            self._save_sample(batch, sr)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if is_no_image(batch):
            return
        self._eval_step(batch, dataloader_idx, ensemble=self.hparams.self_ensemble)

    def _log_eval(self, stage: str) -> list[EvalResult]:
        results = []
        prefix0 = f"{self.hparams.log_prefix}{stage}"
        for i, (data, metric) in enumerate(zip(self.eval_sets, self.eval_metrics, strict=True)):
            out = metric.compute()  # synced over ranks: every image counted once
            metric.reset()
            prefix = f"{prefix0}/{data.name}/x{data.scale}"
            for key in ("psnr", "ssim", "count"):
                label = "n_images" if key == "count" else key
                self.log(f"{prefix}/{label}", out[key].float(), sync_dist=False)
            results.append(
                EvalResult(
                    data.name,
                    data.scale,
                    data.protocol,
                    out["psnr"].item(),
                    out["ssim"].item(),
                    int(out["count"].item()),
                )
            )
            if i in self.bicubic_metrics:
                level = self.bicubic_metrics[i].compute()
                self.bicubic_levels[data.name, data.scale] = (
                    level["psnr"].item(),
                    level["ssim"].item(),
                )
            if stage == "val" and (data.name, data.scale) in self.bicubic_levels:
                psnr, ssim = self.bicubic_levels[data.name, data.scale]
                self.log(f"{prefix}/bicubic_psnr", psnr, sync_dist=False)
                self.log(f"{prefix}/bicubic_ssim", ssim, sync_dist=False)
        if results:  # the criterion: the first set, mean over its scales
            first = [r for r in results if r.dataset == results[0].dataset]
            mean = sum(r.psnr for r in first) / len(first)
            self.log(f"{prefix0}/psnr", mean, prog_bar=True, sync_dist=False)
            levels = [self.bicubic_levels.get((r.dataset, r.scale)) for r in first]
            if stage == "val" and all(levels):
                level = sum(lv[0] for lv in levels) / len(levels)
                self.log(f"{prefix0}/bicubic_psnr", level, sync_dist=False)
        return results

    def gathered_per_image(self) -> list[dict]:
        """The per-image results of this epoch from every rank, sorted (the same on all)."""
        rows = self.per_image
        if self.trainer.world_size > 1:
            parts: list[list[dict]] = [[] for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(parts, rows)
            rows = [r for part in parts for r in part]
        return sorted(rows, key=lambda r: (r["dataset"], r["scale"], r["image"]))

    def on_validation_epoch_end(self) -> None:
        self.val_results = self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_eval("test")
        self.test_images = self.gathered_per_image()

    def _save_sample(self, batch: dict, sr: torch.Tensor) -> None:
        """``samples/<set>_x<s>_<image>_step<NNNNNNN>.png`` in the run folder (any logger) and
        the same panel (:func:`~sr_lightning.training.pictures.sample_panel`), captioned, to
        the loggers that take images (W&B)."""
        if self.trainer.sanity_checking:
            return
        data = self.eval_sets[0]
        image = batch["name"][0]
        bicubic = super_resolve(self.bicubic, self.to_float(batch["lr"][:1]), data.scale)
        panel = sample_panel(
            sr[0],
            bicubic[0],
            batch["hr"][0],
            data.protocol,
            self.rgb_range,
            gray=bool(batch["gray"][0]),
            title=f"{data.name} x{data.scale}, {image}, step {self.global_step}",
        )
        folder = RunFolder(self.trainer.default_root_dir)
        path = folder.sample(data.name, data.scale, image, self.global_step)
        try:
            save_png(panel.image, path)
        except OSError as e:  # a full disk: reported once, training goes on
            RUN_RECORDS.report(e, path)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(
                    key=f"samples/{data.name}_x{data.scale}_{image}",
                    images=[panel.image],
                    caption=[panel.caption],
                    step=self.global_step,
                )
