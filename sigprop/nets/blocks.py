"""Building blocks of the networks: a layer, its normalisation, non-linearity and dropout."""
from __future__ import annotations

from torch import nn

NORMS = ("batch", "instance", "none")
NONLINS = ("relu", "leakyrelu")


def norm_layer(kind: str, channels: int, conv: bool) -> nn.Module | None:
    """``batch``: batch statistics, also at evaluation (as the reference); ``instance``: instance norm
    for convolutions, layer norm for linear layers; ``none``: no normalisation."""
    if kind == "batch":
        return (nn.BatchNorm2d if conv else nn.BatchNorm1d)(channels, track_running_stats=False)
    if kind in ("instance", "layer"):
        return nn.InstanceNorm2d(channels, affine=True) if conv else nn.LayerNorm(channels)
    if kind == "none":
        return None
    raise ValueError(f"model.norm must be one of {NORMS}, got {kind!r}")


def nonlinearity(kind: str) -> nn.Module:
    """``relu`` or ``leakyrelu`` (slope 0.01)."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leakyrelu":
        return nn.LeakyReLU(0.01, inplace=True)
    raise ValueError(f"model.nonlin must be one of {NONLINS}, got {kind!r}")


def _block(layer: nn.Module, norm: nn.Module | None, nonlin: str, dropout: nn.Module | None) -> nn.Sequential:
    parts = [layer] + ([norm] if norm is not None else []) + [nonlinearity(nonlin)]
    if dropout is not None:
        parts.append(dropout)
    return nn.Sequential(*parts)


def conv_block(
    ch_in: int, ch_out: int, norm: str, nonlin: str, dropout: float, bias: bool, kernel_size: int = 3, stride: int = 1
) -> nn.Sequential:
    """Conv (same padding) -> norm -> non-linearity -> channel dropout."""
    conv = nn.Conv2d(ch_in, ch_out, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)
    drop = nn.Dropout2d(dropout) if dropout > 0 else None
    return _block(conv, norm_layer(norm, ch_out, conv=True), nonlin, drop)


def linear_block(num_in: int, num_out: int, norm: str, nonlin: str, dropout: float, bias: bool) -> nn.Sequential:
    """Linear -> norm -> non-linearity -> dropout."""
    drop = nn.Dropout(dropout) if dropout > 0 else None
    return _block(nn.Linear(num_in, num_out, bias=bias), norm_layer(norm, num_out, conv=False), nonlin, drop)
