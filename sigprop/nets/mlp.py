"""Multi-layer perceptron."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..utils import shape_numel
from .blocks import linear_block
from .network import Network


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    num_layers: int = 3,
    num_hidden: int = 1024,
    norm: str = "batch",
    nonlin: str = "relu",
    dropout: float = 0.0,
    bias: bool = True,
) -> Network:
    """``num_layers`` hidden layers of ``num_hidden`` units, then a linear output layer.

    The stem flattens the input and is the first hidden layer.
    """
    if num_layers < 1:
        raise ValueError(f"model.num_layers must be at least 1, got {num_layers}")
    if num_hidden < 1:
        raise ValueError(f"model.num_hidden must be at least 1, got {num_hidden}")
    stem = nn.Sequential(
        nn.Flatten(), linear_block(shape_numel(input_shape), num_hidden, norm, nonlin, dropout, bias)
    )
    blocks = [linear_block(num_hidden, num_hidden, norm, nonlin, dropout, bias) for _ in range(num_layers - 1)]
    head = nn.Linear(num_hidden, num_classes, bias=bias)
    return Network(stem, blocks, head, tuple(input_shape), num_classes)
