"""Propagators that do not learn on their own."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..functional import propagators as F
from .base import Propagator
from .learn import fusable, join_rows

State = tuple[Tensor, "Tensor | None", "Tensor | None"]


class Identity(Propagator):
    """``h1 = module(h0)`` with the graph kept and the signal passed on: for the output layer,
    which the user trains with an ordinary loss and optimizer."""

    def forward(self, input: State) -> State:
        return F.identity(input, self.module)


class Fixed(Propagator):
    """Runs the module on ``h`` and ``t`` with no learning; everything detached (pooling, activations).

    When ``t``'s rows follow ``h``'s in memory and one call is exact (``propagators.fusable``), both
    go through in one call (no copy), and the outputs stay adjacent for the next layer.
    """

    trained_by: ClassVar[str] = "nobody"

    def forward(self, input: State) -> State:
        h0, t0, context = input
        if t0 is not None and self._fusable():
            joined = join_rows(h0.detach(), t0.detach())
            if joined is not None:
                with torch.no_grad():
                    h1, t1 = self.module(joined).split([h0.shape[0], t0.shape[0]])
                return h1, t1, context
        return F.fixed(input, self.module)

    def _fusable(self) -> bool:
        if not hasattr(self, "_fusable_cache"):
            self._fusable_cache = fusable(self.module)
        return self._fusable_cache


class Forward(Propagator):
    """Runs the module on ``h`` and ``t`` with nothing detached (reshapes and other glue)."""

    trained_by: ClassVar[str] = "nobody"

    def forward(self, input: State) -> State:
        return F.forward(input, self.module)
