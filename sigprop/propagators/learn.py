"""Propagators that train their hidden layer from a local loss."""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from ..utils import without_autocast
from .base import LocalLosses, LossFn, Propagator, check_loss, refuse_learning_without_grad

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


# Module types whose output for each sample (row of dim 0) depends on that sample only, through
# the same computation whatever else is in the batch, and that keep no state between calls: one
# call on ``cat([h, t])`` gives exactly what separate calls on ``h`` and ``t`` give. Some only
# under the settings in ``_FUSABLE_IF``.
FUSABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Sequential, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),  # torch >= 2.4
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardshrink, nn.Softshrink,
    nn.Tanhshrink, nn.Softplus, nn.Softsign, nn.LogSigmoid, nn.Threshold,
    nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.GLU,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, *((nn.LPPool3d,) if hasattr(nn, 'LPPool3d') else ()),
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
    nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d,
    nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
    nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)


def _keeps_dim0(dim: int | None) -> bool:
    # dim 0 is the batch; -1 is never dim 0 for a batch of samples with features.
    return dim is not None and (dim >= 1 or dim == -1)


_FUSABLE_IF: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], Callable[[Any], bool]], ...] = (
    # Running statistics are state updated by every call in training.
    (nn.modules.instancenorm._InstanceNorm, lambda m: not m.track_running_stats),
    # Dropout in training draws one mask for the joined batch, where separate calls draw one for
    # h and then one for t: the same distribution, but not the same random numbers.
    (nn.modules.dropout._DropoutNd, lambda m: m.p == 0),
    (nn.Flatten, lambda m: m.start_dim >= 1),
    (nn.Unflatten, lambda m: isinstance(m.dim, int) and m.dim >= 1),
    ((nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.GLU), lambda m: _keeps_dim0(m.dim)),
)


def _fusable_alone(m: nn.Module) -> bool:
    base = next((t for t in type(m).__mro__ if t in FUSABLE_TYPES), None)
    if base is None or type(m).forward is not base.forward:
        return False  # not listed, or a subclass with a forward of its own
    if m._forward_pre_hooks or m._forward_hooks:
        return False  # e.g. the power iteration of nn.utils.spectral_norm, run once per call
    return all(condition(m) for types, condition in _FUSABLE_IF if isinstance(m, types))


def fusable(module: nn.Module) -> bool:
    """True if running ``h`` and ``t`` through ``module`` as one batch is exactly running them separately.

    So is it when every module inside (``module.modules()``) is an instance of one of
    ``FUSABLE_TYPES`` with that type's own ``forward``, has no forward hooks, and has the
    settings under which the type is exact: instance norm without running statistics, dropout
    with ``p=0``, ``Flatten``/``Unflatten`` and ``Softmax``-like modules that keep dim 0 apart.
    Anything else (batch norm, attention and recurrent layers, whose dim 0 may not be the batch,
    parametrizations such as ``spectral_norm``, custom modules) is not fused by default.
    """
    return all(_fusable_alone(m) for m in module.modules())


def recomputable(module: nn.Module) -> bool:
    """True if recomputing the layer on a slice of the batch gives exactly that slice of the full
    batch's output (the same rule as ``fusable``: each sample's output depends on that sample only,
    and nothing random or stateful runs)."""
    return fusable(module)


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


def writes_input(module: nn.Module) -> bool:
    """True if ``module`` starts with an operation set to work in place (``inplace=True``, e.g.
    ``nn.ReLU(inplace=True)`` alone or first in an ``nn.Sequential``): it would overwrite its input,
    the previous layer's output, which that layer's deferred local loss may still need."""
    while isinstance(module, nn.Sequential) and len(module) > 0:
        module = module[0]
    return getattr(module, "inplace", False) is True


def run_ht(
    module: nn.Module, h0: Tensor, t0: Tensor, fuse: bool, copy_inputs: bool = False, concatenate: bool = True
) -> tuple[Tensor, Tensor]:
    """``module(h0)`` and ``module(t0)``.

    Args:
        fuse: one call on the joined batch (when shapes and dtypes agree): joined without a copy
            when ``t0``'s rows follow ``h0``'s in memory, else concatenated (or, without
            ``concatenate``, two calls after all).
        copy_inputs: the module writes into its input (``writes_input``): it gets copies, and
            ``h0`` and ``t0`` stay as they are.
    """
    if fuse and h0.shape[1:] == t0.shape[1:] and h0.dtype == t0.dtype:
        joined = None if copy_inputs else join_rows(h0, t0)
        if joined is None and (concatenate or copy_inputs):
            joined = torch.cat([h0, t0])
        if joined is not None:
            # split, not two slices: the backward of a split is one concatenation of the two
            # gradients, while each slice's backward fills a zero tensor of the whole batch.
            h1, t1 = module(joined).split([h0.shape[0], t0.shape[0]])
            return h1, t1
    if copy_inputs:
        h0, t0 = h0.clone(), t0.clone()
    return module(h0), module(t0)


class Learn(Propagator):
    """Base of the hidden-layer propagators that learn; subclasses say how (``train_`` and ``eval_``).

    ``forward`` is the step every learning layer takes: detach the input (nothing flows back to
    the layer below), run ``h`` and the signal ``t`` through the layer, learn from them
    (``train_``: the local loss and the update, in training mode) or measure (``eval_``), and
    hand the detached outputs to the next layer.

    Args:
        module: the layer.
        fuse_ht: run ``h`` and ``t`` through the layer as one batch (one call instead of two).
            ``None`` (default): where that is exact (``fusable(module)``); ``True``: always (faster
            with dropout, whose masks then differ from separate calls'); ``False``: never.
    """

    trained_by: ClassVar[str] = "local"
    # Whether the signal reaching this layer has one row per class (``True``) or one per sample
    # (``False``, the reference package's form). The losses and monitors read it from here; they
    # never guess it from the batch sizes of ``h`` and ``t``.
    per_class_signal: bool = False

    def __init__(self, module: nn.Module, fuse_ht: bool | None = None) -> None:
        super().__init__(module)
        self.fuse_ht = fusable(module) if fuse_ht is None else bool(fuse_ht)
        self.copies_input = writes_input(module)

    def run_ht(self, h0: Tensor, t0: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's outputs for ``h0`` and ``t0`` (see ``run_ht``)."""
        return run_ht(self.module, h0, t0, self.fuse_ht, self.copies_input)

    def forward(self, input: State) -> State:
        h0, t0, context = input
        h0 = h0.detach()
        if t0 is None:  # inference: no signal, nothing to learn
            return self.module(h0).detach(), None, context
        refuse_learning_without_grad(self)
        t0 = t0.detach()
        context = context.detach() if context is not None else None
        h1, t1 = self.run_ht(h0, t0)  # the layer on the input and on the signal
        if self.training:
            self.train_(h1, t1, h0, t0, context)  # the local loss and this layer's update
        else:
            self.eval_(h1, t1, h0, t0, context)  # the local loss only (a monitor records it)
        return h1.detach(), t1.detach(), context

    def train_(self, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Any:
        raise NotImplementedError

    def eval_(self, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Any:
        raise NotImplementedError


class Loss(Learn):
    """Trains its layer from ``loss(self, h1, t1, h0, t0, context)`` with the layer's own optimizer.

    ``forward`` (``Learn.forward``) runs the layer on ``h`` and ``t``; ``train_`` computes the local
    loss and updates the layer; ``forward_recomputing`` is the low-memory version of the same step.

    Args:
        module: the layer.
        optimizer: optimizer over ``module``'s parameters (``None``: compute the loss only).
        loss: the local loss, e.g. ``sigprop.loss.v9_input_target_max_all``.
        deferred: collect the loss here instead of stepping now, for one fused backward and step.
        fuse_ht: see ``Learn``.
        recompute_chunk: low-memory update (with an optimizer, without ``deferred``, for
            ``recomputable`` layers): see ``forward_recomputing``. ``None``: off.
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
        self.optimizer = optimizer
        self.loss = check_loss(loss)
        self.deferred = deferred
        self.recompute_chunk = recompute_chunk
        self.per_class_signal = bool(per_class_signal)

    def train_(self, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Tensor:
        """The local loss, then the update: handed to the training step's one backward (``deferred``,
        the fused step) or applied now by this layer's own optimizer. Returns the loss, detached."""
        loss = self.loss(self, h1, t1, h0, t0, context)
        if not loss.requires_grad:  # every parameter the loss reaches is frozen (e.g. a fixed signal)
            return loss.detach()
        if self.deferred is not None:
            self.deferred.add(loss)
        elif self.optimizer is not None:
            # The update runs inside the caller's forward; keep a bf16 autocast region off the
            # backward and the step (autocast is meant for forward passes only).
            with without_autocast(loss.device.type):
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        return loss.detach()

    def eval_(self, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Tensor:
        """The local loss only (evaluation mode: no update), detached."""
        return self.loss(self, h1, t1, h0, t0, context).detach()

    def forward(self, input: State) -> State:
        h0, t0, context = input
        if (
            self.training and self.recompute_chunk and t0 is not None and self.optimizer is not None
            and self.deferred is None and recomputable(self.module)
        ):
            return self.forward_recomputing(input)
        return super().forward(input)

    def forward_recomputing(self, input: State) -> State:
        """The low-memory training step (``recompute_chunk``), the same update as ``forward``'s.

        The layer runs on ``h`` and ``t`` without a graph, the loss gives the gradients at ``h1`` and
        ``t1``, and the layer is run again with a graph ``recompute_chunk`` samples at a time to turn
        them into parameter gradients: only slices of the layer's graph are ever alive, for one extra
        forward pass. The loss must reach the parameters only through ``h1`` and ``t1`` (true of every
        loss in ``sigprop.loss``).
        """
        h0, t0, context = input
        refuse_learning_without_grad(self)
        h0, t0 = h0.detach(), t0.detach()
        context = context.detach() if context is not None else None
        with torch.no_grad():
            h1, t1 = self.run_ht(h0, t0)
        h1, t1 = h1.detach().requires_grad_(), t1.detach().requires_grad_()
        loss = self.loss(self, h1, t1, h0, t0, context)
        grads = torch.autograd.grad(loss, (h1, t1), allow_unused=True)
        del loss
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        chunk = int(self.recompute_chunk or 1)
        for x0, grad in zip((h0, t0), grads):
            if grad is None:
                continue
            for start in range(0, x0.shape[0], chunk):
                out = self.module(x0[start : start + chunk])  # under the caller's autocast, as the first pass
                with without_autocast(out.device.type):
                    out.backward(grad[start : start + chunk].to(out.dtype))
        with without_autocast(h0.device.type):
            self.optimizer.step()
        return h1.detach(), t1.detach(), context
