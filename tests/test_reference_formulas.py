"""The reference package's formulas, stated here from their definitions, against the library in float64.

The reference package (github amassivek/signalpropagation) defines SigProp's losses with the
scores ``y[i, j]`` of input ``i`` against target ``j`` (``h1[i] . t1[j]``; for tensors with
spatial positions, that product at each position averaged over the positions) and the target
similarities ``yy`` (the same from ``t0`` with itself):

* v9: soft-target cross-entropy of ``y`` against the 0/1 mask of each row's maxima of ``yy``;
* v14: cross-entropy of ``y`` against the first index of each row's maximum of ``yy``;
* v15(k): soft-target cross-entropy against the 0/1 mask of the ``k`` indices ``torch.topk``
  returns for each row of ``yy``;
* v1: cross-entropy of ``y`` against the class indices.

Each formula below is written from that description (``einsum``, ``logsumexp``, ``scatter``, explicit
loops), not from the library's code, and the library is checked against it in float64, on real
MNIST images where a network runs. Where the library deliberately differs (``topk`` above the batch,
``num_classes=None``), the test states both.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sigprop
from sigprop import loss as L
from sigprop import propagators as P
from sigprop import signals as S
from sigprop.functional import signals as FS
from sigprop_steps import train_step

DOUBLE = torch.float64


# --- the formulas ----------------------------------------------------------------------------


def scores(a: Tensor, b: Tensor) -> Tensor:
    """``a[i] . b[j]``; with spatial positions, the product at each position averaged over them."""
    if b.dim() > 2:
        return torch.einsum("icp,jcp->ij", a.flatten(2), b.flatten(2)) / a.flatten(2).shape[2]
    return torch.einsum("ic,jc->ij", a.flatten(1), b.flatten(1))


def soft_ce(x: Tensor, target: Tensor) -> Tensor:
    """Mean over rows of ``-sum_j target[i, j] * log(softmax(x[i])[j])``."""
    return -(target * (x - x.logsumexp(1, keepdim=True))).sum(1).mean()


def hard_ce(x: Tensor, index: Tensor) -> Tensor:
    """Mean over rows of ``-log(softmax(x[i])[index[i]])``."""
    return -(x - x.logsumexp(1, keepdim=True)).gather(1, index.view(-1, 1)).mean()


def v9(h1: Tensor, t1: Tensor, t0: Tensor) -> Tensor:
    yy = scores(t0, t0)
    return soft_ce(scores(h1, t1), (yy == yy.amax(1, keepdim=True)).to(h1.dtype))


def v14(h1: Tensor, t1: Tensor, t0: Tensor) -> Tensor:
    return hard_ce(scores(h1, t1), scores(t0, t0).argmax(1))  # argmax: the first maximum


def v15(h1: Tensor, t1: Tensor, t0: Tensor, k: int) -> Tensor:
    yy = scores(t0, t0)
    mask = torch.zeros_like(yy).scatter_(1, yy.topk(k, dim=1).indices, 1.0)
    return soft_ce(scores(h1, t1), mask.to(h1.dtype))


# Ties. The reference compares ``yy``'s entries exactly (``==``, ``argmax``, ``topk``); the entries
# it means to tie (targets of one class) are equal only up to rounding, which depends on the matrix
# kernel. The library ties entries within ``16 * sqrt(features) * eps * max|row|`` and breaks ties by
# the lowest index (sigprop.loss.ties, docs/porting.md). Stated here from that description:


def tolerance(yy: Tensor, features: int) -> Tensor:
    return 16 * features**0.5 * torch.finfo(yy.dtype).eps * yy.abs().amax(1, keepdim=True)


def tied_maxima(yy: Tensor, features: int) -> Tensor:
    """0/1: the entries of each row within its tolerance of the row's maximum."""
    return (yy >= yy.amax(1, keepdim=True) - tolerance(yy, features)).to(yy.dtype)


def tied_top_k(yy: Tensor, features: int, k: int) -> Tensor:
    """0/1: each row's ``k`` first entries, walking down the values: an entry within the tolerance
    of the one above it ties with it, and tied entries come lowest index first."""
    tol = tolerance(yy, features)[:, 0].tolist()
    mask = torch.zeros_like(yy)
    for i, row in enumerate(yy.tolist()):
        by_value = sorted(range(len(row)), key=lambda j: (-row[j], j))
        group, groups = 0, {}
        for previous, j in zip([None, *by_value], by_value):
            if previous is not None and row[previous] - row[j] > tol[i]:
                group += 1
            groups[j] = group
        for j in sorted(range(len(row)), key=lambda j: (groups[j], j))[:k]:
            mask[i, j] = 1.0
    return mask


def features(t0: Tensor) -> int:
    return t0[0].numel()


def v9_tied(h1: Tensor, t1: Tensor, t0: Tensor) -> Tensor:
    return soft_ce(scores(h1, t1), tied_maxima(scores(t0, t0), features(t0)).to(h1.dtype))


def v14_tied(h1: Tensor, t1: Tensor, t0: Tensor) -> Tensor:
    maxima = tied_maxima(scores(t0, t0), features(t0))
    first = torch.tensor([row.index(1.0) for row in maxima.tolist()])
    return hard_ce(scores(h1, t1), first)


def v15_tied(h1: Tensor, t1: Tensor, t0: Tensor, k: int) -> Tensor:
    return soft_ce(scores(h1, t1), tied_top_k(scores(t0, t0), features(t0), k).to(h1.dtype))


def v1(h1: Tensor, t1: Tensor, labels: Tensor) -> Tensor:
    return hard_ce(scores(h1, t1), labels)


def centred_unit(x: Tensor, dim: int) -> Tensor:
    centred = x - x.mean(dim, keepdim=True)
    return centred / (centred.norm(dim=dim, keepdim=True) + 1e-8)


def similarity_format(x: Tensor, dim: int = 1, no_std: bool = False) -> Tensor:
    """Trailing dimensions after ``dim``: their (unbiased) standard deviation when there are more
    than 8 values and not ``no_std``, else merged into ``dim``; then centred and L2-normalised along ``dim``."""
    if x.dim() > dim + 1:
        rest = x.reshape(*x.shape[: dim + 1], -1)
        x = rest.std(dim + 1) if rest.shape[dim + 1] > 8 and not no_std else rest.reshape(*x.shape[:dim], -1)
    return centred_unit(x, dim)


def positions_first(h: Tensor) -> Tensor:
    """``(B, C, H, W)`` as ``(H*W, B, C)``."""
    return torch.einsum("bcp->pbc", h.flatten(2))


# --- losses ----------------------------------------------------------------------------------


def one_hot(labels: list[int], classes: int, *spatial: int) -> Tensor:
    """One-hot rows, repeated at every spatial position when ``spatial`` is given."""
    t = torch.eye(classes, dtype=DOUBLE)[labels]
    return t.view(*t.shape, *([1] * len(spatial))).expand(*t.shape, *spatial).contiguous() if spatial else t


def call(loss, h1: Tensor, t1: Tensor, t0: Tensor, context: Tensor | None = None) -> Tensor:
    return loss(None, h1, t1, h1, t0, context)


CASES = {
    # name: (h1/t1 shape, labels of t0): real-valued h1 and t1; t0 one-hot, so yy has ties (same class).
    "2-D": ((7, 5), [0, 2, 1, 0, 2, 2, 1]),
    "4-D": ((7, 3, 4, 5), [0, 2, 1, 0, 2, 2, 1]),
    "3-D": ((5, 4, 6), [1, 0, 1, 1, 0]),
    "batch of 1": ((1, 6), [2]),
    "batch of 1, 4-D": ((1, 2, 3, 3), [0]),
    "all one class": ((4, 3, 2, 2), [1, 1, 1, 1]),
}


def case(name: str, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    shape, labels = CASES[name]
    g = torch.Generator().manual_seed(seed)
    h1, t1 = torch.randn(shape, generator=g, dtype=DOUBLE), torch.randn(shape, generator=g, dtype=DOUBLE)
    t0 = one_hot(labels, 3, *shape[2:])
    return h1, t1, t0, torch.tensor(labels)


@pytest.mark.parametrize("name", list(CASES))
def test_losses_are_the_reference_formulas(name: str) -> None:
    h1, t1, t0, labels = case(name)
    # One-hot targets tie exactly: v9 and v14 are the reference's formulas. Which of exactly tied
    # entries ``torch.topk`` returns is unspecified, so v15 is the formula with the lowest-index rule.
    torch.testing.assert_close(call(L.v9_input_target_max_all, h1, t1, t0), v9(h1, t1, t0), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(call(L.v14_input_target_max_rand, h1, t1, t0), v14(h1, t1, t0), rtol=1e-13, atol=1e-15)
    for k in range(1, h1.shape[0] + 1):
        got = call(L.v15_input_target_topk(k), h1, t1, t0)
        torch.testing.assert_close(got, v15_tied(h1, t1, t0, k), rtol=1e-13, atol=1e-15)
    # v1 with one signal row per class: t1 of 3 rows, the class indices as context.
    t_class = t1[:3] if h1.shape[0] >= 3 else t1.repeat(3, *([1] * (t1.dim() - 1)))
    torch.testing.assert_close(call(L.v1_input_label_direct, h1, t_class, t0, labels), v1(h1, t_class, labels), rtol=1e-13, atol=1e-15)


def test_losses_with_real_valued_targets() -> None:
    """No ties: targets of real values, 2-D and 4-D, so every mask is determined by distinct values."""
    g = torch.Generator().manual_seed(1)
    for shape in ((6, 4), (6, 2, 3, 3)):
        h1, t1, t0 = (torch.randn(shape, generator=g, dtype=DOUBLE) for _ in range(3))
        torch.testing.assert_close(call(L.v9_input_target_max_all, h1, t1, t0), v9(h1, t1, t0), rtol=1e-13, atol=0)
        torch.testing.assert_close(call(L.v14_input_target_max_rand, h1, t1, t0), v14(h1, t1, t0), rtol=1e-13, atol=0)
        torch.testing.assert_close(call(L.v15_input_target_topk(3), h1, t1, t0), v15(h1, t1, t0, 3), rtol=1e-13, atol=0)


def test_topk_above_the_batch() -> None:
    """The reference's v15 fails when ``topk`` exceeds the batch (``torch.topk`` refuses); ours
    takes every target then, the formula with ``k`` = the batch size (a last batch smaller than topk)."""
    h1, t1, t0, _ = case("4-D")
    with pytest.raises(RuntimeError):
        v15(h1, t1, t0, 8)
    torch.testing.assert_close(call(L.v15_input_target_topk(8), h1, t1, t0), v15(h1, t1, t0, 7), rtol=1e-13, atol=0)
    h1, t1, t0, _ = case("batch of 1")
    torch.testing.assert_close(call(L.v15_input_target_topk(6), h1, t1, t0), v15(h1, t1, t0, 1), rtol=0, atol=0)


def test_loss_gradients_are_the_formulas() -> None:
    h1, t1, t0, _ = case("4-D", seed=3)
    for ours, formula in (
        (L.v9_input_target_max_all, v9),
        (L.v14_input_target_max_rand, v14),
        (L.v15_input_target_topk(2), lambda a, b, c: v15_tied(a, b, c, 2)),
    ):
        grads = []
        for fn in (lambda a, b: call(ours, a, b, t0), lambda a, b: formula(a, b, t0)):
            a, b = h1.clone().requires_grad_(), t1.clone().requires_grad_()
            fn(a, b).backward()
            grads.append((a.grad, b.grad))
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-15)


# --- similarity helpers ----------------------------------------------------------------------


def test_similarity_helpers_are_the_reference_formulas() -> None:
    g = torch.Generator().manual_seed(2)
    x2, y2 = torch.randn(5, 7, generator=g, dtype=DOUBLE), torch.randn(4, 7, generator=g, dtype=DOUBLE)
    few, many = torch.randn(5, 3, 2, 4, generator=g, dtype=DOUBLE), torch.randn(5, 3, 3, 3, generator=g, dtype=DOUBLE)
    for x in (x2, few, many):
        torch.testing.assert_close(L.similarity_format(x), similarity_format(x), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(L.similarity_format(x, no_std=True), similarity_format(x, no_std=True), rtol=1e-13, atol=1e-15)
        unit = similarity_format(x)
        torch.testing.assert_close(L.similarity_matrix_x(x), (unit @ unit.T).clamp(-1, 1), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(
        L.similarity_matrix_xy(x2, y2), (similarity_format(x2) @ similarity_format(y2).T).clamp(-1, 1), rtol=1e-13, atol=1e-15
    )
    target = torch.rand(5, 7, generator=g, dtype=DOUBLE)
    per_row = -(target * (x2 - x2.logsumexp(1, keepdim=True))).sum(1)
    torch.testing.assert_close(L.soft_target_cross_entropy(x2, target, reduction="none"), per_row, rtol=1e-13, atol=0)
    torch.testing.assert_close(L.soft_target_cross_entropy(x2, target), soft_ce(x2, target), rtol=1e-13, atol=0)
    # format_* / sim_*: 2-D per sample; 4-D positions first, each position's channel vectors.
    torch.testing.assert_close(L.format_2dim_(few), centred_unit(few.flatten(1), 1), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(L.format_2dim_(few, format=False), few.flatten(1), rtol=0, atol=0)
    torch.testing.assert_close(L.format_4dim_(many), centred_unit(positions_first(many), 2), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(L.format_4dim_(many, format=False), positions_first(many), rtol=0, atol=0)
    torch.testing.assert_close(L.sim_2dim_(x2, y2), torch.einsum("ic,jc->ij", x2, y2), rtol=1e-13, atol=1e-15)
    p = positions_first(many)
    torch.testing.assert_close(L.sim_4dim_(p, p), scores(many, many), rtol=1e-13, atol=1e-15)
    u2 = centred_unit(x2, 1)
    torch.testing.assert_close(L.format_sim_2dim_(x2), u2 @ u2.T, rtol=1e-13, atol=1e-15)
    u4 = centred_unit(positions_first(many), 2)
    torch.testing.assert_close(L.format_sim_4dim_(many), torch.einsum("pic,pjc->ij", u4, u4) / u4.shape[0], rtol=1e-13, atol=1e-15)


# --- formatters ------------------------------------------------------------------------------


def test_formatters_are_the_reference_formulas() -> None:
    labels = torch.tensor([3, 0, 9, 3, 1])
    onehot = torch.eye(10)[labels]
    h0 = torch.zeros(5, 2)
    expected = {
        # the formatter, its function, and the formula
        "LabelNumberToOnehot": (S.LabelNumberToOnehot(10), lambda t: FS.label_number_to_onehot(t, 10), labels, onehot),
        "DistinctBatchLabelsOnehot": (S.DistinctBatchLabelsOnehot(), FS.distinct_batch_labels_onehot, onehot, torch.eye(10)),
        "DistinctBatchLabels": (S.DistinctBatchLabels(), FS.distinct_batch_labels, onehot, torch.arange(10.0)),
        "LabelVectorToNumber": (S.LabelVectorToNumber(), FS.label_vector_to_number, onehot, labels.view(5, 1).float()),
    }
    for name, (module, function, t0, formula) in expected.items():
        out_h, out_t = module((h0, t0))
        assert out_h is h0 and out_t.dtype == torch.float32, name
        assert torch.equal(out_t, formula) and torch.equal(function(t0), formula), name
        assert module((h0, None))[1] is None and function(None) is None, name
    # num_classes=None: the reference asks one_hot for max(label) classes, which the largest label
    # exceeds (an error); ours takes max(label) + 1.
    with pytest.raises(RuntimeError):
        F.one_hot(labels, int(labels.max()))
    assert torch.equal(FS.label_number_to_onehot(labels, None), onehot)


# --- generators ------------------------------------------------------------------------------


def test_projection_generators_are_the_reference_formulas(mnist) -> None:
    x, labels = mnist[0][:6].to(DOUBLE), mnist[1][:6]
    t0 = torch.eye(10, dtype=DOUBLE)[labels]
    torch.manual_seed(0)
    context_module = nn.Linear(10, 2 * 14 * 14).to(DOUBLE)
    input_module = nn.Conv2d(1, 2, 3, 2, 1).to(DOUBLE)
    projected = context_module(t0).view(6, 2, 14, 14)
    h1, t1, h0, t0_out = S.ProjectionContext(context_module, (10,), (2, 14, 14))((x, t0))
    assert h1 is x and h0 is x and t0_out is t0 and torch.equal(t1, projected)
    h1, t1, h0, t0_out = S.ProjectionContextInput(context_module, input_module, (10,), (2, 14, 14))((x, t0))
    assert torch.equal(h1, input_module(x)) and torch.equal(t1, projected) and h0 is x and t0_out is t0
    S.ProjectionContextInput(context_module, input_module, (10,), (2, 14, 14), fixed=True)
    assert not any(p.requires_grad for p in [*context_module.parameters(), *input_module.parameters()])


# The reference's 7x7 digit glyphs ('#' a stroke, '.' the background).
GLYPHS = """
####### ...#... ####... ####### #.....# ####### #...... ####### ####### #######
#.....# ...#... ...#... ......# #.....# #...... #...... ......# #.....# #.....#
#.....# ...#... ...#... ......# #.....# #...... #...... ......# #.....# #.....#
#.....# ...#... ...#... ####### ####### ####### ####### ......# ####### #######
#.....# ...#... ...#... ......# ......# ......# #.....# ......# #.....# ......#
#.....# ...#... ...#... ......# ......# ......# #.....# ......# #.....# ......#
####### ...#... ...#### ####### ......# ####### ####### ......# ####### ......#
"""


def glyph(digit: int, size: int) -> Tensor:
    """Digit ``digit``'s glyph at +1 (stroke) / -1, averaged down (or up) to ``size x size``."""
    rows = [line.split()[digit] for line in GLYPHS.strip().splitlines()]
    image = torch.tensor([[1.0 if c == "#" else -1.0 for c in row] for row in rows])
    return F.adaptive_avg_pool2d(image.view(1, 1, 7, 7), size).view(size, size)


def reference_drawing(labels: list[int], channels: int, height: int, width: int, places: int) -> Tensor:
    """The reference's placement: cells of side ``int(sqrt(H*W // places))``; a cursor goes down
    from the top-left, one cell per digit; a digit whose cell would reach the bottom edge moves the
    cursor to the top of the next column and is not drawn."""
    size = int((height * width // places) ** 0.5)
    out = torch.zeros(len(labels), channels, height, width)
    for b, label in enumerate(labels):
        top = left = 0
        for digit in str(label):
            if top + size < height:
                out[b, :, top : top + size, left : left + size] = glyph(int(digit), size)
                top += size
            else:
                top, left = 0, left + size
    return out


@pytest.mark.parametrize(
    "shape, places, labels",
    [
        ((1, 28, 28), 4, list(range(0, 100, 7))),
        ((3, 32, 32), 8, [0, 7, 10, 57, 99, 100, 123]),  # three digits: the third finds no room
        ((1, 32, 32), 16, [5, 42, 123, 999]),
        ((2, 20, 30), 6, [3, 61, 208]),
        ((1, 28, 28), 1, [0, 5, 9]),  # the one cell reaches the bottom edge: nothing is drawn
    ],
)
@pytest.mark.filterwarnings("ignore:FixedDrawContext")  # the undrawn digits are warned about
def test_fixed_draw_context_is_the_reference_drawing(shape, places: int, labels: list[int]) -> None:
    h0 = torch.zeros(len(labels), *shape)
    _, t1, _, _ = S.FixedDrawContext(places)((h0, torch.tensor(labels)))
    assert torch.equal(t1, reference_drawing(labels, *shape, places))


# --- one propagator step ---------------------------------------------------------------------


# With the tie rule: the targets of one class come from equal signal rows through the same layers,
# so they tie up to rounding only, and the reference's exact comparisons would depend on the kernel.
LOSSES = {
    "v9": (L.v9_input_target_max_all, v9_tied),
    "v14": (L.v14_input_target_max_rand, v14_tied),
    "v15": (L.v15_input_target_topk(6), lambda h1, t1, t0: v15_tied(h1, t1, t0, 6)),
}


def hidden_block() -> nn.Module:
    # No bias before the instance norm: its exact gradient is 0, and Adam would turn rounding noise into steps.
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, 1, 1, bias=False), nn.InstanceNorm2d(8, affine=True), nn.LeakyReLU(0.01, inplace=True)
    )


@pytest.fixture(scope="module")
def digits(mnist) -> tuple[Tensor, Tensor, Tensor]:
    """640 real MNIST training images in float64, their labels, and the labels one-hot in float64."""
    x, y = mnist[0][:640].to(DOUBLE), mnist[1][:640]
    return x, y, torch.eye(10, dtype=DOUBLE)[y]


@pytest.mark.parametrize("path", ["immediate", "deferred", "recompute"])
def test_one_propagator_step_is_the_reference_step(digits, path: str) -> None:
    """``propagators.Loss``: ``h1 = f(h0)``, ``t1 = f(t0)``, the loss, zero-grad, backward, step; returns
    ``h1``, ``t1`` detached. The fused call, the deferred step and the recomputed step are that step."""
    x, _, onehot = digits
    torch.manual_seed(0)
    stem = nn.Conv2d(1, 4, 3, 2, 1).to(DOUBLE)
    with torch.no_grad():
        h0, t0 = stem(x[:32]), stem(x[32:64])  # the signal of another batch: t0 differs from h0
    ours_module = hidden_block().to(DOUBLE)
    ref_module = copy.deepcopy(ours_module)
    loss, formula = LOSSES["v15"]
    ref_optimizer = torch.optim.Adam(ref_module.parameters(), lr=1e-3)
    h1, t1 = ref_module(h0), ref_module(t0)
    ref_loss = formula(h1, t1, t0)
    ref_optimizer.zero_grad()
    ref_loss.backward()
    ref_optimizer.step()
    expected = h1.detach(), t1.detach()

    optimizer = torch.optim.Adam(ours_module.parameters(), lr=1e-3)
    deferred = P.LocalLosses() if path == "deferred" else None
    propagator = P.Loss(
        ours_module, None if deferred is not None else optimizer, loss, deferred=deferred, recompute_chunk=8 if path == "recompute" else None
    )
    assert propagator.fuse_ht is True
    out_h, out_t, context = propagator((h0, t0, onehot[:32]))
    if deferred is not None:
        optimizer.zero_grad()
        total = deferred.pop_sum()
        torch.testing.assert_close(total, ref_loss.detach(), rtol=1e-13, atol=0)
        total.backward()
        optimizer.step()
    assert not out_h.requires_grad and not out_t.requires_grad and torch.equal(context, onehot[:32])
    torch.testing.assert_close((out_h, out_t), expected, rtol=1e-12, atol=1e-14)
    for (name, p), q in zip(ours_module.named_parameters(), ref_module.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)


def test_one_signal_step_is_the_reference_step(digits) -> None:
    """``propagators.signals.Loss``: ``(h1, t1, h0, t0) = signal((h0, t0))``, the loss, the step;
    returns ``h1``, ``t1`` detached."""
    x, _, onehot = digits
    torch.manual_seed(0)
    ours = S.ProjectionContextInput(
        nn.Sequential(nn.Linear(10, 4 * 14 * 14), nn.LayerNorm(4 * 14 * 14), nn.ReLU()),
        nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU()), (10,), (4, 14, 14),
    ).to(DOUBLE)
    ref = copy.deepcopy(ours)
    ref_optimizer = torch.optim.Adam(ref.parameters(), lr=1e-3)
    h1 = ref.module_input(x[:32])
    t1 = ref.module_context(onehot[:32]).view(32, 4, 14, 14)
    ref_loss = v9(h1, t1, onehot[:32])
    ref_optimizer.zero_grad()
    ref_loss.backward()
    ref_optimizer.step()
    signal = P.signals.Loss(ours, torch.optim.Adam(ours.parameters(), lr=1e-3), L.v9_input_target_max_all)
    out_h, out_t = signal((x[:32], onehot[:32], onehot[:32]))
    torch.testing.assert_close((out_h, out_t), (h1.detach(), t1.detach()), rtol=1e-12, atol=1e-14)
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12)


# --- 20 steps of a model ---------------------------------------------------------------------


class Layers:
    """A signal, two learning layers with a pooling and a flattening between them, and an output layer."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.context = nn.Sequential(nn.Linear(10, 4 * 14 * 14), nn.LayerNorm(4 * 14 * 14), nn.ReLU())
        self.input = nn.Sequential(nn.Conv2d(1, 4, 3, 2, 1), nn.ReLU())
        self.block1 = hidden_block()
        self.block2 = nn.Sequential(nn.Linear(8 * 7 * 7, 32), nn.ReLU())
        self.head = nn.Linear(32, 10)
        for m in self.modules():
            m.to(DOUBLE)

    def modules(self) -> list[nn.Module]:
        return [self.context, self.input, self.block1, self.block2, self.head]


def reference_run(layers: Layers, batches, formula) -> list[list[float]]:
    """The reference's training loop, stated step by step: the signal learns, then each hidden layer
    on the detached outputs of the one before, then the output layer from cross-entropy."""

    def adam(*modules: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for m in modules for p in m.parameters()], lr=1e-3)

    def learn(optimizer: torch.optim.Optimizer, h1: Tensor, t1: Tensor, t0: Tensor, record: list[float]) -> tuple[Tensor, Tensor]:
        loss = formula(h1, t1, t0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record.append(float(loss.detach()))
        return h1.detach(), t1.detach()

    optimizers = adam(layers.context, layers.input), adam(layers.block1), adam(layers.block2), adam(layers.head)
    losses = []
    for x, y, onehot in batches:
        record: list[float] = []
        t1 = layers.context(onehot.flatten(1)).view(x.shape[0], 4, 14, 14)
        h, t = learn(optimizers[0], layers.input(x), t1, onehot, record)
        h, t = learn(optimizers[1], layers.block1(h), layers.block1(t), t, record)
        h, t = F.max_pool2d(h, 2).flatten(1), F.max_pool2d(t, 2).flatten(1)  # Fixed pooling, Forward flattening
        h, t = learn(optimizers[2], layers.block2(h), layers.block2(t), t, record)
        optimizers[3].zero_grad()
        F.cross_entropy(layers.head(h), y).backward()
        optimizers[3].step()
        losses.append(record)
    return losses


def our_model(layers: Layers, loss, deferred: P.LocalLosses | None, record: list[Tensor]) -> nn.Module:
    def recorded(*args: Tensor) -> Tensor:
        value = loss(*args)
        record.append(value.detach())
        return value

    def adam(module: nn.Module) -> torch.optim.Optimizer | None:
        return None if deferred is not None else torch.optim.Adam(module.parameters(), lr=1e-3)

    manager = sigprop.managers.Preset(sigprop.models.Forward, P.Loss, P.signals.Loss, adam)
    manager.config_signal(loss=recorded, deferred=deferred)
    manager.config_propagator(loss=recorded, deferred=deferred)
    manager.set_signal(S.ProjectionContextInput(layers.context, layers.input, (10,), (4, 14, 14)))
    network = nn.Sequential(
        manager.add_propagator(layers.block1),
        manager.add_propagator(nn.MaxPool2d(2), P.Fixed),
        manager.add_propagator(nn.Flatten(), P.Forward),
        manager.add_propagator(layers.block2),
        manager.add_propagator(layers.head, P.Identity),
    )
    return manager.set_model(network)


def our_run(layers: Layers, batches, loss, fused: bool) -> list[list[float]]:
    deferred = P.LocalLosses() if fused else None
    record: list[Tensor] = []
    model = our_model(layers, loss, deferred, record)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    local = torch.optim.Adam(P.local_parameters(model), lr=1e-3) if fused else None
    model.train()
    for x, y, onehot in batches:
        train_step(model, x, onehot, y, optimizer, deferred, local)
    values = [float(v) for v in record]
    return [values[i : i + 3] for i in range(0, len(values), 3)]


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("fused", [False, True], ids=["layerwise", "fused"])
def test_twenty_model_steps_are_the_reference_run(digits, name: str, fused: bool) -> None:
    """20 steps on real MNIST: every local loss and every weight, ours (per-layer steps, or one
    fused backward) against the reference's loop, in float64."""
    x, y, onehot = digits
    batches = [(x[i : i + 32], y[i : i + 32], onehot[i : i + 32]) for i in range(0, 640, 32)]
    loss, formula = LOSSES[name]
    reference, ours = Layers(), Layers()
    expected = reference_run(reference, batches, formula)
    got = our_run(ours, batches, loss, fused)
    assert len(got) == len(expected) == 20
    for step, (a, b) in enumerate(zip(got, expected)):
        assert a == pytest.approx(b, rel=1e-12, abs=0), f"step {step}"
    # Weights to 1e-9 of each tensor's scale: Adam divides by the gradient's magnitude, so an
    # element whose gradient is near 0 turns rounding-level differences into larger ones.
    for ours_module, ref_module in zip(ours.modules(), reference.modules()):
        for (n, p), q in zip(ours_module.named_parameters(), ref_module.parameters()):
            assert float((p - q).detach().abs().max()) <= 1e-9 * float(q.detach().abs().max()), n
