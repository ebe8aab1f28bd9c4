"""Similarity helpers the SigProp losses are built from.

A layer's output ``h1`` and the signal ``t1`` are compared sample against sample:
``y[i, j]`` scores how well input ``i`` matches target ``j``. For 4-D tensors
(``B, C, H, W``) the score is the per-position dot product averaged over the
``H*W`` positions, which equals one flattened matrix product divided by
``H*W``; computing it that way avoids a batched matmul over positions.

A signal may carry one row per class instead of one per sample, when its propagators say so
(``per_class_signal=True``): then ``t`` has ``K`` rows, ``class_index`` gives each sample's row,
and the helpers expand the ``(B, K)`` and ``(K, K)`` matrices to the ``(B, B)`` ones a per-sample
signal would give. The labels (``context``) are class indices ``(B,)`` or one-hot rows ``(B, K)``;
any other shape is refused (``sample_labels``). A signal that contradicts the setting is refused
wherever its shapes show it: at the signal itself, where ``t0`` holds the formatted labels (one row
per target), a per-class signal has as many rows as classes (``class_rows``). The labels' values
are not read for these checks, so they never make the step wait for the device.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..propagators.signals import Learn as SignalLearner
from ..utils import without_autocast

# The helpers for writing losses (the reference package's ``sigprop.loss.functional.utils``).
__all__ = [
    "format_2dim_",
    "format_4dim_",
    "format_sim_2dim_",
    "format_sim_4dim_",
    "sim_2dim_",
    "sim_4dim_",
    "similarity_format",
    "similarity_matrix_x",
    "similarity_matrix_xy",
    "soft_target_cross_entropy",
]


def positions(x: Tensor) -> int:
    """Number of spatial positions of ``x`` (1 for a 2-D tensor)."""
    return x[0, 0].numel() if x.dim() > 2 else 1


def _channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def flat_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``a`` and ``b`` as ``(B, features)`` with the features in one common order.

    Dot products do not depend on the order of the features, so channels-last tensors are
    flattened in their memory order (a view) instead of being copied to the NCHW order.
    """
    if _channels_last(a) and _channels_last(b):
        return a.permute(0, 2, 3, 1).flatten(1), b.permute(0, 2, 3, 1).flatten(1)
    return a.flatten(1), b.flatten(1)


def per_class_signal(sp_learn: Any) -> bool:
    """Whether the propagator ``sp_learn`` says its signal has one row per class.

    Read from its ``per_class_signal`` attribute; ``False`` (one row per sample, the reference
    package's only form) when it has none, e.g. for a loss called with ``sp_learn=None``.
    """
    return bool(getattr(sp_learn, "per_class_signal", False))


def sample_labels(context: Tensor, batch: int) -> Tensor:
    """Each sample's class index from ``context``: class indices ``(B,)``, or one-hot rows ``(B, K)`` of at
    least two classes. Any other shape is a ``ValueError``: a ``(B, 1)`` column could be either, and read as
    one-hot rows it would put every sample in class 0."""
    if context.dim() == 1 and context.shape[0] == batch:
        return context.long()
    if context.dim() == 2 and context.shape[0] == batch and context.shape[1] >= 2:
        return context.argmax(1)
    raise ValueError(
        f"the labels (context) have shape {tuple(context.shape)} for a batch of {batch}: give class indices "
        f"({batch},) or one-hot rows ({batch}, K)"
    )


def class_rows(sp_learn: Any, h1: Tensor, t1: Tensor, t0: Tensor | None, context: Tensor | None) -> Tensor:
    """Each sample's row of ``t1``, a signal with one row per class: its class index (``sample_labels``).

    Refuses what shows that the signal has another form: no labels, one-hot labels of more or fewer
    classes than ``t1`` has rows, or, at the signal itself (``sp_learn`` a signal propagator, whose
    ``t0`` is the formatted labels, one row per target), labels of another count of rows than classes.
    """
    if context is None:
        raise ValueError("per_class_signal=True needs the class indices (or one-hot labels) as context")
    labels = sample_labels(context, h1.shape[0])
    if context.dim() > 1 and t1.shape[0] != context.shape[1]:
        raise ValueError(
            f"per_class_signal=True needs one signal row per class: the signal has {t1.shape[0]} rows "
            f"for {context.shape[1]} classes"
        )
    if t0 is not None and t0.dim() == 2 and t0.shape[0] != t0.shape[1] and _formats_labels(sp_learn):
        raise ValueError(
            f"per_class_signal=True, but the signal's labels have {t0.shape[0]} rows for {t0.shape[1]} classes "
            "(one per sample?): give the signal one row per class (the formatter DistinctBatchLabelsOnehot), "
            "or set per_class_signal=False"
        )
    return labels


def _formats_labels(sp_learn: Any) -> bool:
    """Whether ``sp_learn`` is a signal propagator: the ``t0`` its loss gets is the formatted labels."""
    return isinstance(sp_learn, SignalLearner)


def class_index(
    sp_learn: Any, h1: Tensor, t1: Tensor, context: Tensor | None, t0: Tensor | None = None
) -> Tensor | None:
    """Each sample's row of ``t1`` when the signal has one row per class (``class_rows``), else ``None``.

    Which of the two is the propagator's setting (``per_class_signal``), never read from the
    shapes: they cannot tell the two apart when the batch is as large as the number of classes.
    A signal whose row count contradicts the setting is an error. The class indices come from
    ``context`` (indices or one-hot).
    """
    if not per_class_signal(sp_learn):
        if t1.shape[0] != h1.shape[0]:
            raise ValueError(
                f"the signal has {t1.shape[0]} rows for a batch of {h1.shape[0]}: a signal with one row "
                "per class needs per_class_signal=True on its propagators"
            )
        return None
    return class_rows(sp_learn, h1, t1, t0, context)


def no_row_error(index: Tensor, rows: int) -> ValueError:
    """The error for class indices beyond the rows of a per-class signal (read once an operation failed on them)."""
    return ValueError(
        f"label {int(index.max())} has no row in a signal of {rows} rows: per_class_signal=True needs one "
        "signal row per class (the formatter DistinctBatchLabelsOnehot)"
    )


def expand_columns(scores: Tensor, index: Tensor) -> Tensor:
    """``scores[:, index]`` for per-class scores ``(B, K)``: the ``(B, B)`` per-sample scores.

    Written as a product with the one-hot matrix of ``index`` (exact: one non-zero term per
    entry), whose backward is a deterministic product too, unlike the scatter of an index.
    """
    try:
        onehot = F.one_hot(index, scores.shape[1]).to(scores.dtype)
    except RuntimeError:  # an index beyond the rows (checked by one_hot on the CPU)
        if index.numel() and int(index.max()) >= scores.shape[1]:
            raise no_row_error(index, scores.shape[1]) from None
        raise
    return scores @ onehot.t()


def input_target_scores(h1: Tensor, t1: Tensor, index: Tensor | None = None) -> Tensor:
    """``h1 @ t1.T`` per spatial position, averaged over positions: a ``(B_h, B_t)`` matrix.

    With ``index`` (``t1`` holding one row per class), the columns are expanded to one per sample.
    """
    if h1.shape[1:] != t1.shape[1:]:
        raise ValueError(
            f"layer output {tuple(h1.shape[1:])} and signal {tuple(t1.shape[1:])} "
            "must have the same shape after the batch dimension"
        )
    a, b = flat_pair(h1, t1)
    scores = (a @ b.t()) / positions(t1)
    return scores if index is None else expand_columns(scores, index)


def target_similarity(t0: Tensor, index: Tensor | None = None) -> Tensor:
    """``t0 @ t0.T`` per spatial position, averaged over positions: which targets match which.

    With ``index`` (``t0`` holding one row per class), rows and columns are expanded to one per sample.
    Computed in float32 or wider and outside autocast: the losses read only which entries tie
    (``sigprop.loss.ties``), and a bf16 result would round apart entries that are equal in float32.
    """
    if not (t0.is_floating_point() and torch.finfo(t0.dtype).bits >= 32):
        t0 = t0.float()
    with without_autocast(t0.device.type):
        a, b = flat_pair(t0, t0)
        sim = (a @ b.t()) / positions(t0)
    return sim if index is None else sim[index][:, index]


def soft_target_cross_entropy(x: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits ``x`` against a (not necessarily normalised) target weighting."""
    loss = torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1)
    return loss.mean() if reduction == "mean" else loss


def similarity_format(x: Tensor, dim: int = 1, no_std: bool = False) -> Tensor:
    """Centre and L2-normalise ``x`` along ``dim``.

    Extra trailing dimensions beyond ``dim`` are reduced by their standard deviation
    when there are more than 8 of them (or flattened into ``dim`` otherwise).
    """
    if x.dim() > dim + 1:
        x = x.flatten(dim + 1)
        if not no_std and x.size(dim + 1) > 8:
            x = x.std(dim=dim + 1)
        else:
            x = x.flatten(dim)
    xc = x - x.mean(dim=dim, keepdim=True)
    return xc / (1e-8 + torch.sqrt(torch.sum(xc**2, dim=dim, keepdim=True)))


def similarity_matrix_x(x: Tensor, dim: int = 1) -> Tensor:
    """Centred cosine similarity of every sample of ``x`` with every other, clamped to [-1, 1]."""
    xn = similarity_format(x, dim)
    return xn.matmul(xn.transpose(dim, dim - 1)).clamp(-1, 1)


def similarity_matrix_xy(x: Tensor, y: Tensor, dim: int = 1) -> Tensor:
    """Centred cosine similarity of every sample of ``x`` with every sample of ``y``."""
    xn = similarity_format(x, dim)
    yn = similarity_format(y, dim)
    return xn.matmul(yn.transpose(dim, dim - 1)).clamp(-1, 1)


# The reference package's helpers for building losses from per-sample or per-position similarities.


def format_2dim_(h: Tensor, format: bool = True) -> Tensor:  # noqa: A002 - the reference's keyword
    """``h`` as ``(B, features)``; with ``format``, centred and L2-normalised per sample (``similarity_format``)."""
    h = h.flatten(1)
    return similarity_format(h, dim=1) if format else h


def format_4dim_(h: Tensor, format: bool = True) -> Tensor:  # noqa: A002 - the reference's keyword
    """``(B, C, H, W)`` as ``(H*W, B, C)``, positions first; with ``format``, each position's
    ``C``-vectors centred and L2-normalised."""
    h = h.flatten(2).permute(2, 0, 1)
    return similarity_format(h, dim=2) if format else h


def sim_2dim_(h: Tensor, t: Tensor) -> Tensor:
    """``h @ t.T`` for ``(B, features)`` tensors."""
    return h @ t.t()


def sim_4dim_(h: Tensor, t: Tensor) -> Tensor:
    """For position-first ``(P, B, C)`` tensors (``format_4dim_``): ``h[p] @ t[p].T`` averaged over positions."""
    return (h @ t.transpose(1, 2)).mean(0)


def format_sim_2dim_(h: Tensor) -> Tensor:
    """Centred cosine similarity of every sample of ``h`` with every other (``(B, B)``)."""
    x = format_2dim_(h)
    return sim_2dim_(x, x)


def format_sim_4dim_(h: Tensor) -> Tensor:
    """Per-position centred cosine similarities of the samples of ``(B, C, H, W)`` ``h``, averaged over positions."""
    x = format_4dim_(h)
    return sim_4dim_(x, x)
