"""The ranking losses against plain-loop references of their definitions
(tests/reference_losses.py), a dense (N, N, N) oracle, gradcheck, and their input checks."""

from __future__ import annotations

import math

import geoopt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_losses import (
    reference_lambda_rank_loss,
    reference_lambda_rank_loss_from_points,
    reference_rank_order_loss,
    reference_rank_order_loss_from_points,
)

from hyperloss.datasets import naics, random_tree
from hyperloss.geometry import LorentzDistance
from hyperloss.losses import (
    LambdaRankLoss,
    RankOrderPreservationLoss,
    lambda_rank_loss,
    rank_order_preservation_loss,
)

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


# ----------------------------------------------------------------------------------------------
# RankOrderPreservationLoss (module)

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


@pytest.mark.parametrize("name", list(DISTANCES))
def test_rank_order_module_matches_loop_reference(name):
    # The from-points reference: one distance_fn call per pair inside its loops.
    distance_fn, kind = DISTANCES[name]
    tree = random_tree(16, seed=8)
    options = dict(weight=0.7, margin=0.2, min_distance=0.1)
    loss_fn = RankOrderPreservationLoss.from_tree(tree, **options)
    codes = list(tree.names[1:]) + ["not-a-node", "also-unknown"]
    points = points_for(kind, len(codes), seed=2)
    value, (grad,) = grads_of(lambda x: loss_fn(x, codes, distance_fn), points)

    def reference(x):
        return reference_rank_order_loss_from_points(
            x, codes, distance_fn, tree.distances(), tree.index, **options
        )

    expected, (expected_grad,) = grads_of(reference, points)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
    assert float(grad[-2:].abs().sum()) == 0.0  # dropped names get no gradient


@pytest.mark.parametrize("reduction", ["violations", "mean", "sum", "none"])
def test_rank_order_module_matches_from_points_reference_by_index(reduction):
    tree = random_tree(14, seed=3)
    options = dict(weight=0.4, margin=0.15, min_distance=0.1, reduction=reduction)
    loss_fn = RankOrderPreservationLoss.from_tree(tree, **options)
    rows = torch.tensor([5, 0, 9, 2, 13, 7, 11, 3, 1])
    points = lorentz_points(len(rows), 3, seed=4, std=1.5)
    value, (grad,) = grads_of(lambda x: loss_fn(x, rows, LorentzDistance()), points)

    def reference(x):
        return reference_rank_order_loss_from_points(
            x, rows, LorentzDistance(), tree.distances(), tree.index, **options
        )

    expected, (expected_grad,) = grads_of(reference, points)
    assert value.shape == expected.shape
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)


def test_rank_order_module_index_input_none_reduction_and_small_inputs():
    tree = random_tree(12, seed=1)
    loss_fn = RankOrderPreservationLoss.from_tree(tree, reduction="none")
    points = lorentz_points(13, 2, seed=0)
    codes = list(reversed(tree.names)) + ["unknown"]
    per_anchor = loss_fn(points, codes, LorentzDistance())
    assert per_anchor.shape == (13,) and float(per_anchor[-1]) == 0.0
    by_index = loss_fn(points[:12], tree.indices(codes[:12]), LorentzDistance())
    torch.testing.assert_close(by_index, per_anchor[:12], rtol=0, atol=0)
    explicit = RankOrderPreservationLoss(tree.distances(), tree.index, reduction="none")
    torch.testing.assert_close(explicit(points, codes, LorentzDistance()), per_anchor)
    # fewer than 3 known names: 0, and backward still works
    default = RankOrderPreservationLoss.from_tree(tree)
    few = points[:4].clone().requires_grad_(True)
    loss = default(few, [tree.names[1], "x", tree.names[2], "y"], LorentzDistance())
    loss.backward()
    assert loss.item() == 0.0 and float(few.grad.abs().sum()) == 0.0


def test_rank_order_module_coincident_points_float32_and_naics_scale():
    tree = naics()
    loss_fn = RankOrderPreservationLoss.from_tree(tree)
    # all of NAICS at 3 distinct points: massive ties, coincident points, finite gradient
    generator = torch.Generator().manual_seed(0)
    points = lorentz_points(3, 2, seed=1)[torch.randint(0, 3, (len(tree),), generator=generator)]
    points.requires_grad_(True)
    loss = loss_fn(points, tree.names, LorentzDistance())
    loss.backward()
    assert loss.item() > 0 and bool(torch.isfinite(points.grad).all())
    # float32 points and distances
    small = random_tree(30, seed=0)
    points32 = lorentz_points(30, 2, seed=5).float().requires_grad_(True)
    loss32 = RankOrderPreservationLoss.from_tree(small)(points32, small.names, euclidean)
    loss32.backward()
    assert loss32.dtype == torch.float32 and bool(torch.isfinite(points32.grad).all())


def test_modules_gradcheck_through_lorentz_distance():
    tree = random_tree(9, seed=6)
    rank_order = RankOrderPreservationLoss.from_tree(tree, weight=1.0, reduction="mean")
    points = lorentz_points(9, 2, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: rank_order(x, tree.names, LorentzDistance()), (points,), eps=1e-6, atol=1e-7
    )
    lambda_rank = LambdaRankLoss.from_tree(tree, ndcg_k=3)
    # distinct points in every (anchor, item) pair: the distance is smooth there
    names = tree.names
    anchors = [3, 5, 8]
    positives = [int(tree.parent[i]) for i in anchors]
    negatives = [
        [j for j in range(9) if j not in (a, p)][:4]
        for a, p in zip(anchors, positives, strict=True)
    ]
    batch = {
        "anchor_emb": points.detach()[anchors],
        "positive_emb": points.detach()[positives],
        "negative_embs": points.detach()[[j for row in negatives for j in row]],
    }
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 1] = False  # the masked (pairwise) path
    codes = (
        [names[i] for i in anchors],
        [names[i] for i in positives],
        [[names[j] for j in row] for row in negatives],
    )
    for m in (None, mask):
        embs = tuple(
            batch[key].clone().requires_grad_(True)
            for key in ("anchor_emb", "positive_emb", "negative_embs")
        )
        assert torch.autograd.gradcheck(
            lambda a, p, n, m=m: lambda_rank(a, p, n, *codes, LorentzDistance(), 3, 4, mask=m),
            embs,
            eps=1e-6,
            atol=1e-7,
        )


def test_rank_order_module_rejects_bad_inputs():
    tree = random_tree(6, seed=0)
    loss_fn = RankOrderPreservationLoss.from_tree(tree)
    points = lorentz_points(6, 2, seed=0)
    with pytest.raises(ValueError, match="codes"):
        loss_fn(points, tree.names[:5], LorentzDistance())
    with pytest.raises(ValueError, match="embeddings"):
        loss_fn(points[0], tree.names, LorentzDistance())
    bad = points.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="embeddings.*NaN"):
        loss_fn(bad, tree.names, LorentzDistance())
    with pytest.raises(ValueError, match="codes"):
        loss_fn(points, torch.arange(6) + 1, LorentzDistance())
    with pytest.raises(ValueError, match="broadcast"):
        loss_fn(points, tree.names, lambda x, y: torch.mm(x, y.mT).diagonal())
    with pytest.raises(ValueError, match="broadcast"):
        loss_fn(points, tree.names, lambda x, y: (x - y).norm())
    with pytest.raises(ValueError, match="tree_distances"):
        RankOrderPreservationLoss(torch.zeros(3, 4), {})
    with pytest.raises(ValueError, match="margin"):
        RankOrderPreservationLoss.from_tree(tree, margin=-1.0)
    with pytest.raises(ValueError, match="weight"):
        RankOrderPreservationLoss.from_tree(tree, weight=float("nan"))
    with pytest.raises(ValueError, match="reduction"):
        RankOrderPreservationLoss.from_tree(tree, reduction="avg")
    with pytest.raises(ValueError, match="code_to_idx"):
        RankOrderPreservationLoss(tree.distances(), {"a": 6})


# ----------------------------------------------------------------------------------------------
# LambdaRankLoss (module)


def lambda_batch(tree, batch: int, k: int, seed: int, kind: str = "lorentz"):
    generator = torch.Generator().manual_seed(seed)
    n = len(tree)
    anchor = torch.randint(0, n, (batch,), generator=generator)
    positive = torch.randint(0, n, (batch,), generator=generator)
    negative = torch.randint(0, n, (batch, k), generator=generator)
    points = points_for(kind, n, seed)
    names = tree.names
    return dict(
        anchor_emb=points[anchor],
        positive_emb=points[positive],
        negative_embs=points[negative.reshape(-1)],
        anchor_codes=[names[i] for i in anchor],
        positive_codes=[names[i] for i in positive],
        negative_codes=[[names[i] for i in row] for row in negative],
    )


@pytest.mark.parametrize("name", list(DISTANCES))
def test_lambda_rank_module_matches_loop_reference(name):
    distance_fn, kind = DISTANCES[name]
    tree = random_tree(40, seed=2)
    loss_fn = LambdaRankLoss.from_tree(tree, weight=0.5, sigma=1.5, ndcg_k=4)
    batch = lambda_batch(tree, 6, 7, seed=1, kind=kind)
    batch["anchor_codes"][1] = "unknown anchor"  # skipped
    batch["positive_codes"][4] = "unknown positive"  # skipped
    batch["negative_codes"][0][3] = "unknown negative"  # masked
    mask = torch.ones(6, 7, dtype=torch.bool)
    mask[2, 5:] = False
    embs = (batch["anchor_emb"], batch["positive_emb"], batch["negative_embs"])
    codes = (batch["anchor_codes"], batch["positive_codes"], batch["negative_codes"])

    def vectorized(*x):
        return loss_fn(*x, *codes, distance_fn, 6, 7, mask=mask)

    def reference(*x):  # from points: one distance_fn call per (anchor, item) pair
        return reference_lambda_rank_loss_from_points(
            *x, *codes, distance_fn, tree.distances(), tree.index,
            weight=0.5, sigma=1.5, ndcg_k=4, mask=mask,
        )  # fmt: skip

    value, grads = grads_of(vectorized, *embs)
    expected, expected_grads = grads_of(reference, *embs)
    torch.testing.assert_close(value, expected, rtol=1e-10, atol=1e-10)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-10)
    assert float(grads[2][3].abs().sum()) == 0.0  # the unknown negative


def test_lambda_rank_module_index_inputs_padding_and_coincident_points():
    tree = random_tree(30, seed=4)
    loss_fn = LambdaRankLoss.from_tree(tree)
    batch = lambda_batch(tree, 5, 4, seed=3)
    embs = (batch["anchor_emb"], batch["positive_emb"], batch["negative_embs"])
    by_name = loss_fn(*embs, batch["anchor_codes"], batch["positive_codes"],
                      batch["negative_codes"], LorentzDistance(), 5, 4)  # fmt: skip
    anchor_index = tree.indices(batch["anchor_codes"])
    positive_index = tree.indices(batch["positive_codes"])
    negative_index = torch.stack([tree.indices(row) for row in batch["negative_codes"]])
    for negatives in (negative_index, negative_index.reshape(-1)):
        by_index = loss_fn(*embs, anchor_index, positive_index, negatives, LorentzDistance(), 5, 4)
        torch.testing.assert_close(by_index, by_name, rtol=0, atol=0)
    # padded negatives may hold off-manifold junk: finite loss, zero gradient there
    negative_embs = batch["negative_embs"].clone()
    negative_embs[4:8] = 0.0
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[1] = False
    negative_embs.requires_grad_(True)
    loss = loss_fn(batch["anchor_emb"], batch["positive_emb"], negative_embs,
                   anchor_index, positive_index, negative_index, geoopt.Lorentz().dist, 5, 4,
                   mask=mask)  # fmt: skip
    loss.backward()
    assert math.isfinite(loss.item()) and float(negative_embs.grad[4:8].abs().sum()) == 0.0
    # every point at one place: finite gradients with LorentzDistance
    same = lorentz_points(1, 2, seed=0).expand(5, 3)
    anchor = same.clone().requires_grad_(True)
    negatives = same.repeat(4, 1).requires_grad_(True)
    loss = loss_fn(anchor, same, negatives, anchor_index, positive_index, negative_index,
                   LorentzDistance(), 5, 4)  # fmt: skip
    loss.backward()
    assert loss.item() > 0
    assert bool(torch.isfinite(anchor.grad).all() and torch.isfinite(negatives.grad).all())
    # float32
    embs32 = [e.float() for e in embs]
    loss32 = loss_fn(*embs32, anchor_index, positive_index, negative_index, euclidean, 5, 4)
    assert loss32.dtype == torch.float32 and math.isfinite(loss32.item())


def test_lambda_rank_module_rejects_bad_inputs():
    tree = random_tree(20, seed=0)
    loss_fn = LambdaRankLoss.from_tree(tree)
    batch = lambda_batch(tree, 4, 3, seed=0)
    embs = [batch["anchor_emb"], batch["positive_emb"], batch["negative_embs"]]
    codes = [batch["anchor_codes"], batch["positive_codes"], batch["negative_codes"]]

    def call(embs=embs, codes=codes, distance_fn=None, b=4, k=3, **kw):
        distance_fn = LorentzDistance() if distance_fn is None else distance_fn
        return loss_fn(*embs, *codes, distance_fn, b, k, **kw)

    with pytest.raises(ValueError, match="negative_embs"):
        call(b=4, k=2)
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
    with pytest.raises(ValueError, match="mask"):
        call(mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="broadcast"):
        call(distance_fn=lambda x, y: torch.mm(x, y.mT))
    with pytest.raises(ValueError, match="broadcast"):
        call(distance_fn=lambda x, y: (x - y).norm(dim=-1, keepdim=True))
    with pytest.raises(ValueError, match="sigma"):
        LambdaRankLoss.from_tree(tree, sigma=0.0)
    with pytest.raises(ValueError, match="ndcg_k"):
        LambdaRankLoss.from_tree(tree, ndcg_k=0)
    with pytest.raises(ValueError, match="tree_distances"):
        LambdaRankLoss(torch.zeros(2, 3), {})
