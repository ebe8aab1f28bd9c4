"""A small convolutional network for small images (MNIST-sized), cheap enough to train on a CPU."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .blocks import conv_block, linear_block
from .network import Network


def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (32, 64, 128),
    num_layers: int = 0,
    num_hidden: int = 1024,
    norm: str = "instance",
    nonlin: str = "relu",
    dropout: float = 0.0,
    bias: bool = True,
) -> Network:
    """A 3x3 stem convolution to ``channels[0]`` at the input's resolution, then one 3x3 convolution
    of stride 2 (halving the height and width) per further width of ``channels``, ``num_layers``
    hidden linear layers of ``num_hidden`` units, and a linear output layer.

    The stem is the first hidden layer (the projection signal's input module).
    """
    widths = [int(c) for c in channels]
    if not widths or min(widths) < 1:
        raise ValueError(f"model.channels must be a non-empty list of positive widths, got {list(channels)}")
    if num_layers < 0:
        raise ValueError(f"model.num_layers must be at least 0, got {num_layers}")
    ch, height, width = input_shape
    stem = conv_block(ch, widths[0], norm, nonlin, dropout, bias)
    blocks: list[nn.Module] = []
    for ch_in, ch_out in zip(widths, widths[1:]):
        blocks.append(conv_block(ch_in, ch_out, norm, nonlin, dropout, bias, stride=2))
        height, width = (height + 1) // 2, (width + 1) // 2
    blocks.append(nn.Flatten())
    features = widths[-1] * height * width
    for _ in range(num_layers):
        blocks.append(linear_block(features, num_hidden, norm, nonlin, dropout, bias))
        features = num_hidden
    head = nn.Linear(features, num_classes, bias=bias)
    return Network(stem, blocks, head, tuple(input_shape), num_classes)
