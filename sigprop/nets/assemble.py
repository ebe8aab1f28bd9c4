"""Wrap a plain ``Network`` in propagators: the one place where a network becomes a SigProp model."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import managers, models, monitors, propagators
from ..propagators.base import LocalLosses, LossFn
from .network import Network
from .signals import SignalChoice

HIDDEN = ("loss", "fixed")


def has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def sigprop_model(
    network: Network,
    signal: SignalChoice,
    loss: LossFn,
    optimizer_builder: Callable[[nn.Module], torch.optim.Optimizer | None],
    hidden: str = "loss",
    monitor: monitors.Group | None = None,
    deferred: LocalLosses | None = None,
) -> models.Forward:
    """A ``models.Forward`` over ``network``: the signal in front, every block with parameters in a
    learning propagator (``hidden="loss"``) or a non-learning one (``"fixed"``), parameter-free
    blocks in ``propagators.Fixed``, the head in ``propagators.Identity``.

    Args:
        network: the plain network (its modules are reused, not copied).
        signal: which signal to build.
        loss: the local loss of the signal and of every hidden layer.
        optimizer_builder: one optimizer per learning layer (return ``None`` with ``deferred``).
        hidden: ``loss`` or ``fixed``.
        monitor: collects each layer's loss and accuracy (``signal``, ``layer01``, ...).
        deferred: collect local losses for one fused backward and step instead of per-layer steps.
    """
    if hidden not in HIDDEN:
        raise ValueError(f"hidden propagator must be one of {HIDDEN}, got {hidden!r}")
    hidden_cls = propagators.Loss if hidden == "loss" else propagators.Fixed
    signal_cls = propagators.signals.Loss if signal.learns else propagators.signals.Fixed
    manager = managers.Preset(
        models.Forward,
        hidden_cls,
        signal_cls,
        optimizer_builder,
        monitors.loss.LabelMetrics if monitor is not None else None,
        monitor,
    )
    manager.config_signal(loss=loss, deferred=deferred)
    manager.config_propagator(loss=loss, deferred=deferred)
    wrapped_signal = manager.set_signal(signal.build(network))
    layers = [] if signal.uses_stem else [network.stem]
    layers += network.blocks
    wrapped = [
        manager.add_propagator(m) if has_parameters(m) else manager.add_propagator(m, propagators.Fixed)
        for m in layers
    ]
    wrapped.append(manager.add_propagator(network.head, propagators.Identity))
    model = manager.set_model(nn.Sequential(*wrapped))
    assert model.signal is wrapped_signal
    return model
