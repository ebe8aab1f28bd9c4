"""Base classes of the signal: generators make ``t1`` from the target, formatters prepare it."""
from __future__ import annotations

from torch import Tensor, nn


class Signal(nn.Module):
    """Anything placed in front of the network to turn ``(h0, t0)`` into what the first layer sees."""


class Generator(Signal):
    """Makes the signal: ``(h0, t0) -> (h1, t1, h0, t0)``.

    ``h1``/``t1`` go to the first layer; ``h0``/``t0`` are returned too so the
    signal's own loss can compare against the (formatted) inputs.
    """

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        raise NotImplementedError


class Formatter(Signal):
    """Reshapes the target before a generator: ``(h0, t0) -> (h0, t0')``; put it first in an ``nn.Sequential``."""

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError
