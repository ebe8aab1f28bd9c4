"""Signal choices for a ``Network``: each builds its generator from the network's shapes.

They are the objects the ``signal`` config group instantiates.

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
from ..utils import shape_numel
from .network import Network

log = logging.getLogger(__name__)


class SignalChoice:
    """How to build the signal for a network.

    Attributes:
        learns: the signal has modules trained by its own local loss.
        uses_stem: the network's stem is the signal's input module (so it is trained
            with the signal, not as a hidden layer of its own).
        per_class: the signal carries one row per class instead of one per sample (see the module doc).
    """

    learns: bool = True
    uses_stem: bool = False
    per_class: bool = False

    def build(self, network: Network) -> nn.Module:
        """The generator (with its formatter in front) for ``network``."""
        raise NotImplementedError

    def formatter(self, network: Network) -> nn.Module:
        """Label indices to one-hot rows: one per sample, or one per class with ``per_class``.

        One module either way, so the generator's state-dict keys do not depend on ``per_class``.
        """
        onehot = signals.LabelNumberToOnehot(network.num_classes)
        if not self.per_class:
            return onehot
        warn_if_not_exact(network)
        return nn.Sequential(onehot, signals.DistinctBatchLabelsOnehot())


def warn_if_not_exact(network: Network) -> None:
    """Log when a per-class signal is not equivalent to the per-sample one for ``network``."""
    from ..propagators.learn import uses_batch_statistics

    parts = [network.stem, *network.blocks]
    noisy = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for p in parts for m in p.modules())
    if noisy or any(uses_batch_statistics(p) for p in parts):
        log.warning(
            "per-class signal with batch statistics or dropout in the network: the signal's K rows see "
            "other statistics or noise than per-sample rows would (a cheaper variant, not the same rule)"
        )


def label_projection(num_classes: int, shape: tuple[int, ...], learned: bool) -> nn.Module:
    """A linear map from one-hot labels to ``shape``; a learned one is followed by layer norm and ReLU."""
    linear = nn.Linear(num_classes, shape_numel(shape), bias=False)
    if not learned:
        return linear
    return nn.Sequential(linear, nn.LayerNorm(shape_numel(shape)), nn.ReLU())


class Projection(SignalChoice):
    """The reference's default: a learned label projection to the stem's output shape, with the stem
    as the input module (``signals.ProjectionContextInput``).

    Args:
        per_class: one signal row per class instead of one per sample (see the module doc).
    """

    uses_stem = True

    def __init__(self, per_class: bool = False) -> None:
        self.per_class = bool(per_class)

    def build(self, network: Network) -> nn.Module:
        shape = network.stem_shape()
        generator = signals.ProjectionContextInput(
            label_projection(network.num_classes, shape, learned=True), network.stem, (network.num_classes,), shape
        )
        return nn.Sequential(self.formatter(network), generator)


class Context(SignalChoice):
    """A label projection to the input's shape only (``signals.ProjectionContext``); the stem is a hidden layer.

    Args:
        fixed: a fixed random linear projection instead of a learned one.
        per_class: one signal row per class instead of one per sample (see the module doc).
    """

    def __init__(self, fixed: bool = False, per_class: bool = False) -> None:
        self.fixed = fixed
        self.learns = not fixed
        self.per_class = bool(per_class)

    def build(self, network: Network) -> nn.Module:
        shape = network.input_shape
        module = label_projection(network.num_classes, shape, learned=not self.fixed)
        generator = signals.ProjectionContext(module, (network.num_classes,), shape, fixed=self.fixed)
        return nn.Sequential(self.formatter(network), generator)


class Draw(SignalChoice):
    """The label's digits drawn into an input-shaped image (``signals.FixedDrawContext``); no learning.

    Args:
        places: digit cells in the image.
        per_class: one signal row per class instead of one per sample (see the module doc).
    """

    learns = False

    def __init__(self, places: int = 1, per_class: bool = False) -> None:
        self.places = places
        self.per_class = bool(per_class)

    def build(self, network: Network) -> nn.Module:
        if len(network.input_shape) != 3:
            raise ValueError(f"signal=draw needs image inputs (C, H, W), got shape {network.input_shape}")
        if self.per_class:
            return nn.Sequential(self.formatter(network), signals.FixedDrawContext(self.places))
        return signals.FixedDrawContext(self.places)
