"""Propagators that train their hidden layer from a local loss."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import LocalLearner, LocalLosses, LossFn, LossUpdate, _without_autocast

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


def recomputable(module: nn.Module) -> bool:
    """True if each sample's output depends on that sample only and on nothing random in training:
    no batch statistics and no active dropout, so recomputing the layer on a slice of the batch
    gives that slice of the full batch's output."""
    if uses_batch_statistics(module):
        return False
    return not any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules())


def join_rows(h: Tensor, t: Tensor) -> Tensor | None:
    """``torch.cat([h, t])`` without a copy when ``t``'s rows follow ``h``'s in memory (as after a
    layer that ran both in one call), else ``None``. The result aliases ``h`` and ``t``."""
    if h.dtype != t.dtype or h.device != t.device or h.shape[1:] != t.shape[1:] or h.stride() != t.stride():
        return None
    if h.dim() == 0 or h.untyped_storage().data_ptr() != t.untyped_storage().data_ptr():
        return None
    if t.storage_offset() != h.storage_offset() + h.shape[0] * h.stride(0):
        return None
    return h.as_strided((h.shape[0] + t.shape[0],) + tuple(h.shape[1:]), h.stride(), h.storage_offset())


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
            joined = join_rows(h0, t0)
            out = self.module(joined if joined is not None else torch.cat([h0, t0]))
            # split, not two slices: the backward of a split is one concatenation of the two
            # gradients, while each slice's backward fills a zero tensor of the whole batch.
            h1, t1 = out.split([h0.shape[0], t0.shape[0]])
            return h1, t1
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
        recompute_chunk: low-memory update (with an optimizer, without ``deferred``, for
            ``recomputable`` layers): the layer runs without a graph, the loss gives the gradients
            at ``h1`` and ``t1``, and the layer is run again with a graph ``recompute_chunk`` samples
            at a time to turn them into parameter gradients. Only slices of the layer's graph are
            ever alive, for one extra forward pass. The loss must reach the parameters only
            through ``h1`` and ``t1`` (true of every loss in ``sigprop.loss``). ``None``: off.
        per_class_signal: the signal reaching this layer has one row per class (``True``, see
            ``sigprop.loss.similarity``) or one per sample (``False``: the reference package's form).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        loss: LossFn,
        deferred: LocalLosses | None = None,
        fuse_ht: bool | None = None,
        recompute_chunk: int | None = None,
        per_class_signal: bool = False,
    ) -> None:
        super().__init__(module, fuse_ht)
        self._set_update(optimizer, loss, deferred)
        self.recompute_chunk = recompute_chunk
        self.per_class_signal = bool(per_class_signal)

    def forward(self, input: State) -> State:
        h0, t0, context = input
        if not (
            self.training
            and self.recompute_chunk
            and t0 is not None
            and self.optimizer is not None
            and self.deferred is None
            and recomputable(self.module)
        ):
            return super().forward(input)
        h0, t0 = h0.detach(), t0.detach()
        if context is not None:
            context = context.detach()
        with torch.no_grad():
            h1, t1 = self.run_ht(h0, t0)
        h1, t1 = h1.detach().requires_grad_(), t1.detach().requires_grad_()
        loss = self.loss(self, h1, t1, h0, t0, context)
        grads = torch.autograd.grad(loss, (h1, t1), allow_unused=True)
        del loss
        self.optimizer.zero_grad(set_to_none=True)
        chunk = int(self.recompute_chunk)
        for x0, grad in zip((h0, t0), grads):
            if grad is None:
                continue
            for start in range(0, x0.shape[0], chunk):
                out = self.module(x0[start : start + chunk])  # under the caller's autocast, as the first pass
                with _without_autocast(out.device.type):
                    out.backward(grad[start : start + chunk].to(out.dtype))
        with _without_autocast(h0.device.type):
            self.optimizer.step()
        return h1.detach(), t1.detach(), context
