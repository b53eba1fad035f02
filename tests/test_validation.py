"""The shared input checks (hyperloss.validation) and that every public edge follows them.

One rule per kind of argument: numpy integers are integers everywhere an int is taken, bools
and floats (even 2.0) are not; real numbers may be numpy scalars or one-element tensors, never
bools, NaN or infinities; node indices are integer tensors in [0, N).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hyperloss import validation
from hyperloss.construction import construct, distortion_bound
from hyperloss.datasets import balanced_tree, random_tree
from hyperloss.embedding import Embedding
from hyperloss.geometry import LorentzDistance, expmap0, lorentz_distance, pairwise_distances
from hyperloss.losses import GlobalRankLoss, LambdaRankLoss, RankOrderPreservationLoss
from hyperloss.metrics import evaluate
from hyperloss.validation import (
    all_finite,
    check_callable,
    check_chunk_size,
    check_curvature,
    check_finite_tensor,
    check_float_tensor,
    check_index,
    check_int,
    check_nonnegative,
    check_point_matrix,
    check_positive,
    check_real,
    check_tensor,
    check_tree,
)

NUMPY_INTEGERS = [np.int8(3), np.int16(3), np.int32(3), np.int64(3), np.uint8(3), np.uint64(3)]
NOT_INTEGERS = [True, False, np.bool_(True), 3.0, np.float64(3.0), "3", None, torch.tensor(3)]
NUMPY_REALS = [np.float16(0.5), np.float32(0.5), np.float64(0.5), np.int64(2), np.uint8(2)]
NOT_FINITE = [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf")]


# ----------------------------------------------------------------------------- scalars
@pytest.mark.parametrize("value", [3, *NUMPY_INTEGERS])
def test_check_int_accepts_python_and_numpy_integers(value):
    result = check_int(value, "dim", minimum=2)
    assert type(result) is int and result == 3


@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_check_int_refuses_bools_floats_and_others(value):
    with pytest.raises(TypeError, match="dim must be an int, got"):
        check_int(value, "dim")


def test_check_int_minimum():
    assert check_int(-5, "seed") == -5  # no minimum: any integer
    assert check_int(np.int64(0), "seed", minimum=0) == 0
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        check_int(np.int64(-1), "seed", minimum=0)


@pytest.mark.parametrize("value", [0.5, 2, *NUMPY_REALS, torch.tensor(0.5), torch.tensor([0.5])])
def test_check_real_accepts_numbers_numpy_scalars_and_one_element_tensors(value):
    result = check_real(value, "margin")
    assert type(result) is float
    assert result == float(np.asarray(value.item() if isinstance(value, torch.Tensor) else value))


@pytest.mark.parametrize(
    "value", [True, np.bool_(False), "0.5", None, 1j, torch.tensor([0.5, 1.0]), [0.5]]
)
def test_check_real_refuses_other_kinds(value):
    with pytest.raises(TypeError, match="margin must be a real number"):
        check_real(value, "margin")


@pytest.mark.parametrize("value", [*NOT_FINITE, torch.tensor(math.nan)])
@pytest.mark.parametrize("check", [check_real, check_positive, check_nonnegative])
def test_real_checks_refuse_nan_and_inf(check, value):
    with pytest.raises(ValueError, match="lr must be finite"):
        check(value, "lr")


def test_sign_checks_and_their_boundaries():
    assert check_positive(np.float32(1e-30), "lr") == pytest.approx(1e-30)
    assert check_nonnegative(0, "eps") == 0.0
    assert check_nonnegative(np.float64(-0.0), "eps") == 0.0
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        check_positive(0, "lr")
    with pytest.raises(ValueError, match="eps must be >= 0"):
        check_nonnegative(-1e-300, "eps")


def test_check_curvature_and_chunk_size_defaults_name_the_argument():
    assert check_curvature(np.int64(2)) == 2.0
    with pytest.raises(ValueError, match="curvature must be > 0"):
        check_curvature(-1.0)
    with pytest.raises(TypeError, match="curvature must be a real number"):
        check_curvature(True)
    assert check_chunk_size(None) is None
    assert check_chunk_size(np.int64(64)) == 64
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        check_chunk_size(0)
    with pytest.raises(TypeError, match="chunk_size must be an int"):
        check_chunk_size(64.0)
    with pytest.raises(TypeError, match="block must be an int"):
        check_chunk_size(True, "block")


def test_check_callable_and_check_tree():
    assert check_callable(len, "distance_fn") is len
    with pytest.raises(TypeError, match="distance_fn must be callable, got str"):
        check_callable("lorentz", "distance_fn")
    tree = balanced_tree(2, 1)
    assert check_tree(tree) is tree
    with pytest.raises(TypeError, match="tree must be a hyperloss.trees.Tree, got Tensor"):
        check_tree(tree.distances())


# ----------------------------------------------------------------------------- tensors
def test_tensor_checks():
    x = torch.zeros(2, 3)
    assert check_tensor(x, "x", ndim=2) is x
    assert check_tensor(torch.zeros(2, dtype=torch.long), "x") is not None
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        check_tensor([[0.0]], "x")
    with pytest.raises(ValueError, match=r"x must be a 2-D tensor, got shape \(3,\)"):
        check_tensor(torch.zeros(3), "x", ndim=2)
    # check_float_tensor reads no values: NaN passes, an integer dtype does not.
    assert check_float_tensor(torch.tensor([math.nan]), "p").isnan().all()
    with pytest.raises(TypeError, match="p must be a floating-point tensor, got dtype torch.int64"):
        check_float_tensor(torch.tensor([1]), "p")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_check_finite_tensor_finds_every_non_finite_entry(bad, dtype):
    values = torch.randn(7, 5, dtype=torch.float64).to(dtype)
    assert check_finite_tensor(values, "points") is values
    for position in [(0, 0), (6, 4), (3, 2)]:
        broken = values.clone()
        broken[position] = bad
        with pytest.raises(ValueError, match="points contains NaN or inf"):
            check_finite_tensor(broken, "points")
        with pytest.raises(ValueError, match="points contains NaN or inf"):
            check_finite_tensor(broken.T, "points")  # non-contiguous


@pytest.mark.parametrize("block_elements", [1, 3, 2**22])
def test_all_finite_agrees_with_isfinite(monkeypatch, block_elements):
    # The sum-first shortcut must not mistake an overflowing sum of finite values for inf,
    # whatever the block size of the exact fallback.
    monkeypatch.setattr(validation, "_FINITE_BLOCK_ELEMENTS", block_elements)
    generator = torch.Generator().manual_seed(0)
    huge = torch.full((4, 3), torch.finfo(torch.float64).max / 2, dtype=torch.float64)
    assert math.isinf(float(huge.sum()))
    cases = [huge, huge.T, huge[:, 0], torch.tensor(1.5), torch.tensor(math.inf), torch.zeros(0)]
    for _ in range(20):
        values = torch.randn(5, 4, generator=generator, dtype=torch.float64) * 1e307
        mask = torch.rand(5, 4, generator=generator) < 0.1
        cases.append(torch.where(mask, torch.tensor(math.nan, dtype=torch.float64), values))
    for values in cases:
        assert all_finite(values) == bool(torch.isfinite(values).all())
    assert all_finite(torch.tensor([1, 2]))  # integers are always finite
    assert all_finite(torch.tensor([True]))


def test_check_point_matrix():
    points = torch.randn(4, 3, dtype=torch.float64)
    assert check_point_matrix(points, "points", rows=4) is points
    with pytest.raises(ValueError, match=r"points must have shape \(5, D\), got \(4, 3\)"):
        check_point_matrix(points, "points", rows=5)
    with pytest.raises(ValueError, match=r"points must have shape \(N, D\), got \(12,\)"):
        check_point_matrix(points.reshape(-1), "points")
    with pytest.raises(TypeError, match="points must be a floating-point tensor"):
        check_point_matrix(points.long(), "points")
    with pytest.raises(TypeError, match="points must be a torch.Tensor"):
        check_point_matrix(points.numpy(), "points")
    points[1, 1] = math.inf
    with pytest.raises(ValueError, match="points contains NaN or inf"):
        check_point_matrix(points, "points")


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_check_index_accepts_every_integer_dtype(dtype):
    index = check_index(torch.tensor([[0, 4], [2, 1]], dtype=dtype), "items", 5, shape=(2, None))
    assert index.dtype == torch.int64 and index.device.type == "cpu"
    assert index.tolist() == [[0, 4], [2, 1]]


def test_check_index_refusals_name_the_argument():
    with pytest.raises(TypeError, match="anchors must be an integer torch.Tensor"):
        check_index([0, 1], "anchors", 5)
    for dtype in (torch.bool, torch.float32, torch.float64):
        with pytest.raises(TypeError, match=f"anchors must hold integer node indices.*{dtype}"):
            check_index(torch.zeros(2, dtype=dtype), "anchors", 5)
    with pytest.raises(ValueError, match=r"anchors must have shape \(3,\), got \(2,\)"):
        check_index(torch.tensor([0, 1]), "anchors", 5, shape=(3,))
    with pytest.raises(ValueError, match=r"items must have shape \(2, n\), got \(4,\)"):
        check_index(torch.arange(4), "items", 5, shape=(2, None))
    for bad in (5, -1):
        with pytest.raises(
            ValueError, match=rf"nodes must hold node indices in \[0, 5\), got {bad}"
        ):
            check_index(torch.tensor([0, bad, 2]), "nodes", 5)


def test_check_index_skips_entries_outside_valid():
    padded = torch.tensor([[0, -1], [3, 99]])
    valid = torch.tensor([[True, False], [True, False]])
    assert torch.equal(check_index(padded, "items", 4, valid=valid), padded)
    valid[1, 1] = True
    with pytest.raises(ValueError, match="items must hold node indices in \\[0, 4\\), got 99"):
        check_index(padded, "items", 4, valid=valid)
    assert check_index(torch.zeros(0, dtype=torch.long), "nodes", 0).numel() == 0


# ------------------------------------------------------------------ the rules at the edges
def _points(n, curvature=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tangent = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return expmap0(tangent, curvature=curvature)


def test_numpy_integers_are_integers_everywhere():
    tree = balanced_tree(2, 2)
    assert torch.equal(construct(tree, np.int64(2)).points, construct(tree, 2).points)
    assert torch.equal(
        construct(tree, dim=np.int32(3), curvature=np.int64(2)).points,
        construct(tree, dim=3, curvature=2.0).points,
    )
    same = random_tree(np.int64(5), seed=np.int64(1))
    assert same.names == random_tree(5, seed=1).names
    assert torch.equal(same.parent, random_tree(5, seed=1).parent)
    assert len(balanced_tree(np.int64(2), np.uint8(3))) == 15

    embedding = Embedding(_points(4, curvature=1.0), list("abcd"), curvature=np.int64(1))
    assert type(embedding.curvature) is float and embedding.curvature == 1.0
    assert embedding.nearest("a", k=np.int64(2)) == embedding.nearest("a", k=2)

    x = _points(6)
    assert torch.equal(
        pairwise_distances(LorentzDistance(), x, chunk_size=np.int64(2)),
        pairwise_distances(LorentzDistance(), x, chunk_size=2),
    )
    assert torch.equal(tree.distance(np.int64(3), np.int64(4)), tree.distance(3, 4))

    lambda_rank = LambdaRankLoss(tree, ndcg_k=np.int64(3))
    assert type(lambda_rank.ndcg_k) is int and lambda_rank.ndcg_k == 3


def test_numpy_reals_are_reals_everywhere():
    tree = random_tree(7, seed=2)
    points = _points(7, seed=2)
    nodes = torch.arange(7)
    margin = np.float32(0.1)
    loss_numpy = RankOrderPreservationLoss(tree, margin=margin)
    loss_float = RankOrderPreservationLoss(tree, margin=float(margin))
    assert type(loss_numpy.margin) is float
    assert torch.equal(
        loss_numpy(points, nodes, LorentzDistance()), loss_float(points, nodes, LorentzDistance())
    )
    assert GlobalRankLoss(tree, weight=np.float64(2.0)).weight == 2.0
    assert lorentz_distance(points[0], points[1], curvature=np.float32(1.0)) == pytest.approx(
        float(lorentz_distance(points[0], points[1]))
    )
    assert distortion_bound(np.float64(6.0), np.float32(2.0)) == distortion_bound(
        6.0, float(np.float32(2.0))
    )


def test_evaluate_takes_a_numpy_chunk_size():
    tree = random_tree(30, seed=3)
    points = _points(30, seed=3)
    expected = evaluate(points, tree, chunk_size=64).as_dict()
    assert evaluate(points, tree, chunk_size=np.int64(64)).as_dict() == expected
    assert (
        evaluate(points, tree, seed=np.int64(0), sample=True).as_dict()
        == evaluate(points, tree, seed=0, sample=True).as_dict()
    )


def test_bools_and_floats_are_not_integers_anywhere():
    tree = balanced_tree(2, 2)
    embedding = Embedding(_points(3), list("abc"))
    points = _points(7)
    calls = {
        "dim": [lambda: construct(tree, True), lambda: construct(tree, 2.0)],
        "n": [lambda: random_tree(True), lambda: random_tree(5.0)],
        "depth": [lambda: balanced_tree(2, np.float64(1.0))],
        "k": [lambda: embedding.nearest("a", k=True), lambda: embedding.nearest("a", k=2.0)],
        "chunk_size": [
            lambda: evaluate(points, tree, chunk_size=True),
            lambda: evaluate(points, tree, chunk_size=64.0),
            lambda: pairwise_distances(LorentzDistance(), points, chunk_size=True),
            lambda: RankOrderPreservationLoss(tree, chunk_size=2.0),
        ],
        "ndcg_k": [
            lambda: LambdaRankLoss(tree, ndcg_k=True),
            lambda: LambdaRankLoss(tree, ndcg_k=3.0),
        ],
        "seed": [lambda: evaluate(points, tree, seed=0.0)],
        "curvature": [lambda: Embedding(_points(3), list("abc"), curvature=True)],
        "margin": [lambda: RankOrderPreservationLoss(tree, margin=True)],
    }
    for name, bad_calls in calls.items():
        for call in bad_calls:
            with pytest.raises(TypeError, match=name):
                call()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_and_inf_are_refused_at_every_edge(bad):
    tree = balanced_tree(2, 2)
    points = _points(7)
    calls = {
        "curvature": [
            lambda: Embedding(points, tree.names, curvature=bad),
            lambda: construct(tree, curvature=bad),
            lambda: lorentz_distance(points[0], points[1], curvature=bad),
            lambda: LorentzDistance(curvature=bad),
        ],
        "tau": [lambda: construct(tree, tau=bad), lambda: distortion_bound(bad, 1.0)],
        "min_angle": [lambda: distortion_bound(6.0, bad)],
        "margin": [lambda: RankOrderPreservationLoss(tree, margin=bad)],
        "weight": [lambda: GlobalRankLoss(tree, weight=bad)],
        "sigma": [lambda: LambdaRankLoss(tree, sigma=bad)],
        "lineal_discount": [lambda: tree.distance(0, 1, lineal_discount=bad)],
    }
    for name, bad_calls in calls.items():
        for call in bad_calls:
            with pytest.raises(ValueError, match=name):
                call()
