"""Propagators that wrap the signal and train its modules from a local loss."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import learn
from ..base import LocalLosses, LossFn, Propagator, check_loss, refuse_learning_without_grad

Input = tuple[Tensor, "Tensor | None", "Tensor | None"]
Output = tuple[Tensor, "Tensor | None"]


def manage_signal(cls: type, manager: Any, module: nn.Module, **kwargs: Any) -> nn.Module:
    """Wrap ``module`` in the signal propagator ``cls`` through ``manager.set_signal``."""
    return manager.set_signal(module, cls, **kwargs)


class Learn(Propagator):
    """Base of the signal propagators that learn; subclasses say how (``train_`` and ``eval_``).

    Forward: ``(h1, t1, h0, t0) = module((h0, t0))`` on detached inputs, the local learning
    step when a target is given, and ``(h1.detach(), t1.detach())`` out. ``manage(manager,
    module, **kwargs)`` wraps through ``manager.set_signal`` (the reference package's version
    adds the signal as a hidden layer).
    """

    trained_by: ClassVar[str] = "local"
    per_class_signal: bool = False  # see propagators.Learn
    manage = classmethod(manage_signal)  # type: ignore[assignment]

    def forward(self, input: Input) -> Output:
        h0, t0, context = input
        h0 = h0.detach()
        if t0 is None:
            h1, t1, _, _ = self.module((h0, None))
            return h1.detach(), t1
        refuse_learning_without_grad(self)
        t0 = t0.detach()
        context = context.detach() if context is not None else None
        h1, t1, h0, t0 = self.module((h0, t0))
        if self.training:
            self.train_(h1, t1, h0, t0, context)
        else:
            self.eval_(h1, t1, h0, t0, context)
        return h1.detach(), t1.detach()

    def train_(self, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Any:
        raise NotImplementedError

    def eval_(self, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Any:
        raise NotImplementedError


class Loss(Learn):
    """Trains the signal's modules from ``loss(self, h1, t1, h0, t0, context)``: the same local loss
    and update as a hidden layer's (``propagators.Loss.train_``).

    Args:
        module: the signal (a generator, optionally after formatters in an ``nn.Sequential``).
        optimizer: optimizer over the signal's parameters (``None``: compute the loss only).
        loss: the local loss.
        deferred: collect the loss here instead of stepping now (see ``LocalLosses``).
        per_class_signal: the signal has one row per class (``True``) or one per sample (``False``:
            the reference package's form).
    """

    train_ = learn.Loss.train_
    eval_ = learn.Loss.eval_

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        loss: LossFn,
        deferred: LocalLosses | None = None,
        per_class_signal: bool = False,
    ) -> None:
        super().__init__(module)
        self.optimizer = optimizer
        self.loss = check_loss(loss)
        self.deferred = deferred
        self.per_class_signal = bool(per_class_signal)
