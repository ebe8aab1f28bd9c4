"""Propagators that wrap the signal and train its modules from a local loss."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..base import LocalLearner, LocalLosses, LossFn, LossUpdate

Input = tuple[Tensor, "Tensor | None", "Tensor | None"]
Output = tuple[Tensor, "Tensor | None"]


def manage_signal(cls: type, manager: Any, module: nn.Module, **kwargs: Any) -> nn.Module:
    """Wrap ``module`` in the signal propagator ``cls`` through ``manager.set_signal``."""
    return manager.set_signal(module, cls, **kwargs)


class Learn(LocalLearner):
    """Base of the signal propagators that learn; subclasses define ``train_`` and ``eval_``.

    Forward: ``(h1, t1, h0, t0) = module((h0, t0))`` on detached inputs, the local learning
    step when a target is given, and ``(h1.detach(), t1.detach())`` out. ``manage(manager,
    module, **kwargs)`` wraps through ``manager.set_signal`` (the reference package's version
    adds the signal as a hidden layer).
    """

    manage = classmethod(manage_signal)  # type: ignore[assignment]

    def forward(self, input: Input) -> Output:
        h0, t0, context = input
        h0 = h0.detach()
        if t0 is None:
            h1, t1, _, _ = self.module((h0, None))
            return h1.detach(), t1
        self.check_can_learn()
        t0 = t0.detach()
        if context is not None:
            context = context.detach()
        h1, t1, h0, t0 = self.module((h0, t0))
        self.learn(h1, t1, h0, t0, context)
        return h1.detach(), t1.detach()


class Loss(LossUpdate, Learn):
    """Trains the signal's modules from ``loss(self, h1, t1, h0, t0, context)``.

    Args:
        module: the signal (a generator, optionally after formatters in an ``nn.Sequential``).
        optimizer: optimizer over the signal's parameters (``None``: compute the loss only).
        loss: the local loss.
        deferred: collect the loss here instead of stepping now (see ``LocalLosses``).
        per_class_signal: the signal has one row per class (``True``) or one per sample (``False``:
            the reference package's form).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        loss: LossFn,
        deferred: LocalLosses | None = None,
        per_class_signal: bool = False,
    ) -> None:
        super().__init__(module)
        self._set_update(optimizer, loss, deferred)
        self.per_class_signal = bool(per_class_signal)
