"""Losses that compare layer outputs with the signal, using the targets' own similarity as labels.

``y = h1 @ t1.T`` scores input ``i`` against target ``j``; ``yy = t0 @ t0.T`` says which
targets are alike (for one-hot labels: the same class). Each loss trains ``y`` towards ``yy``.

With a signal of one row per class (``t`` of ``K`` rows, the class indices in ``context``),
``y`` and ``yy`` are expanded to the ``(B, B)`` matrices of the per-sample signal, so the loss
and its gradients are those of the per-sample signal whenever its rows of one class are equal.

Which entries of ``yy`` are maxima, or the top ``k``, is decided up to rounding by one rule
(``sigprop.loss.ties``): entries within a tolerance of ``sqrt(features)`` ulps tie, and ties are
broken by the lowest index, so the same rule holds on every machine and dtype.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Loss
from .similarity import class_index, input_target_scores, soft_target_cross_entropy, target_similarity
from .ties import first_max, max_matches, top_k


def v9_input_target_max_all(
    sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None
) -> Tensor:
    """Soft-target cross-entropy of ``y`` against every entry of ``yy`` tied with its row's maximum
    (``ties.max_matches``: equal up to rounding)."""
    index = class_index(sp_learn, h1, t1, context, t0)
    y = input_target_scores(h1, t1, index)
    yy = target_similarity(t0, index)
    return soft_target_cross_entropy(y, max_matches(yy, t0[0].numel()).to(y.dtype))


def v14_input_target_max_rand(
    sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None
) -> Tensor:
    """Cross-entropy of ``y`` against one best-matching target per input: the lowest index among the
    entries of ``yy`` tied with the row's maximum (``ties.first_max``)."""
    index = class_index(sp_learn, h1, t1, context, t0)
    y = input_target_scores(h1, t1, index)
    yy = target_similarity(t0, index)
    return F.cross_entropy(y, first_max(yy, t0[0].numel()))


class v15_input_target_topk(Loss):  # noqa: N801 - the reference package's public name
    """Soft-target cross-entropy of ``y`` against the ``topk`` most similar targets of each row;
    among targets tied up to rounding, the lowest indices first (``ties.top_k``).

    Args:
        topk: how many targets count as matches per input (clamped to the batch size).
    """

    def __init__(self, topk: int) -> None:
        super().__init__()
        if int(topk) < 1:
            raise ValueError(f"topk must be at least 1, got {topk}")
        self.topk = int(topk)

    def forward(
        self, sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None
    ) -> Tensor:
        index = class_index(sp_learn, h1, t1, context, t0)
        y = input_target_scores(h1, t1, index)
        yy = target_similarity(t0, index)
        chosen = top_k(yy, self.topk, t0[0].numel())
        mask = torch.zeros_like(y).scatter_(1, chosen, 1.0)
        return soft_target_cross_entropy(y, mask)

    def extra_repr(self) -> str:
        return f"topk={self.topk}"
