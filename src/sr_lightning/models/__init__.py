"""The networks: EDSR, MDSR and the bicubic baseline (paper Sec. 3), and their catalogue."""

from .bicubic import Bicubic
from .blocks import MeanShift, ResBlock, Upsampler, count_trainable
from .catalogue import PRESETS, build_from_record, build_net, describe, record
from .edsr import EDSR
from .mdsr import MDSR

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
    "count_trainable",
    "describe",
    "record",
]
