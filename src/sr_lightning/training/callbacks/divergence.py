"""NaN/Inf in training: stop the run (keeping the last good checkpoint) or skip the step."""

from __future__ import annotations

import logging

import lightning as L
import torch

log = logging.getLogger(__name__)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss."""


class DivergenceGuard(L.Callback):
    """NaN/Inf in training: ``action="stop"`` (default) or ``"skip"``.

    - stop: raises :class:`DivergenceError` when the loss is not finite, checked every
      ``check_every_n_steps`` (one host sync each time). No checkpoint is written on the way
      out: the last good one stays the newest.
    - skip: a step whose gradients are not finite changes nothing (its gradients are dropped, so
      Adam leaves weights and moments as they were; the LR schedule goes on). Checked at every
      step, so it costs one host sync per step. More than ``max_skipped`` skipped steps in a
      row stop the run as above.

    Decisions are agreed across DDP ranks, so that all ranks act together.
    """

    ACTIONS = ("stop", "skip")

    def __init__(self, check_every_n_steps: int = 10, action: str = "stop", max_skipped: int = 10):
        if action not in self.ACTIONS:
            raise ValueError(
                f"callbacks.divergence_guard.action={action!r}: allowed values are "
                f"{list(self.ACTIONS)}"
            )
        self.check_every_n_steps = check_every_n_steps
        self.action = action
        self.max_skipped = max_skipped
        self.skipped = 0  # in total
        self._in_a_row = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.action != "skip":
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        bad = not bool(torch.stack([g.isfinite().all() for g in grads]).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            self._in_a_row = 0
            return
        optimizer.zero_grad(set_to_none=True)  # Adam skips parameters without a gradient
        self.skipped += 1
        self._in_a_row += 1
        log.warning("step %d skipped: non-finite gradients", trainer.global_step)
        if self._in_a_row > self.max_skipped:
            raise DivergenceError(
                f"non-finite gradients at {self._in_a_row} steps in a row (up to step "
                f"{trainer.global_step}); the last good checkpoint is kept. Lower optim.lr."
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.action != "stop" or trainer.global_step % self.check_every_n_steps:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            raise DivergenceError(
                f"non-finite training loss at step {trainer.global_step} (loss={loss.item()}); "
                "the last good checkpoint is kept. Lower optim.lr or use model.res_scale < 1."
            )
