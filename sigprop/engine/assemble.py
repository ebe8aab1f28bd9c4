"""From a plain network to a SigProp model: the one place where the configured parts are put together.

In the order of the README's "Option 2" (layers wrapped by hand): the per-layer metrics, the signal
in front, every hidden layer wrapped in the configured propagator (``conf/propagator/``), the output
layer in ``propagators.Identity``, then the model and its optimizers.

Where a hidden layer learns: ``propagators.Loss`` (``sigprop/propagators/learn.py``) runs the layer
on its detached input and on the signal, computes its local loss and, in training mode, steps the
layer's own optimizer inside the forward pass (``Learn.forward`` and ``Loss.train_``, same file).
With ``step.mode=fused`` it adds the loss to a ``LocalLosses`` instead, and ``TrainStep.train_step``
(``step.py``) applies all of them with one backward and one optimizer step.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from .. import models, monitors, propagators
from ..loss import needs_per_class_signal
from ..nets.network import Network
from ..propagators.base import LocalLosses, LossFn
from ..signals import Generator
from .signals import is_per_class

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SignalFactory = Callable[[Network], nn.Module]
MODES = ("fused", "layerwise", "lowmem")


class NoSignal(Generator):
    """No label enters the network: the input goes to the first layer as it is (end-to-end training)."""

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, None, Tensor, Tensor | None]:
        h0, t0 = input
        return h0, None, h0, t0


@dataclass
class Assembly:
    """A network wrapped for training, with everything that updates it.

    ``optimizers``: in ``fused`` mode one over every parameter (the local losses and the output
    loss go through one backward); otherwise one per learning layer (the signal first, then the
    hidden layers in order), stepped by the propagators, and the output layer's last.
    """

    model: models.Forward
    optimizers: list[torch.optim.Optimizer]
    monitor: monitors.Group
    deferred: LocalLosses | None


def propagator_class(propagator: Any) -> type:
    """The class a ``propagator`` factory (a ``functools.partial`` of it, or the class) builds."""
    cls = propagator.func if isinstance(propagator, functools.partial) else propagator
    if not (isinstance(cls, type) and issubclass(cls, propagators.Propagator)):
        raise TypeError(f"the propagator must be a sigprop.propagators class (Loss, Fixed, Identity), got {cls!r}")
    return cls


def has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def assemble(
    network: Network,
    signal: SignalFactory,
    propagator: Callable[..., nn.Module],
    loss: LossFn,
    optimizer: OptimizerFactory,
    mode: str = "fused",
    recompute_chunk: int = 8,
    fuse_ht: bool | None = None,
) -> Assembly:
    """Wrap ``network``'s stem, blocks and head in propagators, with ``signal`` in front.

    Args:
        network: the plain network (its modules are reused, not copied).
        signal: builds the signal for the network (``conf/signal/``, see ``engine.signals``).
        propagator: the class (or a partial of it) that wraps every hidden layer with parameters
            (``conf/propagator/``): ``propagators.Loss`` learns from ``loss``, ``propagators.Fixed``
            keeps the layer as it is, ``propagators.Identity`` keeps the graph, so the whole network
            is trained end to end by backpropagation and no signal is built. Parameter-free blocks
            (pooling, flattening) are ``propagators.Fixed``, or like the hidden layers end to end.
        loss: the local loss of the signal and of every learning layer.
        optimizer: builds an optimizer from parameters.
        mode: ``fused``, ``layerwise`` or ``lowmem`` (see ``TrainStep``).
        recompute_chunk: samples per recomputed slice in ``lowmem`` mode (``propagators.Loss``).
        fuse_ht: run ``h`` and ``t`` through each learning layer in one call: ``None`` where that is
            exact (``propagators.fusable``), ``True`` always (with dropout: one mask draw for both,
            the same distribution but not the reference's random numbers), ``False`` never.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    hidden_cls = propagator_class(propagator)
    end_to_end = hidden_cls.trained_by == "global"
    monitor = monitors.Group()
    deferred = LocalLosses() if mode == "fused" else None
    layer_optimizers: list[torch.optim.Optimizer] = []
    per_class = False

    def learning(name: str, module: nn.Module) -> dict[str, Any]:
        """The arguments every learning propagator takes: its monitored loss and its own optimizer (none in
        fused mode: the step's one optimizer), the fused step's collection, and the signal's form."""
        metrics = monitors.loss.LabelMetrics(name, loss)
        monitor.add(metrics)
        params = [p for p in module.parameters() if p.requires_grad]
        layer_optimizer = optimizer(params) if deferred is None and params else None
        if layer_optimizer is not None:
            layer_optimizers.append(layer_optimizer)
        return dict(optimizer=layer_optimizer, loss=metrics, deferred=deferred, per_class_signal=per_class)

    # What a hidden layer's propagator takes beyond those: how h and t run, and the low-memory step.
    hidden_args = dict(fuse_ht=fuse_ht, recompute_chunk=recompute_chunk if mode == "lowmem" else None)

    # The signal: learned by its own local loss if it has trainable parameters.
    if end_to_end:
        signal_module: nn.Module = NoSignal()
        wrapped_signal: nn.Module = propagators.signals.Fixed(signal_module)
    else:
        signal_module = signal(network)
        per_class = is_per_class(signal_module)
        if needs_per_class_signal(loss) and not per_class and hidden_cls.trained_by == "local":
            raise ValueError("this loss needs one signal row per class: add signal.per_class=true")
        if any(p.requires_grad for p in signal_module.parameters()):
            wrapped_signal = propagators.signals.Loss(signal_module, **learning("signal", signal_module))
        else:
            wrapped_signal = propagators.signals.Fixed(signal_module)

    # The hidden layers: the stem (unless the signal took it as its input module), then the blocks.
    stem_in_signal = any(m is network.stem for m in signal_module.modules())
    wrapped: list[nn.Module] = []
    learning_layers = 0
    for layer in ([] if stem_in_signal else [network.stem]) + list(network.blocks):
        if not has_parameters(layer):
            wrapped.append(hidden_cls(layer) if end_to_end else propagators.Fixed(layer))
        elif hidden_cls.trained_by == "local":
            learning_layers += 1
            wrapped.append(propagator(layer, **learning(f"layer{learning_layers:02d}", layer), **hidden_args))
        else:
            wrapped.append(propagator(layer))
    # The output layer keeps its graph: the output loss trains it with the global optimizer.
    wrapped.append(propagators.Identity(network.head))
    model = models.Forward(nn.Sequential(*wrapped), wrapped_signal)

    if deferred is not None:
        params = list(propagators.local_parameters(model)) + list(propagators.global_parameters(model))
        optimizers = [optimizer(params)]
    else:
        optimizers = layer_optimizers + [optimizer(list(model.parameters()))]
    return Assembly(model, optimizers, monitor, deferred)
