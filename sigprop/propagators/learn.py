"""Propagators that train their hidden layer from a local loss."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import LocalLearner, LocalLosses, LossFn, LossUpdate

State = tuple[Tensor, "Tensor | None", "Tensor | None"]

_BATCH_STATISTICS = (nn.modules.batchnorm._BatchNorm,)


def uses_batch_statistics(module: nn.Module) -> bool:
    """True if the module normalises with statistics over the batch (so ``h`` and ``t`` must not share a call)."""
    for m in module.modules():
        if isinstance(m, _BATCH_STATISTICS):
            return True
        if isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats:
            return True
    return False


class Learn(LocalLearner):
    """Base of the hidden-layer propagators that learn; subclasses define ``train_`` and ``eval_``.

    Forward: ``h1 = module(h0.detach())``; with a signal ``t0``, also ``t1 = module(t0.detach())``
    and the local learning step; returns ``(h1.detach(), t1.detach(), context)``.

    Args:
        module: the layer.
        fuse_ht: run ``h`` and ``t`` through the layer as one batch. ``None`` (default) does so
            unless the layer normalises over the batch, where one call would change the result.
    """

    def __init__(self, module: nn.Module, fuse_ht: bool | None = None) -> None:
        super().__init__(module)
        self.fuse_ht = (not uses_batch_statistics(module)) if fuse_ht is None else bool(fuse_ht)

    def run_ht(self, h0: Tensor, t0: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's outputs for ``h0`` and ``t0``."""
        if self.fuse_ht and h0.shape[1:] == t0.shape[1:] and h0.dtype == t0.dtype:
            out = self.module(torch.cat([h0, t0]))
            return out[: h0.shape[0]], out[h0.shape[0] :]
        return self.module(h0), self.module(t0)

    def forward(self, input: State) -> State:
        h0, t0, context = input
        h0 = h0.detach()
        if t0 is None:
            return self.module(h0).detach(), None, context
        t0 = t0.detach()
        if context is not None:
            context = context.detach()
        h1, t1 = self.run_ht(h0, t0)
        self.learn(h1, t1, h0, t0, context)
        return h1.detach(), t1.detach(), context


class Loss(LossUpdate, Learn):
    """Trains its layer from ``loss(self, h1, t1, h0, t0, context)`` with the layer's own optimizer.

    Args:
        module: the layer.
        optimizer: optimizer over ``module``'s parameters (``None``: compute the loss only).
        loss: the local loss, e.g. ``sigprop.loss.v9_input_target_max_all``.
        deferred: collect the loss here instead of stepping now, for one fused backward and step.
        fuse_ht: see ``Learn``.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        loss: LossFn,
        deferred: LocalLosses | None = None,
        fuse_ht: bool | None = None,
    ) -> None:
        super().__init__(module, fuse_ht)
        self._set_update(optimizer, loss, deferred)
