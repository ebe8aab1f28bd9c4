"""Ties up to rounding (sigprop.loss.ties): the same matches whatever order a kernel sums in.

Another CPU, thread count or matrix kernel sums the products of ``t0 @ t0.T`` in another order, so
equal similarities (targets of one class) can round apart. These tests compute the similarities of
real class targets (class means of real MNIST digits, through fixed layers) in several orders,
imitating other kernels, and check that the losses' rule reads the same matches from each: the
same-class targets for v9, the lowest-index one for v14, the same top k for v15. The targets and
the orders are those of experiments/ties.py, which prints how often an exact comparison misses.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import Tensor

from sigprop import loss as sigprop_loss
from sigprop.loss import similarity
from sigprop.loss.ties import first_max, max_matches, tie_tolerance, top_k

SHAPES = [(64,), (8, 4, 4), (32, 7, 7)]


def load_measurement() -> ModuleType:
    """experiments/ties.py, which computes the similarities of real class targets in several orders."""
    path = Path(__file__).resolve().parents[1] / "experiments" / "ties.py"
    spec = importlib.util.spec_from_file_location("ties_measurement", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MEASUREMENT = load_measurement()
orders = MEASUREMENT.orders


def targets(mnist, shape: tuple[int, ...], dtype: torch.dtype, batch: int = 128) -> tuple[Tensor, Tensor]:
    """The signal rows of ``batch`` real MNIST labels (one real target per class), and the labels."""
    images, labels = mnist[0][:3000], mnist[1][:3000]
    return MEASUREMENT.class_targets(shape, dtype, images, labels)[labels[:batch]], labels[:batch]


def same_class(labels: Tensor) -> Tensor:
    return labels[:, None] == labels[None, :]


def lowest_same_class(labels: Tensor, k: int) -> Tensor:
    """Each sample's ``k`` lowest-index samples of its class, as a 0/1 matrix."""
    mask = torch.zeros(len(labels), len(labels), dtype=torch.bool)
    for i, label in enumerate(labels.tolist()):
        mask[i, (labels == label).nonzero().flatten()[:k]] = True
    return mask


def chosen(indices: Tensor, size: int) -> Tensor:
    return torch.zeros(indices.shape[0], size, dtype=torch.bool).scatter_(1, indices, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_same_class_targets_tie_whatever_the_summation_order(mnist, shape, dtype) -> None:
    t0, labels = targets(mnist, shape, dtype)
    n, smallest_class = t0[0].numel(), int(torch.bincount(labels).min())
    expected = {1: lowest_same_class(labels, 1), smallest_class: lowest_same_class(labels, smallest_class)}
    base_top = {k: top_k(similarity.target_similarity(t0), k, n) for k in (3, 20, 40)}
    for name, yy in orders(t0).items():
        assert torch.equal(max_matches(yy, n), same_class(labels)), name
        assert torch.equal(chosen(first_max(yy, n).view(-1, 1), 128), expected[1]), name
        for k, want in expected.items():
            assert torch.equal(chosen(top_k(yy, k, n), 128), want), (name, k)
        for k, want in base_top.items():  # past the class: the next most similar classes, the same in every order
            assert torch.equal(chosen(top_k(yy, k, n), 128), chosen(want, 128)), (name, k)


def test_the_orders_round_apart(mnist) -> None:
    """The orders are different roundings: an exact comparison of their similarities misses same-class
    matches that the tie rule finds, in float64 and in float32."""
    for dtype in (torch.float32, torch.float64):
        t0, labels = targets(mnist, (32, 7, 7), dtype)
        missed = 0
        for yy in orders(t0).values():
            exact = yy == yy.amax(1, keepdim=True)
            missed += int((same_class(labels) & ~exact).sum())
        assert missed > 0, dtype


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bf16_targets_tie_in_float32(mnist, shape) -> None:
    """Under bf16 autocast the similarities of bf16 targets are computed in float32, where the
    same-class ones tie; in bf16 they would be rounded to 8 bits, apart or onto other classes."""
    t0, labels = targets(mnist, shape, torch.bfloat16)
    n = t0[0].numel()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        variants = {"as is": t0, "permuted": t0.flip(0)}
        if t0.dim() == 4:
            variants["channels-last"] = t0.contiguous(memory_format=torch.channels_last)
        for name, t in variants.items():
            yy = similarity.target_similarity(t)
            assert yy.dtype == torch.float32, name
            assert torch.equal(max_matches(yy, n), same_class(labels.flip(0) if name == "permuted" else labels)), name


def test_tolerance_scales_with_precision_and_features() -> None:
    yy = torch.tensor([[4.0, -1.0], [2.0, 8.0]], dtype=torch.float64)
    eps = torch.finfo(torch.float64).eps
    torch.testing.assert_close(tie_tolerance(yy, 100), torch.tensor([[4.0], [8.0]], dtype=torch.float64) * 16 * 10 * eps)
    assert float(tie_tolerance(yy.float(), 100)[0]) / float(tie_tolerance(yy, 100)[0]) == pytest.approx(2.0**29)


def test_entries_apart_by_more_than_the_tolerance_do_not_tie() -> None:
    """A different class just outside the tolerance is not a match; just inside, it is."""
    n = 1024
    tol = 16 * n**0.5 * torch.finfo(torch.float32).eps
    yy = torch.tensor([[1.0, 1.0 - 0.5 * tol, 1.0 - 2 * tol, 0.5]])
    assert max_matches(yy, n).tolist() == [[True, True, False, False]]
    assert first_max(yy, n).tolist() == [0]
    assert top_k(yy, 2, n).tolist() == [[0, 1]]
    # Ties are taken lowest index first, whichever of them rounds highest.
    yy = torch.tensor([[1.0 - 0.5 * tol, 0.2, 1.0, 1.0 - 0.25 * tol]])
    assert first_max(yy, n).tolist() == [0]
    assert top_k(yy, 2, n).tolist() == [[0, 2]]
    assert top_k(yy, 4, n).tolist() == [[0, 2, 3, 1]]


@pytest.mark.parametrize("batch", [16, 128])
def test_per_class_v15_is_the_same_loss_whatever_tied_targets_are_chosen(mnist, batch: int) -> None:
    """With one signal row per class, the tied targets of a row are copies of one class's row, so which of
    them v15 takes does not change the loss or its gradients: the lowest-index rule gives what any choice
    among exact ties gives (here torch.topk's), also where a class has fewer samples than topk (batch 16)."""
    labels = mnist[1][:batch]
    g = torch.Generator().manual_seed(0)
    h1 = torch.randn(batch, 8, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t1 = torch.randn(10, 8, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t0 = MEASUREMENT.class_targets((8, 4, 4), torch.float64, mnist[0][:3000], mnist[1][:3000])

    class PerClass:
        per_class_signal = True

    ours = sigprop_loss.v15_input_target_topk(6)(PerClass(), h1, t1, None, t0, labels)
    y = similarity.input_target_scores(h1, t1, labels)
    yy = similarity.target_similarity(t0, labels)
    mask = torch.zeros_like(yy).scatter_(1, yy.topk(6, dim=1).indices, 1.0)
    theirs = similarity.soft_target_cross_entropy(y, mask)
    torch.testing.assert_close(ours, theirs, rtol=1e-13, atol=0)
    ours_grads = torch.autograd.grad(ours, (h1, t1))
    theirs_grads = torch.autograd.grad(theirs, (h1, t1))
    torch.testing.assert_close(ours_grads, theirs_grads, rtol=1e-12, atol=1e-15)
