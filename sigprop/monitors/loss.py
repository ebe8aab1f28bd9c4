"""Monitors that wrap a local loss and measure it."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..loss.similarity import flat_pair
from ..propagators.base import LossFn
from .monitor import LossAccuracySums, Monitor


class Loss(Monitor):
    """Wraps a loss; called exactly like it, it returns the loss and records metrics."""

    def __init__(self, loss: LossFn) -> None:
        self.loss = loss

    def __call__(self, sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError


def label_match_accuracy(h1: Tensor, t1: Tensor, context: Tensor, per_class: bool | None = None) -> Tensor:
    """Per-sample 0/1: does the target that best matches each input (argmax of ``h1 @ t1.T``) have its label?

    With one signal row per sample the best target's label is compared with the input's
    label; with one row per class the best row index is compared with the label (so a
    class absent from the batch can still be chosen). ``per_class=None`` takes ``t1`` as one
    row per class when its batch size differs from ``h1``'s.
    """
    labels = context.argmax(1) if context.dim() > 1 else context
    a, b = flat_pair(h1, t1)
    best = (a @ b.t()).argmax(1)
    if per_class is None:
        per_class = h1.shape[0] != t1.shape[0]
    if per_class:
        return best == labels
    return labels[best] == labels


class LabelMetrics(Loss, LossAccuracySums):
    """Accumulates a layer's loss and label-match accuracy on the device, read once per epoch.

    Args:
        name: the layer's name in reports (e.g. ``layer03``).
        loss: the loss to wrap.
    """

    def __init__(self, name: str, loss: LossFn) -> None:
        super().__init__(loss)
        self.name = name
        self.reset()

    def reset(self) -> None:
        LossAccuracySums.reset(self)

    def __call__(self, sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Tensor:
        loss = self.loss(sp_learn, h1, t1, h0, t0, context)
        with torch.no_grad():
            correct = None
            if context is not None:
                per_class = getattr(sp_learn, "per_class_signal", None)
                correct = label_match_accuracy(h1, t1, context, per_class).sum()
            self.add(loss, correct, h1.shape[0])
        return loss

    def values(self) -> dict[str, float]:
        return LossAccuracySums.values(self)

    def metrics(self) -> str:
        v = self.values()
        return f"[{self.name}] acc {v['acc']:.4f}  loss {v['loss']:.4f}  ({self.count} samples)"
