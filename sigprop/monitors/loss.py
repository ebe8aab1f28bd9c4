"""Monitors that wrap a local loss and measure it."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..loss.base import needs_per_class_signal
from ..loss.similarity import flat_pair, per_class_signal, sample_labels
from ..propagators.base import LossFn
from .monitor import LossAccuracySums, Monitor


class Loss(Monitor):
    """Wraps a loss; called exactly like it, it returns the loss and records metrics."""

    def __init__(self, loss: LossFn) -> None:
        self.loss = loss

    def __call__(self, sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Tensor:
        raise NotImplementedError


def label_match_accuracy(h1: Tensor, t1: Tensor, context: Tensor, per_class: bool) -> Tensor:
    """Per-sample 0/1: does the target that best matches each input (argmax of ``h1 @ t1.T``) have its label?

    With one signal row per sample (``per_class=False``) the best target's label is compared
    with the input's label; with one row per class the best row index is compared with the
    label (so a class absent from the batch can still be chosen).
    """
    if not per_class and t1.shape[0] != h1.shape[0]:
        raise ValueError(
            f"the signal has {t1.shape[0]} rows for a batch of {h1.shape[0]}: a signal with one row "
            "per class needs per_class_signal=True on its propagators"
        )
    labels = sample_labels(context, h1.shape[0])  # a (B, 1) column is refused, not read as class 0
    a, b = flat_pair(h1, t1)
    best = (a @ b.t()).argmax(1)
    if per_class:
        return best == labels
    return labels[best] == labels


class LabelMetrics(Loss, LossAccuracySums):
    """Accumulates a layer's loss and label-match accuracy on the device, read once per epoch.

    Besides ``values()``, the reference package's attributes: ``loss_sum`` (loss times samples),
    ``acc_sum`` (correct samples), ``count``, ``loss_last`` and ``acc_last`` (the last batch's).
    They are tensors on the layer's device (0 after ``reset``), so recording never waits for the
    device; ``float(...)`` reads one.

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
        self.loss_last: Tensor | float = 0.0
        self.acc_last: Tensor | float = 0.0

    @property
    def acc_sum(self) -> Tensor | float:
        """Correct samples since the last ``reset`` (the reference's name for ``correct``)."""
        return self.correct

    def __call__(self, sp_learn: Any, h1: Tensor, t1: Tensor, h0: Tensor, t0: Tensor, context: Tensor | None) -> Tensor:
        loss = self.loss(sp_learn, h1, t1, h0, t0, context)
        with torch.no_grad():
            correct = None
            if context is not None:
                # v1 reads the signal's rows as classes by definition; the others ask the propagator.
                per_class = per_class_signal(sp_learn) or needs_per_class_signal(self.loss)
                correct = label_match_accuracy(h1, t1, context, per_class).sum()
                self.acc_last = correct / h1.shape[0]
            self.loss_last = loss.detach()
            self.add(loss, correct, h1.shape[0])
        return loss

    def values(self) -> dict[str, float]:
        return LossAccuracySums.values(self)

    def metrics(self) -> str:
        v = self.values()
        return f"[{self.name}] acc {v['acc']:.4f}  loss {v['loss']:.4f}  ({self.count} samples)"
