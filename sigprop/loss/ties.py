"""Which targets tie: the one rule v9, v14 and v15 use to read the target similarities ``yy``.

``yy[i, j]`` compares target ``i`` with target ``j``. The matches the losses mean are the targets
of the same class, whose signal rows are equal, so their entries of ``yy`` are equal in exact
arithmetic. In floating point they are equal only up to rounding: whether two dot products of the
same numbers round to the same float depends on the matrix kernel (its blocking, tile edges, thread
count, the CPU's instructions), so an exact test (``yy == yy.max(1)``, ``argmax``, ``topk``) picks
different matches on different machines, dtypes and batch positions.

Here two entries of a row tie when they differ by at most the row's tolerance

    tol_i = TIE_ULPS * sqrt(n) * eps * max_j |yy[i, j]|

with ``n`` the number of products summed into each entry (the signal's features), ``eps`` the
machine epsilon of ``yy``'s dtype (``yy`` is computed in float32 or wider, see
``similarity.target_similarity``). Rounding errors of a sum of ``n`` terms grow like
``sqrt(n) * eps`` of the terms' magnitude; measured across reduction orders (one and two threads,
a permuted batch, the matrix product split into blocks, channels-last, per-position products,
two kernels meeting at a tile edge, reversed sums), the same-class entries of one row differ by at
most ``0.25 * sqrt(n) * eps`` of the row's largest entry in float32 and float64, for ``n`` from 64
to 32,768 (``python experiments/ties.py`` measures it). ``TIE_ULPS = 16`` leaves a factor of 64
above that, while keeping the tolerance small against the gap between different classes: relative
to the row's largest entry it is ``6.1e-5`` in float32 for a 1,024-feature layer and ``6.9e-4`` for
131,072 features (a 128-channel 32 x 32 map), ``1.1e-13`` and ``1.3e-12`` in float64.

* ``max_matches`` (v9): every entry within ``tol`` of its row's maximum.
* ``first_max`` (v14): the lowest index among those.
* ``top_k`` (v15): entries sorted by value, neighbours closer than ``tol`` joined into one tie group;
  groups ordered by value, entries within a group by index (lowest first); the first ``k``.

Where no two entries of a row are within ``tol`` of each other, these are the reference package's
``==`` maximum, ``argmax`` and ``topk``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["TIE_ULPS", "first_max", "max_matches", "tie_tolerance", "top_k"]

TIE_ULPS = 16


def tie_tolerance(yy: Tensor, size: int) -> Tensor:
    """Each row's tolerance ``(B, 1)``: ``TIE_ULPS * sqrt(size) * eps * max |yy[i]|``.

    Args:
        yy: the target similarities, ``(B, B)``.
        size: how many products were summed into each entry (the signal's features per sample).
    """
    eps = torch.finfo(yy.dtype).eps
    return yy.abs().amax(1, keepdim=True) * (TIE_ULPS * math.sqrt(max(int(size), 1)) * eps)


def max_matches(yy: Tensor, size: int) -> Tensor:
    """Boolean ``(B, B)``: the entries of each row within its tolerance of the row's maximum."""
    return yy >= yy.amax(1, keepdim=True) - tie_tolerance(yy, size)


def first_max(yy: Tensor, size: int) -> Tensor:
    """Each row's lowest index among its ``max_matches`` (``(B,)``, int64)."""
    # argmax returns the first of equal maxima; the 0/1 matrix has only those.
    return max_matches(yy, size).to(torch.uint8).argmax(1)


def tie_groups(yy: Tensor, size: int) -> Tensor:
    """Each entry's tie group within its row, ``(B, B)`` int64: 0 for the group holding the row's
    maximum, 1 for the next lower one, and so on. Sorted by value, an entry joins the group of the
    entry above it when the two differ by at most the row's tolerance."""
    values, order = yy.sort(dim=1, descending=True, stable=True)
    starts = torch.zeros_like(values, dtype=torch.int64)
    starts[:, 1:] = (values[:, :-1] - values[:, 1:] > tie_tolerance(yy, size)).to(torch.int64)
    return torch.empty_like(starts).scatter_(1, order, starts.cumsum(1))


def top_k(yy: Tensor, k: int, size: int) -> Tensor:
    """The ``k`` indices ``(B, k)`` of each row's largest entries: tie groups in order of value,
    the entries of a group lowest index first (``k`` is clamped to the row length)."""
    k = min(int(k), yy.shape[1])
    # A stable sort keeps equal groups in index order: the lowest index comes first.
    return tie_groups(yy, size).sort(dim=1, stable=True)[1][:, :k]
