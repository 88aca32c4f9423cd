"""Which W&B mode to use, decided without touching the network (no torch import here)."""

from __future__ import annotations

import netrc
import os


def wandb_mode() -> str:
    """$WANDB_MODE if set; online with an API key (env or ~/.netrc); else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"
