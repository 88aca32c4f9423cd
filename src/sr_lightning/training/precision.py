"""What "fp32" means while training, named (``model.tf32``), and the precision a run reports.

torch runs cuDNN fp32 convolutions in TF32 by default (``torch.backends.cudnn.conv.
fp32_precision == "tf32"``: a 10-bit mantissa on Ampere and newer), so ``trainer.precision=
32-true`` on a GPU trained in TF32 without saying so. Here fp32 is IEEE unless the config asks
for TF32; evaluation is IEEE fp32 always (:func:`sr_lightning.core.inference.network_precision`).
Under ``bf16-mixed`` / ``16-mixed`` the network's last conv and mean add run in fp32
(``model.net.fp32_output``, :meth:`sr_lightning.models.blocks.ResidualTrunk.reconstruct`).
"""

from __future__ import annotations


def precision_label(precision: str, tf32: bool, fp32_output: bool, on_gpu: bool) -> str:
    """``bf16-mixed, fp32 output`` / ``32-true, TF32 convs`` / ``32-true, IEEE fp32``: what
    the recipe line and ``summary.json`` say about the arithmetic of the training step."""
    precision = str(precision)
    if "mixed" in precision:
        low = "bf16" if precision.startswith("bf16") else "fp16"
        return f"{precision}, {'fp32' if fp32_output else low} output"
    if on_gpu and tf32:
        return f"{precision}, TF32 convs and matmuls"
    return f"{precision}, IEEE fp32"
