"""Propagators that do not learn on their own."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..functional import propagators as F
from .base import Propagator
from .learn import fusable, run_ht, writes_input

State = tuple[Tensor, "Tensor | None", "Tensor | None"]


class Identity(Propagator):
    """``h1 = module(h0)`` with the graph kept and the signal passed on: for the output layer,
    which the user trains with an ordinary loss and optimizer."""

    def forward(self, input: State) -> State:
        return F.identity(input, self.module)


class Fixed(Propagator):
    """Runs the module on ``h`` and ``t`` with no learning; everything detached (pooling, activations).

    When ``t``'s rows follow ``h``'s in memory and one call is exact (``propagators.fusable``), both
    go through in one call (no copy), and the outputs stay adjacent for the next layer. A module
    that starts in place (``nn.ReLU(inplace=True)``, see ``writes_input``) runs on copies of ``h``
    and ``t`` when a signal is present: they are the previous layer's outputs, which its local
    loss may still need (with ``deferred=``, until the backward).
    """

    trained_by: ClassVar[str] = "nobody"

    def forward(self, input: State) -> State:
        h0, t0, context = input
        if t0 is None:
            return F.fixed(input, self.module)
        if not hasattr(self, "_fuse_copy"):
            self._fuse_copy = fusable(self.module), writes_input(self.module)
        fuse, copy = self._fuse_copy
        with torch.no_grad():
            h1, t1 = run_ht(self.module, h0.detach(), t0.detach(), fuse, copy, concatenate=False)
        return h1, t1, context


class Forward(Propagator):
    """Runs the module on ``h`` and ``t`` with nothing detached (reshapes and other glue)."""

    trained_by: ClassVar[str] = "nobody"

    def forward(self, input: State) -> State:
        return F.forward(input, self.module)
