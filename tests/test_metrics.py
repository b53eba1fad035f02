"""hyperloss.metrics against independent oracles (scipy, scikit-learn, plain loops)."""

from __future__ import annotations

import json
import math
import warnings

import hypothesis.strategies as st
import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import HealthCheck, given, settings
from sklearn.metrics import average_precision_score, ndcg_score

import hyperloss.metrics._codes as codes_module
import hyperloss.metrics._pairs as pairs_module
from hyperloss.datasets import naics, random_tree
from hyperloss.geometry import LorentzDistance, expmap0, pairwise_distances
from hyperloss.metrics import (
    FidelityReport,
    cophenetic_correlation,
    distortion,
    evaluate,
    mean_average_precision,
    mean_rank,
    ndcg_at_k,
    per_anchor_spearman,
    spearman,
    spearman_ceiling,
)

# ----------------------------------------------------------------------------- data


def _tree_matrices(n: int, seed: int, lineal_discount: float = 0.0):
    tree = random_tree(n, seed=seed)
    return (
        tree.distances(lineal_discount=lineal_discount).numpy(),
        tree.closure().numpy(),
    )


def _embedding(tree_distances: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Symmetric, zero-diagonal embedding distances of several flavours."""
    rng = np.random.default_rng(seed)
    n = tree_distances.shape[0]
    if kind == "points":  # unrelated to the tree, continuous
        x = rng.normal(size=(n, 3))
        e = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    elif kind == "tied_points":  # unrelated to the tree, heavily tied
        x = rng.normal(size=(n, 3))
        e = np.round(np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)), 1)
    elif kind == "noisy_tree":  # correlated with the tree, tied
        noise = rng.normal(scale=1.0, size=(n, n))
        e = np.round(np.abs(tree_distances + noise + noise.T), 0)
    else:
        raise AssertionError(kind)
    e = np.triu(e, 1)
    return e + e.T


CONVERSIONS = {
    "numpy64": lambda a: np.asarray(a, dtype=np.float64),
    "numpy32": lambda a: np.asarray(a, dtype=np.float32),
    "torch64": lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)),
    "torch32": lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32)),
}


def _oracle_values(converted) -> np.ndarray:
    """The float64 values a converted input actually holds (what the oracle must see)."""
    if isinstance(converted, torch.Tensor):
        converted = converted.numpy()
    return np.asarray(converted, dtype=np.float64)


CASES = [
    (n, seed, kind)
    for n, seed in ((23, 0), (57, 1))
    for kind in ("points", "tied_points", "noisy_tree")
]


@pytest.fixture(params=CASES, ids=lambda c: f"n{c[0]}-s{c[1]}-{c[2]}")
def case(request):
    n, seed, kind = request.param
    tree_distances, closure = _tree_matrices(n, seed)
    return tree_distances, closure, _embedding(tree_distances, kind, seed + 10)


# ----------------------------------------------------------------------------- oracles


def _pairs(e, t, min_distance=0.0):
    iu = np.triu_indices(t.shape[0], 1)
    keep = t[iu] >= min_distance
    return e[iu][keep], t[iu][keep]


def _candidates(t, i, min_distance):
    n = t.shape[0]
    return np.flatnonzero((np.arange(n) != i) & (t[i] >= min_distance))


def oracle_per_anchor_spearman(e, t, min_distance=0.0):
    values = []
    for i in range(t.shape[0]):
        c = _candidates(t, i, min_distance)
        if c.size < 2:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho = scipy.stats.spearmanr(e[i, c], t[i, c]).statistic
        if not np.isnan(rho):
            values.append(rho)
    return float(np.mean(values)) if values else math.nan


def oracle_ndcg(e, t, k, gain="linear", min_distance=0.0):
    scores = []
    for i in range(t.shape[0]):
        c = _candidates(t, i, min_distance)
        if c.size == 0:
            continue
        if c.size == 1:
            scores.append(1.0)
            continue
        max_t = t[i, c].max()
        rel = (max_t - t[i, c] + 1e-6) / (max_t + 1e-6)
        if gain == "exponential":
            rel = 2.0**rel - 1.0
        scores.append(ndcg_score(rel[None], -e[i, c][None], k=k))
    return float(np.mean(scores))


def oracle_map(e, relevant):
    values = []
    for i in range(e.shape[0]):
        others = np.arange(e.shape[0]) != i
        if relevant[i, others].any():
            values.append(average_precision_score(relevant[i, others], -e[i, others]))
    return float(np.mean(values))


def oracle_mean_rank(e, relevant):
    ranks = []
    n = e.shape[0]
    for i in range(n):
        for j in range(n):
            if i != j and relevant[i, j]:
                closer = [
                    l for l in range(n) if l != i and not relevant[i, l] and e[i, l] < e[i, j]
                ]
                ranks.append(1 + len(closer))
    return float(np.mean(ranks))


def oracle_distortion(e, t, min_distance=0.0):
    pe, pt = _pairs(e, t, min_distance)
    ratio = pe[pt > 0] / pt[pt > 0]
    scale = np.median(ratio)
    return {
        "mean_ratio": ratio.mean(),
        "median_ratio": scale,
        "average": np.mean([max(r / scale, scale / r) for r in ratio]),
        "worst": ratio.max() / ratio.min(),
        "max_expansion": ratio.max(),
        "max_contraction": 1.0 / ratio.min(),
    }


# ----------------------------------------------------------------------------- vs oracles


@pytest.mark.parametrize("convert", CONVERSIONS)
@pytest.mark.parametrize("min_distance", [0.0, 2.0])
def test_spearman_matches_scipy(case, convert, min_distance):
    t, _, e = case
    ec, tc = CONVERSIONS[convert](e), CONVERSIONS[convert](t)
    expected = scipy.stats.spearmanr(*_pairs(_oracle_values(ec), t, min_distance)).statistic
    got = spearman(ec, tc, min_distance=min_distance)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("convert", CONVERSIONS)
def test_cophenetic_matches_scipy_pearson(case, convert):
    t, _, e = case
    ec = CONVERSIONS[convert](e)
    for min_distance in (0.0, 3.0):
        expected = scipy.stats.pearsonr(*_pairs(_oracle_values(ec), t, min_distance)).statistic
        got = cophenetic_correlation(ec, CONVERSIONS[convert](t), min_distance=min_distance)
        assert isinstance(got, float)
        assert got == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("convert", CONVERSIONS)
def test_per_anchor_spearman_matches_scipy_rows(case, convert):
    t, _, e = case
    ec = CONVERSIONS[convert](e)
    for min_distance in (0.0, 2.0):
        expected = oracle_per_anchor_spearman(_oracle_values(ec), t, min_distance)
        got = per_anchor_spearman(ec, CONVERSIONS[convert](t), min_distance=min_distance)
        assert got == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("convert", CONVERSIONS)
@pytest.mark.parametrize("gain", ["linear", "exponential"])
def test_ndcg_matches_sklearn_including_ties(case, convert, gain):
    t, _, e = case
    ec, tc = CONVERSIONS[convert](e), CONVERSIONS[convert](t)
    ks = [1, 3, 10, 1000]
    got = ndcg_at_k(ec, tc, ks, gain=gain)
    assert list(got) == ks
    for k in ks:
        assert got[k] == pytest.approx(oracle_ndcg(_oracle_values(ec), t, k, gain), abs=1e-9)
    single = ndcg_at_k(ec, tc, 3, gain=gain, min_distance=2.0)
    assert isinstance(single, float)
    assert single == pytest.approx(
        oracle_ndcg(_oracle_values(ec), t, 3, gain, min_distance=2.0), abs=1e-9
    )


def test_ndcg_tie_handling_is_sklearns_average_not_an_arbitrary_order():
    # Two candidates tied in embedding distance, the better one listed last: ignoring ties
    # (or ordinal ranks) would give a different value.
    t = np.array([[0, 1, 3, 2], [1, 0, 2, 1], [3, 2, 0, 1], [2, 1, 1, 0]], dtype=float)
    e = np.array([[0, 2, 1, 1], [2, 0, 1, 1], [1, 1, 0, 2], [1, 1, 2, 0]], dtype=float)
    got = ndcg_at_k(e, t, 1)
    assert got == pytest.approx(oracle_ndcg(e, t, 1), abs=1e-12)
    tied_row = ndcg_score([[0.0, 1 / 3 + 2e-9, 2 / 3]], [[-2.0, -1.0, -1.0]], k=1)
    untied_row = ndcg_score([[0.0, 1 / 3, 2 / 3]], [[-2.0, -1.0, -1.0]], k=1, ignore_ties=True)
    assert abs(tied_row - untied_row) > 0.1  # the oracle's tie handling is not a no-op here


@pytest.mark.parametrize("convert", CONVERSIONS)
def test_map_and_mean_rank_match_sklearn_and_plain_loop(case, convert):
    _, closure, e = case
    ec = CONVERSIONS[convert](e)
    ev = _oracle_values(ec)
    assert mean_average_precision(ec, closure) == pytest.approx(oracle_map(ev, closure), abs=1e-12)
    assert mean_rank(ec, closure) == pytest.approx(oracle_mean_rank(ev, closure), abs=1e-12)


def test_retrieval_accepts_torch_and_integer_relevance(case):
    _, closure, e = case
    expected = oracle_map(e, closure)
    assert mean_average_precision(torch.as_tensor(e), torch.as_tensor(closure)) == pytest.approx(
        expected, abs=1e-12
    )
    assert mean_average_precision(e, closure.astype(np.int64)) == pytest.approx(expected, abs=1e-12)
    assert mean_rank(e, closure.astype(float)) == pytest.approx(
        oracle_mean_rank(e, closure), abs=1e-12
    )


@pytest.mark.parametrize("convert", CONVERSIONS)
def test_distortion_matches_numpy(case, convert):
    t, _, e = case
    e = e + 0.25 * (1.0 - np.eye(e.shape[0]))  # keep every ratio positive
    ec = CONVERSIONS[convert](e)
    for min_distance in (0.0, 2.0):
        got = distortion(ec, CONVERSIONS[convert](t), min_distance=min_distance)
        expected = oracle_distortion(_oracle_values(ec), t, min_distance)
        assert set(got) == set(expected)
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-12), name


def test_distortion_with_coincident_points_is_unbounded():
    t, _ = _tree_matrices(10, 0)
    e = t.copy()
    e[1, 2] = e[2, 1] = 0.0
    got = distortion(e, t)
    assert got["max_contraction"] == math.inf and got["worst"] == math.inf
    assert got["average"] == math.inf
    assert got["max_expansion"] == pytest.approx(1.0)


@pytest.mark.parametrize("lineal_discount", [0.0, 0.5])
@pytest.mark.parametrize("min_distance", [0.0, 1.5])
def test_spearman_ceiling_is_spearman_of_tree_plus_tiny_distinct_noise(
    lineal_discount, min_distance
):
    t, _ = _tree_matrices(80, 4, lineal_discount)
    pt = _pairs(t, t, min_distance)[1]
    rng = np.random.default_rng(0)
    noise = rng.permutation(pt.size) * (0.2 / pt.size)  # distinct, below half the value gap
    expected = scipy.stats.spearmanr(pt, pt + noise).statistic
    assert spearman_ceiling(t, min_distance=min_distance) == pytest.approx(expected, abs=1e-12)
    # ... and an embedding that orders the pairs like that reaches it.
    e = np.zeros_like(t)
    iu = np.triu_indices(t.shape[0], 1)
    keep = t[iu] >= min_distance
    e[iu[0][keep], iu[1][keep]] = pt + noise
    assert spearman(e, t, min_distance=min_distance) == pytest.approx(expected, abs=1e-10)


def test_spearman_ceiling_of_naics_path_lengths():
    t = naics().distances().numpy()
    pt = _pairs(t, t)[1]
    noise = np.random.default_rng(1).permutation(pt.size) * (0.5 / pt.size)
    expected = scipy.stats.spearmanr(pt, pt + noise).statistic
    got = spearman_ceiling(t)
    assert got == pytest.approx(expected, abs=1e-10)
    assert 0.976 < got < 0.978


# ----------------------------------------------------------------------------- code paths


@pytest.mark.parametrize("sample_pairs", [3, 1000])
def test_many_rank_ranges_and_a_tiny_sample(monkeypatch, sample_pairs):
    # Tiny ranges force the multi-range Spearman (one pass per range); a tiny sample makes
    # unbalanced ranges and a loose median bracket.
    t, _ = _tree_matrices(70, 2)
    e = _embedding(t, "tied_points", 3) + 0.1 * np.triu(np.ones_like(t), 1)
    e = np.triu(e, 1) + np.triu(e, 1).T
    expected_rho = scipy.stats.spearmanr(*_pairs(e, t)).statistic
    expected = oracle_distortion(e, t)
    monkeypatch.setattr(pairs_module, "_RANK_RANGE_PAIRS", 97)
    monkeypatch.setattr(pairs_module, "_SAMPLE_PAIRS", sample_pairs)
    assert spearman(e, t) == pytest.approx(expected_rho, abs=1e-10)
    assert distortion(e, t)["median_ratio"] == pytest.approx(expected["median_ratio"], rel=1e-12)


@pytest.mark.parametrize("side", ["low", "high", "exact", "at_max", "all_tied", "empty"])
def test_median_search_recovers_from_any_bracket(side):
    rng = np.random.default_rng(5)
    values = rng.normal(size=5001) if side != "all_tied" else np.full(5000, 2.5)
    ordered = np.sort(values)
    sample = {
        "low": ordered[:400],  # the bracket lies below the median: widened upwards
        "high": ordered[-400:],  # above: widened downwards
        "exact": np.full(400, np.median(values)),
        "at_max": np.full(400, ordered[-1]),
        "all_tied": np.full(400, 2.5),
        "empty": np.zeros(0),
    }[side]
    search = pairs_module.MedianSearch(sample)
    for _ in range(3):
        for block in np.array_split(values, 7):
            search.add(block)
        search.finish_pass(values.size)
        if search.done:
            break
    assert search.done
    assert search.value == np.median(values)


def test_non_integer_and_many_valued_tree_distances():
    rng = np.random.default_rng(7)
    n = 100
    t = rng.random((n, n)) * 5  # ~5,000 distinct values: general codes, sorted row ranks
    t = np.triu(t, 1) + np.triu(t, 1).T
    e = _embedding(t, "tied_points", 8)
    assert spearman(e, t) == pytest.approx(
        scipy.stats.spearmanr(*_pairs(e, t)).statistic, abs=1e-10
    )
    assert per_anchor_spearman(e, t) == pytest.approx(oracle_per_anchor_spearman(e, t), abs=1e-10)
    assert ndcg_at_k(e, t, 5) == pytest.approx(oracle_ndcg(e, t, 5), abs=1e-9)
    assert cophenetic_correlation(e, t) == pytest.approx(
        scipy.stats.pearsonr(*_pairs(e, t)).statistic, abs=1e-10
    )


def test_encoding_falls_back_to_unique_beyond_65536_values():
    rng = np.random.default_rng(9)
    n = 400
    t = rng.random((n, n))
    t = np.triu(t, 1) + np.triu(t, 1).T
    codes = codes_module.encode_tree(t, "tree_distances")
    assert codes.values.size > 1 << 16
    np.testing.assert_array_equal(codes.values[codes.codes], t)
    e = _embedding(t, "points", 1)
    assert spearman(e, t) == pytest.approx(
        scipy.stats.spearmanr(*_pairs(e, t)).statistic, abs=1e-10
    )


def test_integer_and_float16_inputs():
    t, closure = _tree_matrices(30, 6)
    e = _embedding(t, "noisy_tree", 6)
    expected = scipy.stats.spearmanr(*_pairs(e, t)).statistic
    assert spearman(torch.as_tensor(e).long(), torch.as_tensor(t).long()) == pytest.approx(
        expected, abs=1e-10
    )
    half = e.astype(np.float16)
    assert spearman(half, t.astype(np.float16)) == pytest.approx(
        scipy.stats.spearmanr(*_pairs(half.astype(np.float64), t)).statistic, abs=1e-10
    )
    assert ndcg_at_k(torch.as_tensor(e, dtype=torch.bfloat16), t, 5) == pytest.approx(
        oracle_ndcg(torch.as_tensor(e, dtype=torch.bfloat16).double().numpy(), t, 5), abs=1e-9
    )


@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_results_do_not_depend_on_chunk_size(case, chunk_size):
    t, closure, e = case
    assert ndcg_at_k(e, t, [2, 7], chunk_size=chunk_size) == pytest.approx(
        ndcg_at_k(e, t, [2, 7]), abs=1e-15
    )
    assert per_anchor_spearman(e, t, chunk_size=chunk_size) == pytest.approx(
        per_anchor_spearman(e, t), abs=1e-15
    )
    assert mean_average_precision(e, closure, chunk_size=chunk_size) == pytest.approx(
        mean_average_precision(e, closure), abs=1e-15
    )
    assert mean_rank(e, closure, chunk_size=chunk_size) == pytest.approx(
        mean_rank(e, closure), abs=1e-15
    )


def test_undefined_cases_are_nan():
    t = np.array([[0.0, 1.0], [1.0, 0.0]])
    e = np.array([[0.0, 3.0], [3.0, 0.0]])
    assert math.isnan(spearman(e, t))  # one pair
    assert math.isnan(spearman_ceiling(t))
    assert math.isnan(cophenetic_correlation(e, t))
    flat = np.ones((4, 4)) - np.eye(4)
    assert math.isnan(spearman(flat, flat))  # constant
    assert math.isnan(per_anchor_spearman(flat, flat))
    assert math.isnan(mean_average_precision(flat, np.zeros((4, 4), bool)))
    assert math.isnan(mean_rank(flat, np.zeros((4, 4), bool)))
    assert math.isnan(ndcg_at_k(flat, flat, 3, min_distance=5.0))
    assert all(math.isnan(v) for v in distortion(flat, np.zeros((4, 4))).values())
    assert ndcg_at_k(flat, flat, 2) == pytest.approx(1.0)  # all ties, all equally relevant


# ----------------------------------------------------------------------------- properties

_small_case = st.tuples(
    st.integers(min_value=4, max_value=18),
    st.integers(min_value=0, max_value=10_000),
)


def _grid_embedding(n, seed):
    """Distances on a coarse grid (k / 4, many ties) so that monotone maps keep them exact."""
    rng = np.random.default_rng(seed)
    e = rng.integers(1, 21, size=(n, n)) / 4.0
    e = np.triu(e, 1)
    return e + e.T


def _all_metrics(e, t, closure):
    return {
        "spearman": spearman(e, t),
        "per_anchor": per_anchor_spearman(e, t),
        "ndcg": ndcg_at_k(e, t, [1, 3, 50]),
        "ndcg_exp": ndcg_at_k(e, t, 4, gain="exponential"),
        "map": mean_average_precision(e, closure),
        "mean_rank": mean_rank(e, closure),
        "cophenetic": cophenetic_correlation(e, t),
        "distortion": distortion(e, t),
    }


def _assert_close(a, b, tol=1e-12):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_close(a[key], b[key], tol)
    elif math.isnan(a):
        assert math.isnan(b)
    else:
        assert b == pytest.approx(a, abs=tol, rel=tol)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_small_case, st.randoms(use_true_random=False))
def test_metrics_are_invariant_to_relabelling_nodes(params, random):
    n, seed = params
    t, closure = _tree_matrices(n, seed % 50)
    e = _grid_embedding(n, seed)
    perm = np.array(random.sample(range(n), n))
    before = _all_metrics(e, t, closure)
    after = _all_metrics(e[perm][:, perm], t[perm][:, perm], closure[perm][:, perm])
    _assert_close(before, after)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_small_case, st.sampled_from(["double", "shift", "exp", "sqrt"]))
def test_rank_metrics_are_invariant_to_monotone_maps_of_embedding_distances(params, name):
    n, seed = params
    t, closure = _tree_matrices(n, seed % 50)
    e = _grid_embedding(n, seed)
    transform = {
        "double": lambda x: 2.0 * x,
        "shift": lambda x: x + 3.0,
        "exp": np.exp,
        "sqrt": np.sqrt,
    }[name]
    mapped = np.where(np.eye(n, dtype=bool), 0.0, transform(e))
    before = _all_metrics(e, t, closure)
    after = _all_metrics(mapped, t, closure)
    for key in ("spearman", "per_anchor", "ndcg", "ndcg_exp", "map", "mean_rank"):
        _assert_close(before[key], after[key])
    if name in ("double", "shift"):  # affine: Pearson too
        _assert_close(before["cophenetic"], after["cophenetic"])
    if name == "double":  # scaling: ratios scale, the worst case does not
        for key in ("mean_ratio", "median_ratio", "max_expansion"):
            _assert_close(2.0 * before["distortion"][key], after["distortion"][key])
        _assert_close(before["distortion"]["max_contraction"] / 2.0,
                      after["distortion"]["max_contraction"])  # fmt: skip
        _assert_close(before["distortion"]["worst"], after["distortion"]["worst"])
        _assert_close(before["distortion"]["average"], after["distortion"]["average"])


def test_perfect_embedding_scores_perfectly():
    t, closure = _tree_matrices(40, 11)
    assert spearman(t, t) == pytest.approx(1.0)
    assert per_anchor_spearman(t, t) == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in ndcg_at_k(t, t, [1, 5, 40]).values())
    assert cophenetic_correlation(3 * t, t) == pytest.approx(1.0)
    assert distortion(3 * t, t)["worst"] == pytest.approx(1.0)
    assert mean_rank(t, closure) >= 1.0


# ----------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def embedded():
    tree = random_tree(45, seed=12)
    generator = torch.Generator().manual_seed(0)
    points = expmap0(torch.randn(45, 3, dtype=torch.float64, generator=generator))
    return tree, points


def test_evaluate_agrees_with_the_functions(embedded):
    tree, points = embedded
    report = evaluate(points, tree, k=(1, 5))
    e = pairwise_distances(LorentzDistance(1.0), points).numpy()
    t, closure = tree.distances().numpy(), tree.closure().numpy()
    assert isinstance(report, FidelityReport)
    assert report.n_nodes == 45
    assert report.spearman == pytest.approx(spearman(e, t), abs=1e-12)
    assert report.spearman_ceiling == pytest.approx(spearman_ceiling(t), abs=1e-15)
    assert report.per_anchor_spearman == pytest.approx(per_anchor_spearman(e, t), abs=1e-12)
    assert report.ndcg == pytest.approx(ndcg_at_k(e, t, [1, 5]), abs=1e-12)
    assert list(report.ndcg) == [1, 5]
    assert report.map == pytest.approx(mean_average_precision(e, closure), abs=1e-12)
    assert report.mean_rank == pytest.approx(mean_rank(e, closure), abs=1e-12)
    assert report.cophenetic == pytest.approx(cophenetic_correlation(e, t), abs=1e-12)
    assert report.distortion == pytest.approx(distortion(e, t), rel=1e-12)
    # and with the oracles directly
    assert report.spearman == pytest.approx(
        scipy.stats.spearmanr(*_pairs(e, t)).statistic, abs=1e-10
    )
    assert report.ndcg[5] == pytest.approx(oracle_ndcg(e, t, 5), abs=1e-9)
    assert report.map == pytest.approx(oracle_map(e, closure), abs=1e-12)


def test_evaluate_with_a_custom_distance_and_chunks(embedded):
    tree, _ = embedded
    euclidean_points = torch.randn(45, 4, dtype=torch.float64)
    distance_fn = lambda a, b: (a - b).norm(dim=-1)  # noqa: E731
    small = evaluate(euclidean_points, tree, distance_fn, k=3, chunk_size=4)
    large = evaluate(euclidean_points.numpy(), tree, distance_fn, k=[3])
    e = pairwise_distances(distance_fn, euclidean_points).numpy()
    assert small.ndcg == pytest.approx(large.ndcg, abs=1e-12)
    assert small.as_dict() == pytest.approx(large.as_dict(), abs=1e-12)
    assert small.spearman == pytest.approx(spearman(e, tree.distances()), abs=1e-12)


def test_report_as_dict_and_table(embedded):
    tree, points = embedded
    report = evaluate(points, tree)
    flat = report.as_dict()
    figures = [
        "spearman",
        "spearman_ceiling",
        "per_anchor_spearman",
        "ndcg@5",
        "ndcg@10",
        "ndcg@20",
        "map",
        "mean_rank",
        "cophenetic",
        "distortion_mean_ratio",
        "distortion_median_ratio",
        "distortion_average",
    ]
    extremes = ["distortion_worst", "distortion_max_expansion", "distortion_max_contraction"]
    expected_keys = ["n_nodes", "sampled", "n_anchors", "n_pairs"]
    for name in figures:
        expected_keys += [name, f"{name}_se"]
    assert list(flat) == expected_keys + extremes
    assert json.loads(json.dumps(flat)) == flat
    assert all(type(v) in (bool, int, float) for v in flat.values())
    assert flat["sampled"] is False
    assert flat["n_anchors"] == 45 and flat["n_pairs"] == 45 * 44 // 2
    assert all(flat[f"{name}_se"] == 0.0 for name in figures)  # exact: no sampling error
    assert flat["ndcg@10"] == report.ndcg[10]
    assert flat["distortion_worst"] == report.distortion["worst"]
    text = str(report)
    lines = text.splitlines()
    assert lines[0].startswith("exact: all 45 nodes as anchors and 990 pairs")
    assert lines[1].split()[:2] == ["metric", "value"]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    assert any(line.startswith("spearman ceiling") for line in lines)
    assert any(line.startswith("scale (median ratio)") for line in lines)
    assert any(line.startswith("average distortion") for line in lines)
    assert f"{report.spearman:.4f}" in text
    assert "±" not in text


def test_report_says_when_nothing_was_contracted():
    tree = random_tree(30, seed=4)
    t = tree.distances().numpy()
    points = torch.stack([torch.arange(30.0), torch.zeros(30)], dim=1).double()
    report = evaluate(points, tree, lambda a, b: 3.0 * _tree_metric(a, b, t))
    assert report.distortion["max_contraction"] == pytest.approx(1 / 3)
    assert report.distortion["average"] == pytest.approx(1.0)
    line = next(x for x in str(report).splitlines() if x.startswith("max contraction"))
    assert "< 1: no pair contracted" in line
    line = next(x for x in str(report).splitlines() if x.startswith("max expansion"))
    assert "no pair expanded" not in line


def _tree_metric(a, b, t):
    """A distance_fn that returns tree distances: the points carry their node index."""
    i = a[..., 0].long()
    j = b[..., 0].long()
    return torch.as_tensor(t)[i, j]


def test_evaluate_rejects_bad_input(embedded):
    tree, points = embedded
    with pytest.raises(ValueError, match="points"):
        evaluate(points[:-1], tree)
    with pytest.raises(ValueError, match="points"):
        evaluate(points[:, 0], tree)
    with pytest.raises(TypeError, match="points"):
        evaluate(points.long(), tree)
    with pytest.raises(TypeError, match="points"):
        evaluate(points.tolist(), tree)
    with pytest.raises(TypeError, match="distance_fn"):
        evaluate(points, tree, "lorentz")
    with pytest.raises(TypeError, match="tree"):
        evaluate(points, {"a": None})
    with pytest.raises(ValueError, match="k"):
        evaluate(points, tree, k=0)
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(points, tree, lambda a, b: (a - b).norm(dim=-1) / 0.0)
    bad = points.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="points"):
        evaluate(bad, tree)


# ----------------------------------------------------------------------------- bad input

_T = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
_R = np.array([[False, True, False], [True, False, False], [False, False, False]])


def _with(value, i=0, j=1):
    out = _T.copy()
    out[i, j] = value
    return out


BAD_INPUTS = [
    (lambda: spearman(_T[:2], _T), ValueError, "embedding_distances.*square"),
    (lambda: spearman(_T, np.zeros((3, 3, 3))), ValueError, "tree_distances.*square"),
    (lambda: spearman(_T, np.zeros((4, 4))), ValueError, "same shape"),
    (lambda: spearman(np.zeros((1, 1)), np.zeros((1, 1))), ValueError, "at least 2"),
    (lambda: spearman(_with(np.nan), _T), ValueError, "embedding_distances must be finite"),
    (lambda: spearman(_T, _with(np.inf)), ValueError, "tree_distances must be finite"),
    (lambda: spearman(_T, _with(-1.0)), ValueError, "tree_distances must be non-negative"),
    (lambda: spearman("abc", _T), TypeError, "embedding_distances"),
    (lambda: spearman(_T, _T.astype(bool)), TypeError, "tree_distances"),
    (lambda: spearman(_T, _T.astype(complex)), TypeError, "tree_distances"),
    (lambda: spearman(_T, _T, min_distance=-1.0), ValueError, "min_distance"),
    (lambda: spearman(_T, _T, min_distance=float("nan")), ValueError, "min_distance"),
    (lambda: spearman(_T, _T, min_distance="1"), TypeError, "min_distance"),
    (lambda: spearman_ceiling(_T[:, :2]), ValueError, "tree_distances"),
    (lambda: spearman_ceiling(_T, min_distance=True), TypeError, "min_distance"),
    (lambda: ndcg_at_k(_T, _T, 0), ValueError, "k must be >= 1"),
    (lambda: ndcg_at_k(_T, _T, -3), ValueError, "k must be >= 1"),
    (lambda: ndcg_at_k(_T, _T, 1.5), TypeError, "k must"),
    (lambda: ndcg_at_k(_T, _T, True), TypeError, "k must"),
    (lambda: ndcg_at_k(_T, _T, []), ValueError, "k must"),
    (lambda: ndcg_at_k(_T, _T, [3, "5"]), TypeError, "k must hold ints"),
    (lambda: ndcg_at_k(_T, _T, 3, gain="log"), ValueError, "gain"),
    (lambda: ndcg_at_k(_T, _T, 3, chunk_size=0), ValueError, "chunk_size"),
    (lambda: ndcg_at_k(_T, _T, 3, chunk_size=2.0), TypeError, "chunk_size"),
    (lambda: per_anchor_spearman(_T, _with(np.nan)), ValueError, "tree_distances"),
    (lambda: cophenetic_correlation(_T, _T[:2, :2]), ValueError, "same shape"),
    (lambda: distortion(_with(-0.5), _T), ValueError, "embedding_distances must be non-negative"),
    (lambda: mean_average_precision(_T, _R[:2]), ValueError, "relevant"),
    (lambda: mean_average_precision(_T, _T), ValueError, "relevant must be boolean"),
    (lambda: mean_average_precision(_T, np.zeros((2, 2), bool)), ValueError, "same shape"),
    (lambda: mean_rank(_with(np.inf), _R), ValueError, "embedding_distances must be finite"),
    (lambda: mean_rank(_T, object()), TypeError, "relevant"),
]


@pytest.mark.parametrize("call, error, match", BAD_INPUTS, ids=range(len(BAD_INPUTS)))
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("flavour", ["negative", "signed_zero", "huge_span", "float32_negative"])
def test_spearman_sort_paths(flavour):
    # Non-negative values take the packed integer sort; these take the argsort fallback or
    # check that -0.0 and 0.0 tie.
    t, _ = _tree_matrices(40, 13)
    rng = np.random.default_rng(13)
    e = _embedding(t, "tied_points", 13)
    if flavour == "negative":
        e = e - 2.0
    elif flavour == "signed_zero":
        e = np.where(rng.random(e.shape) < 0.3, rng.choice([0.0, -0.0], size=e.shape), e)
    elif flavour == "huge_span":
        e = 10.0 ** rng.uniform(-300, 300, size=e.shape)
    else:
        e = (e - 1.5).astype(np.float32)
    expected = scipy.stats.spearmanr(*_pairs(np.asarray(e, dtype=np.float64), t)).statistic
    assert spearman(e, t) == pytest.approx(expected, abs=1e-10)


def test_average_tie_runs_matches_rankdata():
    rng = np.random.default_rng(21)
    for values in (rng.integers(0, 5, 200), rng.integers(0, 1000, 200), np.zeros(7), [1.0]):
        ordered = np.sort(np.asarray(values, dtype=float))
        ranks = np.arange(1, ordered.size + 1, dtype=float)
        pairs_module.average_tie_runs(ranks, ordered[1:] == ordered[:-1])
        np.testing.assert_array_equal(ranks, scipy.stats.rankdata(ordered))


def test_ndcg_return_type_follows_the_type_of_k():
    t, _ = _tree_matrices(25, 3)
    e = _embedding(t, "points", 3)
    expected = oracle_ndcg(e, t, 5)
    for one in (5, np.int64(5), np.array(5), torch.tensor(5)):
        got = ndcg_at_k(e, t, one)
        assert type(got) is float and got == pytest.approx(expected, abs=1e-12)
    for several in ([5], (5,), np.array([5]), torch.tensor([5])):
        assert ndcg_at_k(e, t, several) == pytest.approx({5: expected}, abs=1e-12)
    got = ndcg_at_k(e, t, np.array([7, 5, 7]))
    assert list(got) == [7, 5]  # order kept, repeats once
    with pytest.raises(TypeError, match="k must"):
        ndcg_at_k(e, t, torch.tensor(5.0))


def test_median_search_gives_the_average_distortion_of_a_plain_loop():
    rng = np.random.default_rng(8)
    values = np.round(rng.lognormal(size=3001), 2)  # positive ratios with ties
    ordered = np.sort(values)
    scale = np.median(values)
    expected = sum(max(r / scale, scale / r) for r in values) / values.size
    for sample in (ordered[::10], ordered[:300], ordered[-300:], np.full(50, scale)):
        search = pairs_module.MedianSearch(sample)
        while not search.done:
            for block in np.array_split(values, 5):
                search.add(block)
            search.finish_pass(values.size)
        assert search.value == scale
        assert search.average_distortion == pytest.approx(expected, rel=1e-12)
    search = pairs_module.MedianSearch(ordered[::10])
    search.add(np.concatenate([[0.0], values]))
    search.finish_pass(values.size + 1)
    assert search.average_distortion == math.inf


def test_map_of_the_tree_metric_is_capped_by_ties_and_farther_relatives():
    # The docstring's claim: the tree metric scores below 1, breaking ties in favour of the
    # relevant nodes raises it, and only ranking every relevant node first reaches 1.
    t, closure = _tree_matrices(300, 5)
    tree_metric = mean_average_precision(t, closure)
    ties_broken = mean_average_precision(t - 0.5 * closure, closure)
    assert tree_metric < ties_broken < 1.0
    assert mean_average_precision(t + 100.0 * ~closure, closure) == pytest.approx(1.0)
    assert tree_metric == pytest.approx(oracle_map(t, closure), abs=1e-12)
