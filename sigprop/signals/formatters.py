"""Formatters: turn the raw target into the form a generator expects."""
from __future__ import annotations

from torch import Tensor

from ..functional import signals as F
from .base import Formatter


class LabelNumberToOnehot(Formatter):
    """Class indices to one-hot vectors.

    Args:
        num_classes: length of the one-hot vectors (``None``: largest label + 1).
    """

    def __init__(self, num_classes: int | None) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None]:
        h0, t0 = input
        return h0, F.label_number_to_onehot(t0, self.num_classes)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


class DistinctBatchLabelsOnehot(Formatter):
    """One-hot batch targets to one row per class, so each layer compares inputs with every class."""

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None]:
        h0, t0 = input
        return h0, F.distinct_batch_labels_onehot(t0)


class DistinctBatchLabels(Formatter):
    """One-hot batch targets to the class numbers ``0..K-1``."""

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None]:
        h0, t0 = input
        return h0, F.distinct_batch_labels(t0)


class LabelVectorToNumber(Formatter):
    """Label vectors to their argmax, as a ``(B, 1)`` float column."""

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None]:
        h0, t0 = input
        return h0, F.label_vector_to_number(t0)
