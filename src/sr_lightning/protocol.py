"""The scoring protocol of a result: which channels, which border, where the LR came from.

Plain Python (no torch), so that reports read it cheaply. The data set chooses it
(``data/datasets.py: protocol_for``); :mod:`.metrics` applies it; every result row carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHANNELS = ("y", "rgb")
LR_SOURCES = ("file", "imresize", "mixed")


@dataclass(frozen=True)
class Protocol:
    """How a data set is scored; every result row carries it (``as_dict``).

    - ``channels``: ``"y"`` (MATLAB luma; gray images on their gray value) or ``"rgb"`` (all
      three channels, SSIM averaged over them);
    - ``border``: pixels ignored on each side;
    - ``lr_source``: where the LR inputs came from: the set's own ``"file"``s, our MATLAB-exact
      ``"imresize"`` of the HR images, or ``"mixed"``.
    The data set chooses it (``data/datasets.py``: benchmarks ``y`` with border = scale, DIV2K
    ``rgb`` with border = scale + 6, as the authors' code).
    """

    channels: str
    border: int
    lr_source: str = "file"

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ValueError(f"protocol channels={self.channels!r}; allowed values: {CHANNELS}")
        if self.lr_source not in LR_SOURCES:
            raise ValueError(f"protocol lr_source={self.lr_source!r}; allowed: {LR_SOURCES}")

    def as_dict(self) -> dict[str, Any]:
        return {"channels": self.channels, "border": self.border, "lr_source": self.lr_source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        return cls(str(d["channels"]), int(d["border"]), str(d.get("lr_source", "file")))

    @property
    def label(self) -> str:
        """``Y, border 2, LR file``: how tables name it."""
        channels = "Y" if self.channels == "y" else "RGB"
        return f"{channels}, border {self.border}, LR {self.lr_source}"
