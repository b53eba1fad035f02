"""Score an embedding against its tree at any size: :func:`evaluate` and :func:`monitor_metrics`.

Up to :data:`EXACT_LIMIT` nodes every metric is exact (dense ``N x N`` matrices, as the
functions of :mod:`hyperloss.metrics.functional`). Above it nothing ``N x N`` is built: the
per-anchor metrics are averaged over a seeded sample of anchors, each scored exactly against
all ``N - 1`` other nodes, and the global metrics are computed on a seeded sample of pairs;
the report states the sample sizes and a standard error for every figure.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from hyperloss.geometry import LorentzDistance, pairwise_distances
from hyperloss.metrics._anchors import scan_anchors
from hyperloss.metrics._codes import dense_tree_codes
from hyperloss.metrics._common import (
    DISTANCE_BLOCK_ELEMENTS,
    mean,
    rows_per_block,
)
from hyperloss.metrics._pairs import EXTREME_DISTORTION_KEYS, pair_statistics
from hyperloss.metrics._sampled import (
    anchor_estimates,
    draw_anchors,
    draw_pairs,
    pair_estimates,
)
from hyperloss.metrics._validation import (
    as_numpy,
    check_finite_rows,
    check_ks,
    check_points,
    check_sample,
    check_tree,
)
from hyperloss.validation import check_callable, check_chunk_size, check_int

__all__ = ["DEFAULT_ANCHORS", "DEFAULT_PAIRS", "EXACT_LIMIT", "FidelityReport", "evaluate",
           "monitor_metrics"]  # fmt: skip

#: Largest tree evaluated exactly by ``sample="auto"``: the dense float64 distance matrix of
#: 4,096 nodes is 128 MiB and the exact evaluation takes a few seconds on one core. Larger
#: trees are sampled; ``sample=False`` refuses them rather than build ``N x N`` matrices.
EXACT_LIMIT = 4096
#: Default anchors of a sampled evaluation (per-anchor metrics).
DEFAULT_ANCHORS = 200
#: Default pairs of a sampled evaluation (Spearman, its ceiling, cophenetic, distortion).
DEFAULT_PAIRS = 1_000_000

_LEADING_FIGURES = ("spearman", "spearman_ceiling", "per_anchor_spearman")


# ====================================================================== report
@dataclasses.dataclass
class FidelityReport:
    """All fidelity metrics of one embedding against one tree (see :func:`evaluate`).

    Attributes
    ----------
    spearman : float
        Tie-aware Spearman correlation of embedding and tree distances over all pairs.
    spearman_ceiling : float
        The largest ``spearman`` an embedding with distinct distances can reach given the ties
        of the tree distances (:func:`~hyperloss.metrics.spearman_ceiling`).
    per_anchor_spearman : float
        Mean over anchors of each row's Spearman correlation.
    ndcg : dict of int to float
        NDCG@k for each requested ``k`` (linear gain).
    map : float
        Mean average precision of graph reconstruction (relevant = ancestor or descendant;
        below 1 even for the tree metric itself, see
        :func:`~hyperloss.metrics.mean_average_precision`).
    mean_rank : float
        Mean rank of graph reconstruction (1 is perfect).
    cophenetic : float
        Pearson correlation of embedding and tree distances over all pairs.
    distortion : dict of str to float
        ``mean_ratio``, ``median_ratio`` (the scale), ``average`` (scale-free average
        distortion), ``worst``, ``max_expansion``, ``max_contraction`` of the ratio
        embedding / tree distance (:func:`~hyperloss.metrics.distortion`).
    n_nodes : int
        Number of nodes.
    sampled : bool
        Whether the figures are estimates from samples (``False``: exact).
    n_anchors : int or None
        Anchors behind the per-anchor metrics (``n_nodes`` when exact).
    n_pairs : int or None
        Pairs behind the global metrics (all ``N (N - 1) / 2`` when exact; drawn with
        replacement when sampled).
    standard_errors : dict of str to float
        One standard error per estimated figure, keyed like :meth:`as_dict` (``"spearman"``,
        ``"ndcg@10"``, ``"distortion_median_ratio"``, ...); 0 for exact figures. The extremes
        ``distortion_worst``, ``distortion_max_expansion`` and ``distortion_max_contraction``
        have none: over a sample of pairs they are lower bounds of the true extremes.
    seed : int or None
        Seed of the samples (``None`` when exact).
    """

    spearman: float
    spearman_ceiling: float
    per_anchor_spearman: float
    ndcg: dict[int, float]
    map: float
    mean_rank: float
    cophenetic: float
    distortion: dict[str, float]
    n_nodes: int
    sampled: bool = False
    n_anchors: int | None = None
    n_pairs: int | None = None
    standard_errors: dict[str, float] = dataclasses.field(default_factory=dict)
    seed: int | None = None

    def _figures(self) -> dict[str, float]:
        flat = {
            "spearman": float(self.spearman),
            "spearman_ceiling": float(self.spearman_ceiling),
            "per_anchor_spearman": float(self.per_anchor_spearman),
        }
        for k, value in self.ndcg.items():
            flat[f"ndcg@{int(k)}"] = float(value)
        flat["map"] = float(self.map)
        flat["mean_rank"] = float(self.mean_rank)
        flat["cophenetic"] = float(self.cophenetic)
        for name, value in self.distortion.items():
            flat[f"distortion_{name}"] = float(value)
        return flat

    def as_dict(self) -> dict[str, float | int | bool | None]:
        """A flat, JSON-serialisable dict.

        Keys: ``n_nodes``, ``sampled``, ``n_anchors``, ``n_pairs``, then each figure
        (``spearman``, ``spearman_ceiling``, ``per_anchor_spearman``, ``ndcg@<k>`` for each k,
        ``map``, ``mean_rank``, ``cophenetic``, ``distortion_<name>`` for each distortion
        entry), each followed by ``<figure>_se``, its standard error, where it has one.
        Values are Python bools, ints and floats (``nan``/``inf`` where a metric is undefined
        or unbounded).
        """
        flat: dict[str, float | int | bool | None] = {
            "n_nodes": int(self.n_nodes),
            "sampled": bool(self.sampled),
            "n_anchors": None if self.n_anchors is None else int(self.n_anchors),
            "n_pairs": None if self.n_pairs is None else int(self.n_pairs),
        }
        for key, value in self._figures().items():
            flat[key] = value
            if key in self.standard_errors:
                flat[f"{key}_se"] = float(self.standard_errors[key])
        return flat

    def __str__(self) -> str:
        figures = self._figures()
        labels = {
            "spearman": "spearman",
            "spearman_ceiling": "spearman ceiling",
            "per_anchor_spearman": "per-anchor spearman",
            "map": "map",
            "mean_rank": "mean rank",
            "cophenetic": "cophenetic",
            "distortion_mean_ratio": "scale (mean ratio)",
            "distortion_median_ratio": "scale (median ratio)",
            "distortion_average": "average distortion",
            "distortion_worst": "worst distortion",
            "distortion_max_expansion": "max expansion",
            "distortion_max_contraction": "max contraction",
        }
        show_errors = self.sampled and bool(self.standard_errors)
        rows: list[tuple[str, ...]] = []
        for key, value in figures.items():
            spec = ".2f" if key == "mean_rank" else ".4g" if key.startswith("distortion") else ".4f"
            row = [labels.get(key, key), _format(value, spec)]
            if show_errors:
                error = self.standard_errors.get(key)
                row.append("" if error is None else f"± {_format_error(error)}")
            row.append(self._note(key, value))
            rows.append(tuple(row))
        header = ("metric", "value", *(("± se",) if show_errors else ()), "note")
        if not any(row[-1] for row in rows):  # no notes: no note column
            header, rows = header[:-1], [row[:-1] for row in rows]
        widths = [max(len(row[c]) for row in (header, *rows)) for c in range(len(header))]
        lines = [self._summary()]
        for row in (header, tuple("-" * w for w in widths), *rows):
            cells = [f"{row[0]:<{widths[0]}}", f"{row[1]:>{widths[1]}}"]
            cells += [f"{cell:<{width}}" for cell, width in zip(row[2:], widths[2:], strict=True)]
            lines.append("  ".join(cells))
        return "\n".join(lines)

    def _summary(self) -> str:
        if not self.sampled:
            pairs = f" and {self.n_pairs:,} pairs" if self.n_pairs is not None else ""
            return f"exact: all {self.n_nodes:,} nodes as anchors{pairs}"
        return (
            f"sampled: {self.n_anchors:,} of {self.n_nodes:,} nodes as anchors, "
            f"{self.n_pairs:,} random pairs (seed {self.seed}); value ± one standard error"
        )

    def _note(self, key: str, value: float) -> str:
        notes = []
        pairs = "sampled pair" if self.sampled else "pair"
        if key == "distortion_max_contraction" and value < 1:
            notes.append(f"< 1: no {pairs} contracted")
        if key == "distortion_max_expansion" and value < 1:
            notes.append(f"< 1: no {pairs} expanded")
        if self.sampled and key.removeprefix("distortion_") in EXTREME_DISTORTION_KEYS:
            notes.append("a lower bound (sampled pairs)")
        return "; ".join(notes)


# ====================================================================== evaluate
def evaluate(
    points: Any,
    tree: Any,
    distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    k: int | Sequence[int] = (5, 10, 20),
    sample: bool | str = "auto",
    n_anchors: int = DEFAULT_ANCHORS,
    n_pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    chunk_size: int | None = None,
) -> FidelityReport:
    """Every fidelity metric of an embedding against its tree, at any size.

    **Exact** (``sample=False``, or ``"auto"`` with ``N <= EXACT_LIMIT``): builds the
    embedding distances with :func:`hyperloss.geometry.pairwise_distances` (symmetric, zero
    diagonal), the tree distances with ``tree.distances(rows=...)`` (stored as 1-byte codes)
    and the relevance with ``tree.closure()``, then computes
    :func:`~hyperloss.metrics.spearman`, :func:`~hyperloss.metrics.spearman_ceiling`,
    :func:`~hyperloss.metrics.cophenetic_correlation` and
    :func:`~hyperloss.metrics.distortion` in one streaming pass over the pairs, and
    :func:`~hyperloss.metrics.per_anchor_spearman`, :func:`~hyperloss.metrics.ndcg_at_k`
    (linear gain), :func:`~hyperloss.metrics.mean_average_precision` and
    :func:`~hyperloss.metrics.mean_rank` from one sort of each anchor row.

    **Sampled** (``sample=True``, or ``"auto"`` above ``EXACT_LIMIT``), with one seeded
    ``numpy.random.default_rng(seed)``:

    - ``n_anchors`` distinct anchors drawn uniformly. Each anchor's row is computed on demand
      against all other nodes (embedding distances from ``distance_fn`` in blocks, tree
      distances from ``tree.distances(rows=...)``, relevance from ``tree.closure(rows=...)``,
      O(N) each) and scored exactly as above; the per-anchor metrics are the means over the
      sample, with standard error ``std / sqrt(n) * sqrt(1 - n / N)`` (a ratio-estimator
      error for the mean rank, which averages over relevant pairs).
    - ``n_pairs`` pairs of distinct nodes drawn uniformly, independently (with
      replacement): embedding distances from ``distance_fn``, tree distances from
      ``tree.distance(u, v)``. Spearman, its tie ceiling, the cophenetic correlation and the
      distortion are those of the sample (all consistent, bias O(1 / n_pairs)), with
      standard errors by random groups: the spread of the statistic over 25 disjoint slices
      of the sample, divided by 5. The worst-case distortion and the extreme ratios of a
      sample only bound the true ones from below and get no standard error.

    ``min_distance`` is 0 throughout.

    Parameters
    ----------
    points : Tensor or array, shape (N, dim + 1), or Embedding
        Points in tree index order (row ``i`` is ``tree.names[i]``), or any object with
        ``points_for(tree)`` and ``curvature`` (a :class:`hyperloss.embedding.Embedding`):
        its points in the tree's order, and, when ``distance_fn`` is None, the Lorentz
        distance of its curvature.
    tree : hyperloss.trees.Tree
        ``N >= 2`` nodes.
    distance_fn : callable, optional
        Broadcasting distance ``(x, y) -> d`` (the ``geoopt.Manifold.dist`` contract);
        default :class:`hyperloss.geometry.LorentzDistance` with curvature 1 (or the
        Embedding's curvature).
    k : int or sequence of int, default (5, 10, 20)
        NDCG cut-offs.
    sample : {'auto', True, False}, default 'auto'
        ``'auto'``: exact up to ``EXACT_LIMIT`` (4,096) nodes, sampled above. ``False``
        refuses trees above ``EXACT_LIMIT`` (``ValueError``).
    n_anchors : int, default 200
        Anchors of a sampled evaluation (all ``N`` when ``n_anchors >= N``: the per-anchor
        metrics are then exact, with standard error 0).
    n_pairs : int, default 1,000,000
        Pairs of a sampled evaluation, ``>= 2``.
    seed : int, default 0
        Seed of the samples; the same seed draws the same anchors and pairs for the same N,
        so that two embeddings of one tree are compared on the same sample.
    chunk_size : int, optional
        Anchor rows per block (default about 2M entries per block).

    Returns
    -------
    FidelityReport
        With ``sampled``, ``n_anchors``, ``n_pairs``, ``seed`` and ``standard_errors``.

    Raises
    ------
    TypeError
        If ``points``, ``tree``, ``distance_fn``, ``k`` or a count has the wrong type.
    ValueError
        If ``points`` is not ``(N, dim + 1)`` with finite values, ``distance_fn`` returns
        non-finite distances, a count is out of range, ``sample`` is not one of the modes, or
        ``sample=False`` above ``EXACT_LIMIT``.

    Notes
    -----
    Exact: memory about ``8 N^2`` bytes (the float64 distance matrix) plus ``2 N^2`` (tree
    codes, then the closure); 4,096 nodes take about 4 s on one core. Sampled: memory
    ``O(N (dim + height))`` plus blocks of about 2M entries; time
    ``O(n_anchors N log N + n_pairs log n_pairs)``. Measured on one core
    (``benchmarks/evaluate_large.py``, 10-D random points, default samples): 5.5 s for
    98,500 nodes, 58 s for 1,000,000 nodes (about 0.3 s per anchor row of 10^6 nodes, 2 s
    for 10^6 pairs), with no memory beyond the tree and the points but a few blocks.

    Examples
    --------
    >>> from hyperloss.construction import construct
    >>> from hyperloss.datasets import random_tree
    >>> tree = random_tree(6000, seed=1)
    >>> report = evaluate(construct(tree, 3), tree, n_anchors=32, n_pairs=20_000)
    >>> report.sampled, report.n_anchors, report.n_pairs
    (True, 32, 20000)
    """
    ks, _, chunk_size, sample, n_anchors, n_pairs, seed = _check_options(
        k, chunk_size, sample, n_anchors, n_pairs, seed
    )
    point_tensor, distance_fn, n_nodes = _resolve_inputs(points, tree, distance_fn)
    if not _is_sampled(sample, n_nodes):
        return _exact_report(point_tensor, tree, distance_fn, ks, chunk_size)
    _check_sampled_tree(tree)

    generator = np.random.default_rng(seed)
    anchors = draw_anchors(n_nodes, n_anchors, generator)
    first, second = draw_pairs(n_nodes, n_pairs, generator)
    pairs, pair_errors = pair_estimates(point_tensor, tree, distance_fn, first, second)
    per_anchor, anchor_errors = anchor_estimates(
        point_tensor, tree, distance_fn, anchors, ks=ks, chunk_size=chunk_size
    )
    return FidelityReport(
        spearman=pairs["spearman"],
        spearman_ceiling=pairs["spearman_ceiling"],
        per_anchor_spearman=per_anchor["per_anchor_spearman"],
        ndcg={kk: per_anchor[f"ndcg@{kk}"] for kk in ks},
        map=per_anchor["map"],
        mean_rank=per_anchor["mean_rank"],
        cophenetic=pairs["cophenetic"],
        distortion=pairs["distortion"],
        n_nodes=n_nodes,
        sampled=True,
        n_anchors=int(anchors.size),
        n_pairs=int(first.size),
        standard_errors=_ordered_errors(ks, {**pair_errors, **anchor_errors}),
        seed=seed,
    )


def monitor_metrics(
    points: Any,
    tree: Any,
    distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    k: int = 10,
    sample: bool | str = "auto",
    n_anchors: int = 32,
    n_pairs: int = 100_000,
    seed: int = 0,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Cheap fit monitor: Spearman and NDCG@k only, exact for small trees, sampled above.

    The two figures of :func:`evaluate` that training watches, without the rest: exact
    (identical to ``spearman`` and ``ndcg_at_k`` on the dense matrices) up to
    ``EXACT_LIMIT`` nodes with ``sample='auto'``; above, NDCG@k over ``n_anchors`` sampled
    anchors (each exact against all N nodes) and Spearman over ``n_pairs`` sampled pairs,
    without standard errors. Keep ``seed`` fixed across a run: every call then scores the
    same anchors and pairs, so changes between calls come from the embedding, not from the
    sample. About 0.7 s for a 98,500-node tree and 8 s for a 1,000,000-node tree on one core
    with the defaults (``benchmarks/evaluate_large.py --monitor``); the exact path on
    NAICS (2,126 nodes) takes under 1 s.

    Parameters
    ----------
    points, tree, distance_fn, sample, seed, chunk_size
        As in :func:`evaluate`.
    k : int, default 10
        The NDCG cut-off.
    n_anchors : int, default 32
        Enough to follow NDCG@k during a fit (its standard error is then about 0.01-0.02
        on the trees we measured); raise it for a final figure, or call :func:`evaluate`.
    n_pairs : int, default 100,000

    Returns
    -------
    dict
        ``{"spearman": float, "ndcg@<k>": float}``.
    """
    ks, single, chunk_size, sample, n_anchors, n_pairs, seed = _check_options(
        k, chunk_size, sample, n_anchors, n_pairs, seed
    )
    if not single:
        raise TypeError(f"k must be one int, got {k!r}")
    point_tensor, distance_fn, n_nodes = _resolve_inputs(points, tree, distance_fn)
    if not _is_sampled(sample, n_nodes):
        tree_codes = dense_tree_codes(tree, chunk_size)
        embedding = _dense_distances(point_tensor, distance_fn, chunk_size)
        rho = pair_statistics(embedding, tree_codes, 0.0, spearman=True)["spearman"]
        totals = scan_anchors(embedding, tree=tree_codes, chunk_size=chunk_size, ks=ks)
        return {"spearman": rho, f"ndcg@{ks[0]}": mean(totals["ndcg_sum"][ks[0]],
                                                       totals["ndcg_count"])}  # fmt: skip
    _check_sampled_tree(tree)
    generator = np.random.default_rng(seed)
    anchors = draw_anchors(n_nodes, n_anchors, generator)
    first, second = draw_pairs(n_nodes, n_pairs, generator)
    pairs, _ = pair_estimates(point_tensor, tree, distance_fn, first, second, n_groups=0)
    per_anchor, _ = anchor_estimates(
        point_tensor,
        tree,
        distance_fn,
        anchors,
        ks=ks,
        chunk_size=chunk_size,
        spearman=False,
        retrieval=False,
    )
    return {"spearman": pairs["spearman"], f"ndcg@{ks[0]}": per_anchor[f"ndcg@{ks[0]}"]}


# ====================================================================== helpers
def _resolve_inputs(
    points: Any, tree: Any, distance_fn: Any
) -> tuple[torch.Tensor, Callable[..., torch.Tensor], int]:
    """Points in tree order, the distance callable and N; an Embedding is duck-typed (the
    metrics layer may not import the training layer)."""
    check_tree(tree)
    n_nodes = len(tree)
    if n_nodes < 2:
        raise ValueError(f"tree must have at least 2 nodes, got {n_nodes}")
    if hasattr(points, "points_for") and hasattr(points, "curvature"):
        if distance_fn is None:
            distance_fn = LorentzDistance(float(points.curvature))
        points = points.points_for(tree)
    elif distance_fn is None:
        distance_fn = LorentzDistance(1.0)
    return check_points(points, n_nodes), check_callable(distance_fn, "distance_fn"), n_nodes


def _is_sampled(sample: bool | str, n_nodes: int) -> bool:
    if sample is False and n_nodes > EXACT_LIMIT:
        raise ValueError(
            f"sample=False evaluates exactly with N x N matrices, allowed up to EXACT_LIMIT = "
            f"{EXACT_LIMIT} nodes; this tree has {n_nodes}: use sample='auto' or True"
        )
    return sample is True or (sample == "auto" and n_nodes > EXACT_LIMIT)


def _check_options(
    k: Any, chunk_size: Any, sample: Any, n_anchors: Any, n_pairs: Any, seed: Any
) -> tuple[list[int], bool, int | None, str | bool, int, int, int]:
    """The options :func:`evaluate` and :func:`monitor_metrics` share, checked (in order):
    ``k`` as a list and whether it was one int, then chunk_size, sample, n_anchors, n_pairs,
    seed."""
    ks, single = check_ks(k)
    return (
        ks,
        single,
        check_chunk_size(chunk_size),
        check_sample(sample),
        check_int(n_anchors, "n_anchors", minimum=1),
        check_int(n_pairs, "n_pairs", minimum=2),
        check_int(seed, "seed", minimum=0),
    )


def _check_sampled_tree(tree: Any) -> None:
    check_tree(tree, sampled=True)


def _exact_report(
    points: torch.Tensor,
    tree: Any,
    distance_fn: Callable[..., torch.Tensor],
    ks: Sequence[int],
    chunk_size: int | None,
) -> FidelityReport:
    n_nodes = len(tree)
    tree_codes = dense_tree_codes(tree, chunk_size)
    embedding = _dense_distances(points, distance_fn, chunk_size)
    pairs = pair_statistics(
        embedding, tree_codes, 0.0, spearman=True, ceiling=True, cophenetic=True, distortion=True
    )
    # The closure is only needed now: building it later keeps it out of the peak above.
    relevance = as_numpy(tree.closure(), "tree.closure()").astype(bool, copy=False)
    anchors = scan_anchors(
        embedding,
        tree=tree_codes,
        relevant=relevance,
        chunk_size=chunk_size,
        ks=ks,
        gain="linear",
        spearman=True,
        retrieval=True,
    )
    report = FidelityReport(
        spearman=pairs["spearman"],
        spearman_ceiling=pairs["spearman_ceiling"],
        per_anchor_spearman=mean(anchors["spearman_sum"], anchors["spearman_count"]),
        ndcg={kk: mean(anchors["ndcg_sum"][kk], anchors["ndcg_count"]) for kk in ks},
        map=mean(anchors["ap_sum"], anchors["ap_count"]),
        mean_rank=mean(anchors["rank_sum"], anchors["rank_count"]),
        cophenetic=pairs["cophenetic"],
        distortion=pairs["distortion"],
        n_nodes=n_nodes,
        sampled=False,
        n_anchors=n_nodes,
        n_pairs=n_nodes * (n_nodes - 1) // 2,
    )
    report.standard_errors = {
        key: 0.0
        for key in report._figures()
        if key.removeprefix("distortion_") not in EXTREME_DISTORTION_KEYS
    }
    return report


def _ordered_errors(ks: Sequence[int], errors: dict[str, float]) -> dict[str, float]:
    order = [*_LEADING_FIGURES, *(f"ndcg@{kk}" for kk in ks), "map", "mean_rank", "cophenetic"]
    order += ["distortion_mean_ratio", "distortion_median_ratio", "distortion_average"]
    return {key: float(errors[key]) for key in order if key in errors}


def _dense_distances(
    points: torch.Tensor, distance_fn: Callable[..., torch.Tensor], chunk_size: int | None
) -> np.ndarray:
    """The symmetric (N, N) distance matrix (zero diagonal), float64 unless it came as float32.

    Dense: ``8 N^2`` bytes, for the exact path only (``N <= EXACT_LIMIT``).
    """
    n_nodes = points.shape[0]
    # distance_fn broadcasts to (rows, N, dim + 1) intermediates: bound those, not just (rows, N).
    block_rows = rows_per_block(n_nodes * points.shape[1], DISTANCE_BLOCK_ELEMENTS)
    block_rows = min(block_rows, chunk_size or block_rows)
    with torch.no_grad():
        distances = pairwise_distances(distance_fn, points, chunk_size=block_rows)
    distances = as_numpy(distances, "distance_fn output")
    if distances.dtype not in (np.float32, np.float64):
        distances = distances.astype(np.float64)
    check_finite_rows(distances, "distance_fn returned non-finite distances (nan or inf)")
    return distances


def _format_error(error: float) -> str:
    """A standard error with two significant digits in fixed notation (``0.000071``)."""
    if not math.isfinite(error) or error == 0:
        return _format(error, "g")
    decimals = max(0, 1 - math.floor(math.log10(abs(error))))
    return f"{error:.{decimals}f}"


def _format(value: float, spec: str) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)
