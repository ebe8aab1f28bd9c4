"""Signal choices for a ``Network``: each builds its generator from the network's shapes.

They are the objects the ``signal`` config group instantiates.
"""
from __future__ import annotations

from torch import nn

from .. import signals
from ..utils import shape_numel
from .network import Network


class SignalChoice:
    """How to build the signal for a network.

    Attributes:
        learns: the signal has modules trained by its own local loss.
        uses_stem: the network's stem is the signal's input module (so it is trained
            with the signal, not as a hidden layer of its own).
    """

    learns: bool = True
    uses_stem: bool = False

    def build(self, network: Network) -> nn.Module:
        """The generator (with its formatter in front) for ``network``."""
        raise NotImplementedError


def label_projection(num_classes: int, shape: tuple[int, ...], learned: bool) -> nn.Module:
    """A linear map from one-hot labels to ``shape``; a learned one is followed by layer norm and ReLU."""
    linear = nn.Linear(num_classes, shape_numel(shape), bias=False)
    if not learned:
        return linear
    return nn.Sequential(linear, nn.LayerNorm(shape_numel(shape)), nn.ReLU())


class Projection(SignalChoice):
    """The reference's default: a learned label projection to the stem's output shape, with the stem
    as the input module (``signals.ProjectionContextInput``)."""

    uses_stem = True

    def build(self, network: Network) -> nn.Module:
        shape = network.stem_shape()
        generator = signals.ProjectionContextInput(
            label_projection(network.num_classes, shape, learned=True), network.stem, (network.num_classes,), shape
        )
        return nn.Sequential(signals.LabelNumberToOnehot(network.num_classes), generator)


class Context(SignalChoice):
    """A label projection to the input's shape only (``signals.ProjectionContext``); the stem is a hidden layer.

    Args:
        fixed: a fixed random linear projection instead of a learned one.
    """

    def __init__(self, fixed: bool = False) -> None:
        self.fixed = fixed
        self.learns = not fixed

    def build(self, network: Network) -> nn.Module:
        shape = network.input_shape
        module = label_projection(network.num_classes, shape, learned=not self.fixed)
        generator = signals.ProjectionContext(module, (network.num_classes,), shape, fixed=self.fixed)
        return nn.Sequential(signals.LabelNumberToOnehot(network.num_classes), generator)


class Draw(SignalChoice):
    """The label's digits drawn into an input-shaped image (``signals.FixedDrawContext``); no learning.

    Args:
        places: digit cells in the image.
    """

    learns = False

    def __init__(self, places: int = 1) -> None:
        self.places = places

    def build(self, network: Network) -> nn.Module:
        if len(network.input_shape) != 3:
            raise ValueError(f"signal=draw needs image inputs (C, H, W), got shape {network.input_shape}")
        return signals.FixedDrawContext(self.places)
