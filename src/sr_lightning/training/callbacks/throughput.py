"""Throughput of the training step in every run: images/s, model TFLOP/s and that rate as a
fraction of a matmul's rate measured on the same device (not of its rated peak: not an MFU)."""

from __future__ import annotations

import time

import lightning as L
import torch

from sr_lightning.core.inference import convs_in_tf32
from sr_lightning.training.flops import matmul_peak, train_step_flops


class ImagesPerSecond(L.Callback):
    """Logs, every ``trainer.log_every_n_steps`` steps, this rank's throughput over the steps
    since the last log:
    ``train/images_per_sec`` (LR patches per second), ``train/tflops`` (model TFLOP/s, counted
    from the conv shapes of each batch's scale and size by :func:`~sr_lightning.training.flops.
    train_step_flops`) and ``train/frac_of_matmul_peak`` (that rate over ``peak_tflops``).

    Host-side timing over a window of steps: no device synchronisation in the step. The first
    step (warm-up, compilation) and validation are left out. ``peak_tflops`` is given or, by
    default, the rate of a short square matmul measured once at train start in the arithmetic
    the step uses (fp32 on CPU; on GPU bf16 / fp16 under mixed precision, else fp32, TF32 where
    cuDNN uses it): what this device reaches in practice, below its rated peak, so the fraction
    is above the MFU against the datasheet's number (give that as ``peak_tflops`` for an MFU).
    :meth:`summary` (the run's means) goes into ``summary.json``.
    """

    def __init__(self, peak_tflops: float | None = None):
        if peak_tflops is not None and peak_tflops <= 0:
            raise ValueError(
                f"callbacks.throughput.peak_tflops={peak_tflops!r} must be > 0 (or null: measure)"
            )
        self.peak_tflops = peak_tflops
        self.peak_dtype = "given" if peak_tflops is not None else None
        self.flops_per_step: dict[tuple[int, int, int], int] = {}  # (scale, batch, patch)
        self._t0: float | None = None
        self._images = 0
        self._flops = 0
        self._paused_at: float | None = None
        self._total = {"seconds": 0.0, "images": 0, "flops": 0}

    def measure_peak(self, trainer, pl_module) -> None:
        """The device's practical peak TFLOP/s: a short square matmul (< 1 s on CPU)."""
        device = pl_module.device
        precision = str(trainer.precision)
        dtype, name = torch.float32, "fp32"
        tf32 = False
        if device.type == "cuda":
            if "bf16" in precision:
                dtype, name = torch.bfloat16, "bf16"
            elif "16" in precision:
                dtype, name = torch.float16, "fp16"
            elif convs_in_tf32():  # fp32 convolutions then run in TF32
                tf32, name = True, "tf32"
        matmul = torch.backends.cuda.matmul
        before = matmul.fp32_precision
        if device.type == "cuda":  # the matmul in the convolutions' fp32 arithmetic
            matmul.fp32_precision = "tf32" if tf32 else "ieee"
        try:
            n = None if device.type == "cuda" else 1024
            self.peak_tflops = matmul_peak(device, dtype, n=n, repeats=5) / 1e12
        finally:
            matmul.fp32_precision = before
        self.peak_dtype = name

    def step_flops(self, net: torch.nn.Module, batch: dict) -> int:
        """Model FLOPs of a training step on ``batch`` (cached per scale, batch and patch)."""
        n, _, patch, _ = batch["lr"].shape
        key = (int(batch["scale"]), n, patch)
        if key not in self.flops_per_step:
            self.flops_per_step[key] = train_step_flops(net, n, patch, key[0])
        return self.flops_per_step[key]

    def on_train_start(self, trainer, pl_module) -> None:
        if self.peak_tflops is None:
            self.measure_peak(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._images += batch["lr"].shape[0]
        self._flops += self.step_flops(pl_module.net, batch)
        if self._t0 is None:
            self._t0, self._images, self._flops = time.perf_counter(), 0, 0  # warm-up step
        elif trainer.global_step % trainer.log_every_n_steps == 0:
            now = time.perf_counter()
            seconds = now - self._t0
            tflops = self._flops / seconds / 1e12
            pl_module.log("train/images_per_sec", self._images / seconds)
            pl_module.log("train/tflops", tflops)
            pl_module.log("train/frac_of_matmul_peak", tflops / self.peak_tflops)
            total = self._total
            total["seconds"] += seconds
            total["images"] += self._images
            total["flops"] += self._flops
            self._t0, self._images, self._flops = now, 0, 0

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._t0 is not None and not trainer.sanity_checking:
            self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._paused_at is not None:  # the window goes on without the validation time
            self._t0 += time.perf_counter() - self._paused_at
            self._paused_at = None

    def summary(self) -> dict:
        """The run's mean throughput over the logged windows (this process);
        ``frac_of_matmul_peak``: ``tflops`` over ``peak_tflops`` (see the class)."""
        t = self._total
        tflops = t["flops"] / t["seconds"] / 1e12 if t["seconds"] else None
        frac = tflops / self.peak_tflops if tflops is not None and self.peak_tflops else None
        return {
            "images_per_sec": t["images"] / t["seconds"] if t["seconds"] else None,
            "tflops": tflops,
            "frac_of_matmul_peak": frac,
            "peak_tflops": self.peak_tflops,
            "peak_dtype": self.peak_dtype,
        }
