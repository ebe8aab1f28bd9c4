"""The local losses and similarity helpers against values computed by hand.

Every expected value here comes from plain-python arithmetic (``math.exp``/``math.log`` on
nested lists) or from an explicit loop over spatial positions, never from the library's helpers.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sigprop import loss as L

Matrix = list[list[float]]


# --- plain-python oracle ---------------------------------------------------------------------


def matmul_t(a: Matrix, b: Matrix) -> Matrix:
    """``a @ b.T`` on lists."""
    return [[sum(x * y for x, y in zip(row_a, row_b)) for row_b in b] for row_a in a]


def log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    lse = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - lse for v in row]


def soft_ce(y: Matrix, target: Matrix) -> float:
    """Mean over rows of ``-sum_j target[i][j] * log_softmax(y[i])[j]``."""
    rows = [-sum(t * lp for t, lp in zip(trow, log_softmax(yrow))) for yrow, trow in zip(y, target)]
    return sum(rows) / len(rows)


def max_all_mask(yy: Matrix) -> Matrix:
    return [[1.0 if v == max(row) else 0.0 for v in row] for row in yy]


def first_argmax(row: list[float]) -> int:
    return row.index(max(row))


def topk_mask(yy: Matrix, k: int) -> Matrix:
    """Rows' top-k as 0/1 (only used where the k-th and (k+1)-th values differ)."""
    mask = []
    for row in yy:
        kth = sorted(row, reverse=True)[min(k, len(row)) - 1]
        mask.append([1.0 if v >= kth else 0.0 for v in row])
    return mask


def per_position_scores(a: torch.Tensor, b: torch.Tensor) -> Matrix:
    """For ``(B, C, H, W)`` tensors: ``a[:, :, p, q] @ b[:, :, p, q].T`` for every position, averaged."""
    n_a, channels, height, width = a.shape
    n_b = b.shape[0]
    total = [[0.0] * n_b for _ in range(n_a)]
    for p in range(height):
        for q in range(width):
            for i in range(n_a):
                for j in range(n_b):
                    total[i][j] += sum(float(a[i, c, p, q]) * float(b[j, c, p, q]) for c in range(channels))
    return [[v / (height * width) for v in row] for row in total]


def T(rows: Matrix) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def call(loss, h1: torch.Tensor, t1: torch.Tensor, t0: torch.Tensor, context: torch.Tensor | None = None) -> float:
    """A loss called as a propagator calls it (``h0`` is unused by these losses)."""
    return float(loss(None, h1, t1, h1, t0, context))


# --- 2-D, written out ------------------------------------------------------------------------

# y = h1 @ t1.T = [[1, 0, 2], [2, 2, 0], [2, 1, 2]]
H1 = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
T1 = [[1.0, 1.0], [0.0, 1.0], [2.0, 0.0]]
# labels 0, 1, 0 as one-hot: yy = t0 @ t0.T = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
T0_ONEHOT = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]


def test_scores_by_hand() -> None:
    assert matmul_t(H1, T1) == [[1, 0, 2], [2, 2, 0], [2, 1, 2]]
    assert matmul_t(T0_ONEHOT, T0_ONEHOT) == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def test_v9_one_hot_labels_written_out() -> None:
    # Rows 0 and 2 share label 0, so both count as matches (a tie in yy); row 1 matches itself.
    lse0 = math.log(math.e + 1 + math.e**2)  # row 0 of y: [1, 0, 2]
    lse1 = math.log(2 * math.e**2 + 1)  # row 1: [2, 2, 0]
    lse2 = math.log(2 * math.e**2 + math.e)  # row 2: [2, 1, 2]
    expected = ((lse0 - 1) + (lse0 - 2) + (lse1 - 2) + (lse2 - 2) + (lse2 - 2)) / 3
    assert call(L.v9_input_target_max_all, T(H1), T(T1), T(T0_ONEHOT)) == pytest.approx(expected, rel=1e-12)


def test_v14_takes_the_first_max() -> None:
    # argmax of yy rows [1,0,1], [0,1,0], [1,0,1] is the first max: targets 0, 1, 0.
    lse0 = math.log(math.e + 1 + math.e**2)
    lse1 = math.log(2 * math.e**2 + 1)
    lse2 = math.log(2 * math.e**2 + math.e)
    expected = ((lse0 - 1) + (lse1 - 2) + (lse2 - 2)) / 3
    assert call(L.v14_input_target_max_rand, T(H1), T(T1), T(T0_ONEHOT)) == pytest.approx(expected, rel=1e-12)


def test_v9_counts_every_tie_in_a_row() -> None:
    t0 = [[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]]  # yy = [[2, 2, 1], [2, 2, 1], [1, 1, 1]]: row 2 is all ties
    yy = matmul_t(t0, t0)
    mask = max_all_mask(yy)
    assert mask == [[1, 1, 0], [1, 1, 0], [1, 1, 1]]
    y = matmul_t(H1, T1)
    assert call(L.v9_input_target_max_all, T(H1), T(T1), T(t0)) == pytest.approx(soft_ce(y, mask), rel=1e-12)
    # v14 on the same targets: one target per row, the first of the ties.
    assert [first_argmax(row) for row in yy] == [0, 0, 0]
    expected = sum(-log_softmax(row)[0] for row in y) / 3
    assert call(L.v14_input_target_max_rand, T(H1), T(T1), T(t0)) == pytest.approx(expected, rel=1e-12)


def test_v15_topk_mask() -> None:
    h1 = [[1.0, 0.0, 0.5], [0.0, 2.0, 1.0], [1.0, 1.0, 0.0], [0.5, 0.0, 1.0]]
    t1 = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [2.0, 0.0, 0.0]]
    # Targets whose similarities have ties inside the top 2 but a gap after the 2nd value.
    t0 = [[3.0, 0.0], [3.0, 0.0], [0.0, 1.0], [1.0, 2.0]]
    yy = matmul_t(t0, t0)  # [[9, 9, 0, 3], [9, 9, 0, 3], [0, 0, 1, 2], [3, 3, 2, 5]]
    y = matmul_t(h1, t1)
    # Rows 0 and 1 tie inside their top 2 (both 9s count); row 2's top 2 are distinct.
    assert topk_mask(yy, 2)[:3] == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]]
    # Row 3 ([3, 3, 2, 5]) ties at the 2nd place: its mask is the max plus one of the tied 3s.
    loss = L.v15_input_target_topk(2)
    got = loss(None, T(h1), T(t1), T(h1), T(t0), None)
    assert isinstance(got, torch.Tensor) and got.dim() == 0
    lsm = [log_softmax(row) for row in y]
    rows_012 = [-(lsm[0][0] + lsm[0][1]), -(lsm[1][0] + lsm[1][1]), -(lsm[2][2] + lsm[2][3])]
    row3_options = [-(lsm[3][3] + lsm[3][0]), -(lsm[3][3] + lsm[3][1])]
    assert any(float(got) == pytest.approx((sum(rows_012) + r3) / 4, rel=1e-12) for r3 in row3_options)


def test_v15_distinct_similarities() -> None:
    h1 = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    t1 = [[1.0, 1.0], [0.0, 1.0], [2.0, 0.0]]
    t0 = [[3.0, 0.0], [2.0, 1.0], [0.0, 1.0]]
    yy = matmul_t(t0, t0)  # [[9, 6, 0], [6, 5, 1], [0, 1, 1]]
    y = matmul_t(h1, t1)
    for k, expected_mask in ((1, [[1, 0, 0], [1, 0, 0], [0, 1, 1]]), (2, [[1, 1, 0], [1, 1, 0], [0, 1, 1]])):
        mask = topk_mask(yy, k)
        assert mask == expected_mask
        if k == 1:
            continue  # row 2 has tied maxima: checked by v9 instead
        assert call(L.v15_input_target_topk(k), T(h1), T(t1), T(t0)) == pytest.approx(soft_ce(y, mask), rel=1e-12)
    # topk larger than the batch is clamped: every target counts.
    ones = [[1.0] * 3 for _ in range(3)]
    assert call(L.v15_input_target_topk(10), T(h1), T(t1), T(t0)) == pytest.approx(soft_ce(y, ones), rel=1e-12)


def test_v15_top1_with_a_unique_max_is_v14() -> None:
    t0 = [[3.0, 0.0], [2.0, 1.0], [1.0, 3.0]]  # yy rows have unique maxima
    a = call(L.v15_input_target_topk(1), T(H1), T(T1), T(t0))
    b = call(L.v14_input_target_max_rand, T(H1), T(T1), T(t0))
    assert a == pytest.approx(b, rel=1e-12)


def test_v15_rejects_topk_below_one() -> None:
    with pytest.raises(ValueError):
        L.v15_input_target_topk(0)


def test_v1_against_class_indices() -> None:
    # One signal row per class (3 classes); y = h1 @ t1.T = [[1, 0, 2], [2, 2, 0], [2, 1, 2]].
    labels = [2, 0, 1]
    y = matmul_t(H1, T1)
    expected = -sum(log_softmax(row)[c] for row, c in zip(y, labels)) / 3
    got = call(L.v1_input_label_direct, T(H1), T(T1), T(T0_ONEHOT), torch.tensor(labels))
    assert got == pytest.approx(expected, rel=1e-12)
    # One-hot context gives the same value.
    onehot = torch.eye(3, dtype=torch.float64)[labels]
    assert call(L.v1_input_label_direct, T(H1), T(T1), T(T0_ONEHOT), onehot) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):
        call(L.v1_input_label_direct, T(H1), T(T1), T(T0_ONEHOT), None)


def test_losses_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        call(L.v9_input_target_max_all, torch.ones(3, 2), torch.ones(3, 4), torch.ones(3, 2))


class Propagator:
    """Stands for the propagator a loss receives as ``sp_learn``: only its setting matters here."""

    def __init__(self, per_class_signal: bool) -> None:
        self.per_class_signal = per_class_signal


@pytest.mark.parametrize("loss", [L.v9_input_target_max_all, L.v14_input_target_max_rand, L.v15_input_target_topk(3)])
def test_per_class_signal_is_read_from_the_propagator_not_the_shapes(loss) -> None:
    """With as many samples as classes, the same tensors give the loss the setting asks for."""
    labels = torch.tensor([0, 0, 1])  # 3 samples, 3 classes (class 2 absent)
    h1 = T(H1)
    t_class = T(T1)  # row k: the signal of class k
    t0_class = torch.eye(3, dtype=torch.float64)
    # One row per class: y[i, j] = h1[i] . t_class[labels[j]], yy[i, j] = [labels[i] == labels[j]].
    y = matmul_t(H1, [T1[c] for c in labels.tolist()])
    yy = [[1.0 if a == b else 0.0 for b in labels.tolist()] for a in labels.tolist()]
    per_class = float(loss(Propagator(True), h1, t_class, h1, t0_class, labels))
    if loss is L.v14_input_target_max_rand:
        expected = sum(-log_softmax(row)[first_argmax(m)] for row, m in zip(y, yy)) / 3
    elif loss is L.v9_input_target_max_all:
        expected = soft_ce(y, max_all_mask(yy))
    else:
        expected = soft_ce(y, [[1.0] * 3] * 3)  # the top 3 of 3 targets: all of them
    assert per_class == pytest.approx(expected, rel=1e-12)
    # One row per sample (the default, also without a propagator): the rows are read as samples.
    per_sample = float(loss(Propagator(False), h1, t_class, h1, t0_class, labels))
    assert per_sample == float(loss(None, h1, t_class, h1, t0_class, labels))
    assert per_sample != pytest.approx(per_class)


def test_a_signal_contradicting_the_setting_is_a_clear_error() -> None:
    h1, t_class, t0_class = torch.ones(4, 2), torch.ones(3, 2), torch.eye(3)
    labels = torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match="per_class_signal=True"):
        L.v9_input_target_max_all(Propagator(False), h1, t_class, h1, t0_class, labels)
    with pytest.raises(ValueError, match="per_class_signal=True"):
        L.v9_input_target_max_all(None, h1, t_class, h1, t0_class, labels)
    # One-hot labels of 5 classes, a signal of 3 rows.
    with pytest.raises(ValueError, match="3 rows for 5 classes"):
        L.v15_input_target_topk(2)(Propagator(True), h1, t_class, h1, t0_class, F.one_hot(labels, 5).float())
    with pytest.raises(ValueError, match="context"):
        L.v14_input_target_max_rand(Propagator(True), h1, t_class, h1, t0_class, None)


@pytest.mark.parametrize("loss", [L.v9_input_target_max_all, L.v14_input_target_max_rand, L.v15_input_target_topk(2), L.v1_input_label_direct])
def test_a_label_without_a_row_in_a_per_class_signal_is_a_clear_error(loss) -> None:
    """Class indices beyond the rows of a signal of one row per class (3 rows, a label 5)."""
    h1, t_class, t0_class = torch.ones(4, 2), torch.ones(3, 2), torch.eye(3)
    with pytest.raises(ValueError, match="^label 5 has no row in a signal of 3 rows: per_class_signal=True needs one signal row per class"):
        loss(Propagator(True), h1, t_class, h1, t0_class, torch.tensor([0, 1, 2, 5]))


# --- 4-D: per spatial position, then the mean over positions ---------------------------------


def small_ints(*shape: int, seed: int) -> torch.Tensor:
    """Integer-valued float64 tensors: exact arithmetic, and ties in the similarities."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 3, shape, generator=g).to(torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_4d_losses_against_a_loop_over_positions(seed: int) -> None:
    h1, t1 = small_ints(4, 3, 2, 3, seed=seed), small_ints(4, 3, 2, 3, seed=seed + 10)
    # t0: samples 0/2 and 1/3 are identical twins, so every row of yy ties with its twin.
    base = small_ints(2, 2, 2, 3, seed=seed + 20)
    t0 = torch.cat([base, base])
    y = per_position_scores(h1, t1)
    yy = per_position_scores(t0, t0)
    mask = max_all_mask(yy)
    assert mask == [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    assert call(L.v9_input_target_max_all, h1, t1, t0) == pytest.approx(soft_ce(y, mask), rel=1e-10)
    expected14 = sum(-log_softmax(row)[first_argmax(yrow)] for row, yrow in zip(y, yy)) / 4
    assert call(L.v14_input_target_max_rand, h1, t1, t0) == pytest.approx(expected14, rel=1e-10)
    assert [first_argmax(row) for row in yy] == [0, 1, 0, 1], "v14 takes the first of the tied twins"
    # v15 with k=2: each row's top 2 are itself and its twin, strictly above the rest.
    mask2 = topk_mask(yy, 2)
    assert mask2 == mask
    assert call(L.v15_input_target_topk(2), h1, t1, t0) == pytest.approx(soft_ce(y, mask2), rel=1e-10)
    assert call(L.v15_input_target_topk(1), h1, t1, t0) == pytest.approx(expected14, rel=1e-10)
    labels = torch.tensor([3, 0, 1, 1])
    expected1 = -sum(log_softmax(row)[int(c)] for row, c in zip(y, labels)) / 4
    assert call(L.v1_input_label_direct, h1, t1, t0, labels) == pytest.approx(expected1, rel=1e-10)


def test_4d_v9_with_real_valued_tensors() -> None:
    g = torch.Generator().manual_seed(3)
    h1, t1 = torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    t0 = torch.eye(5)[[0, 1, 0, 2, 1]].view(5, 5, 1, 1).expand(5, 5, 3, 3)  # one-hot labels at every position
    y = per_position_scores(h1, t1)
    mask = max_all_mask(per_position_scores(t0, t0))
    assert mask[0] == [1, 0, 1, 0, 0] and mask[3] == [0, 0, 0, 1, 0]
    assert call(L.v9_input_target_max_all, h1, t1, t0) == pytest.approx(soft_ce(y, mask), rel=1e-5)


def test_losses_have_gradients_for_the_layer_output_only() -> None:
    h1 = T(H1).requires_grad_()
    t1 = T(T1).requires_grad_()
    L.v9_input_target_max_all(None, h1, t1, h1, T(T0_ONEHOT), None).backward()
    # d/dy of mean soft-CE = (softmax(y) * sum(mask) - mask) / B; d/dh1 = dy @ t1.
    y, mask = matmul_t(H1, T1), max_all_mask(matmul_t(T0_ONEHOT, T0_ONEHOT))
    dy = [
        [(math.exp(lp) * sum(mrow) - m) / 3 for lp, m in zip(log_softmax(yrow), mrow)]
        for yrow, mrow in zip(y, mask)
    ]
    dh1 = [[sum(dy[i][j] * T1[j][c] for j in range(3)) for c in range(2)] for i in range(3)]
    torch.testing.assert_close(h1.grad, T(dh1))


# --- similarity helpers ----------------------------------------------------------------------


def centred_unit(row: list[float]) -> list[float]:
    mean = sum(row) / len(row)
    centred = [v - mean for v in row]
    norm = math.sqrt(sum(v * v for v in centred))
    return [v / (1e-8 + norm) for v in centred]


def test_similarity_format_2d() -> None:
    x = [[1.0, 2.0, 3.0], [0.0, 0.0, 2.0]]
    s = 1 / math.sqrt(2)
    expected = [[-s, 0.0, s], [-1 / math.sqrt(6), -1 / math.sqrt(6), 2 / math.sqrt(6)]]
    torch.testing.assert_close(L.similarity_format(T(x)), T(expected), rtol=1e-7, atol=1e-7)
    for row, expected_row in zip(x, expected):
        assert centred_unit(row) == pytest.approx(expected_row)


def test_similarity_format_trailing_dims() -> None:
    g = torch.Generator().manual_seed(0)
    # Up to 8 trailing values: flattened into the feature dimension.
    x = torch.randn(2, 3, 2, 4, generator=g, dtype=torch.float64)
    expected = [centred_unit(row) for row in x.reshape(2, -1).tolist()]
    torch.testing.assert_close(L.similarity_format(x), T(expected))
    # More than 8: reduced to their (unbiased) standard deviation first.
    x = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64)
    stds = []
    for sample in x.tolist():
        row = []
        for channel in sample:
            values = [v for r in channel for v in r]
            mean = sum(values) / len(values)
            row.append(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)))
        stds.append(row)
    torch.testing.assert_close(L.similarity_format(x), T([centred_unit(r) for r in stds]))
    # no_std: flattened instead.
    flat = [centred_unit(row) for row in x.reshape(2, -1).tolist()]
    torch.testing.assert_close(L.similarity_format(x, no_std=True), T(flat))


def test_similarity_matrices() -> None:
    x = [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.0, 0.0, 2.0]]
    y = [[1.0, 0.0, 0.0], [2.0, 4.0, 6.0]]
    ux, uy = [centred_unit(r) for r in x], [centred_unit(r) for r in y]
    sxx = matmul_t(ux, ux)
    assert sxx[0][1] == pytest.approx(-1.0) and sxx[0][0] == pytest.approx(1.0)
    torch.testing.assert_close(L.similarity_matrix_x(T(x)), T(sxx).clamp(-1, 1))
    torch.testing.assert_close(L.similarity_matrix_xy(T(x), T(y)), T(matmul_t(ux, uy)).clamp(-1, 1))
    got = L.similarity_matrix_x(T(x))
    assert float(got.max()) <= 1.0 and float(got.min()) >= -1.0


def test_soft_target_cross_entropy() -> None:
    x = [[1.0, 0.0, 2.0], [0.5, 0.5, -1.0]]
    target = [[1.0, 0.0, 1.0], [0.0, 0.25, 0.0]]
    per_row = [-sum(t * lp for t, lp in zip(trow, log_softmax(xrow))) for xrow, trow in zip(x, target)]
    lse0 = math.log(math.e + 1 + math.e**2)
    assert per_row[0] == pytest.approx((lse0 - 1) + (lse0 - 2))
    torch.testing.assert_close(L.soft_target_cross_entropy(T(x), T(target), reduction="none"), T(per_row))
    assert float(L.soft_target_cross_entropy(T(x), T(target))) == pytest.approx(sum(per_row) / 2)
    # With one-hot targets it is the ordinary cross-entropy.
    labels = torch.tensor([2, 0])
    onehot = F.one_hot(labels, 3).to(torch.float64)
    assert float(L.soft_target_cross_entropy(T(x), onehot)) == pytest.approx(float(F.cross_entropy(T(x), labels)))


def test_only_v1_declares_it_needs_a_per_class_signal() -> None:
    """The application rejects loss=v1 with a per-sample signal by asking the loss, not by name."""
    import functools


    assert L.needs_per_class_signal(L.v1_input_label_direct)
    assert L.needs_per_class_signal(functools.partial(L.v1_input_label_direct))
    for loss in (L.v9_input_target_max_all, L.v14_input_target_max_rand, L.v15_input_target_topk(6)):
        assert not L.needs_per_class_signal(loss)


def test_reference_similarity_helpers() -> None:
    """``format_*``/``sim_*``: the reference package's names, by hand on small tensors."""
    x = [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.0, 0.0, 2.0]]
    ux = [centred_unit(r) for r in x]
    torch.testing.assert_close(L.format_2dim_(T(x)), T(ux))
    torch.testing.assert_close(L.format_2dim_(T(x).view(3, 3, 1), format=False), T(x))
    torch.testing.assert_close(L.sim_2dim_(T(H1), T(T1)), T(matmul_t(H1, T1)))
    torch.testing.assert_close(L.format_sim_2dim_(T(x)), T(matmul_t(ux, ux)))
    # 4-D: positions first, each position's channel vectors centred and normalised.
    h = small_ints(3, 4, 2, 2, seed=7)
    positions = [[h[b, :, p, q].tolist() for b in range(3)] for p in range(2) for q in range(2)]
    unit = [[centred_unit(v) for v in pos] for pos in positions]
    torch.testing.assert_close(L.format_4dim_(h), T(unit))
    torch.testing.assert_close(L.format_4dim_(h, format=False), T(positions))
    torch.testing.assert_close(L.sim_4dim_(T(positions), T(positions)), T(per_position_scores(h, h)))
    sims = [matmul_t(pos, pos) for pos in unit]
    torch.testing.assert_close(L.format_sim_4dim_(h), T([[sum(s[i][j] for s in sims) / 4 for j in range(3)] for i in range(3)]))
