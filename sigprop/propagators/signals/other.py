"""Signal propagators that do not learn."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..base import Propagator
from .learn import manage_signal

Input = tuple[Tensor, "Tensor | None", "Tensor | None"]
Output = tuple[Tensor, "Tensor | None"]


class Fixed(Propagator):
    """Runs a constructed signal (a fixed projection or drawing) with no learning; outputs detached."""

    trained_by: ClassVar[str] = "nobody"
    manage = classmethod(manage_signal)  # type: ignore[assignment]

    def forward(self, input: Input) -> Output:
        h0, t0, _ = input
        with torch.no_grad():
            h1, t1, _, _ = self.module((h0.detach(), t0.detach() if t0 is not None else None))
        return h1, t1
