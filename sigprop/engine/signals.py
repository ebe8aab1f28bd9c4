"""The ``signal`` config group's factories: each builds a ``sigprop.signals`` generator, with its
formatters, for a network's shapes.

``conf/signal/<name>.yaml`` names one with ``_partial_: true`` and its settings; the assembly calls
it with the ``Network`` (``num_classes``, ``input_shape``, and the stem with its output shape).

Per-class signals (``per_class=True``): with one-hot labels, the signal rows of samples of one
class are identical, and in layers without batch statistics and without dropout they stay
identical, so ``t`` need only be computed for the ``K`` classes (``DistinctBatchLabelsOnehot``)
and the losses index it by each sample's class. That gives the per-sample signal's losses and
gradients at about ``K/B`` of the cost of the ``t`` path. With batch normalisation or dropout
the ``K`` rows see other statistics or noise than ``B`` rows would, so it is a different
(cheaper) variant there; it is never switched on implicitly.
"""
from __future__ import annotations

import logging

from torch import nn

from .. import signals
from ..nets.network import Network
from ..propagators import recomputable
from ..utils import shape_numel

log = logging.getLogger(__name__)


def label_formatter(num_classes: int, per_class: bool) -> nn.Module:
    """Class indices to one-hot rows: one per sample, or one per class with ``per_class``.

    One module either way (the signal is ``nn.Sequential(formatter, generator)``), so the generator's
    state-dict keys do not depend on ``per_class``.
    """
    onehot = signals.LabelNumberToOnehot(num_classes)
    return nn.Sequential(onehot, signals.DistinctBatchLabelsOnehot()) if per_class else onehot


def is_per_class(signal: nn.Module) -> bool:
    """Whether ``signal`` carries one row per class: its formatters reduce the batch to its distinct labels."""
    return any(isinstance(m, signals.DistinctBatchLabelsOnehot) for m in signal.modules())


def label_projection(num_classes: int, shape: tuple[int, ...], learned: bool) -> nn.Module:
    """A linear map from one-hot labels to ``shape``; a learned one is followed by layer norm and ReLU."""
    linear = nn.Linear(num_classes, shape_numel(shape), bias=False)
    if not learned:
        return linear
    return nn.Sequential(linear, nn.LayerNorm(shape_numel(shape)), nn.ReLU())


def _formatter(network: Network, per_class: bool) -> nn.Module:
    if per_class and not all(recomputable(m) for m in (network.stem, *network.blocks)):
        log.warning(
            "per-class signal with batch statistics or dropout in the network: the signal's K rows see "
            "other statistics or noise than per-sample rows would (a cheaper variant, not the same rule)"
        )
    return label_formatter(network.num_classes, per_class)


def projection_context_input(network: Network, per_class: bool = False) -> nn.Sequential:
    """The reference's default: a learned label projection to the stem's output shape, with the network's
    stem as the input module (``signals.ProjectionContextInput``); the stem learns with the signal."""
    shape = network.stem_shape()
    projection = label_projection(network.num_classes, shape, learned=True)
    generator = signals.ProjectionContextInput(projection, network.stem, (network.num_classes,), shape)
    return nn.Sequential(_formatter(network, per_class), generator)


def projection_context(network: Network, fixed: bool = False, per_class: bool = False) -> nn.Sequential:
    """A label projection to the input's shape (``signals.ProjectionContext``), learned or ``fixed`` (random);
    the stem is an ordinary hidden layer."""
    shape = network.input_shape
    module = label_projection(network.num_classes, shape, learned=not fixed)
    generator = signals.ProjectionContext(module, (network.num_classes,), shape, fixed=fixed)
    return nn.Sequential(_formatter(network, per_class), generator)


def fixed_draw_context(
    network: Network, places: int = 1, layout: str = "rows", per_class: bool = False
) -> nn.Sequential:
    """The label's digits drawn into an input-shaped image (``signals.FixedDrawContext``); nothing learns.

    ``layout="rows"`` draws every digit left to right; ``"reference"`` places them as the reference
    package does, which skips a digit whose cell would touch the bottom edge (with ``places=1`` on a
    square image: all of them).
    """
    if len(network.input_shape) != 3:
        raise ValueError(f"signal=draw needs image inputs (C, H, W), got shape {network.input_shape}")
    return nn.Sequential(_formatter(network, per_class), signals.FixedDrawContext(places, layout=layout))
