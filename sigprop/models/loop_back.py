"""Models that feed the output's error back as the context of a second, learning pass."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from .model import _NOT_GIVEN, Model, split_input

ErrorFn = Callable[[Tensor, Tensor], Tensor]


class LoopBack(Model):
    """A first pass without a signal gives an output; ``error(output, context)`` becomes the
    signal's target for a second pass that learns.

    Args:
        model: the wrapped network.
        signal: the wrapped signal; it must accept the error as its target.
        error: ``error(output, context)``, e.g. the difference of softmax and one-hot label.
    """

    def __init__(self, model: nn.Module, signal: nn.Module, error: ErrorFn) -> None:
        super().__init__(model, signal)
        self.error = error

    def forward(self, input: Any, context: Any = _NOT_GIVEN) -> Tensor:
        x, context = split_input(input, context)
        with torch.no_grad():
            h0, _ = self.signal((x, None, None))
            h1, _, _ = self.model((h0, None, None))
        if context is not None:
            h1 = self.error_pass(x, h1, context)
        return h1

    def error_pass(self, x: Tensor, output: Tensor, context: Tensor) -> Tensor:
        """The learning pass whose signal target is ``error(output, context)``."""
        with torch.no_grad():
            e = self.error(output, context)
        h0, t0 = self.signal((x, e, context))
        h1, _, _ = self.model((h0, t0, context))
        return h1


class ForwardLoopBack(LoopBack):
    """Like ``LoopBack`` but the first pass already learns from the label itself."""

    def forward(self, input: Any, context: Any = _NOT_GIVEN) -> Tensor:
        x, context = split_input(input, context)
        h0, t0 = self.signal((x, context, context))
        h1, _, _ = self.model((h0, t0, context))
        if context is not None:
            h1 = self.error_pass(x, h1, context)
        return h1
