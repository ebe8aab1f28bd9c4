"""Similarity helpers the SigProp losses are built from.

A layer's output ``h1`` and the signal ``t1`` are compared sample against sample:
``y[i, j]`` scores how well input ``i`` matches target ``j``. For 4-D tensors
(``B, C, H, W``) the score is the per-position dot product averaged over the
``H*W`` positions, which equals one flattened matrix product divided by
``H*W``; computing it that way avoids a batched matmul over positions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def positions(x: Tensor) -> int:
    """Number of spatial positions of ``x`` (1 for a 2-D tensor)."""
    return x[0, 0].numel() if x.dim() > 2 else 1


def input_target_scores(h1: Tensor, t1: Tensor) -> Tensor:
    """``h1 @ t1.T`` per spatial position, averaged over positions: a ``(B_h, B_t)`` matrix."""
    if h1.shape[1:] != t1.shape[1:]:
        raise ValueError(
            f"layer output {tuple(h1.shape[1:])} and signal {tuple(t1.shape[1:])} "
            "must have the same shape after the batch dimension"
        )
    return (h1.flatten(1) @ t1.flatten(1).t()) / positions(t1)


def target_similarity(t0: Tensor) -> Tensor:
    """``t0 @ t0.T`` per spatial position, averaged over positions: which targets match which."""
    return (t0.flatten(1) @ t0.flatten(1).t()) / positions(t0)


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
