"""Signal formatters as functions of the target ``t0`` (each passes ``None`` through)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def label_number_to_onehot(t0: Tensor | None, num_classes: int | None) -> Tensor | None:
    """Class indices ``(B,)`` to float one-hot vectors ``(B, num_classes)``. Other shapes are refused: a
    ``(B, 1)`` column would give ``(B, 1, num_classes)``, which a signal could read as one class."""
    if t0 is None:
        return None
    if t0.dim() != 1:
        raise ValueError(f"the labels have shape {tuple(t0.shape)}: one-hot encoding takes class indices ({t0.shape[0]},)")
    if num_classes is None:
        num_classes = int(t0.max()) + 1
    return F.one_hot(t0.long(), num_classes).float()


def distinct_batch_labels_onehot(t0: Tensor | None) -> Tensor | None:
    """One-hot vectors ``(B, K)`` to the ``K`` distinct one-hot rows (the identity matrix), in ``t0``'s
    floating-point dtype (float32 for integer ``t0``)."""
    if t0 is None:
        return None
    return torch.eye(t0.shape[1], device=t0.device, dtype=t0.dtype if t0.is_floating_point() else torch.float32)


def distinct_batch_labels(t0: Tensor | None) -> Tensor | None:
    """One-hot vectors ``(B, K)`` to the ``K`` class numbers ``0..K-1`` as floats."""
    if t0 is None:
        return None
    return torch.arange(t0.shape[1], device=t0.device).float()


def label_vector_to_number(t0: Tensor | None) -> Tensor | None:
    """Label vectors ``(B, K)`` to their argmax ``(B, 1)`` as floats."""
    if t0 is None:
        return None
    return t0.argmax(1, keepdim=True).float()
