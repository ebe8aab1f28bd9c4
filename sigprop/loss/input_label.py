"""Losses that compare layer outputs with the signal using the class labels directly."""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from .similarity import class_rows, input_target_scores, no_row_error


def v1_input_label_direct(
    sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None
) -> Tensor:
    """Cross-entropy of ``y = h1 @ t1.T`` against the class indices in ``context``.

    Only for a signal with one row per class (``DistinctBatchLabelsOnehot``), so that column ``j``
    of ``y`` scores class ``j``: a propagator that says its signal has one row per sample
    (``per_class_signal=False``) is refused, and so is a signal whose shapes contradict it
    (``similarity.class_rows``). Called without a propagator (``sp_learn=None``), the rows are
    read as classes.
    """
    if context is None:
        raise ValueError("v1_input_label_direct needs the class indices as context")
    if getattr(sp_learn, "per_class_signal", True) is False:
        raise ValueError(
            "v1_input_label_direct reads the signal's rows as classes: its propagators need per_class_signal=True "
            "and a signal of one row per class (the formatter DistinctBatchLabelsOnehot)"
        )
    labels = class_rows(sp_learn, h1, t1, t0, context)
    scores = input_target_scores(h1, t1)
    try:
        return F.cross_entropy(scores, labels)
    except IndexError:  # a class index beyond the rows (checked by cross_entropy on the CPU)
        if labels.numel() and int(labels.max()) >= scores.shape[1]:
            raise no_row_error(labels, scores.shape[1]) from None
        raise


# Column j of y is class j only when the signal has one row per class; the application checks this.
v1_input_label_direct.needs_per_class_signal = True  # type: ignore[attr-defined]
