"""Losses that compare layer outputs with the signal using the class labels directly."""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from .similarity import input_target_scores


def v1_input_label_direct(
    sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None
) -> Tensor:
    """Cross-entropy of ``y = h1 @ t1.T`` against the class indices in ``context``.

    Meant for a signal with one row per class (``DistinctBatchLabelsOnehot``), so that
    column ``j`` of ``y`` scores class ``j``.
    """
    if context is None:
        raise ValueError("v1_input_label_direct needs the class indices as context")
    if context.dim() > 1:
        context = context.argmax(1)
    return F.cross_entropy(input_target_scores(h1, t1), context)


# Column j of y is class j only when the signal has one row per class; the application checks this.
v1_input_label_direct.needs_per_class_signal = True  # type: ignore[attr-defined]
