"""The networks: EDSR, MDSR and the bicubic baseline (paper Sec. 3), and their catalogue."""

from sr_lightning.models.bicubic import Bicubic
from sr_lightning.models.blocks import MeanShift, ResBlock, Upsampler, count_trainable
from sr_lightning.models.catalogue import (
    PRESETS,
    build_from_record,
    build_net,
    check_scales,
    describe,
    record,
)
from sr_lightning.models.edsr import EDSR
from sr_lightning.models.mdsr import MDSR

__all__ = [
    "EDSR",
    "MDSR",
    "PRESETS",
    "Bicubic",
    "MeanShift",
    "ResBlock",
    "Upsampler",
    "build_from_record",
    "build_net",
    "check_scales",
    "count_trainable",
    "describe",
    "record",
]
