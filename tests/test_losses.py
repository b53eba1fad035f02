"""The ranking losses against plain-loop references of their definitions
(tests/reference_losses.py), a dense (N, N, N) oracle, gradcheck, and their input checks; the
index-first modules against the same references, their name / dense-matrix adapters against
the index path, and a tree past Tree.DENSE_LIMIT."""

from __future__ import annotations

import math

import geoopt
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_losses import (
    reference_global_rank_loss,
    reference_global_rank_loss_from_points,
    reference_lambda_rank_loss,
    reference_lambda_rank_loss_from_points,
    reference_rank_order_loss,
    reference_rank_order_loss_from_points,
)

from hyperloss.datasets import naics, random_tree
from hyperloss.geometry import LorentzDistance
from hyperloss.losses import (
    GlobalRankLoss,
    LambdaRankLoss,
    RankOrderListLoss,
    RankOrderPreservationLoss,
    global_rank_loss,
    lambda_rank_loss,
    rank_order_list_loss,
    rank_order_preservation_loss,
)
from hyperloss.relevance import RELEVANCE_EPS, tree_relevance
from hyperloss.trees import Tree, UnknownNodeError

F64 = torch.float64


def random_distances(n: int, seed: int, *, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    d = torch.rand(n, n, generator=generator, dtype=F64) * scale
    return ((d + d.T) / 2).fill_diagonal_(0.0)


def lorentz_points(n: int, dim: int, seed: int, *, std: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tangent = torch.randn(n, dim, generator=generator, dtype=F64) * std
    tangent = torch.cat([torch.zeros(n, 1, dtype=F64), tangent], dim=1)
    return geoopt.Lorentz().expmap0(tangent)


def grads_of(loss_fn, *tensors):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = loss_fn(*leaves)
    if not value.requires_grad:  # e.g. a reference on an empty input
        return value.detach(), [torch.zeros_like(leaf) for leaf in leaves]
    grads = torch.autograd.grad(value.sum(), leaves, allow_unused=True)
    grads = [
        torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads, strict=True)
    ]
    return value.detach(), grads


def euclidean(x, y):
    return (x - y).norm(dim=-1)


# ----------------------------------------------------------------------------------------------
# rank_order_preservation_loss (functional)


@pytest.mark.parametrize("reduction", ["violations", "mean", "sum", "none"])
@pytest.mark.parametrize("margin", [0.0, 0.3])
@pytest.mark.parametrize("min_distance", [0.1, 2.5])
def test_rank_order_matches_loop_reference(reduction, margin, min_distance):
    tree = random_tree(22, seed=3)
    tree_distances = tree.distances()
    d = random_distances(len(tree), seed=11)
    kwargs = dict(margin=margin, min_distance=min_distance, reduction=reduction)
    value, (grad,) = grads_of(
        lambda x: rank_order_preservation_loss(x, tree_distances, **kwargs), d
    )
    expected, (expected_grad,) = grads_of(
        lambda x: reference_rank_order_loss(x, tree_distances, **kwargs), d
    )
    assert value.shape == expected.shape
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-8)
    assert float(expected.abs().sum()) > 0  # the case is not trivial


def test_rank_order_fractional_levels_and_asymmetric_distances():
    # lineal_discount gives non-integer tree distances; d need not be symmetric.
    tree = random_tree(18, seed=5)
    tree_distances = tree.distances(lineal_discount=0.5)
    generator = torch.Generator().manual_seed(2)
    d = torch.rand(18, 18, generator=generator, dtype=F64) * 4
    for reduction in ("violations", "none"):
        kwargs = dict(margin=0.2, min_distance=0.0, reduction=reduction)
        value, (grad,) = grads_of(
            lambda x, kw=kwargs: rank_order_preservation_loss(x, tree_distances, **kw), d
        )
        expected, (expected_grad,) = grads_of(
            lambda x, kw=kwargs: reference_rank_order_loss(x, tree_distances, **kw), d
        )
        torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-8)


def dense_rank_order_loss(d, t, margin, min_distance):
    """The definition on (N, N, N) tensors: an independent oracle for larger N."""
    n = d.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool)
    candidate = (t >= min_distance) & off_diagonal
    pair = candidate[:, :, None] & candidate[:, None, :] & (t[:, :, None] < t[:, None, :])
    hinge = torch.relu(d[:, :, None] - d[:, None, :] + margin)
    terms = torch.where(pair, hinge, torch.zeros_like(hinge))
    positive = int(((terms > 0) & pair).sum())
    return terms.sum() / max(positive, 1), terms.sum(dim=(1, 2))


def test_rank_order_matches_dense_oracle_and_is_chunk_invariant():
    tree = random_tree(120, seed=7)
    t = tree.distances()
    d = random_distances(120, seed=1, scale=6.0)
    value, (grad,) = grads_of(
        lambda x: rank_order_preservation_loss(x, t, margin=0.1, min_distance=0.1), d
    )
    expected, (expected_grad,) = grads_of(lambda x: dense_rank_order_loss(x, t, 0.1, 0.1)[0], d)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-8)
    per_anchor = dense_rank_order_loss(d, t, 0.1, 0.1)[1]
    for chunk_size in (1, 7, 1000):
        chunked = rank_order_preservation_loss(d, t, reduction="none", chunk_size=chunk_size)
        torch.testing.assert_close(chunked, per_anchor, rtol=1e-10, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=7),
    margin=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
    min_distance=st.sampled_from([0.0, 0.1, 1.0, 2.0]),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_rank_order_exact_with_ties_at_the_hinge(n, margin, min_distance, seed):
    # Integer distances and margins: many terms sit exactly at relu's kink (value 0); they must
    # count as not positive and get gradient 0, as torch.relu does.
    generator = torch.Generator().manual_seed(seed)
    d = torch.randint(0, 4, (n, n), generator=generator).to(F64)
    t = torch.randint(0, 4, (n, n), generator=generator).to(F64)
    for reduction in ("violations", "mean", "none"):
        kwargs = dict(margin=margin, min_distance=min_distance, reduction=reduction)
        value, (grad,) = grads_of(lambda x, kw=kwargs: rank_order_preservation_loss(x, t, **kw), d)
        expected, (expected_grad,) = grads_of(
            lambda x, kw=kwargs: reference_rank_order_loss(x, t, **kw), d
        )
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)


def test_rank_order_small_and_degenerate_inputs_are_zero():
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
    d = torch.rand(2, 2, dtype=F64, requires_grad=True)
    for reduction in ("violations", "mean", "sum"):
        loss = rank_order_preservation_loss(d, t, reduction=reduction)
        assert loss.shape == () and float(loss.detach()) == 0.0
    assert rank_order_preservation_loss(d, t, reduction="none").shape == (2,)
    # all candidates at one tree distance: no term at all
    t_equal = torch.ones(5, 5, dtype=F64).fill_diagonal_(0.0)
    loss = rank_order_preservation_loss(torch.rand(5, 5, dtype=F64), t_equal)
    assert loss.item() == 0.0
    # min_distance above every tree distance: no candidate
    loss = rank_order_preservation_loss(torch.rand(5, 5, dtype=F64), 3 * t_equal, min_distance=4)
    assert loss.item() == 0.0
    empty = torch.zeros(0, 0, dtype=F64)
    assert rank_order_preservation_loss(empty, empty, reduction="none").shape == (0,)


def test_rank_order_correct_order_gives_zero_and_violations_are_averaged():
    # Embedding distances equal to the tree distances and margin 0: no violation.
    t = random_tree(15, seed=2).distances()
    assert float(rank_order_preservation_loss(t.clone(), t, margin=0.0)) == 0.0
    # with a margin below the smallest gap (1) every term is margin - gap < 0: still none
    assert float(rank_order_preservation_loss(t.clone(), t, margin=0.5)) == 0.0
    # reversing the order makes every term positive: 'violations' == 'mean'
    reversed_d = 10.0 - t
    violations = rank_order_preservation_loss(reversed_d, t, margin=0.1)
    mean = rank_order_preservation_loss(reversed_d, t, margin=0.1, reduction="mean")
    assert float(violations) > 0
    torch.testing.assert_close(violations, mean, rtol=1e-12, atol=0)


def test_rank_order_float32_close_to_float64():
    t = random_tree(40, seed=4).distances()
    d = random_distances(40, seed=9)
    value64, (grad64,) = grads_of(lambda x: rank_order_preservation_loss(x, t), d)
    value32, (grad32,) = grads_of(lambda x: rank_order_preservation_loss(x, t), d.float())
    assert value32.dtype == torch.float32 and grad32.dtype == torch.float32
    torch.testing.assert_close(value32.double(), value64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad32.double(), grad64, rtol=1e-5, atol=1e-6)


def test_rank_order_gradcheck_through_lorentz_distance():
    tree = random_tree(9, seed=1)
    t = tree.distances()
    points = lorentz_points(9, 2, seed=4).requires_grad_(True)
    distance = LorentzDistance()

    def loss(x):
        d = distance(x[:, None, :], x[None, :, :])
        return rank_order_preservation_loss(d, t, margin=0.05, reduction="mean")

    assert torch.autograd.gradcheck(loss, (points,), eps=1e-6, atol=1e-7)
    d = random_distances(9, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: rank_order_preservation_loss(x, t, reduction="none"), (d,), eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(margin=-0.1), "margin"),
        (dict(margin=float("nan")), "margin"),
        (dict(min_distance=float("inf")), "min_distance"),
        (dict(reduction="max"), "reduction"),
        (dict(chunk_size=0), "chunk_size"),
    ],
)
def test_rank_order_rejects_bad_options(kwargs, match):
    t = random_tree(5, seed=0).distances()
    with pytest.raises(ValueError, match=match):
        rank_order_preservation_loss(random_distances(5, seed=0), t, **kwargs)


def test_rank_order_accepts_huge_finite_distances():
    # The finiteness check sums first; an overflowing sum of finite entries must not be
    # mistaken for a NaN / inf.
    t = random_tree(6, seed=0).distances()
    d = random_distances(6, seed=0) * 1e307
    loss = rank_order_preservation_loss(d, t, reduction="none")
    assert loss.shape == (6,)
    bad = d.clone()
    bad[0, 1] = float("inf")
    with pytest.raises(ValueError, match="embedding_distances"):
        rank_order_preservation_loss(bad, t)


def test_rank_order_rejects_bad_tensors():
    t = random_tree(5, seed=0).distances()
    d = random_distances(5, seed=0)
    with pytest.raises(ValueError, match="tree_distances.*square"):
        rank_order_preservation_loss(d, t[:, :4])
    with pytest.raises(ValueError, match="embedding_distances.*square"):
        rank_order_preservation_loss(d[0], t)
    with pytest.raises(ValueError, match="tree_distances.*shape"):
        rank_order_preservation_loss(d, t[:4, :4])
    bad = d.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="embedding_distances.*NaN"):
        rank_order_preservation_loss(bad, t)
    with pytest.raises(TypeError, match="embedding_distances"):
        rank_order_preservation_loss(d.long(), t)


# ----------------------------------------------------------------------------------------------
# lambda_rank_loss (functional)


def random_lists(batch: int, k: int, seed: int):
    """Embedding and tree distances of (B, 1 + K) lists from a random tree."""
    generator = torch.Generator().manual_seed(seed)
    tree = random_tree(60, seed=seed)
    t = tree.distances()
    anchors = torch.randint(0, 60, (batch,), generator=generator)
    items = torch.randint(0, 60, (batch, 1 + k), generator=generator)
    tree_distances = t[anchors[:, None], items]
    d = torch.rand(batch, 1 + k, generator=generator, dtype=F64) * 5
    return d, tree_distances


@pytest.mark.parametrize("ndcg_k", [1, 3, 10, 50])
@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_lambda_rank_matches_loop_reference(ndcg_k, sigma):
    d, t = random_lists(7, 9, seed=ndcg_k)
    for reduction in ("mean", "sum", "none"):
        kwargs = dict(sigma=sigma, ndcg_k=ndcg_k, reduction=reduction)
        value, (grad,) = grads_of(lambda x, kw=kwargs: lambda_rank_loss(x, t, **kw), d)
        expected, (expected_grad,) = grads_of(
            lambda x, kw=kwargs: reference_lambda_rank_loss(x, t, **kw), d
        )
        assert value.shape == expected.shape
        torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
        assert float(expected.sum()) > 0


def test_lambda_rank_masks_match_reference():
    d, t = random_lists(8, 12, seed=21)
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(8, 13, generator=generator) > 0.3
    mask[2] = False  # an invalid anchor: not counted
    mask[3] = False
    mask[3, 4] = True  # a single item: counted, contributes 0
    d_padded = d.clone()
    d_padded[~mask] = float("nan")  # padding may hold anything
    kwargs = dict(sigma=1.0, ndcg_k=5, mask=mask)
    value, (grad,) = grads_of(lambda x: lambda_rank_loss(x, t, **kwargs), d_padded)
    expected, (expected_grad,) = grads_of(lambda x: reference_lambda_rank_loss(x, t, **kwargs), d)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
    assert bool((grad[~mask] == 0).all())
    per_anchor = lambda_rank_loss(d_padded, t, reduction="none", **kwargs)
    assert float(per_anchor[2]) == 0.0 and float(per_anchor[3]) == 0.0
    torch.testing.assert_close(value, per_anchor.sum() / 7)  # 7 valid anchors of 8


def test_lambda_rank_ties_equal_relevance_and_extreme_scores():
    # Tied scores: positions by list order (stable), gradient sigmoid(0) = 0.5 per pair.
    t = torch.tensor([[1.0, 2.0, 2.0, 3.0], [2.0, 2.0, 2.0, 2.0]], dtype=F64)
    d = torch.tensor([[1.0, 1.0, 0.5, 1.0], [0.3, 0.1, 0.2, 0.4]], dtype=F64)
    value, (grad,) = grads_of(lambda x: lambda_rank_loss(x, t, ndcg_k=2), d)
    expected, (expected_grad,) = grads_of(lambda x: reference_lambda_rank_loss(x, t, ndcg_k=2), d)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
    # all-equal relevance: loss 0 for that anchor, and it counts in the mean
    per_anchor = lambda_rank_loss(d, t, ndcg_k=2, reduction="none")
    assert float(per_anchor[1]) == 0.0
    torch.testing.assert_close(value, per_anchor[0] / 2)
    # huge score gaps: finite value and gradient (no exp overflow)
    far = torch.tensor([[2000.0, 0.0, 1000.0]], dtype=F64, requires_grad=True)
    loss = lambda_rank_loss(far, torch.tensor([[1.0, 2.0, 3.0]], dtype=F64))
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() > 100
    assert bool(torch.isfinite(far.grad).all())


def test_lambda_rank_falls_as_the_list_gets_ordered():
    t = torch.arange(1.0, 11.0, dtype=F64)[None, :]
    ordered = t.clone()
    shuffled = t[:, torch.randperm(10, generator=torch.Generator().manual_seed(0))]
    reverse = t.flip(1)
    losses = [float(lambda_rank_loss(x, t, ndcg_k=5)) for x in (ordered, shuffled, reverse)]
    assert 0 <= losses[0] < losses[1] < losses[2]
    # scaling a correct ordering up drives the loss toward 0
    assert float(lambda_rank_loss(50 * ordered, t, ndcg_k=5)) < 1e-15


def test_lambda_rank_gradcheck_and_float32():
    d, t = random_lists(4, 6, seed=3)
    d.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: lambda_rank_loss(x, t, ndcg_k=4), (d,), eps=1e-6)
    value64 = lambda_rank_loss(d, t, ndcg_k=4)
    value32 = lambda_rank_loss(d.detach().float(), t.float(), ndcg_k=4)
    assert value32.dtype == torch.float32
    torch.testing.assert_close(value32.double(), value64.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=-1.0), "sigma"),
        (dict(ndcg_k=0), "ndcg_k"),
        (dict(reduction="violations"), "reduction"),
        (dict(mask=torch.ones(3, 4, dtype=torch.bool)), "mask"),
    ],
)
def test_lambda_rank_rejects_bad_options(kwargs, match):
    d, t = random_lists(3, 4, seed=0)
    with pytest.raises(ValueError, match=match):
        lambda_rank_loss(d, t, **kwargs)


def test_lambda_rank_rejects_bad_tensors():
    d, t = random_lists(3, 4, seed=0)
    with pytest.raises(ValueError, match="embedding_distances"):
        lambda_rank_loss(d[0], t[0])
    with pytest.raises(ValueError, match="tree_distances"):
        lambda_rank_loss(d, t[:, :3])
    bad = d.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="embedding_distances.*inf"):
        lambda_rank_loss(bad, t)


def test_lambda_rank_rejects_a_non_bool_mask():
    d, t = random_lists(3, 4, seed=0)
    with pytest.raises(TypeError, match="mask.*bool"):
        lambda_rank_loss(d, t, mask=torch.ones(3, 5))
    with pytest.raises(TypeError, match="mask"):
        lambda_rank_loss(d, t, mask=[[True] * 5] * 3)


def test_lambda_rank_relevance_callable_matches_reference():
    d, t = random_lists(6, 7, seed=5)

    def grades(tree_distances, mask=None):  # binary: relevant within tree distance 2
        return (tree_distances <= 2).to(torch.float64)

    mask = torch.ones(6, 8, dtype=torch.bool)
    mask[1, 3:] = False
    for m in (None, mask):
        kwargs = dict(ndcg_k=4, mask=m)
        value, (grad,) = grads_of(
            lambda x, kw=kwargs: lambda_rank_loss(x, t, relevance=grades, **kw), d
        )
        expected, (expected_grad,) = grads_of(
            lambda x, kw=kwargs: reference_lambda_rank_loss(
                x, t, relevance=lambda tj, t_max: float(tj <= 2), **kw
            ),
            d,
        )
        torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
        assert float(expected) > 0
    # the default is tree_relevance: passing it explicitly changes nothing
    torch.testing.assert_close(
        lambda_rank_loss(d, t, relevance=tree_relevance), lambda_rank_loss(d, t), rtol=0, atol=0
    )
    # all grades 0: no pair, loss 0 (not NaN)
    zero = lambda_rank_loss(d, t, relevance=lambda t, mask=None: torch.zeros_like(t))
    assert float(zero) == 0.0
    with pytest.raises(ValueError, match="relevance.*shape"):
        lambda_rank_loss(d, t, relevance=lambda t, mask=None: t[:, :2])
    with pytest.raises(ValueError, match="relevance.*negative"):
        lambda_rank_loss(d, t, relevance=lambda t, mask=None: -t)
    with pytest.raises(ValueError, match="relevance.*NaN"):
        lambda_rank_loss(d, t, relevance=lambda t, mask=None: t * float("nan"))
    with pytest.raises(TypeError, match="relevance"):
        lambda_rank_loss(d, t, relevance=3)


# ----------------------------------------------------------------------------------------------
# tree_relevance (the one NDCG relevance)


def test_tree_relevance_formula_mask_and_numpy():
    t = torch.tensor([[0.0, 1.0, 3.0, 2.0], [2.0, 2.0, 5.0, 7.0]], dtype=F64)
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]])
    expected = [[0.0] * 4 for _ in range(2)]
    expected_masked = [[0.0] * 4 for _ in range(2)]
    for b in range(2):
        t_max = max(t[b].tolist())
        t_max_valid = max(float(t[b, j]) for j in range(4) if mask[b, j])
        for j in range(4):
            tj = float(t[b, j])
            expected[b][j] = (t_max - tj + 1e-6) / (t_max + 1e-6)
            if mask[b, j]:
                expected_masked[b][j] = (t_max_valid - tj + 1e-6) / (t_max_valid + 1e-6)
    torch.testing.assert_close(tree_relevance(t), torch.tensor(expected, dtype=F64))
    torch.testing.assert_close(
        tree_relevance(t, mask=mask), torch.tensor(expected_masked, dtype=F64)
    )
    np.testing.assert_allclose(tree_relevance(t.numpy(), mask=mask.numpy()), expected_masked)
    # the nearest item of a list is below 1 unless it is at tree distance 0
    assert float(tree_relevance(t)[1, 0]) < 1.0 and float(tree_relevance(t)[0, 0]) == 1.0
    assert RELEVANCE_EPS == 1e-6
    # an explicit t_max (e.g. the anchor's farthest node, as the metric uses)
    torch.testing.assert_close(
        tree_relevance(t, max_distance=10.0), (10.0 - t + 1e-6) / (10.0 + 1e-6)
    )
    # a row without a valid item: all 0, no NaN
    empty = tree_relevance(t, mask=torch.zeros(2, 4, dtype=torch.bool))
    assert float(empty.abs().sum()) == 0.0
    with pytest.raises(TypeError, match="mask"):
        tree_relevance(t, mask=mask.float())
    with pytest.raises(ValueError, match="mask"):
        tree_relevance(t, mask=mask[:, :3])
    with pytest.raises(TypeError, match="tree_distances"):
        tree_relevance([[1.0, 2.0]])


# ----------------------------------------------------------------------------------------------
# global_rank_loss (functional)


@pytest.mark.parametrize("relative_margin", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_global_rank_matches_loop_reference(relative_margin, reduction):
    tree = random_tree(12, seed=4)
    t = tree.distances()
    d = random_distances(12, seed=6, scale=4.0)
    kwargs = dict(margin=0.3, relative_margin=relative_margin, reduction=reduction)
    value, (grad,) = grads_of(lambda x: global_rank_loss(x, t, **kwargs), d)
    expected, (expected_grad,) = grads_of(lambda x: reference_global_rank_loss(x, t, **kwargs), d)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
    assert float(expected) > 0
    # the pair-vector form of the same pairs gives the same value
    first, second = torch.triu_indices(12, 12, 1)
    pairs = global_rank_loss(d[first, second], t[first, second], **kwargs)
    torch.testing.assert_close(pairs, value, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_rank_many_levels_and_tied_distances_match_loop_reference(seed):
    # A deep tree gives many distinct tree distances (levels); rounded embedding distances
    # put many terms exactly on the hinge and many pairs on equal distances.
    tree = random_tree(24, seed=seed)
    t = tree.distances()
    assert torch.unique(t).numel() >= 7
    d = (random_distances(24, seed=seed + 10, scale=6.0) * 4).round() / 4
    kwargs = dict(margin=0.25, relative_margin=False, reduction="sum")
    value, (grad,) = grads_of(lambda x: global_rank_loss(x, t, **kwargs), d)
    expected, (expected_grad,) = grads_of(lambda x: reference_global_rank_loss(x, t, **kwargs), d)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)


def test_global_rank_ties_scale_and_degenerate_inputs():
    # integer distances: many terms exactly at the hinge (0: not violated, gradient 0)
    generator = torch.Generator().manual_seed(1)
    d = torch.randint(0, 4, (40,), generator=generator).to(F64)
    t = torch.randint(0, 4, (40,), generator=generator).to(F64)
    kwargs = dict(margin=1.0, relative_margin=False)
    value, (grad,) = grads_of(lambda x: global_rank_loss(x, t, **kwargs), d)
    expected, (expected_grad,) = grads_of(lambda x: reference_global_rank_loss(x, t, **kwargs), d)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    # scale-relative margin: scaling every embedding distance scales the loss by the same factor
    d = random_distances(10, seed=2)
    t = random_tree(10, seed=1).distances()
    torch.testing.assert_close(global_rank_loss(7.0 * d, t), 7.0 * global_rank_loss(d, t))
    # all tree distances equal, no pairs, all tree distances 0: 0, not NaN
    assert float(global_rank_loss(d[0], torch.ones(10, dtype=F64))) == 0.0
    assert float(global_rank_loss(d[0, :0], torch.ones(0, dtype=F64))) == 0.0
    assert float(global_rank_loss(d[0], torch.zeros(10, dtype=F64))) == 0.0


def test_global_rank_rejects_bad_inputs():
    d, t = random_distances(5, seed=0), random_tree(5, seed=0).distances()
    with pytest.raises(ValueError, match="margin"):
        global_rank_loss(d, t, margin=-0.1)
    with pytest.raises(ValueError, match="reduction"):
        global_rank_loss(d, t, reduction="none")
    with pytest.raises(ValueError, match="tree_distances"):
        global_rank_loss(d, t[:4, :4])
    with pytest.raises(ValueError, match="square"):
        global_rank_loss(d[:, :4], t[:, :4])
    with pytest.raises(ValueError, match="embedding_distances"):
        global_rank_loss(d[None], t[None])
    with pytest.raises(TypeError, match="embedding_distances"):
        global_rank_loss(d.long(), t)
    with pytest.raises(TypeError, match="tree_distances"):
        global_rank_loss(d, t.tolist())
    bad = d.clone()
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="embedding_distances.*NaN"):
        global_rank_loss(bad, t)
    with pytest.raises(ValueError, match="tree_distances.*>= 0"):
        global_rank_loss(d, -t)


# ----------------------------------------------------------------------------------------------
# Modules: shared fixtures

DISTANCES = {
    "LorentzDistance": (LorentzDistance(), "lorentz"),
    "geoopt.Lorentz.dist": (geoopt.Lorentz().dist, "lorentz"),
    "geoopt.PoincareBall.dist": (geoopt.PoincareBall().dist, "poincare"),
    "euclidean": (euclidean, "euclidean"),
    "user lambda": (lambda x, y: 2.0 * geoopt.Lorentz().dist(x, y), "lorentz"),
}


def points_for(kind: str, n: int, seed: int) -> torch.Tensor:
    if kind == "lorentz":
        return lorentz_points(n, 2, seed)
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(n, 3, generator=generator, dtype=F64)
    if kind == "poincare":
        return geoopt.PoincareBall().expmap0(0.5 * points)
    return points


class RowTable:
    """A lazy row table: points[index] computed on demand, counting the rows it served."""

    def __init__(self, points):
        self.points = points
        self.rows_served = 0

    def __getitem__(self, index):
        self.rows_served += int(index.numel())
        return self.points[index] * 1.0  # a fresh tensor, as a computed table returns


# ----------------------------------------------------------------------------------------------
# RankOrderPreservationLoss / GlobalRankLoss (modules)


@pytest.mark.parametrize("name", list(DISTANCES))
def test_rank_order_module_matches_loop_reference(name):
    # The from-points reference: one distance_fn call per pair inside its loops.
    distance_fn, kind = DISTANCES[name]
    tree = random_tree(16, seed=8)
    options = dict(weight=0.7, margin=0.2, min_distance=0.1)
    loss_fn = RankOrderPreservationLoss(tree, **options)
    nodes = torch.tensor([5, 0, 9, 2, 13, 7, 11, 3, 1, 15])
    points = points_for(kind, len(tree), seed=2)
    value, (grad,) = grads_of(lambda x: loss_fn(x, nodes, distance_fn), points)

    def reference(x):
        return reference_rank_order_loss_from_points(
            x[nodes], nodes.tolist(), distance_fn, tree.distances(), **options
        )

    expected, (expected_grad,) = grads_of(reference, points)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
    unused = [i for i in range(len(tree)) if i not in nodes.tolist()]
    assert float(grad[unused].abs().sum()) == 0.0 and float(grad.abs().sum()) > 0


@pytest.mark.parametrize("reduction", ["violations", "mean", "sum", "none"])
def test_rank_order_module_reductions_names_and_adapters_equal_the_index_path(reduction):
    tree = random_tree(14, seed=3)
    options = dict(weight=0.4, margin=0.15, min_distance=0.1, reduction=reduction)
    nodes = torch.tensor([5, 0, 9, 2, 13, 7, 11, 3, 1])
    points = lorentz_points(len(tree), 3, seed=4, std=1.5)
    by_index = RankOrderPreservationLoss(tree, **options)(points, nodes, LorentzDistance())
    expected = reference_rank_order_loss_from_points(
        points[nodes], nodes.tolist(), LorentzDistance(), tree.distances(), **options
    )
    assert by_index.shape == expected.shape == ((9,) if reduction == "none" else ())
    torch.testing.assert_close(by_index, expected, rtol=1e-10, atol=1e-10)
    # the name form: embeddings aligned with a list of names
    names = [tree.names[i] for i in nodes]
    by_name = RankOrderPreservationLoss(tree, **options)(points[nodes], names, LorentzDistance())
    torch.testing.assert_close(by_name, by_index, rtol=0, atol=0)
    # the original signatures: a dense matrix and a name map, positional or keyword
    for dense in (
        RankOrderPreservationLoss(tree.distances(), tree.index, **options),
        RankOrderPreservationLoss(tree.distances(), code_to_idx=tree.index, **options),
        RankOrderPreservationLoss.from_tree(tree, **options),
    ):
        torch.testing.assert_close(dense(points[nodes], names, LorentzDistance()), by_index)
        torch.testing.assert_close(dense(points, nodes, LorentzDistance()), by_index)
    # a lazy row table (duck type) gives the same loss and gradient, reading only the block
    table = RowTable(points.clone().requires_grad_(True))
    loss_fn = RankOrderPreservationLoss(tree, **options)
    lazy = loss_fn(table, nodes, LorentzDistance())
    torch.testing.assert_close(lazy, by_index, rtol=0, atol=0)
    assert table.rows_served == len(nodes)


def test_block_modules_positional_original_signature():
    tree = random_tree(10, seed=0)
    points = lorentz_points(10, 2, seed=1)
    nodes = torch.arange(10)
    positional = RankOrderPreservationLoss(tree.distances(), tree.index, 0.5, 0.1, 0.2, "sum")
    keyword = RankOrderPreservationLoss(tree, weight=0.5, margin=0.2, reduction="sum")
    torch.testing.assert_close(
        positional(points, nodes, LorentzDistance()), keyword(points, nodes, LorentzDistance())
    )
    assert positional.reduction == "sum" and positional.margin == 0.2
    # GlobalRankLoss(tree_distances) as training built it: a matrix without names
    seed_global = GlobalRankLoss(tree.distances(), weight=2.0)
    torch.testing.assert_close(
        seed_global(points, nodes, LorentzDistance()),
        GlobalRankLoss(tree, weight=2.0)(points, nodes, LorentzDistance()),
    )
    with pytest.raises(TypeError, match="without names"):
        seed_global(points[:3], tree.names[:3], LorentzDistance())


@pytest.mark.parametrize("name", ["LorentzDistance", "euclidean"])
def test_global_rank_module_matches_loop_reference(name):
    distance_fn, kind = DISTANCES[name]
    tree = random_tree(20, seed=5)
    nodes = torch.tensor([3, 17, 0, 8, 12, 19, 5, 6, 1])
    points = points_for(kind, len(tree), seed=3)
    loss_fn = GlobalRankLoss(tree, weight=2.5, margin=0.2)
    value, (grad,) = grads_of(lambda x: loss_fn(x, nodes, distance_fn), points)

    def reference(x):
        return reference_global_rank_loss_from_points(
            x[nodes], nodes.tolist(), distance_fn, tree.distances(), weight=2.5, margin=0.2
        )

    expected, (expected_grad,) = grads_of(reference, points)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
    assert float(expected) > 0
    names = [tree.names[i] for i in nodes]
    torch.testing.assert_close(loss_fn(points[nodes], names, distance_fn), value.detach())
    assert float(loss_fn(points, nodes[:2], distance_fn)) == 0.0  # one pair: no term
    summed = GlobalRankLoss(tree, weight=2.5, margin=0.2, reduction="sum")
    assert float(summed(points, nodes, distance_fn)) > float(value)


def test_block_modules_small_blocks_coincident_points_and_float32():
    tree = random_tree(12, seed=1)
    points = lorentz_points(12, 2, seed=0)
    for loss_fn in (RankOrderPreservationLoss(tree), GlobalRankLoss(tree)):
        few = points.clone().requires_grad_(True)
        loss = loss_fn(few, torch.tensor([1, 2]), LorentzDistance())
        loss.backward()
        assert loss.item() == 0.0 and float(few.grad.abs().sum()) == 0.0
    per_anchor = RankOrderPreservationLoss(tree, reduction="none")(
        points, torch.tensor([1, 2]), LorentzDistance()
    )
    assert per_anchor.shape == (2,)
    # all of NAICS at 3 distinct points: massive ties, coincident points, finite gradient
    naics_tree = naics()
    generator = torch.Generator().manual_seed(0)
    three = lorentz_points(3, 2, seed=1)
    stacked = three[torch.randint(0, 3, (len(naics_tree),), generator=generator)]
    block = torch.randperm(len(naics_tree), generator=generator)[:300]
    for loss_fn in (RankOrderPreservationLoss(naics_tree), GlobalRankLoss(naics_tree)):
        leaf = stacked.clone().requires_grad_(True)
        loss = loss_fn(leaf, block, LorentzDistance())
        loss.backward()
        assert loss.item() > 0 and bool(torch.isfinite(leaf.grad).all())
    # float32 points and distances
    points32 = lorentz_points(12, 2, seed=5).float().requires_grad_(True)
    loss32 = RankOrderPreservationLoss(tree)(points32, torch.arange(12), euclidean)
    loss32.backward()
    assert loss32.dtype == torch.float32 and bool(torch.isfinite(points32.grad).all())


def test_modules_gradcheck_through_lorentz_distance():
    tree = random_tree(9, seed=6)
    points = lorentz_points(9, 2, seed=2).requires_grad_(True)
    nodes = torch.tensor([0, 3, 4, 6, 7, 8, 2])
    # GlobalRankLoss holds its scale-relative margin constant in the backward pass (as the
    # reference does), so only margin=0 is a function whose full derivative it returns.
    for loss_fn in (
        RankOrderPreservationLoss(tree, weight=1.0, reduction="mean"),
        GlobalRankLoss(tree, weight=1.0, margin=0.0),
    ):
        assert torch.autograd.gradcheck(
            lambda x, f=loss_fn: f(x, nodes, LorentzDistance()), (points,), eps=1e-6, atol=1e-7
        )
    lambda_rank = LambdaRankLoss(tree, ndcg_k=3)
    # distinct points in every (anchor, item) pair: the distance is smooth there
    anchors = torch.tensor([3, 5, 8])
    items = torch.stack(
        [
            torch.tensor([int(tree.parent[a])] + [j for j in range(9) if j != a][:4])
            for a in anchors.tolist()
        ]
    )
    items[1, 0] = 0 if int(items[1, 0]) != 0 else 1
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 2] = False  # the masked (pairwise) path
    for m in (None, mask):
        assert torch.autograd.gradcheck(
            lambda x, m=m: lambda_rank(x, anchors, items, LorentzDistance(), mask=m),
            (points,),
            eps=1e-6,
            atol=1e-7,
        )


def test_block_modules_reject_bad_inputs():
    tree = random_tree(6, seed=0)
    points = lorentz_points(6, 2, seed=0)
    nodes = torch.arange(6)
    for loss_fn in (RankOrderPreservationLoss(tree), GlobalRankLoss(tree)):
        with pytest.raises(UnknownNodeError, match="not-a-node"):
            loss_fn(points[:3], [tree.names[0], "not-a-node", tree.names[1]], LorentzDistance())
        with pytest.raises(KeyError):  # UnknownNodeError is also a KeyError
            loss_fn(points[:3], [tree.names[0], "x", tree.names[1]], LorentzDistance())
        with pytest.raises(ValueError, match="nodes.*6"):
            loss_fn(points, tree.names[:5], LorentzDistance())
        with pytest.raises(ValueError, match="nodes.*outside"):
            loss_fn(points, nodes + 1, LorentzDistance())
        with pytest.raises(ValueError, match="nodes.*outside"):
            loss_fn(points, nodes - 1, LorentzDistance())
        with pytest.raises(TypeError, match="nodes.*integer"):
            loss_fn(points, nodes.double(), LorentzDistance())
        with pytest.raises(ValueError, match="nodes.*shape"):
            loss_fn(points, nodes[None], LorentzDistance())
        with pytest.raises(ValueError, match="one row per tree node"):
            loss_fn(points[:5], torch.arange(5), LorentzDistance())
        with pytest.raises(ValueError, match="embeddings of the names"):
            loss_fn(points[0], tree.names, LorentzDistance())
        bad = points.clone()
        bad[2, 1] = float("nan")
        with pytest.raises(ValueError, match="points.*NaN"):
            loss_fn(bad, nodes, LorentzDistance())
        with pytest.raises(ValueError, match="points.*NaN"):
            loss_fn(bad, tree.names, LorentzDistance())
        with pytest.raises(ValueError, match="points\\[nodes\\]"):
            loss_fn(RowTable(points[:, :, None]), nodes, LorentzDistance())
        with pytest.raises(TypeError, match="distance_fn"):
            loss_fn(points, nodes, "lorentz")
        with pytest.raises(ValueError, match="broadcast"):
            loss_fn(points, nodes, lambda x, y: torch.mm(x, y.mT).diagonal())
        with pytest.raises(ValueError, match="broadcast"):
            loss_fn(points, nodes, lambda x, y: (x - y).norm())
    with pytest.raises(ValueError, match="tree_distances"):
        RankOrderPreservationLoss(torch.zeros(3, 4), {})
    with pytest.raises(ValueError, match="margin"):
        RankOrderPreservationLoss(tree, margin=-1.0)
    with pytest.raises(ValueError, match="weight"):
        RankOrderPreservationLoss(tree, weight=float("nan"))
    with pytest.raises(ValueError, match="reduction"):
        RankOrderPreservationLoss(tree, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        GlobalRankLoss(tree, reduction="none")
    with pytest.raises(ValueError, match="code_to_idx"):
        RankOrderPreservationLoss(tree.distances(), {"a": 6})
    with pytest.raises(TypeError, match="code_to_idx"):
        RankOrderPreservationLoss(tree, code_to_idx=tree.index)
    with pytest.raises(TypeError, match="RankOrderPreservationLoss.*unexpected"):
        RankOrderPreservationLoss(tree, sigma=1.0)
    with pytest.raises(TypeError, match="tree"):
        GlobalRankLoss("naics")


# ----------------------------------------------------------------------------------------------
# LambdaRankLoss (module)


def random_lists_of(tree, batch: int, length: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    n = len(tree)
    anchors = torch.randint(0, n, (batch,), generator=generator)
    items = torch.randint(0, n, (batch, length), generator=generator)
    return anchors, items


@pytest.mark.parametrize("name", list(DISTANCES))
def test_lambda_rank_module_matches_loop_reference(name):
    distance_fn, kind = DISTANCES[name]
    tree = random_tree(40, seed=2)
    options = dict(weight=0.5, sigma=1.5, ndcg_k=4)
    anchors, items = random_lists_of(tree, 6, 8, seed=1)
    mask = torch.ones(6, 8, dtype=torch.bool)
    mask[2, 5:] = False
    mask[4] = False  # an anchor without items: not counted
    items[2, 6] = -1  # padding is never read
    points = points_for(kind, len(tree), seed=1)
    for reduction in ("mean", "sum", "none"):
        loss_fn = LambdaRankLoss(tree, reduction=reduction, **options)
        value, (grad,) = grads_of(
            lambda x, f=loss_fn: f(x, anchors, items, distance_fn, mask=mask), points
        )

        def reference(x, reduction=reduction):  # one distance_fn call per (anchor, item) pair
            safe = torch.where(mask, items, anchors[:, None])
            return reference_lambda_rank_loss_from_points(
                x[anchors], x[safe], anchors.tolist(), safe.tolist(), distance_fn,
                tree.distances(), mask=mask, reduction=reduction, **options,
            )  # fmt: skip

        expected, (expected_grad,) = grads_of(reference, points)
        assert value.shape == expected.shape == ((6,) if reduction == "none" else ())
        torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
        assert float(expected.sum()) > 0


def test_lambda_rank_module_named_form_equals_the_index_path():
    tree = random_tree(30, seed=4)
    loss_fn = LambdaRankLoss(tree, weight=0.3, ndcg_k=5)
    anchors, items = random_lists_of(tree, 5, 5, seed=3)
    points = lorentz_points(len(tree), 2, seed=3)
    names = tree.names
    anchor_emb, positive_emb = points[anchors], points[items[:, 0]]
    negative_embs = points[items[:, 1:].reshape(-1)]
    codes = (
        [names[i] for i in anchors],
        [names[i] for i in items[:, 0]],
        [[names[i] for i in row] for row in items[:, 1:]],
    )
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[1, 2:] = False
    item_mask = torch.cat([torch.ones(5, 1, dtype=torch.bool), mask], dim=1)
    for negative_mask, index_mask in ((None, None), (mask, item_mask)):
        by_index = loss_fn(points, anchors, items, LorentzDistance(), mask=index_mask)
        by_name = loss_fn(anchor_emb, positive_emb, negative_embs, *codes, LorentzDistance(),
                          5, 4, mask=negative_mask)  # fmt: skip
        torch.testing.assert_close(by_name, by_index, rtol=0, atol=0)
        # index tensors in the original form, (B, K) or (B * K,)
        for negatives in (items[:, 1:], items[:, 1:].reshape(-1)):
            seed_index = loss_fn(anchor_emb, positive_emb, negative_embs, anchors,
                                 items[:, 0], negatives, LorentzDistance(), 5, 4,
                                 mask=negative_mask)  # fmt: skip
            torch.testing.assert_close(seed_index, by_index, rtol=0, atol=0)
        # the original constructors: a dense matrix and a name map
        dense = LambdaRankLoss(tree.distances(), tree.index, weight=0.3, ndcg_k=5)
        torch.testing.assert_close(
            dense(anchor_emb, positive_emb, negative_embs, *codes, LorentzDistance(), 5, 4,
                  mask=negative_mask),
            by_index,
        )  # fmt: skip
        from_tree = LambdaRankLoss.from_tree(tree, weight=0.3, ndcg_k=5)
        torch.testing.assert_close(
            from_tree(points, anchors, items, LorentzDistance(), mask=index_mask), by_index
        )
    # keyword arguments in the original form
    by_keyword = loss_fn(
        anchor_emb=anchor_emb, positive_emb=positive_emb, negative_embs=negative_embs,
        anchor_codes=codes[0], positive_codes=codes[1], negative_codes=codes[2],
        distance_fn=LorentzDistance(), batch_size=5, k_negatives=4,
    )  # fmt: skip
    torch.testing.assert_close(by_keyword, loss_fn(points, anchors, items, LorentzDistance()))


def test_lambda_rank_module_padding_coincident_points_relevance_and_lazy_points():
    tree = random_tree(30, seed=4)
    loss_fn = LambdaRankLoss(tree)
    anchors, items = random_lists_of(tree, 5, 5, seed=3)
    points = lorentz_points(len(tree), 2, seed=2)
    # every (anchor, item) distance from one read of the distinct nodes of a lazy table
    table = RowTable(points)
    lazy = loss_fn(table, anchors, items, LorentzDistance())
    torch.testing.assert_close(lazy, loss_fn(points, anchors, items, LorentzDistance()))
    assert table.rows_served == len(torch.unique(torch.cat([anchors, items.reshape(-1)])))
    # nothing valid: 0 with a graph; reduction='none' gives (B,) zeros
    none = torch.zeros(5, 5, dtype=torch.bool)
    leaf = points.clone().requires_grad_(True)
    loss = loss_fn(leaf, anchors, items, LorentzDistance(), mask=none)
    loss.backward()
    assert loss.item() == 0.0 and float(leaf.grad.abs().sum()) == 0.0
    per_anchor = LambdaRankLoss(tree, reduction="none")(
        points, anchors, items, LorentzDistance(), mask=none
    )
    assert per_anchor.shape == (5,) and float(per_anchor.abs().sum()) == 0.0
    # every point at one place: finite gradients with LorentzDistance
    same = lorentz_points(1, 2, seed=0).expand(len(tree), 3).clone().requires_grad_(True)
    loss = loss_fn(same, anchors, items, LorentzDistance())
    loss.backward()
    assert loss.item() > 0 and bool(torch.isfinite(same.grad).all())
    # a relevance callable on the module reaches the functional form
    binary = LambdaRankLoss(tree, relevance=lambda t, mask=None: (t <= 2).double())
    expected = 0.15 * lambda_rank_loss(
        LorentzDistance()(points[anchors][:, None], points[items]),
        tree.distances()[anchors[:, None], items],
        relevance=lambda t, mask=None: (t <= 2).double(),
    )
    torch.testing.assert_close(binary(points, anchors, items, LorentzDistance()), expected)
    # float32
    loss32 = loss_fn(points.float(), anchors, items, euclidean)
    assert loss32.dtype == torch.float32 and math.isfinite(loss32.item())


def test_lambda_rank_module_rejects_bad_inputs():
    tree = random_tree(20, seed=0)
    loss_fn = LambdaRankLoss(tree)
    anchors, items = random_lists_of(tree, 4, 4, seed=0)
    points = lorentz_points(20, 2, seed=0)

    def call(points=points, anchors=anchors, items=items, distance_fn=None, **kw):
        distance_fn = LorentzDistance() if distance_fn is None else distance_fn
        return loss_fn(points, anchors, items, distance_fn, **kw)

    with pytest.raises(TypeError, match="anchors.*integer"):
        call(anchors=anchors.float())
    with pytest.raises(TypeError, match="anchors"):
        call(anchors=anchors.tolist())
    with pytest.raises(ValueError, match="anchors.*shape"):
        call(anchors=anchors[:, None])
    with pytest.raises(ValueError, match="anchors.*outside"):
        call(anchors=anchors + 20)
    with pytest.raises(ValueError, match="items.*shape"):
        call(items=items[:3])
    with pytest.raises(ValueError, match="items.*shape"):
        call(items=items.reshape(-1))
    with pytest.raises(ValueError, match="items.*outside"):
        call(items=items - 25)
    padded = items.clone()
    padded[0, 3] = -1
    with pytest.raises(ValueError, match="items.*outside.*-1"):
        call(items=padded)  # -1 is only allowed where the mask is False
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[0, 3] = False
    assert math.isfinite(call(items=padded, mask=mask).item())
    with pytest.raises(TypeError, match="mask.*bool"):
        call(mask=mask.float())
    with pytest.raises(ValueError, match="mask.*shape"):
        call(mask=mask[:, :3])
    with pytest.raises(ValueError, match="one row per tree node"):
        call(points=points[:10])
    bad = points.clone()
    bad[int(items[1, 1]), 0] = float("inf")
    with pytest.raises(ValueError, match="points.*inf"):
        call(points=bad)
    with pytest.raises(TypeError, match="distance_fn"):
        call(distance_fn=3)
    with pytest.raises(ValueError, match="broadcast"):
        call(distance_fn=lambda x, y: torch.mm(x, y.mT))
    with pytest.raises(ValueError, match="broadcast"):
        call(distance_fn=lambda x, y: (x - y).norm(dim=-1, keepdim=True))
    with pytest.raises(ValueError, match="geoopt.Manifold.dist"):  # the masked (paired) path
        call(distance_fn=lambda x, y: (x - y).norm(dim=-1, keepdim=True), mask=mask)
    with pytest.raises(ValueError, match="sigma"):
        LambdaRankLoss(tree, sigma=0.0)
    with pytest.raises(ValueError, match="ndcg_k"):
        LambdaRankLoss(tree, ndcg_k=0)
    with pytest.raises(ValueError, match="reduction"):
        LambdaRankLoss(tree, reduction="violations")
    with pytest.raises(TypeError, match="relevance"):
        LambdaRankLoss(tree, relevance="linear")
    with pytest.raises(ValueError, match="tree_distances"):
        LambdaRankLoss(torch.zeros(2, 3), {})


def test_lambda_rank_named_form_rejects_unknown_names_and_bad_inputs():
    tree = random_tree(20, seed=0)
    loss_fn = LambdaRankLoss(tree)
    anchors, items = random_lists_of(tree, 4, 4, seed=0)
    points = lorentz_points(20, 2, seed=0)
    names = tree.names
    embs = [points[anchors], points[items[:, 0]], points[items[:, 1:].reshape(-1)]]
    codes = [
        [names[i] for i in anchors],
        [names[i] for i in items[:, 0]],
        [[names[i] for i in row] for row in items[:, 1:]],
    ]

    def call(embs=embs, codes=codes, b=4, k=3, **kw):
        return loss_fn(*embs, *codes, LorentzDistance(), b, k, **kw)

    assert math.isfinite(call().item())
    # unknown names are errors naming them (they used to be silently masked or skipped)
    for position, where in ((0, "unknown anchor"), (1, "unknown positive")):
        broken = [list(c) for c in codes]
        broken[position][1] = where
        with pytest.raises(UnknownNodeError, match=where):
            call(codes=broken)
    broken = [codes[0], codes[1], [list(row) for row in codes[2]]]
    broken[2][0][2] = "unknown negative"
    with pytest.raises(ValueError, match="unknown negative"):
        call(codes=broken)
    with pytest.raises(ValueError, match="negative_embs"):
        call(k=2)
    with pytest.raises(ValueError, match="anchor_emb"):
        call(b=3, k=4)
    with pytest.raises(ValueError, match="positive_emb"):
        call(embs=[embs[0], embs[1][:3], embs[2]])
    with pytest.raises(ValueError, match="anchor_emb"):
        call(embs=[embs[0][None], embs[1], embs[2]])
    bad = embs[2].clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="negative_embs.*inf"):
        call(embs=[embs[0], embs[1], bad])
    with pytest.raises(ValueError, match="anchor_codes"):
        call(codes=[codes[0][:3], codes[1], codes[2]])
    with pytest.raises(ValueError, match="negative_codes"):
        call(codes=[codes[0], codes[1], [row[:2] for row in codes[2]]])
    with pytest.raises(ValueError, match="negative_codes"):
        call(codes=[codes[0], codes[1], items[:, 1:3]])
    with pytest.raises(ValueError, match="anchor_codes.*outside"):
        call(codes=[anchors + 20, codes[1], codes[2]])
    with pytest.raises(ValueError, match="mask"):
        call(mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        call(mask=torch.ones(4, 3))


# ----------------------------------------------------------------------------------------------
# A tree past Tree.DENSE_LIMIT: tree distances on demand, nothing N x N


def test_modules_on_a_tree_past_the_dense_limit():
    tree = random_tree(30_000, seed=0)
    assert len(tree) > Tree.DENSE_LIMIT
    with pytest.raises(ValueError, match="distance"):
        tree.distances()  # a dense matrix is refused here, so the modules cannot be using one
    generator = torch.Generator().manual_seed(0)
    # a lazy table: only the requested rows are ever computed (no (N, D + 1) tensor either)
    tangent = torch.randn(len(tree), 2, generator=generator, dtype=F64)

    class TangentTable:
        def __getitem__(self, index):
            rows = torch.cat([torch.zeros(len(index), 1, dtype=F64), tangent[index]], dim=1)
            return geoopt.Lorentz().expmap0(rows)

    table = TangentTable()
    nodes = torch.randint(0, len(tree), (64,), generator=generator)
    anchors = nodes[:16]
    items = torch.randint(0, len(tree), (16, 6), generator=generator)
    # oracle: tree distances of the same pairs by walking up parent pointers
    parent = tree.parent.tolist()
    depth = tree.depth.tolist()

    def walk(u, v):
        steps = 0
        while u != v:
            if depth[u] >= depth[v]:
                u = parent[u]
            else:
                v = parent[v]
            steps += 1
        return float(steps)

    block_tree = torch.tensor([[walk(u, v) for v in nodes.tolist()] for u in nodes.tolist()])
    block_points = table[nodes]
    block_distances = pairwise_distances_of(block_points)
    value = RankOrderPreservationLoss(tree, weight=1.0)(table, nodes, LorentzDistance())
    expected = rank_order_preservation_loss(block_distances, block_tree, margin=0.1)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    value = GlobalRankLoss(tree, weight=1.0)(table, nodes, LorentzDistance())
    torch.testing.assert_close(value, global_rank_loss(block_distances, block_tree))
    list_tree = torch.tensor(
        [[walk(a, i) for i in row] for a, row in zip(anchors.tolist(), items.tolist(), strict=True)]
    )
    list_distances = LorentzDistance()(
        table[anchors][:, None, :], table[items.reshape(-1)].view(16, 6, -1)
    )
    value = LambdaRankLoss(tree, weight=1.0)(table, anchors, items, LorentzDistance())
    torch.testing.assert_close(value, lambda_rank_loss(list_distances, list_tree))


def pairwise_distances_of(points):
    return LorentzDistance()(points[:, None, :], points[None, :, :])


# ----------------------------------------------------------------------------------------------
# rank_order_list_loss / RankOrderListLoss: the rank-order hinge on per-anchor lists


def loop_rank_order_lists(d, t, *, margin=0.1, min_distance=0.1, mask=None, reduction="violations"):
    """The list hinge by loops over rows and pairs of list positions, from its definition."""
    batch, length = d.shape
    per_anchor, n_terms, n_positive = [], 0, 0
    for a in range(batch):
        candidates = [
            j
            for j in range(length)
            if (mask is None or bool(mask[a, j])) and float(t[a, j]) >= min_distance
        ]
        terms = []
        for x in range(len(candidates)):
            for y in range(x + 1, len(candidates)):
                j, k = candidates[x], candidates[y]
                if float(t[a, j]) == float(t[a, k]):
                    continue
                if float(t[a, j]) > float(t[a, k]):
                    j, k = k, j
                term = torch.relu(d[a, j] - d[a, k] + margin)
                terms.append(term)
                n_terms += 1
                n_positive += int(term.item() > 0)
        per_anchor.append(torch.stack(terms).sum() if terms else d.sum() * 0.0)
    per_anchor = torch.stack(per_anchor)
    if reduction == "none":
        return per_anchor
    total = per_anchor.sum()
    if reduction == "sum":
        return total
    count = n_positive if reduction == "violations" else n_terms
    return total / max(count, 1)


def random_hinge_lists(batch, length, seed):
    generator = torch.Generator().manual_seed(seed)
    d = torch.rand(batch, length, generator=generator, dtype=F64) * 3.0
    t = torch.randint(0, 5, (batch, length), generator=generator).to(F64)  # ties and t = 0
    return d, t


@pytest.mark.parametrize("reduction", ["violations", "mean", "sum", "none"])
@pytest.mark.parametrize(("margin", "min_distance"), [(0.0, 0.1), (0.3, 0.1), (0.2, 2.5)])
def test_rank_order_lists_match_loop_reference(reduction, margin, min_distance):
    d, t = random_hinge_lists(7, 9, seed=3)
    mask = torch.rand(7, 9, generator=torch.Generator().manual_seed(1)) > 0.2
    mask[5] = False  # a row without valid items: 0
    d = torch.where(mask, d, torch.nan)  # masked entries may hold anything
    for row_mask in (mask, None):
        values = d if row_mask is not None else torch.nan_to_num(d, nan=1.0)
        options = dict(margin=margin, min_distance=min_distance, mask=row_mask, reduction=reduction)
        value, (grad,) = grads_of(lambda x, o=options: rank_order_list_loss(x, t, **o), values)
        expected, (expected_grad,) = grads_of(
            lambda x, o=options: loop_rank_order_lists(x, t, **o), torch.nan_to_num(values)
        )
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(torch.nan_to_num(grad), expected_grad, rtol=1e-12, atol=1e-12)
        assert torch.isfinite(grad).all()  # the NaN at masked entries never reaches a gradient
    assert float(loop_rank_order_lists(d.nan_to_num(), t, margin=0.3, mask=mask)) > 0


def test_rank_order_lists_equal_the_block_loss_row_by_row():
    # An anchor whose list is every other node of a block sees the block loss's triples: the
    # per-anchor sums agree with rank_order_preservation_loss(reduction='none').
    d = random_distances(8, seed=5)
    t = random_distances(8, seed=6).round()
    block = rank_order_preservation_loss(d, t, margin=0.2, min_distance=0.1, reduction="none")
    others = torch.tensor([[j for j in range(8) if j != i] for i in range(8)])
    rows = torch.arange(8)[:, None]
    lists = rank_order_list_loss(
        d[rows, others], t[rows, others], margin=0.2, min_distance=0.1, reduction="none"
    )
    torch.testing.assert_close(lists, block, rtol=1e-12, atol=1e-12)
    assert float(block.sum()) > 0


def test_rank_order_lists_ordered_lists_give_zero_and_gradcheck():
    t = torch.tensor([[1.0, 2.0, 2.0, 4.0], [3.0, 1.0, 0.0, 2.0]], dtype=F64)
    ordered = t * 1.0 + 0.0  # embedding order = tree order, gaps >= 1 > margin across levels
    assert float(rank_order_list_loss(ordered, t, margin=0.5, reduction="sum")) == 0.0
    d = torch.tensor([[0.7, 0.2, 1.3, 0.9], [0.1, 0.8, 0.3, 0.45]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: rank_order_list_loss(x, t, margin=0.05, reduction="mean"), (d,)
    )
    single = rank_order_list_loss(d.float(), t.float(), margin=0.05)
    double = rank_order_list_loss(d, t, margin=0.05)
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), double.detach(), rtol=1e-5, atol=1e-6)


def test_rank_order_lists_reject_bad_inputs():
    d, t = random_hinge_lists(3, 4, seed=0)
    with pytest.raises(ValueError, match="margin"):
        rank_order_list_loss(d, t, margin=-0.1)
    with pytest.raises(ValueError, match="reduction"):
        rank_order_list_loss(d, t, reduction="max")
    with pytest.raises(ValueError, match=r"shape \(B, L\)"):
        rank_order_list_loss(d[0], t[0])
    with pytest.raises(ValueError, match="tree_distances must have the shape"):
        rank_order_list_loss(d, t[:, :2])
    with pytest.raises(TypeError, match="floating-point"):
        rank_order_list_loss(d.long(), t)
    with pytest.raises(TypeError, match="embedding_distances must be a torch.Tensor"):
        rank_order_list_loss(d.tolist(), t)
    with pytest.raises(ValueError, match="NaN or inf"):
        rank_order_list_loss(torch.full_like(d, torch.nan), t)
    with pytest.raises(ValueError, match="NaN or inf at a valid item"):
        rank_order_list_loss(torch.full_like(d, torch.inf), t, mask=torch.ones(3, 4).bool())
    with pytest.raises(TypeError, match="mask"):
        rank_order_list_loss(d, t, mask=torch.ones(3, 4))


@pytest.mark.parametrize("name", list(DISTANCES))
def test_rank_order_list_module_matches_loop_reference(name):
    distance_fn, kind = DISTANCES[name]
    tree = random_tree(40, seed=2)
    dense = tree.distances()  # the oracle's tree distances: the dense matrix, not tree.distance
    anchors, items = random_lists_of(tree, 6, 8, seed=1)
    mask = torch.ones(6, 8, dtype=torch.bool)
    mask[2, 5:] = False
    mask[4] = False
    items[2, 6] = -1  # padding is never read
    points = points_for(kind, len(tree), seed=1)
    for reduction in ("violations", "mean", "sum", "none"):
        loss_fn = RankOrderListLoss(tree, weight=0.5, margin=0.2, reduction=reduction)
        table = RowTable(points)
        value = loss_fn(table, anchors, items, distance_fn, mask=mask)
        assert table.rows_served <= 6 + 6 * 8  # one read of the distinct nodes
        value, (grad,) = grads_of(
            lambda x, f=loss_fn: f(x, anchors, items, distance_fn, mask=mask), points
        )

        def reference(x, reduction=reduction):  # one distance_fn call per (anchor, item) pair
            safe = torch.where(mask, items, anchors[:, None]).tolist()
            d = torch.stack(
                [
                    torch.stack([distance_fn(x[a], x[i]) for i in row])
                    for a, row in zip(anchors.tolist(), safe, strict=True)
                ]
            )
            t = torch.tensor(
                [[dense[a, i] for i in row] for a, row in zip(anchors.tolist(), safe, strict=True)]
            )
            loss = loop_rank_order_lists(d, t, margin=0.2, mask=mask, reduction=reduction)
            return 0.5 * loss

        expected, (expected_grad,) = grads_of(reference, points)
        assert value.shape == ((6,) if reduction == "none" else ())
        torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
        assert float(expected.sum()) > 0


def test_rank_order_list_module_rejects_bad_inputs():
    tree = random_tree(20, seed=0)
    points = lorentz_points(len(tree), 2, seed=0)
    anchors, items = random_lists_of(tree, 3, 4, seed=0)
    with pytest.raises(ValueError, match="margin"):
        RankOrderListLoss(tree, margin=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        RankOrderListLoss(tree, reduction="max")
    with pytest.raises(TypeError, match="RankOrderListLoss"):
        RankOrderListLoss(tree, sigma=1.0)
    loss_fn = RankOrderListLoss(tree)
    with pytest.raises(ValueError, match="anchors"):
        loss_fn(points, anchors + 100, items, LorentzDistance())
    with pytest.raises(ValueError, match="items"):
        loss_fn(points, anchors, items[:2], LorentzDistance())
    with pytest.raises(ValueError, match="one row per tree node"):
        loss_fn(points[:5], anchors, items, LorentzDistance())
    with pytest.raises(TypeError, match="distance_fn must be callable"):
        loss_fn(points, anchors, items, "lorentz")
    with pytest.raises(ValueError, match="broadcast"):
        loss_fn(points, anchors, items, lambda x, y: (x - y).norm())
    bad = points.clone()
    bad[anchors[0]] = torch.nan
    with pytest.raises(ValueError, match="NaN"):
        loss_fn(bad, anchors, items, LorentzDistance())
