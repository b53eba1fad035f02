"""Sampled evaluation (hyperloss.metrics.evaluate above EXACT_LIMIT, monitor_metrics).

Oracles: the exact evaluation of the same embedding (NAICS, 2,126 nodes), scipy on the
sampled pairs, the dense per-anchor metrics on the sampled anchors, and the spread of the
estimates over many seeds for the standard errors.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import scipy.stats
import torch

import hyperloss.metrics.evaluation as evaluation_module
from hyperloss.construction import construct
from hyperloss.datasets import naics, random_tree
from hyperloss.geometry import LorentzDistance, expmap0, logmap0, pairwise_distances
from hyperloss.metrics import (
    EXACT_LIMIT,
    evaluate,
    mean_average_precision,
    mean_rank,
    monitor_metrics,
    ndcg_at_k,
    per_anchor_spearman,
    spearman,
)
from hyperloss.metrics._sampled import anchor_estimates, draw_anchors, draw_pairs, pair_estimates

LORENTZ = LorentzDistance(1.0)


@pytest.fixture(scope="module")
def naics_case():
    """NAICS with a construct()ed 3-D embedding perturbed in the tangent space at the origin."""
    torch.set_num_threads(1)
    tree = naics()
    tangent = logmap0(construct(tree, 3).points)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(tangent.shape, generator=generator, dtype=torch.float64)
    points = expmap0(tangent + 0.3 * noise)
    return tree, points, evaluate(points, tree)


FIGURES_WITH_ERRORS = [
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


def test_naics_stays_exact(naics_case):
    tree, _, exact = naics_case
    assert len(tree) <= EXACT_LIMIT
    assert exact.sampled is False and exact.seed is None
    assert exact.n_anchors == len(tree) and exact.n_pairs == len(tree) * (len(tree) - 1) // 2


def test_sampled_naics_agrees_with_exact_within_three_standard_errors(naics_case):
    tree, points, exact = naics_case
    report = evaluate(points, tree, sample=True, n_anchors=300, n_pairs=300_000, seed=0)
    assert report.sampled is True
    assert (report.n_anchors, report.n_pairs, report.seed) == (300, 300_000, 0)
    sampled, truth = report.as_dict(), exact.as_dict()
    assert set(report.standard_errors) == set(FIGURES_WITH_ERRORS)
    for name in FIGURES_WITH_ERRORS:
        error = report.standard_errors[name]
        assert error > 0, name
        assert abs(sampled[name] - truth[name]) <= 3 * error, name
        assert sampled[f"{name}_se"] == error
        if name != "mean_rank":  # the only figure not on a unit scale
            assert error < 0.02, name
    # Extremes over a sample bound the true ones from below.
    for name in ("worst", "max_expansion", "max_contraction"):
        assert report.distortion[name] <= exact.distortion[name] * (1 + 1e-12), name
        assert f"distortion_{name}_se" not in sampled


def test_sampled_report_text(naics_case):
    tree, points, _ = naics_case
    report = evaluate(points, tree, sample=True, n_anchors=20, n_pairs=5000, seed=3, k=10)
    text = str(report)
    assert text.splitlines()[0].startswith(
        "sampled: 20 of 2,126 nodes as anchors, 5,000 random pairs (seed 3)"
    )
    spearman_line = next(line for line in text.splitlines() if line.startswith("spearman "))
    assert f"{report.spearman:.4f}" in spearman_line and "±" in spearman_line
    assert "a lower bound (sampled pairs)" in text
    assert len({len(line) for line in text.splitlines()[1:]}) == 1


def test_sampling_is_seeded(naics_case):
    tree, points, _ = naics_case
    kwargs = {"sample": True, "n_anchors": 12, "n_pairs": 4000, "k": 5}
    first = evaluate(points, tree, seed=7, **kwargs).as_dict()
    again = evaluate(points, tree, seed=7, **kwargs).as_dict()
    other = evaluate(points, tree, seed=8, **kwargs).as_dict()
    assert first == again
    assert first["spearman"] != other["spearman"] and first["ndcg@5"] != other["ndcg@5"]


def test_all_anchors_give_the_exact_per_anchor_metrics():
    tree = random_tree(45, seed=12)
    points = expmap0(torch.randn(45, 3, dtype=torch.float64))
    report = evaluate(points, tree, sample=True, n_anchors=1000, n_pairs=500, k=(1, 5))
    e = pairwise_distances(LORENTZ, points).numpy()
    t, closure = tree.distances().numpy(), tree.closure().numpy()
    assert report.n_anchors == 45
    assert report.per_anchor_spearman == pytest.approx(per_anchor_spearman(e, t), abs=1e-12)
    assert report.ndcg == pytest.approx(ndcg_at_k(e, t, [1, 5]), abs=1e-12)
    assert report.map == pytest.approx(mean_average_precision(e, closure), abs=1e-12)
    assert report.mean_rank == pytest.approx(mean_rank(e, closure), abs=1e-12)
    for name in ("per_anchor_spearman", "ndcg@1", "ndcg@5", "map", "mean_rank"):
        assert report.standard_errors[name] == 0.0  # the whole population: no sampling error


def test_sampled_anchors_match_the_dense_metrics_of_those_rows():
    tree = random_tree(80, seed=2)
    points = expmap0(torch.randn(80, 4, dtype=torch.float64))
    anchors = draw_anchors(80, 17, np.random.default_rng(1))
    values, errors = anchor_estimates(points, tree, LORENTZ, anchors, ks=[3], chunk_size=5)
    e = pairwise_distances(LORENTZ, points).numpy()
    t, closure = tree.distances().numpy(), tree.closure().numpy()
    rows = []
    for a in anchors:  # per-row oracle: scipy / plain loops on the dense row
        others = np.arange(80) != a
        rows.append(scipy.stats.spearmanr(e[a, others], t[a, others]).statistic)
    assert values["per_anchor_spearman"] == pytest.approx(np.mean(rows), abs=1e-12)
    expected_error = np.std(rows, ddof=1) / math.sqrt(17) * math.sqrt(1 - 17 / 80)
    assert errors["per_anchor_spearman"] == pytest.approx(expected_error, rel=1e-9)
    rank_sums, counts = [], []
    for a in anchors:  # mean rank by a plain loop, as a ratio of sums over the anchors
        relevant = np.flatnonzero(closure[a])
        closer = [((~closure[a]) & (np.arange(80) != a) & (e[a] < e[a, j])).sum() for j in relevant]
        rank_sums.append(float(np.sum(1 + np.array(closer))))
        counts.append(relevant.size)
    rank_sums, counts = np.array(rank_sums), np.array(counts, dtype=float)
    ratio = rank_sums.sum() / counts.sum()
    assert values["mean_rank"] == pytest.approx(ratio, abs=1e-12)
    residual = rank_sums - ratio * counts
    expected_error = math.sqrt(residual @ residual / (17 * 16)) / counts.mean()
    assert errors["mean_rank"] == pytest.approx(expected_error * math.sqrt(1 - 17 / 80), rel=1e-9)


def test_pair_sample_statistics_match_scipy_on_the_same_pairs():
    tree = random_tree(300, seed=3)
    points = expmap0(torch.randn(300, 3, dtype=torch.float64))
    first, second = draw_pairs(300, 3000, np.random.default_rng(4))
    assert np.all(first != second)
    values, errors = pair_estimates(points, tree, LORENTZ, first, second)
    e = LORENTZ(points[first], points[second]).numpy()
    t = tree.distances().numpy()[first, second]
    assert values["spearman"] == pytest.approx(scipy.stats.spearmanr(e, t).statistic, abs=1e-10)
    assert values["cophenetic"] == pytest.approx(scipy.stats.pearsonr(e, t).statistic, abs=1e-10)
    ratio = e / t
    scale = np.median(ratio)
    assert values["distortion"]["median_ratio"] == scale
    assert values["distortion"]["average"] == pytest.approx(
        np.mean([max(r / scale, scale / r) for r in ratio]), rel=1e-12
    )
    assert values["distortion"]["worst"] == pytest.approx(ratio.max() / ratio.min())
    # Random groups: 25 consecutive slices of the draws, spread / 5.
    groups = np.array_split(np.arange(3000), 25)
    rhos = [scipy.stats.spearmanr(e[g], t[g]).statistic for g in groups]
    assert errors["spearman"] == pytest.approx(np.std(rhos, ddof=1) / 5, rel=1e-9)


def test_standard_errors_match_the_spread_over_seeds(naics_case):
    # The stated se of one sample should match the standard deviation of the estimates over
    # independent samples (within the precision of 40 replicates and of the se estimates).
    tree, points, _ = naics_case
    spearmans, spearman_errors, ndcgs, ndcg_errors = [], [], [], []
    for seed in range(40):
        generator = np.random.default_rng(seed)
        first, second = draw_pairs(len(tree), 4000, generator)
        values, errors = pair_estimates(points, tree, LORENTZ, first, second)
        spearmans.append(values["spearman"])
        spearman_errors.append(errors["spearman"])
        anchors = draw_anchors(len(tree), 15, generator)
        values, errors = anchor_estimates(
            points, tree, LORENTZ, anchors, ks=[10], chunk_size=None, spearman=False,
            retrieval=False,
        )  # fmt: skip
        ndcgs.append(values["ndcg@10"])
        ndcg_errors.append(errors["ndcg@10"])
    for estimates, stated in ((spearmans, spearman_errors), (ndcgs, ndcg_errors)):
        ratio = np.std(estimates, ddof=1) / np.mean(stated)
        assert 0.65 < ratio < 1.5


def test_nothing_n_by_n_above_the_limit(monkeypatch):
    n = EXACT_LIMIT + 900
    inner = random_tree(n, seed=6)

    class NoDenseTree:
        """The tree, refusing every full N x N matrix."""

        def __init__(self, tree):
            self._tree = tree

        def __getattr__(self, name):
            return getattr(self._tree, name)

        def __len__(self):
            return len(self._tree)

        def distances(self, *, rows=None, **kwargs):
            assert rows is not None and len(rows) <= 4, "dense tree distances requested"
            return self._tree.distances(rows=rows, **kwargs)

        def closure(self, *, rows=None):
            assert rows is not None and len(rows) <= 4, "dense closure requested"
            return self._tree.closure(rows=rows)

    def refuse(*args, **kwargs):
        raise AssertionError("pairwise_distances builds N x N")

    monkeypatch.setattr(evaluation_module, "pairwise_distances", refuse)
    points = expmap0(torch.randn(n, 3, dtype=torch.float64))
    tracemalloc.start()
    try:
        report = evaluate(points, NoDenseTree(inner), n_anchors=10, n_pairs=20_000, chunk_size=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.sampled and report.n_anchors == 10 and report.n_pairs == 20_000
    # numpy allocations (traced): a few rows of N, never N^2 bytes (25 MB here).
    assert peak < n * n / 8
    with pytest.raises(ValueError, match="sample=False.*EXACT_LIMIT"):
        evaluate(points, inner, sample=False)


def test_embedding_input_uses_its_points_and_curvature():
    tree = random_tree(60, seed=9)
    embedding = construct(tree, 3, curvature=2.0)
    plain = evaluate(embedding.points, tree, LorentzDistance(2.0))
    assert evaluate(embedding, tree).as_dict() == plain.as_dict()
    assert embedding.evaluate(tree).as_dict() == plain.as_dict()
    sampled = evaluate(embedding, tree, sample=True, n_anchors=8, n_pairs=1000)
    again = evaluate(embedding.points, tree, LorentzDistance(2.0), sample=True, n_anchors=8,
                     n_pairs=1000)  # fmt: skip
    assert sampled.as_dict() == again.as_dict()


def test_monitor_metrics_exact_and_sampled(naics_case):
    tree, points, exact = naics_case
    monitor = monitor_metrics(points, tree)
    assert list(monitor) == ["spearman", "ndcg@10"]
    assert monitor["spearman"] == pytest.approx(exact.spearman, abs=1e-12)
    assert monitor["ndcg@10"] == pytest.approx(exact.ndcg[10], abs=1e-12)
    e = pairwise_distances(LORENTZ, points).numpy()
    assert monitor_metrics(points, tree, k=3)["ndcg@3"] == pytest.approx(
        ndcg_at_k(e, tree.distances(), 3), abs=1e-12
    )
    sampled = monitor_metrics(points, tree, sample=True, n_anchors=200, n_pairs=100_000)
    assert sampled == monitor_metrics(points, tree, sample=True, n_anchors=200, n_pairs=100_000)
    assert sampled["spearman"] == pytest.approx(exact.spearman, abs=0.005)
    assert sampled["ndcg@10"] == pytest.approx(exact.ndcg[10], abs=0.03)
    assert spearman(e, tree.distances()) == pytest.approx(exact.spearman, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"sample": "yes"}, ValueError, "sample must be"),
        ({"sample": 1}, ValueError, "sample must be"),
        ({"n_anchors": 0}, ValueError, "n_anchors must be >= 1"),
        ({"n_anchors": 2.5}, TypeError, "n_anchors must be an int"),
        ({"n_pairs": 1}, ValueError, "n_pairs must be >= 2"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"seed": None}, TypeError, "seed must be an int"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
    ],
)
def test_bad_sampling_arguments(kwargs, error, match):
    tree = random_tree(10, seed=1)
    points = expmap0(torch.randn(10, 2, dtype=torch.float64))
    with pytest.raises(error, match=match):
        evaluate(points, tree, **kwargs)
    with pytest.raises(error, match=match):
        monitor_metrics(points, tree, **kwargs)


def test_bad_inputs_of_the_sampled_path():
    tree = random_tree(10, seed=1)
    points = expmap0(torch.randn(10, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="k must be one int"):
        monitor_metrics(points, tree, k=[5, 10])
    with pytest.raises(ValueError, match="non-finite"):
        evaluate(points, tree, lambda a, b: (a - b).norm(dim=-1) / 0.0, sample=True)
    with pytest.raises(ValueError, match="distance_fn must"):
        evaluate(points, tree, lambda a, b: (a - b).norm(), sample=True)
    with pytest.raises(ValueError, match="at least 2 nodes"):
        evaluate(points[:1], random_tree(1))

    class NoPairDistances:
        height = tree.height

        def __len__(self):
            return 10

        def distances(self, *, rows=None):
            return tree.distances(rows=rows)

        def closure(self, *, rows=None):
            return tree.closure(rows=rows)

    with pytest.raises(TypeError, match=r"distance\(u, v\)"):
        evaluate(points, NoPairDistances(), sample=True)
    assert not evaluate(points, NoPairDistances()).sampled  # the exact path needs no pairs
