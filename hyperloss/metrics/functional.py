"""Fidelity metrics: how faithfully embedding distances reproduce a tree.

Every metric is a plain function of an ``(N, N)`` matrix of embedding distances and either the
``(N, N)`` tree distances (:meth:`hyperloss.trees.Tree.distances`) or a boolean relevance matrix
(:meth:`hyperloss.trees.Tree.closure`). Inputs may be numpy arrays or torch tensors of any real
dtype; results are Python floats (or a dict keyed by ``k``). :func:`evaluate` computes them all
for a set of points and returns a :class:`FidelityReport`.

Two families
------------
Global metrics look at the unordered pairs ``i < j`` (the upper triangle; the lower triangle and
the diagonal are ignored) whose tree distance is at least ``min_distance``:
:func:`spearman`, :func:`spearman_ceiling`, :func:`cophenetic_correlation`, :func:`distortion`.
Per-anchor metrics look at each row ``i`` (the anchor) and its candidates ``j != i`` (with tree
distance at least ``min_distance`` where a tree is involved), then average over anchors:
:func:`per_anchor_spearman`, :func:`ndcg_at_k`, :func:`mean_average_precision`,
:func:`mean_rank`.

Ties
----
Tree distances are massively tied (a tree of height 5 has at most 11 distinct path lengths), so
every rank statistic here is tie-aware: tied values share their average rank (Spearman), tied
embedding distances share their gains and discounts (NDCG, as ``sklearn.metrics.ndcg_score``),
and a tie in embedding distance enters a precision-recall curve as one threshold
(MAP, as ``sklearn.metrics.average_precision_score``).

Memory
------
Nothing ``N x N`` is created beyond the inputs and one compact code matrix of the tree distances
(1 or 2 bytes per entry; 8 only for a matrix with more than 65,536 distinct values). Per-anchor
metrics sort blocks of ``chunk_size`` anchor rows; global metrics stream the upper triangle in
row blocks and rank the embedding distances in value ranges of about ``2**25`` pairs. A
20,000-node :func:`evaluate` (``benchmarks/evaluate_large.py``) peaks at 4.5 GiB resident, of
which 3.0 GiB is the float64 distance matrix, and takes about 95 s on one core.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from hyperloss.geometry import LorentzDistance, pairwise_distances

__all__ = [
    "FidelityReport",
    "cophenetic_correlation",
    "distortion",
    "evaluate",
    "mean_average_precision",
    "mean_rank",
    "ndcg_at_k",
    "per_anchor_spearman",
    "spearman",
    "spearman_ceiling",
]

#: Added to the numerator and denominator of the NDCG relevance so that the farthest candidates
#: keep a tiny positive relevance and a zero ``max_t`` stays defined (original research code).
RELEVANCE_EPS = 1e-6

# Entries per anchor block of the per-anchor metrics (each entry costs ~130 bytes of
# temporaries while a block is sorted and scored, so ~270 MB per block).
_ANCHOR_BLOCK_ELEMENTS = 1 << 21
# Entries per row block when the upper triangle is streamed (global metrics, input checks).
_PAIR_BLOCK_ELEMENTS = 1 << 22
# Point coordinates per broadcast block handed to distance_fn (each intermediate ~16 MB).
_DISTANCE_BLOCK_ELEMENTS = 1 << 21
# Pairs ranked by one sort in the global Spearman (~17 bytes each while ranked).
_RANK_RANGE_PAIRS = 1 << 25
# Random pairs kept to place value-range boundaries (Spearman) and the median bracket.
_SAMPLE_PAIRS = 1 << 16
# Tree-distance codes: a per-row count table over codes is used up to this many distinct values.
_MAX_COUNTED_CODES = 4096
_GAINS = ("linear", "exponential")


# ====================================================================== public API: report
@dataclasses.dataclass
class FidelityReport:
    """All fidelity metrics of one embedding against one tree (see :func:`evaluate`).

    Attributes
    ----------
    spearman : float
        Tie-aware Spearman correlation of embedding and tree distances over all pairs.
    spearman_ceiling : float
        The largest ``spearman`` an embedding with distinct distances can reach given the ties
        of the tree distances (:func:`spearman_ceiling`).
    per_anchor_spearman : float
        Mean over anchors of each row's Spearman correlation.
    ndcg : dict of int to float
        NDCG@k for each requested ``k`` (linear gain).
    map : float
        Mean average precision of graph reconstruction (relevant = ancestor or descendant).
    mean_rank : float
        Mean rank of graph reconstruction (1 is perfect).
    cophenetic : float
        Pearson correlation of embedding and tree distances over all pairs.
    distortion : dict of str to float
        ``mean``, ``median``, ``worst``, ``max_expansion``, ``max_contraction`` of the ratio
        embedding / tree distance (:func:`distortion`).
    n_nodes : int
        Number of nodes.
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

    def as_dict(self) -> dict[str, float | int]:
        """A flat, JSON-serialisable dict.

        Keys: ``n_nodes``, ``spearman``, ``spearman_ceiling``, ``per_anchor_spearman``,
        ``ndcg@<k>`` for each k, ``map``, ``mean_rank``, ``cophenetic`` and
        ``distortion_<name>`` for each distortion entry. Values are Python ints and floats
        (``nan``/``inf`` where a metric is undefined or unbounded).
        """
        flat: dict[str, float | int] = {
            "n_nodes": int(self.n_nodes),
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

    def __str__(self) -> str:
        rows: list[tuple[str, str]] = [("nodes", str(int(self.n_nodes)))]
        rows.append(("spearman", _format(self.spearman, ".4f")))
        rows.append(("spearman ceiling", _format(self.spearman_ceiling, ".4f")))
        rows.append(("per-anchor spearman", _format(self.per_anchor_spearman, ".4f")))
        rows.extend((f"ndcg@{k}", _format(value, ".4f")) for k, value in self.ndcg.items())
        rows.append(("map", _format(self.map, ".4f")))
        rows.append(("mean rank", _format(self.mean_rank, ".2f")))
        rows.append(("cophenetic", _format(self.cophenetic, ".4f")))
        rows.extend(
            (f"distortion {name.replace('_', ' ')}", _format(value, ".4g"))
            for name, value in self.distortion.items()
        )
        name_width = max(len("metric"), *(len(name) for name, _ in rows))
        value_width = max(len("value"), *(len(value) for _, value in rows))
        lines = [f"{'metric':<{name_width}}  {'value':>{value_width}}"]
        lines.append(f"{'-' * name_width}  {'-' * value_width}")
        lines.extend(f"{name:<{name_width}}  {value:>{value_width}}" for name, value in rows)
        return "\n".join(lines)


# ====================================================================== public API: metrics
def spearman(embedding_distances: Any, tree_distances: Any, *, min_distance: float = 0.0) -> float:
    r"""Tie-aware Spearman rank correlation of embedding and tree distances over all pairs.

    The Pearson correlation of the average ranks (ties share the mean of the ranks they span)
    of ``embedding_distances[i, j]`` and ``tree_distances[i, j]`` over the pairs ``i < j``
    with ``tree_distances[i, j] >= min_distance``; equal to ``scipy.stats.spearmanr`` on the
    same pairs. Tree distances are massively tied, which is why average ranks matter: with
    ordinal ranks the value would depend on an arbitrary order inside each tie.

    Parameters
    ----------
    embedding_distances : array or Tensor, shape (N, N)
        Distances between the embedded nodes (any real dtype; only ``i < j`` is read).
    tree_distances : array or Tensor, shape (N, N)
        Tree distances, finite and non-negative.
    min_distance : float, default 0.0
        Keep only pairs whose tree distance is at least this.

    Returns
    -------
    float
        In [-1, 1]; ``nan`` when fewer than two pairs remain or either side is constant.

    See Also
    --------
    spearman_ceiling : the best value reachable given the ties of the tree distances.

    Notes
    -----
    Memory stays bounded for large N: the tree distances are ranked by counting their few
    distinct values, the embedding distances by sorting value ranges of at most ``2**25``
    pairs at a time.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]])
    >>> e = np.array([[0.0, 0.5, 0.9], [0.5, 0.0, 0.4], [0.9, 0.4, 0.0]])
    >>> round(spearman(e, t), 6)
    0.866025
    """
    embedding, tree = _check_pair_inputs(embedding_distances, tree_distances)
    return _pair_statistics(embedding, tree, _check_min_distance(min_distance), spearman=True)[
        "spearman"
    ]


def spearman_ceiling(tree_distances: Any, *, min_distance: float = 0.0) -> float:
    r"""The largest Spearman correlation any embedding with distinct distances can reach.

    Over ``P`` pairs whose tree distances fall into tie groups of sizes ``n_g``, an embedding
    whose distances are all distinct and ordered like the tree distances (any order inside a
    tie group) has the highest tie-aware Spearman correlation, namely

    .. math:: \rho_{max} = \sqrt{\frac{P^3 - \sum_g n_g^3}{P^3 - P}}

    (its rank vector has the full variance ``(P^3 - P)/12``; the covariance equals the
    variance of the tied tree ranks ``(P^3 - \sum_g n_g^3)/12``). The ratio is computed
    exactly in integers. Massive ties keep it well below 1 (about 0.977 for NAICS).

    Parameters
    ----------
    tree_distances : array or Tensor, shape (N, N)
        Tree distances; pairs ``i < j`` are used, as in :func:`spearman`.
    min_distance : float, default 0.0
        Keep only pairs whose tree distance is at least this.

    Returns
    -------
    float
        In [0, 1]; ``nan`` when fewer than two pairs remain or all are tied.
    """
    tree = _encode_tree(_as_matrix(tree_distances, "tree_distances"), "tree_distances")
    min_distance = _check_min_distance(min_distance)
    return _pair_statistics(None, tree, min_distance, ceiling=True)["spearman_ceiling"]


def per_anchor_spearman(
    embedding_distances: Any,
    tree_distances: Any,
    *,
    min_distance: float = 0.0,
    chunk_size: int | None = None,
) -> float:
    """Mean over anchors of the tie-aware Spearman correlation of each row.

    For anchor ``i`` the candidates are the nodes ``j != i`` with ``tree_distances[i, j] >=
    min_distance``; the row's value is ``scipy.stats.spearmanr`` of the embedding and tree
    distances from ``i`` to its candidates. Anchors with fewer than two candidates, or whose
    candidates have constant tree distances or constant embedding distances (Spearman
    undefined) are skipped; the result is the mean over the remaining anchors.

    Parameters
    ----------
    embedding_distances, tree_distances : array or Tensor, shape (N, N)
        As in :func:`spearman`; rows are read (the matrices need not be symmetric).
    min_distance : float, default 0.0
        Candidates need at least this tree distance from the anchor.
    chunk_size : int, optional
        Anchors per block (memory ~130 bytes x ``chunk_size`` x N); default about 2M entries.

    Returns
    -------
    float
        In [-1, 1]; ``nan`` when every anchor is skipped.
    """
    embedding, tree = _check_pair_inputs(embedding_distances, tree_distances)
    totals = _scan_anchors(
        embedding,
        tree=tree,
        min_distance=_check_min_distance(min_distance),
        chunk_size=_check_chunk_size(chunk_size),
        spearman=True,
    )
    return _mean(totals["spearman_sum"], totals["spearman_count"])


def ndcg_at_k(
    embedding_distances: Any,
    tree_distances: Any,
    k: int | Sequence[int],
    *,
    gain: str = "linear",
    min_distance: float = 0.0,
    chunk_size: int | None = None,
) -> float | dict[int, float]:
    r"""Normalised discounted cumulative gain of each anchor's embedding-distance ranking.

    For anchor ``i`` the candidates are the nodes ``j != i`` with ``t_j = tree_distances[i, j]
    >= min_distance`` (the others take no rank at all). Candidates are ranked by embedding
    distance, nearest first. The relevance of candidate ``j`` is

    .. math:: rel_j = \frac{t_{max} - t_j + 10^{-6}}{t_{max} + 10^{-6}}

    with ``t_max`` the largest tree distance among the anchor's candidates (1 for the tree
    nearest, about 0 for the farthest; the convention of the original research code). The gain
    is ``rel`` (``'linear'``) or ``2**rel - 1`` (``'exponential'``), the discount of rank ``r``
    (1-based) is ``1 / log2(r + 1)`` for ``r <= k`` and 0 after, and

    .. math:: NDCG@k = DCG@k / IDCG@k

    with IDCG@k the DCG of the candidates sorted by decreasing gain. Candidates tied in
    embedding distance share their gains equally over the ranks they span (the average gain
    of the tie times the sum of its discounts), exactly as ``sklearn.metrics.ndcg_score`` with
    ``ignore_ties=False``. The result is the mean over anchors that have a candidate.

    Parameters
    ----------
    embedding_distances, tree_distances : array or Tensor, shape (N, N)
        As in :func:`spearman`; rows are read.
    k : int or sequence of int
        Cut-off(s), each >= 1 (``k`` beyond the number of candidates counts every candidate).
    gain : {'linear', 'exponential'}, default 'linear'
    min_distance : float, default 0.0
        Candidates need at least this tree distance from the anchor.
    chunk_size : int, optional
        Anchors per block (default about 2M entries per block).

    Returns
    -------
    float or dict of int to float
        A float for an int ``k``; a dict ``{k: NDCG@k}`` for a sequence (in its order).
        ``nan`` when no anchor has a candidate.

    References
    ----------
    Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques", ACM TOIS 2002.
    """
    ks, single = _check_ks(k)
    if gain not in _GAINS:
        raise ValueError(f"gain must be one of {_GAINS}, got {gain!r}")
    embedding, tree = _check_pair_inputs(embedding_distances, tree_distances)
    totals = _scan_anchors(
        embedding,
        tree=tree,
        min_distance=_check_min_distance(min_distance),
        chunk_size=_check_chunk_size(chunk_size),
        ks=ks,
        gain=gain,
    )
    result = {kk: _mean(totals["ndcg_sum"][kk], totals["ndcg_count"]) for kk in ks}
    return result[ks[0]] if single else result


def mean_average_precision(
    embedding_distances: Any, relevant: Any, *, chunk_size: int | None = None
) -> float:
    r"""Mean average precision of graph reconstruction (Nickel & Kiela, 2017).

    For anchor ``i`` every other node is ranked by embedding distance, nearest first; the
    anchor itself is excluded. Average precision is the area under the step precision-recall
    curve whose thresholds are the distinct distances:

    .. math:: AP_i = \frac{1}{|R_i|} \sum_{j \in R_i} \frac{|\{l \in R_i : d_{il} \le d_{ij}\}|}
              {|\{l \ne i : d_{il} \le d_{ij}\}|}

    with ``R_i`` the nodes relevant to ``i``. A tie in distance enters as one threshold
    (precision counts the whole tie), exactly as ``sklearn.metrics.average_precision_score``
    with scores ``-distance``. Anchors without relevant nodes are skipped.

    Parameters
    ----------
    embedding_distances : array or Tensor, shape (N, N)
        Rows are read.
    relevant : array or Tensor, shape (N, N), bool (or 0/1)
        ``relevant[i, j]`` marks the nodes relevant to anchor ``i``, e.g. ``tree.closure()``
        (ancestors and descendants). The diagonal is ignored.
    chunk_size : int, optional
        Anchors per block (default about 2M entries per block).

    Returns
    -------
    float
        In (0, 1]; ``nan`` when no anchor has a relevant node.

    References
    ----------
    Nickel & Kiela, "Poincaré Embeddings for Learning Hierarchical Representations", NeurIPS
    2017.
    """
    embedding, relevance = _check_relevance_inputs(embedding_distances, relevant)
    totals = _scan_anchors(
        embedding, relevant=relevance, chunk_size=_check_chunk_size(chunk_size), retrieval=True
    )
    return _mean(totals["ap_sum"], totals["ap_count"])


def mean_rank(embedding_distances: Any, relevant: Any, *, chunk_size: int | None = None) -> float:
    """Mean rank of graph reconstruction (Nickel & Kiela, 2017).

    For every anchor ``i`` and every node ``j`` relevant to it (``relevant[i, j]``, ``j != i``)
    the rank of ``j`` is 1 plus the number of nodes ``l != i`` that are *not* relevant to ``i``
    and strictly closer to the anchor: ``d_il < d_ij``. Non-relevant nodes tied with ``j`` do
    not count (ties are resolved in favour of the relevant node), and other relevant nodes
    never count. The result is the mean over all such (anchor, relevant node) pairs, each
    direction of a symmetric relation counted once per anchor.

    Parameters
    ----------
    embedding_distances : array or Tensor, shape (N, N)
        Rows are read.
    relevant : array or Tensor, shape (N, N), bool (or 0/1)
        As in :func:`mean_average_precision`.
    chunk_size : int, optional
        Anchors per block (default about 2M entries per block).

    Returns
    -------
    float
        >= 1 (1 is perfect); ``nan`` when there is no relevant pair.
    """
    embedding, relevance = _check_relevance_inputs(embedding_distances, relevant)
    totals = _scan_anchors(
        embedding, relevant=relevance, chunk_size=_check_chunk_size(chunk_size), retrieval=True
    )
    return _mean(totals["rank_sum"], totals["rank_count"])


def cophenetic_correlation(
    embedding_distances: Any, tree_distances: Any, *, min_distance: float = 0.0
) -> float:
    """Pearson correlation of embedding and tree distances over all pairs.

    The pairs are those of :func:`spearman` (``i < j`` with tree distance >= ``min_distance``);
    equal to ``scipy.stats.pearsonr`` on them. Computed from centred sums accumulated per
    distinct tree distance, in one pass over the upper triangle.

    Parameters
    ----------
    embedding_distances, tree_distances : array or Tensor, shape (N, N)
    min_distance : float, default 0.0

    Returns
    -------
    float
        In [-1, 1]; ``nan`` when fewer than two pairs remain or either side is constant.
    """
    embedding, tree = _check_pair_inputs(embedding_distances, tree_distances)
    min_distance = _check_min_distance(min_distance)
    return _pair_statistics(embedding, tree, min_distance, cophenetic=True)["cophenetic"]


def distortion(
    embedding_distances: Any, tree_distances: Any, *, min_distance: float = 0.0
) -> dict[str, float]:
    """Distortion: the ratio of embedding to tree distance over the pairs.

    Over the pairs ``i < j`` with tree distance ``t > 0`` (and ``t >= min_distance``), with
    ``r = d_emb / t``:

    - ``mean``, ``median``: of ``r`` (the median of an even count is the mean of the two middle
      values, as ``numpy.median``); the ideal is a constant ``r``, not 1: a uniformly scaled
      embedding is as good as the tree itself.
    - ``max_expansion`` = ``max r``; ``max_contraction`` = ``1 / min r``.
    - ``worst`` = ``max r / min r`` = max_expansion x max_contraction, the usual worst-case
      distortion of a metric embedding (1 means the embedding is the tree metric up to scale).

    ``max_contraction`` and ``worst`` are ``inf`` when two distinct nodes share a point.

    Parameters
    ----------
    embedding_distances : array or Tensor, shape (N, N)
        Non-negative.
    tree_distances : array or Tensor, shape (N, N)
    min_distance : float, default 0.0

    Returns
    -------
    dict
        Keys ``mean``, ``median``, ``worst``, ``max_expansion``, ``max_contraction``
        (all ``nan`` when no pair has a positive tree distance).
    """
    embedding, tree = _check_pair_inputs(embedding_distances, tree_distances)
    _check_non_negative(embedding, "embedding_distances")
    min_distance = _check_min_distance(min_distance)
    return _pair_statistics(embedding, tree, min_distance, distortion=True)["distortion"]


def evaluate(
    points: Any,
    tree: Any,
    distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    k: int | Sequence[int] = (5, 10, 20),
    chunk_size: int | None = None,
) -> FidelityReport:
    """Every fidelity metric of an embedding against its tree.

    Builds the embedding distances with :func:`hyperloss.geometry.pairwise_distances`
    (row blocks; symmetric with an exact zero diagonal), the tree distances with
    ``tree.distances()`` (stored as 1-byte codes) and the relevance with ``tree.closure()``,
    then computes :func:`spearman`, :func:`spearman_ceiling`, :func:`cophenetic_correlation`
    and :func:`distortion` in one streaming pass over the pairs (plus one per further
    ``2**25`` pairs, for Spearman's ranks), and :func:`per_anchor_spearman`, :func:`ndcg_at_k`
    (linear gain), :func:`mean_average_precision` and :func:`mean_rank` from one sort of each
    anchor row. ``min_distance`` is 0 throughout.

    Parameters
    ----------
    points : Tensor or array, shape (N, dim + 1)
        Points in tree index order (row ``i`` is ``tree.names[i]``).
    tree : hyperloss.trees.Tree
        N nodes.
    distance_fn : callable, optional
        Broadcasting distance ``(x, y) -> d`` (the ``geoopt.Manifold.dist`` contract); default
        :class:`hyperloss.geometry.LorentzDistance` with curvature 1.
    k : int or sequence of int, default (5, 10, 20)
        NDCG cut-offs.
    chunk_size : int, optional
        Rows per block for the distances and the per-anchor metrics (default about 2M entries
        per block).

    Returns
    -------
    FidelityReport

    Notes
    -----
    Peak memory is about ``8 N^2`` bytes (the float64 distance matrix) plus ``2 N^2`` (tree
    codes, then the closure) plus blocks of bounded size: 4.5 GiB resident in all for a
    20,000-node tree (``benchmarks/evaluate_large.py``: about 95 s on one core).
    """
    ks, _ = _check_ks(k)
    chunk_size = _check_chunk_size(chunk_size)
    if not (hasattr(tree, "distances") and hasattr(tree, "closure") and hasattr(tree, "__len__")):
        raise TypeError(f"tree must be a hyperloss.trees.Tree, got {type(tree).__name__}")
    if distance_fn is None:
        distance_fn = LorentzDistance(1.0)
    elif not callable(distance_fn):
        raise TypeError(f"distance_fn must be callable, got {type(distance_fn).__name__}")
    n_nodes = len(tree)
    point_tensor = _check_points(points, n_nodes)

    tree_codes = _tree_codes(tree, chunk_size)
    embedding = _embedding_distances(point_tensor, distance_fn, chunk_size)
    pairs = _pair_statistics(
        embedding, tree_codes, 0.0, spearman=True, ceiling=True, cophenetic=True, distortion=True
    )
    # The closure is only needed now: building it later keeps it out of the peak above.
    relevance = _as_numpy(tree.closure(), "tree.closure()").astype(bool, copy=False)
    anchors = _scan_anchors(
        embedding,
        tree=tree_codes,
        relevant=relevance,
        chunk_size=chunk_size,
        ks=ks,
        gain="linear",
        spearman=True,
        retrieval=True,
    )
    return FidelityReport(
        spearman=pairs["spearman"],
        spearman_ceiling=pairs["spearman_ceiling"],
        per_anchor_spearman=_mean(anchors["spearman_sum"], anchors["spearman_count"]),
        ndcg={kk: _mean(anchors["ndcg_sum"][kk], anchors["ndcg_count"]) for kk in ks},
        map=_mean(anchors["ap_sum"], anchors["ap_count"]),
        mean_rank=_mean(anchors["rank_sum"], anchors["rank_count"]),
        cophenetic=pairs["cophenetic"],
        distortion=pairs["distortion"],
        n_nodes=n_nodes,
    )


# ====================================================================== tree-distance codes
@dataclasses.dataclass
class _TreeCodes:
    """Tree distances as ``values[codes]``: ``values`` sorted distinct float64, ``codes`` (N, N)."""

    codes: np.ndarray
    values: np.ndarray

    def first_code_at_least(self, min_distance: float) -> int:
        return int(np.searchsorted(self.values, min_distance, side="left"))


def _encode_tree(tree_distances: np.ndarray, name: str) -> _TreeCodes:
    """Replace a tree-distance matrix by small integer codes into its sorted distinct values.

    Path lengths are small integers (the fast path: one cast). Other values are collected
    block by block; only a matrix with more than 65,536 distinct values falls back to a full
    ``np.unique`` (exact, but it sorts all N^2 entries).
    """
    n_nodes = tree_distances.shape[0]
    block_rows = _rows_per_block(n_nodes, _PAIR_BLOCK_ELEMENTS)
    lowest, highest, integral = math.inf, -math.inf, True
    for first in range(0, n_nodes, block_rows):
        block = tree_distances[first : first + block_rows]
        lowest = min(lowest, float(block.min()))
        highest = max(highest, float(block.max()))
        if integral and block.dtype.kind == "f":
            integral = bool(np.all(np.floor(block) == block))
    if lowest < 0:
        raise ValueError(f"{name} must be non-negative, got a minimum of {lowest:g}")

    if integral and highest - lowest < 1 << 16:
        offset = int(lowest)
        values = np.arange(offset, int(highest) + 1, dtype=np.float64)
        codes = np.empty((n_nodes, n_nodes), dtype=_code_dtype(values.size))
        for first in range(0, n_nodes, block_rows):
            block = tree_distances[first : first + block_rows]
            np.subtract(block, offset, out=codes[first : first + block_rows], casting="unsafe")
        return _TreeCodes(codes, values)

    values = np.zeros(0, dtype=np.float64)
    for first in range(0, n_nodes, block_rows):
        block = np.asarray(tree_distances[first : first + block_rows], dtype=np.float64)
        missing = ~_member(values, block)
        if missing.any():
            values = np.union1d(values, block[missing])
            if values.size > 1 << 16:
                unique, inverse = np.unique(tree_distances, return_inverse=True)
                return _TreeCodes(
                    inverse.reshape(n_nodes, n_nodes), unique.astype(np.float64, copy=False)
                )
    codes = np.empty((n_nodes, n_nodes), dtype=_code_dtype(values.size))
    for first in range(0, n_nodes, block_rows):
        block = np.asarray(tree_distances[first : first + block_rows], dtype=np.float64)
        codes[first : first + block_rows] = np.searchsorted(values, block)
    return _TreeCodes(codes, values)


def _member(values: np.ndarray, block: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.zeros(block.shape, dtype=bool)
    position = np.minimum(np.searchsorted(values, block), values.size - 1)
    return values[position] == block


def _code_dtype(n_values: int) -> np.dtype:
    return np.dtype(np.uint8) if n_values <= 1 << 8 else np.dtype(np.uint16)


def _tree_codes(tree: Any, chunk_size: int | None) -> _TreeCodes:
    """Codes of ``tree.distances()`` built row block by row block (path lengths are integers)."""
    n_nodes = len(tree)
    max_distance = 2 * int(getattr(tree, "height", n_nodes))
    if max_distance >= 1 << 16:
        return _encode_tree(_as_numpy(tree.distances(), "tree.distances()"), "tree.distances()")
    codes = np.empty((n_nodes, n_nodes), dtype=_code_dtype(max_distance + 1))
    block_rows = chunk_size or _rows_per_block(n_nodes, _PAIR_BLOCK_ELEMENTS)
    for first in range(0, n_nodes, block_rows):
        rows = torch.arange(first, min(n_nodes, first + block_rows))
        block = _as_numpy(tree.distances(rows=rows), "tree.distances()")
        target = codes[first : first + rows.numel()]
        np.copyto(target, block, casting="unsafe")
        if not np.array_equal(target, block):  # not integer path lengths: use the general path
            return _encode_tree(_as_numpy(tree.distances(), "tree.distances()"), "tree.distances()")
    return _TreeCodes(codes, np.arange(max_distance + 1, dtype=np.float64))


# ====================================================================== per-anchor engine
def _scan_anchors(
    embedding: np.ndarray,
    *,
    tree: _TreeCodes | None = None,
    relevant: np.ndarray | None = None,
    min_distance: float = 0.0,
    chunk_size: int | None = None,
    ks: Sequence[int] = (),
    gain: str = "linear",
    spearman: bool = False,
    retrieval: bool = False,
) -> dict[str, Any]:
    """Sort each block of anchor rows once and accumulate the requested per-anchor sums.

    Candidates of anchor ``i``: ``j != i`` (and ``t_ij >= min_distance`` when ``tree`` is
    given). Non-candidates get distance ``+inf`` so that they sort after every candidate and
    form their own tie; in sorted order the candidates of a row with ``m`` of them are exactly
    the positions ``< m``. Tie runs are described by their first and last position.
    """
    n_nodes = embedding.shape[0]
    block_rows = chunk_size or _rows_per_block(n_nodes, _ANCHOR_BLOCK_ELEMENTS)
    work_dtype = np.float32 if embedding.dtype == np.float32 else np.float64
    first_code = tree.first_code_at_least(min_distance) if tree is not None else 0
    positions = np.arange(n_nodes)
    discounts = {kk: _discount_cumsum(kk, n_nodes) for kk in ks}
    totals: dict[str, Any] = {
        "ndcg_sum": dict.fromkeys(ks, 0.0),
        "ndcg_count": 0,
        "spearman_sum": 0.0,
        "spearman_count": 0,
        "ap_sum": 0.0,
        "ap_count": 0,
        "rank_sum": 0.0,
        "rank_count": 0,
    }

    for first in range(0, n_nodes, block_rows):
        last = min(n_nodes, first + block_rows)
        n_rows = last - first
        row_of = np.arange(n_rows)
        candidate = np.ones((n_rows, n_nodes), dtype=bool)
        candidate[row_of, first + row_of] = False
        codes = None
        if tree is not None:
            codes = tree.codes[first:last]
            if first_code > 0:
                candidate &= codes >= first_code
        n_candidates = candidate.sum(axis=1)
        distances = np.array(embedding[first:last], dtype=work_dtype)
        distances[~candidate] = np.inf
        # Gathers go through flat indices (np.take), much faster than take_along_axis.
        row_offset = (row_of * n_nodes)[:, None]
        flat_order = np.argsort(distances, axis=1)
        flat_order += row_offset
        run_start, run_end = _tie_runs(_take(distances, flat_order))
        del distances
        in_list = positions[None, :] < n_candidates[:, None]

        if codes is not None and (ks or spearman):
            sorted_codes = _take(codes, flat_order)
            if ks:
                _accumulate_ndcg(
                    totals,
                    sorted_codes,
                    tree.values,
                    in_list,
                    n_candidates,
                    run_start,
                    run_end,
                    ks,
                    discounts,
                    gain,
                )
            if spearman:
                tree_rank = _row_average_ranks(
                    codes, sorted_codes, candidate, flat_order, len(tree.values)
                )
                _accumulate_row_spearman(
                    totals, run_start, run_end, tree_rank, in_list, n_candidates
                )
                del tree_rank
            del sorted_codes
        if retrieval:
            sorted_relevant = _take(relevant[first:last] & candidate, flat_order)
            _accumulate_retrieval(totals, sorted_relevant, in_list, run_start, run_end, row_offset)
    return totals


def _take(block: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
    """``block`` (rows, columns) gathered at flat indices ``row * columns + column``."""
    return np.take(np.ascontiguousarray(block).reshape(-1), flat_index)


def _tie_runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last position of the tie run holding each position (sorted along axis -1)."""
    n_columns = sorted_values.shape[-1]
    columns = np.arange(n_columns)
    changes = sorted_values[..., 1:] != sorted_values[..., :-1]
    run_start = np.zeros(sorted_values.shape, dtype=np.intp)
    run_start[..., 1:] = np.where(changes, columns[1:], 0)
    np.maximum.accumulate(run_start, axis=-1, out=run_start)
    run_end = np.full(sorted_values.shape, n_columns - 1, dtype=np.intp)
    run_end[..., :-1] = np.where(changes, columns[:-1], n_columns - 1)
    backwards = run_end[..., ::-1]
    np.minimum.accumulate(backwards, axis=-1, out=backwards)
    return run_start, run_end


def _discount_cumsum(k: int, n_columns: int) -> np.ndarray:
    """``C[p] = sum of the first p discounts``, discount ``1/log2(rank + 1)`` up to rank k."""
    discount = 1.0 / np.log2(np.arange(n_columns, dtype=np.float64) + 2.0)
    discount[k:] = 0.0
    return np.concatenate(([0.0], np.cumsum(discount)))


def _accumulate_ndcg(
    totals: dict[str, Any],
    sorted_codes: np.ndarray,
    values: np.ndarray,
    in_list: np.ndarray,
    n_candidates: np.ndarray,
    run_start: np.ndarray,
    run_end: np.ndarray,
    ks: Sequence[int],
    discounts: Mapping[int, np.ndarray],
    gain: str,
) -> None:
    rows = n_candidates > 0
    if not rows.any():
        return
    sorted_tree = values[sorted_codes]
    max_tree = np.where(in_list, sorted_tree, -np.inf).max(axis=1, keepdims=True)
    max_tree[~rows] = 0.0
    relevance = (max_tree - sorted_tree + RELEVANCE_EPS) / (max_tree + RELEVANCE_EPS)
    relevance[~in_list] = 0.0
    gains = np.exp2(relevance) - 1.0 if gain == "exponential" else relevance
    del sorted_tree, relevance

    # Ideal DCG: the largest gains in decreasing order (ties there change nothing).
    n_columns = gains.shape[1]
    top = min(max(ks), n_columns)
    best = -np.partition(-gains, top - 1, axis=1)[:, :top] if top < n_columns else gains
    best = -np.sort(-best, axis=1)
    totals["ndcg_count"] += int(rows.sum())
    for k in ks:
        cumulative = discounts[k]
        depth = min(k, top)
        ideal = best[:, :depth] @ np.diff(cumulative[: depth + 1])
        # Tied candidates share the mean discount of the ranks they span (sklearn's
        # ignore_ties=False). Runs starting after rank k carry no discount, so only the columns
        # up to the end of the run holding rank min(k, m) of each row are needed.
        last_ranked = np.minimum(k, n_candidates[rows]) - 1
        width = int(run_end[rows, last_ranked].max()) + 1
        start, end = run_start[:, :width], run_end[:, :width]
        mean_discount = (cumulative[end + 1] - cumulative[start]) / (end - start + 1)
        dcg = np.einsum("ij,ij->i", gains[:, :width], mean_discount)
        totals["ndcg_sum"][k] += float(np.sum(dcg[rows] / ideal[rows]))


def _row_average_ranks(
    codes: np.ndarray,
    sorted_codes: np.ndarray,
    candidate: np.ndarray,
    flat_order: np.ndarray,
    n_values: int,
) -> np.ndarray:
    """Average rank (1-based, among each row's candidates) of each tree distance, sorted order.

    With few distinct values the ranks come from a per-row count table; otherwise each row of
    codes is sorted.
    """
    n_rows = codes.shape[0]
    if n_values <= _MAX_COUNTED_CODES:
        row_base = (np.arange(n_rows) * n_values)[:, None]
        counts = np.bincount((row_base + codes)[candidate], minlength=n_rows * n_values)
        counts = counts.reshape(n_rows, n_values)
        average = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2.0
        return _take(average, row_base + sorted_codes)
    masked = np.where(candidate, codes.astype(np.int64), np.iinfo(np.int64).max)
    code_order = np.argsort(masked, axis=1)
    start, end = _tie_runs(np.take_along_axis(masked, code_order, axis=1))
    ranks = np.empty(codes.shape, dtype=np.float64)
    np.put_along_axis(ranks, code_order, (start + end) / 2.0 + 1.0, axis=1)
    return _take(ranks, flat_order)


def _accumulate_row_spearman(
    totals: dict[str, Any],
    run_start: np.ndarray,
    run_end: np.ndarray,
    tree_rank: np.ndarray,
    in_list: np.ndarray,
    n_candidates: np.ndarray,
) -> None:
    # Average ranks are multiples of 1/2 and both sides have mean (m + 1) / 2, so the centred
    # sums below are exact in float64 for any N below ~10^5.
    centre = (n_candidates[:, None] + 1) / 2.0
    x = np.where(in_list, (run_start + run_end) / 2.0 + 1.0 - centre, 0.0)
    y = np.where(in_list, tree_rank - centre, 0.0)
    sxy = np.einsum("ij,ij->i", x, y)
    sxx = np.einsum("ij,ij->i", x, x)
    syy = np.einsum("ij,ij->i", y, y)
    defined = (n_candidates >= 2) & (sxx > 0) & (syy > 0)
    totals["spearman_sum"] += float(np.sum(sxy[defined] / np.sqrt(sxx[defined] * syy[defined])))
    totals["spearman_count"] += int(defined.sum())


def _accumulate_retrieval(
    totals: dict[str, Any],
    sorted_relevant: np.ndarray,
    in_list: np.ndarray,
    run_start: np.ndarray,
    run_end: np.ndarray,
    row_offset: np.ndarray,
) -> None:
    n_relevant = sorted_relevant.sum(axis=1)
    # Average precision: each relevant node scores the precision at the end of its tie run
    # (sklearn's precision-recall thresholds are the distinct scores).
    hits = np.cumsum(sorted_relevant, axis=1, dtype=np.int32)
    precision = _take(hits, run_end + row_offset) / (run_end + 1.0)
    del hits
    ap_total = np.where(sorted_relevant, precision, 0.0).sum(axis=1)
    del precision
    rows = n_relevant > 0
    totals["ap_sum"] += float(np.sum(ap_total[rows] / n_relevant[rows]))
    totals["ap_count"] += int(rows.sum())
    # Mean rank: 1 + non-relevant candidates before the relevant node's tie run.
    misses = in_list & ~sorted_relevant
    misses_before = np.cumsum(misses, axis=1, dtype=np.int32) - misses
    rank = 1 + _take(misses_before, run_start + row_offset)
    totals["rank_sum"] += float(rank[sorted_relevant].sum(dtype=np.float64))
    totals["rank_count"] += int(n_relevant.sum())


# ====================================================================== pair statistics
def _pair_statistics(
    embedding: np.ndarray | None,
    tree: _TreeCodes,
    min_distance: float,
    *,
    spearman: bool = False,
    ceiling: bool = False,
    cophenetic: bool = False,
    distortion: bool = False,
) -> dict[str, Any]:
    """Global metrics over the pairs ``i < j`` with ``t_ij >= min_distance``.

    A random sample of pairs first places the Spearman value ranges and the median bracket.
    The first pass over the pairs then counts them per tree distance, accumulates the sums of
    the cophenetic correlation and the distortion, collects the values near the median ratio
    and ranks the first value range. Each further value range takes one more pass.
    """
    first_code = tree.first_code_at_least(min_distance)
    n_nodes = tree.codes.shape[0]
    if not (spearman or cophenetic or distortion):
        embedding = None
    generator = np.random.default_rng(0)
    embedding_sample, ratio_sample = _sample_pairs(embedding, tree, first_code, generator)
    ranges = _value_ranges(embedding_sample, n_nodes * (n_nodes - 1) // 2) if spearman else []
    ranker = _RangeRanker(len(tree.values)) if spearman else None
    median = _MedianSearch(ratio_sample) if distortion else None
    sums = _PairSums(tree.values)

    first_range = ranges[0] if len(ranges) > 1 else None
    for embedding_pairs, code_pairs in _upper_pairs(embedding, tree, first_code):
        ratios = _ratios(embedding_pairs, code_pairs, tree.values) if distortion else None
        sums.add(embedding_pairs, code_pairs, ratios)
        if median is not None:
            median.add(ratios)
        if ranker is not None:
            ranker.collect(embedding_pairs, code_pairs, first_range)
    n_pairs = int(sums.counts.sum())
    if median is not None:
        median.finish_pass(sums.n_ratios)
    if ranker is not None:
        ranker.rank_collected(n_pairs)
        for value_range in ranges[1:]:
            for embedding_pairs, code_pairs in _upper_pairs(
                embedding, tree, first_code, value_range
            ):
                ranker.collect(embedding_pairs, code_pairs, None)
            ranker.rank_collected(n_pairs)
    while median is not None and not median.done:  # the sampled bracket missed: rare
        for embedding_pairs, code_pairs in _upper_pairs(embedding, tree, first_code):
            median.add(_ratios(embedding_pairs, code_pairs, tree.values))
        median.finish_pass(sums.n_ratios)

    result: dict[str, Any] = {}
    if ceiling:
        exact_counts = [int(c) for c in sums.counts if c]
        denominator = n_pairs**3 - n_pairs
        numerator = n_pairs**3 - sum(c**3 for c in exact_counts)
        result["spearman_ceiling"] = (
            math.sqrt(Fraction(numerator, denominator)) if n_pairs >= 2 and numerator else math.nan
        )
    if ranker is not None:
        result["spearman"] = ranker.correlation(sums.counts)
    if cophenetic:
        result["cophenetic"] = sums.pearson()
    if median is not None:
        result["distortion"] = sums.distortion(median.value)
    return result


def _upper_pairs(
    embedding: np.ndarray | None,
    tree: _TreeCodes,
    first_code: int,
    value_range: tuple[float, float] | None = None,
) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """The pairs ``i < j`` with code >= first_code, as 1-D arrays, one row block at a time.

    With ``value_range = (low, high)`` only pairs with ``low <= embedding < high``.
    """
    n_nodes = tree.codes.shape[0]
    block_rows = _rows_per_block(n_nodes, _PAIR_BLOCK_ELEMENTS)
    for first in range(0, n_nodes - 1, block_rows):
        last = min(n_nodes - 1, first + block_rows)
        columns = np.arange(first + 1, n_nodes)
        keep = columns[None, :] > np.arange(first, last)[:, None]
        code_block = tree.codes[first:last, first + 1 :]
        if first_code > 0:
            keep &= code_block >= first_code
        if embedding is None:
            yield None, code_block[keep]
            continue
        embedding_block = embedding[first:last, first + 1 :]
        if value_range is not None:
            keep &= embedding_block >= value_range[0]
            keep &= embedding_block < value_range[1]
        yield embedding_block[keep], code_block[keep]


def _sample_pairs(
    embedding: np.ndarray | None,
    tree: _TreeCodes,
    first_code: int,
    generator: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted embedding distances and ratios of about _SAMPLE_PAIRS random kept pairs."""
    if embedding is None:
        return np.zeros(0), np.zeros(0)
    n_nodes = tree.codes.shape[0]
    distances: list[np.ndarray] = []
    ratios: list[np.ndarray] = []
    n_sampled = 0
    for _ in range(8):  # a few rounds in case min_distance keeps few pairs
        rows = generator.integers(0, n_nodes, size=2 * _SAMPLE_PAIRS)
        columns = generator.integers(0, n_nodes, size=2 * _SAMPLE_PAIRS)
        rows, columns = np.minimum(rows, columns), np.maximum(rows, columns)
        codes = tree.codes[rows, columns]
        keep = (rows != columns) & (codes >= first_code)
        sample = embedding[rows[keep], columns[keep]]
        distances.append(sample.astype(np.float64))
        ratios.append(_ratios(sample, codes[keep], tree.values))
        n_sampled += sample.size
        if n_sampled >= _SAMPLE_PAIRS:
            break
    return np.sort(np.concatenate(distances)), np.sort(np.concatenate(ratios))


def _ratios(embedding_pairs: np.ndarray, code_pairs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Embedding / tree distance (float64) of the pairs with a positive tree distance."""
    if values[0] > 0:
        return np.divide(embedding_pairs, values[code_pairs], dtype=np.float64)
    positive = code_pairs != 0  # values are sorted: only code 0 can be a zero distance
    return np.divide(embedding_pairs[positive], values[code_pairs[positive]], dtype=np.float64)


class _PairSums:
    """Counts per tree distance, shifted sums of embedding distances and ratio statistics."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.counts = np.zeros(len(values), dtype=np.int64)
        self.shift: float | None = None
        self.shifted_sum_per_code = np.zeros(len(values), dtype=np.float64)
        self.shifted_square_sum = 0.0
        self.n_ratios = 0
        self.ratio_sum = 0.0
        self.ratio_max = -math.inf
        self.ratio_min = math.inf

    def add(
        self,
        embedding_pairs: np.ndarray | None,
        code_pairs: np.ndarray,
        ratios: np.ndarray | None,
    ) -> None:
        n_values = len(self.values)
        self.counts += np.bincount(code_pairs, minlength=n_values)
        if embedding_pairs is None or embedding_pairs.size == 0:
            return
        if self.shift is None:
            # Sums of (e - shift) with shift near the mean keep the variance free of
            # cancellation.
            self.shift = float(np.mean(embedding_pairs, dtype=np.float64))
        shifted = np.subtract(embedding_pairs, self.shift, dtype=np.float64)
        self.shifted_sum_per_code += np.bincount(code_pairs, weights=shifted, minlength=n_values)
        self.shifted_square_sum += float(np.dot(shifted, shifted))
        del shifted
        if ratios is not None and ratios.size:
            self.n_ratios += ratios.size
            self.ratio_sum += float(ratios.sum())
            self.ratio_max = max(self.ratio_max, float(ratios.max()))
            self.ratio_min = min(self.ratio_min, float(ratios.min()))

    def pearson(self) -> float:
        n_pairs = int(self.counts.sum())
        if n_pairs < 2 or self.shift is None:
            return math.nan
        tree_centred = self.values - float(np.dot(self.counts, self.values)) / n_pairs
        shifted_sum = float(self.shifted_sum_per_code.sum())
        # sum (t - mean t)(e - shift) == sum (t - mean t)(e - mean e)
        covariance = float(np.dot(tree_centred, self.shifted_sum_per_code))
        embedding_ss = self.shifted_square_sum - shifted_sum * shifted_sum / n_pairs
        tree_ss = float(np.dot(self.counts, tree_centred**2))
        if embedding_ss <= 0 or tree_ss <= 0:
            return math.nan
        return max(-1.0, min(1.0, covariance / math.sqrt(embedding_ss * tree_ss)))

    def distortion(self, median: float) -> dict[str, float]:
        if self.n_ratios == 0:
            return dict.fromkeys(_DISTORTION_KEYS, math.nan)
        contraction = 1.0 / self.ratio_min if self.ratio_min > 0 else math.inf
        return {
            "mean": self.ratio_sum / self.n_ratios,
            "median": median,
            "worst": self.ratio_max * contraction,
            "max_expansion": self.ratio_max,
            "max_contraction": contraction,
        }


_DISTORTION_KEYS = ("mean", "median", "worst", "max_expansion", "max_contraction")


def _value_ranges(sorted_sample: np.ndarray, n_pairs: int) -> list[tuple[float, float]]:
    """Half-open value ranges ``[low, high)`` covering the reals, each ~_RANK_RANGE_PAIRS pairs.

    Equal values always fall into the same range, so tie runs never straddle two ranges.
    """
    n_ranges = math.ceil(n_pairs / _RANK_RANGE_PAIRS)
    if n_ranges <= 1 or sorted_sample.size == 0:
        return [(-math.inf, math.inf)]
    cut_index = (np.arange(1, n_ranges) * sorted_sample.size) // n_ranges
    cuts = np.unique(sorted_sample[cut_index]).tolist()
    bounds = [-math.inf, *cuts, math.inf]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class _RangeRanker:
    """Tie-aware Spearman from embedding distances ranked one value range at a time.

    Value ranges come in increasing order, so a pair's average rank is the number of pairs in
    earlier ranges plus its average rank inside its own range. Only two sums are kept: the
    centred embedding ranks summed per tree distance, and their squares. With ``y_g`` the
    centred average rank of tree distance ``g``, the covariance is ``sum_g y_g * S_g``.
    """

    def __init__(self, n_values: int) -> None:
        self.n_values = n_values
        self.rank_sum_per_code = np.zeros(n_values, dtype=np.float64)
        self.rank_square_sum = 0.0
        self.pairs_below = 0
        self.distances: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []

    def collect(
        self,
        embedding_pairs: np.ndarray,
        code_pairs: np.ndarray,
        value_range: tuple[float, float] | None,
    ) -> None:
        if value_range is not None:
            inside = (embedding_pairs >= value_range[0]) & (embedding_pairs < value_range[1])
            embedding_pairs, code_pairs = embedding_pairs[inside], code_pairs[inside]
        self.distances.append(embedding_pairs)
        self.codes.append(code_pairs)

    def rank_collected(self, n_pairs: int) -> None:
        if not self.distances:
            return
        distances = np.concatenate(self.distances)
        codes = np.concatenate(self.codes)
        self.distances, self.codes = [], []
        if distances.size == 0:
            return
        keys, codes = _sort_carrying_codes(distances, codes)
        del distances
        n_range = keys.size
        # 1-based rank = position + 1, then centred; tie runs get their average below.
        centred_rank = np.arange(n_range, dtype=np.float64)
        centred_rank += self.pairs_below + 1 - (n_pairs + 1) / 2.0
        _average_tie_runs(centred_rank, keys[1:] == keys[:-1])
        del keys
        self.rank_square_sum += float(np.dot(centred_rank, centred_rank))
        self.rank_sum_per_code += np.bincount(codes, weights=centred_rank, minlength=self.n_values)
        self.pairs_below += n_range

    def correlation(self, counts: np.ndarray) -> float:
        n_pairs = int(counts.sum())
        if n_pairs < 2:
            return math.nan
        tree_rank = np.cumsum(counts) - counts + (counts + 1) / 2.0 - (n_pairs + 1) / 2.0
        tree_ss = float(np.dot(counts, tree_rank * tree_rank))
        denominator = math.sqrt(self.rank_square_sum * tree_ss)
        if denominator <= 0:
            return math.nan
        return float(np.dot(tree_rank, self.rank_sum_per_code)) / denominator


def _average_tie_runs(ranks: np.ndarray, equal_next: np.ndarray) -> None:
    """Replace, in place, the ranks of each run of equal sorted values by their mean.

    ``equal_next[p]`` says that sorted values ``p`` and ``p + 1`` are equal. Work and memory
    are proportional to the number of tied values, not to ``ranks.size``.
    """
    if not equal_next.any():
        return
    # Edges of the runs of True in equal_next: a run covering equal_next[s:e] ties the values
    # s..e (inclusive).
    edges = np.flatnonzero(np.diff(equal_next, prepend=False, append=False))
    run_first, run_last = edges[0::2], edges[1::2]
    run_length = run_last - run_first + 1
    run_mean = (ranks[run_first] + ranks[run_last]) / 2.0  # ranks are consecutive in a run
    offsets = np.arange(int(run_length.sum())) - np.repeat(
        np.cumsum(run_length) - run_length, run_length
    )
    ranks[np.repeat(run_first, run_length) + offsets] = np.repeat(run_mean, run_length)


def _sort_carrying_codes(values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values`` in increasing order (or integer keys equal exactly where they are) and
    ``codes`` in the same order.

    Fast path: the IEEE bit patterns of non-negative floats order like the floats, so when
    the span of patterns leaves room, the code is packed into the low bits and one integer
    sort does the work of an argsort and two gathers (about 6 times faster).
    """
    code_bits = max(1, int(codes.max()).bit_length())
    if float(values.min()) >= 0:
        unsigned = np.uint32 if values.dtype == np.float32 else np.uint64
        keys = (values + 0.0).view(unsigned).astype(np.uint64, copy=False)  # -0.0 -> +0.0
        low = keys.min()
        if int(keys.max()) - int(low) < 1 << (64 - code_bits):
            keys -= low
            keys <<= np.uint64(code_bits)
            np.bitwise_or(keys, codes, out=keys, casting="unsafe")
            keys.sort()
            sorted_codes = np.empty(codes.shape, dtype=codes.dtype)
            np.bitwise_and(keys, (1 << code_bits) - 1, out=sorted_codes, casting="unsafe")
            keys >>= np.uint64(code_bits)
            return keys, sorted_codes
    order = np.argsort(values)
    return values[order], codes[order]


class _MedianSearch:
    """Exact median of values streamed in passes, holding only those near the median.

    A random sample brackets the middle; a pass counts the values below the bracket and equal
    to its ends and keeps those strictly inside. If the bracket missed the two middle order
    statistics (unlikely), it is widened to the open side and the pass repeated.
    """

    def __init__(self, sorted_sample: np.ndarray) -> None:
        self.value = math.nan
        self.done = False
        size = sorted_sample.size
        margin = 4.0 * math.sqrt(size) + 2.0
        low_index = math.floor(size / 2 - margin)
        high_index = math.ceil(size / 2 + margin)
        self.low = float(sorted_sample[low_index]) if low_index >= 0 else -math.inf
        self.high = float(sorted_sample[high_index]) if high_index < size else math.inf
        self._start_pass()

    def _start_pass(self) -> None:
        self.n_below = 0
        self.n_at_low = 0
        self.n_at_high = 0
        self.inside: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        self.n_below += int(np.count_nonzero(values < self.low))
        self.n_at_low += int(np.count_nonzero(values == self.low))
        if self.high != self.low:
            self.n_at_high += int(np.count_nonzero(values == self.high))
        self.inside.append(values[(values > self.low) & (values < self.high)])

    def finish_pass(self, n_values: int) -> None:
        inside = np.concatenate(self.inside) if self.inside else np.zeros(0)
        self.inside = []
        if n_values == 0:
            self.done = True
            return
        n_bracket = self.n_at_low + inside.size + self.n_at_high
        offsets = [(n_values - 1) // 2 - self.n_below, n_values // 2 - self.n_below]
        if offsets[0] < 0 or offsets[1] >= n_bracket:
            if offsets[0] < 0:
                self.low = -math.inf
            if offsets[1] >= n_bracket:
                self.high = math.inf
            self._start_pass()
            return
        inside_ranks = sorted(
            {o - self.n_at_low for o in offsets if 0 <= o - self.n_at_low < inside.size}
        )
        if inside_ranks:
            inside = np.partition(inside, inside_ranks)
        picked = []
        for offset in offsets:
            if offset < self.n_at_low:
                picked.append(self.low)
            elif offset < self.n_at_low + inside.size:
                picked.append(float(inside[offset - self.n_at_low]))
            else:
                picked.append(self.high)
        self.value = (picked[0] + picked[1]) / 2.0 if picked[0] != picked[1] else picked[0]
        self.done = True


# ====================================================================== distances for evaluate
def _embedding_distances(
    points: torch.Tensor, distance_fn: Callable[..., torch.Tensor], chunk_size: int | None
) -> np.ndarray:
    """The symmetric (N, N) distance matrix (zero diagonal), float64 unless it came as float32."""
    n_nodes = points.shape[0]
    # distance_fn broadcasts to (rows, N, dim + 1) intermediates: bound those, not just (rows, N).
    block_rows = _rows_per_block(n_nodes * points.shape[1], _DISTANCE_BLOCK_ELEMENTS)
    block_rows = min(block_rows, chunk_size or block_rows)
    with torch.no_grad():
        distances = pairwise_distances(distance_fn, points, chunk_size=block_rows)
    distances = _as_numpy(distances, "distance_fn output")
    if distances.dtype not in (np.float32, np.float64):
        distances = distances.astype(np.float64)
    check_rows = _rows_per_block(n_nodes, _PAIR_BLOCK_ELEMENTS)
    for first in range(0, n_nodes, check_rows):
        if not np.isfinite(distances[first : first + check_rows]).all():
            raise ValueError("distance_fn returned non-finite distances (nan or inf)")
    return distances


# ====================================================================== input checks
def _as_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got dtype {value.dtype}")
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.to(torch.float32)
        return tensor.numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}")


def _as_matrix(value: Any, name: str, *, allow_bool: bool = False) -> np.ndarray:
    matrix = _as_numpy(value, name)
    kind = matrix.dtype.kind
    if kind not in ("b", "i", "u", "f") or (kind == "b" and not allow_bool):
        raise TypeError(f"{name} must have a real (float or integer) dtype, got {matrix.dtype}")
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {matrix.shape}")
    if matrix.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 nodes, got shape {matrix.shape}")
    if kind == "f":
        if matrix.dtype == np.float16:
            matrix = matrix.astype(np.float32)
        elif matrix.dtype not in (np.float32, np.float64):
            matrix = matrix.astype(np.float64)
        block_rows = _rows_per_block(matrix.shape[0], _PAIR_BLOCK_ELEMENTS)
        for first in range(0, matrix.shape[0], block_rows):
            if not np.isfinite(matrix[first : first + block_rows]).all():
                raise ValueError(f"{name} must be finite, found nan or inf")
    return matrix


def _check_pair_inputs(embedding_distances: Any, tree_distances: Any) -> tuple[np.ndarray, Any]:
    embedding = _as_matrix(embedding_distances, "embedding_distances")
    tree = _as_matrix(tree_distances, "tree_distances")
    if embedding.shape != tree.shape:
        raise ValueError(
            "embedding_distances and tree_distances must have the same shape, got "
            f"{embedding.shape} and {tree.shape}"
        )
    if embedding.dtype.kind != "f":
        embedding = embedding.astype(np.float64)
    return embedding, _encode_tree(tree, "tree_distances")


def _check_relevance_inputs(
    embedding_distances: Any, relevant: Any
) -> tuple[np.ndarray, np.ndarray]:
    embedding = _as_matrix(embedding_distances, "embedding_distances")
    relevance = _as_matrix(relevant, "relevant", allow_bool=True)
    if embedding.shape != relevance.shape:
        raise ValueError(
            "embedding_distances and relevant must have the same shape, got "
            f"{embedding.shape} and {relevance.shape}"
        )
    if embedding.dtype.kind != "f":
        embedding = embedding.astype(np.float64)
    if relevance.dtype.kind != "b":
        if not np.isin(relevance, (0, 1)).all():
            raise ValueError("relevant must be boolean or hold only 0 and 1")
        relevance = relevance != 0
    return embedding, relevance


def _check_non_negative(matrix: np.ndarray, name: str) -> None:
    block_rows = _rows_per_block(matrix.shape[0], _PAIR_BLOCK_ELEMENTS)
    for first in range(0, matrix.shape[0], block_rows):
        lowest = float(matrix[first : first + block_rows].min())
        if lowest < 0:
            raise ValueError(f"{name} must be non-negative, got a minimum of {lowest:g}")


def _check_min_distance(min_distance: Any) -> float:
    if isinstance(min_distance, bool) or not isinstance(min_distance, numbers.Real):
        raise TypeError(
            f"min_distance must be a real number, got {type(min_distance).__name__} "
            f"{min_distance!r}"
        )
    value = float(min_distance)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"min_distance must be finite and >= 0, got {min_distance!r}")
    return value


def _check_ks(k: Any) -> tuple[list[int], bool]:
    """``k`` as a list of distinct ints >= 1 (order kept) and whether it was a single int."""
    single = isinstance(k, numbers.Integral) and not isinstance(k, bool)
    if single:
        items = [k]
    elif isinstance(k, np.ndarray) or (isinstance(k, Sequence) and not isinstance(k, str)):
        items = list(k.tolist() if isinstance(k, np.ndarray) else k)
        if not items:
            raise ValueError("k must be an int or a non-empty sequence of ints, got an empty one")
    else:
        raise TypeError(f"k must be an int or a sequence of ints, got {type(k).__name__} {k!r}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"k must hold ints, got {type(item).__name__} {item!r}")
        if item < 1:
            raise ValueError(f"k must be >= 1, got {item}")
    return list(dict.fromkeys(int(item) for item in items)), single


def _check_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(
            f"chunk_size must be an int or None, got {type(chunk_size).__name__} {chunk_size!r}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return int(chunk_size)


def _check_points(points: Any, n_nodes: int) -> torch.Tensor:
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(points)
    if not isinstance(points, torch.Tensor):
        raise TypeError(
            f"points must be a torch tensor or numpy array, got {type(points).__name__}"
        )
    if not points.dtype.is_floating_point:
        raise TypeError(f"points must have a floating dtype, got {points.dtype}")
    if points.dim() != 2:
        raise ValueError(f"points must have shape (N, dim + 1), got {tuple(points.shape)}")
    if points.shape[0] != n_nodes:
        raise ValueError(
            f"points must have one row per tree node: the tree has {n_nodes} nodes, "
            f"points has {points.shape[0]} rows"
        )
    points = points.detach()
    if not bool(torch.isfinite(points).all()):
        raise ValueError("points must be finite, found nan or inf")
    return points


# ====================================================================== small helpers
def _rows_per_block(n_columns: int, elements: int) -> int:
    return max(1, elements // max(1, n_columns))


def _mean(total: float, count: int) -> float:
    return total / count if count else math.nan


def _format(value: float, spec: str) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)
