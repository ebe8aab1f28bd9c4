"""The VGG family used by the reference experiments."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .blocks import conv_block, linear_block
from .network import Network

CONFIGS: dict[str, list[int | str]] = {
    "vgg6": [128, 256, "M", 512, "M", 512, "M"],
    "vgg8": [128, 256, "M", 256, 512, "M", 512, "M", 512, "M"],
    "vgg11": [128, 128, 128, 256, "M", 256, 512, "M", 512, 512, "M", 512, "M"],
}


def vgg(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    feat_mult: float = 1.0,
    num_layers: int = 1,
    num_hidden: int = 1024,
    norm: str = "batch",
    nonlin: str = "relu",
    dropout: float = 0.0,
    bias: bool = True,
) -> Network:
    """VGG ``name`` (``vgg6``, ``vgg8``, ``vgg11``): conv blocks with max-pooling, ``num_layers``
    hidden linear layers of ``num_hidden`` units, and the output layer.

    As in the reference SigProp setup, a stem convolution to the first configuration
    width comes first (the projection signal's input module); inputs wider than 64
    pixels get a 7x7 stride-2 stem.
    """
    if name not in CONFIGS:
        raise ValueError(f"model.name must be one of {sorted(CONFIGS)}, got {name!r}")
    if num_layers < 0:
        raise ValueError(f"model.num_layers must be at least 0, got {num_layers}")
    if num_hidden < 1:
        raise ValueError(f"model.num_hidden must be at least 1, got {num_hidden}")
    channels, height, width = input_shape
    cfg = CONFIGS[name]
    width_of = lambda c: int(c * feat_mult)  # noqa: E731
    if width_of(min(c for c in cfg if c != "M")) < 1:
        raise ValueError(f"model.feat_mult={feat_mult} leaves a convolution without channels: use a larger factor")
    first = width_of(cfg[0])
    if height > 64:
        stem = conv_block(channels, first, norm, nonlin, dropout, bias, kernel_size=7, stride=2)
        height, width = (height + 1) // 2, (width + 1) // 2
    else:
        stem = conv_block(channels, first, norm, nonlin, dropout, bias)
    blocks: list[nn.Module] = []
    ch = first
    for item in cfg:
        if item == "M":
            blocks.append(nn.MaxPool2d(2, 2))
            height, width = height // 2, width // 2
        else:
            blocks.append(conv_block(ch, width_of(item), norm, nonlin, dropout, bias))
            ch = width_of(item)
    blocks.append(nn.Flatten())
    features = ch * height * width
    for _ in range(num_layers):
        blocks.append(linear_block(features, num_hidden, norm, nonlin, dropout, bias))
        features = num_hidden
    head = nn.Linear(features, num_classes, bias=bias)
    return Network(stem, blocks, head, tuple(input_shape), num_classes)
