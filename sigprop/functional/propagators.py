"""Propagators as functions of ``(h, t, context)`` and a callable ``func``."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

State = tuple[Tensor, "Tensor | None", "Tensor | None"]


def identity(input: State, func: Callable[[Tensor], Tensor]) -> State:
    """``h1 = func(h0)`` with the graph kept; the signal is passed on unchanged."""
    h0, t0, context = input
    return func(h0), t0, context


def fixed(input: State, func: Callable[[Tensor], Tensor]) -> State:
    """``func`` on ``h`` and ``t`` with no learning: inputs and outputs detached."""
    h0, t0, context = input
    with torch.no_grad():
        h1 = func(h0.detach())
        t1 = func(t0.detach()) if t0 is not None else None
    return h1, t1, context


def forward(input: State, func: Callable[[Tensor], Tensor]) -> State:
    """``func`` on ``h`` and ``t`` with nothing detached (for reshapes and other glue)."""
    h0, t0, context = input
    return func(h0), (func(t0) if t0 is not None else None), context
