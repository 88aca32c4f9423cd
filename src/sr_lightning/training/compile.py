"""``model.compile``: ``torch.compile`` of the network for the training step, with an eager
fallback where compiling fails."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class CompiledOrEager:
    """``torch.compile(net, mode=mode)`` for the training step, falling back to the eager
    network (with a warning) where compiling fails: no C++ compiler or Triton, an unsupported
    platform.

    The network module itself is compiled, not the LightningModule: DDP (Lightning wraps the
    LightningModule) and the loss stay outside the compiled graph. A plain object, not a
    module: the compiled wrapper's parameters are the network's, and the checkpoint keeps the
    ``net.*`` names. Evaluation stays eager (whole images of varying sizes would recompile for
    each new size).
    """

    # model.compile: false | true (= default) | a torch.compile mode
    MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")

    @classmethod
    def mode_of(cls, value: bool | str | None) -> str | None:
        """The torch.compile mode of ``model.compile`` (``None``: eager), or a ValueError."""
        if value is None or value is False or value == "false":
            return None
        if value is True or value == "true":
            return "default"
        if isinstance(value, str) and value in cls.MODES:
            return value
        raise ValueError(
            f"model.compile={value!r}: allowed values are false, true, {', '.join(cls.MODES)}"
        )

    def __init__(self, net: nn.Module, mode: str = "default"):
        self.net = net
        self.mode = self.mode_of(mode) or "default"
        self.compiled: Callable | None = None
        self.failed = False

    def __getstate__(self) -> dict:  # ddp_spawn pickles the module: compile again there
        return {"net": self.net, "mode": self.mode, "compiled": None, "failed": self.failed}

    def _fall_back(self, error: BaseException) -> None:
        log.warning(
            "model.compile=%s: compiling failed, training eagerly instead (%s)", self.mode, error
        )
        self.compiled, self.failed = None, True

    def __call__(self, *args: Any) -> torch.Tensor:
        if self.compiled is None and not self.failed:
            try:
                self.compiled = torch.compile(self.net, mode=self.mode)
            except Exception as e:  # e.g. torch.compile unsupported on this Python
                self._fall_back(e)
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except torch._dynamo.exc.TorchDynamoException as e:  # backend or tracing failure
                self._fall_back(e)
        return self.net(*args)
