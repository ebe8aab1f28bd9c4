"""Base class for losses that carry settings."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Loss(nn.Module):
    """A SigProp loss: ``loss(sp_learn, h1, t1, h0, t0, context) -> scalar tensor``.

    Plain functions with that signature work everywhere a loss is taken; subclass
    this when the loss has settings (see ``v15_input_target_topk``).
    """

    def forward(
        self, sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None
    ) -> Tensor:
        raise NotImplementedError


def needs_per_class_signal(loss: Any) -> bool:
    """True if ``loss`` (a function, ``Loss`` instance or partial of one) reads ``h1 @ t1.T``'s
    columns as classes, so it only works with a signal of one row per class."""
    while hasattr(loss, "func"):  # functools.partial and Hydra's partial targets
        loss = loss.func
    return bool(getattr(loss, "needs_per_class_signal", False))
