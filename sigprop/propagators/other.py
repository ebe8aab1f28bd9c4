"""Propagators that do not learn on their own."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ..functional import propagators as F
from .base import Propagator

State = tuple[Tensor, "Tensor | None", "Tensor | None"]


class Identity(Propagator):
    """``h1 = module(h0)`` with the graph kept and the signal passed on: for the output layer,
    which the user trains with an ordinary loss and optimizer."""

    def forward(self, input: State) -> State:
        return F.identity(input, self.module)


class Fixed(Propagator):
    """Runs the module on ``h`` and ``t`` with no learning; everything detached (pooling, activations)."""

    trained_by: ClassVar[str] = "nobody"

    def forward(self, input: State) -> State:
        return F.fixed(input, self.module)


class Forward(Propagator):
    """Runs the module on ``h`` and ``t`` with nothing detached (reshapes and other glue)."""

    trained_by: ClassVar[str] = "nobody"

    def forward(self, input: State) -> State:
        return F.forward(input, self.module)
