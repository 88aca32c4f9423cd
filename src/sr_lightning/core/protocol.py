"""The scoring protocol of a result: channels, border, where the LR came from, degradation.

Plain Python (no torch), so that reports read it cheaply. The data set chooses it
(``data/datasets.py: protocol_for``); :mod:`.metrics` applies it; every result row carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CHANNELS = ("y", "rgb")
LR_SOURCES = ("file", "imresize", "mixed", "generated")
DEGRADATIONS = ("bicubic", "bd", "dn")  # data.degradation (RDN Sec. 5: BI, BD, DN)


@dataclass(frozen=True)
class Protocol:
    """How a data set is scored; every result row carries it (``as_dict``).

    - ``channels``: ``"y"`` (MATLAB luma; gray images on their gray value) or ``"rgb"`` (all
      three channels, SSIM averaged over them);
    - ``border``: pixels ignored on each side;
    - ``lr_source``: where the LR inputs came from: the set's own ``"file"``s, our MATLAB-exact
      ``"imresize"`` of the HR images, or ``"mixed"``; ``"generated"`` from HR for BD and DN;
    - ``degradation``: HR -> LR, ``"bicubic"`` or RDN's ``"bd"`` / ``"dn"``
      (``data/degradation.py``); numbers of two degradations are never comparable.
    The data set chooses it (``data/datasets.py``: benchmarks ``y`` with border = scale, DIV2K
    ``rgb`` with border = scale + 6, as the authors' code).
    """

    channels: str
    border: int
    lr_source: str = "file"
    degradation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.channels not in CHANNELS:
            raise ValueError(f"protocol channels={self.channels!r}; allowed values: {CHANNELS}")
        if self.lr_source not in LR_SOURCES:
            raise ValueError(f"protocol lr_source={self.lr_source!r}; allowed: {LR_SOURCES}")
        if self.degradation not in DEGRADATIONS:
            raise ValueError(f"protocol degradation={self.degradation!r}; allowed: {DEGRADATIONS}")
        if (self.lr_source == "generated") != (self.degradation != "bicubic"):
            raise ValueError(
                f"protocol lr_source={self.lr_source!r} with degradation={self.degradation!r}: "
                "BD and DN LR images are always 'generated', bicubic ones never"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "border": self.border,
            "lr_source": self.lr_source,
            "degradation": self.degradation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        """From ``as_dict``; records older than BD/DN (no ``degradation``) were bicubic."""
        return cls(
            str(d["channels"]),
            int(d["border"]),
            str(d.get("lr_source", "file")),
            str(d.get("degradation", "bicubic")),
        )

    @property
    def label(self) -> str:
        """``Y, border 2, LR file`` (bicubic) or ``Y, border 3, BD (generated)``: how tables
        name it, so that no table puts numbers of two degradations side by side."""
        channels = "Y" if self.channels == "y" else "RGB"
        if self.degradation != "bicubic":
            return f"{channels}, border {self.border}, {self.degradation.upper()} (generated)"
        return f"{channels}, border {self.border}, LR {self.lr_source}"
