"""The networks: EDSR, MDSR and the bicubic baseline (paper Sec. 3)."""

from .bicubic import Bicubic
from .blocks import MeanShift, ResBlock, Upsampler, count_trainable
from .edsr import EDSR
from .mdsr import MDSR

__all__ = ["EDSR", "MDSR", "Bicubic", "MeanShift", "ResBlock", "Upsampler", "count_trainable"]
