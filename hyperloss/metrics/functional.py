"""Fidelity metrics on dense distance matrices: the functional form.

Every metric is a plain function of an ``(N, N)`` matrix of embedding distances and either the
``(N, N)`` tree distances (:meth:`hyperloss.trees.Tree.distances`) or a boolean relevance matrix
(:meth:`hyperloss.trees.Tree.closure`). Inputs may be numpy arrays or torch tensors of any real
dtype; results are Python floats (or a dict). They are exact and meant for trees small enough to
hold ``N x N`` matrices; :func:`hyperloss.metrics.evaluate` scores an embedding of any size.

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
row blocks and rank the embedding distances in value ranges of about ``2**25`` pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

from hyperloss.metrics._anchors import GAINS, scan_anchors
from hyperloss.metrics._codes import encode_tree
from hyperloss.metrics._common import mean
from hyperloss.metrics._pairs import pair_statistics
from hyperloss.metrics._validation import (
    as_matrix,
    check_ks,
    check_non_negative,
    check_pair_inputs,
    check_relevance_inputs,
)
from hyperloss.validation import check_chunk_size, check_nonnegative

__all__ = [
    "cophenetic_correlation",
    "distortion",
    "mean_average_precision",
    "mean_rank",
    "ndcg_at_k",
    "per_anchor_spearman",
    "spearman",
    "spearman_ceiling",
]


def _encoded_pair_inputs(embedding_distances: Any, tree_distances: Any):
    embedding, tree = check_pair_inputs(embedding_distances, tree_distances)
    return embedding, encode_tree(tree, "tree_distances")


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
    embedding, tree = _encoded_pair_inputs(embedding_distances, tree_distances)
    return pair_statistics(
        embedding, tree, check_nonnegative(min_distance, "min_distance"), spearman=True
    )["spearman"]


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
    tree = encode_tree(as_matrix(tree_distances, "tree_distances"), "tree_distances")
    min_distance = check_nonnegative(min_distance, "min_distance")
    return pair_statistics(None, tree, min_distance, ceiling=True)["spearman_ceiling"]


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
    embedding, tree = _encoded_pair_inputs(embedding_distances, tree_distances)
    totals = scan_anchors(
        embedding,
        tree=tree,
        min_distance=check_nonnegative(min_distance, "min_distance"),
        chunk_size=check_chunk_size(chunk_size),
        spearman=True,
    )
    return mean(totals["spearman_sum"], totals["spearman_count"])


@overload
def ndcg_at_k(
    embedding_distances: Any,
    tree_distances: Any,
    k: int,
    *,
    gain: str = ...,
    min_distance: float = ...,
    chunk_size: int | None = ...,
) -> float: ...


@overload
def ndcg_at_k(
    embedding_distances: Any,
    tree_distances: Any,
    k: Sequence[int],
    *,
    gain: str = ...,
    min_distance: float = ...,
    chunk_size: int | None = ...,
) -> dict[int, float]: ...


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

    with ``t_max`` the largest tree distance among the anchor's candidates
    (:func:`hyperloss.relevance.tree_relevance`, the one definition LambdaRank shares; the
    constant is the original research code's). The grade falls linearly with the tree
    distance: about ``1 - t_j / t_max``, so the tree-nearest candidate gets
    ``(t_max - t_min + 1e-6) / (t_max + 1e-6)``, below 1 whenever ``t_min > 0``, and the
    farthest about 0 (``1e-6 / (t_max + 1e-6)``). The gain
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
        One integer (a Python or numpy integer, or a 0-d integer array or tensor) asks for
        one value; a sequence (list, tuple, 1-D array or tensor) asks for several, computed
        from one sort of each row. Repeated cut-offs are reported once.
    gain : {'linear', 'exponential'}, default 'linear'
    min_distance : float, default 0.0
        Candidates need at least this tree distance from the anchor.
    chunk_size : int, optional
        Anchors per block (default about 2M entries per block).

    Returns
    -------
    float or dict of int to float
        The return type follows the type of ``k``, never its value: always a float for one
        integer ``k``, always a dict ``{k: NDCG@k}`` (keys in the order given) for a
        sequence, also a sequence of one (``ndcg_at_k(d, t, [10])`` is ``{10: ...}``).
        ``nan`` when no anchor has a candidate.

    References
    ----------
    Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques", ACM TOIS 2002.
    """
    ks, single = check_ks(k)
    if gain not in GAINS:
        raise ValueError(f"gain must be one of {GAINS}, got {gain!r}")
    embedding, tree = _encoded_pair_inputs(embedding_distances, tree_distances)
    totals = scan_anchors(
        embedding,
        tree=tree,
        min_distance=check_nonnegative(min_distance, "min_distance"),
        chunk_size=check_chunk_size(chunk_size),
        ks=ks,
        gain=gain,
    )
    result = {kk: mean(totals["ndcg_sum"][kk], totals["ndcg_count"]) for kk in ks}
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

    Why the tree metric itself scores below 1: with ``relevant = tree.closure()`` (graph
    reconstruction: ancestors and descendants only) a node's siblings are not relevant, yet
    they are at tree distance 2, exactly like its grandparent and its grandchildren, which
    are. An embedding that reproduces the tree metric *ties* each sibling with the
    grandparent (uncles and nephews with the great-grandparent at 3, ...), and a tie enters as one
    threshold whose precision counts the non-relevant nodes of the tie too. About half of the
    gap comes from these ties; the rest from relevant nodes that are strictly farther than
    non-relevant ones (a great-grandparent at 3 behind the siblings at 2). On NAICS the tree
    metric scores 0.623; breaking every tie in favour of the relevant nodes gives 0.816, and
    only ranking all relevant nodes first gives 1.

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
    embedding, relevance = check_relevance_inputs(embedding_distances, relevant)
    totals = scan_anchors(
        embedding, relevant=relevance, chunk_size=check_chunk_size(chunk_size), retrieval=True
    )
    return mean(totals["ap_sum"], totals["ap_count"])


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
    embedding, relevance = check_relevance_inputs(embedding_distances, relevant)
    totals = scan_anchors(
        embedding, relevant=relevance, chunk_size=check_chunk_size(chunk_size), retrieval=True
    )
    return mean(totals["rank_sum"], totals["rank_count"])


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
    embedding, tree = _encoded_pair_inputs(embedding_distances, tree_distances)
    min_distance = check_nonnegative(min_distance, "min_distance")
    return pair_statistics(embedding, tree, min_distance, cophenetic=True)["cophenetic"]


def distortion(
    embedding_distances: Any, tree_distances: Any, *, min_distance: float = 0.0
) -> dict[str, float]:
    r"""Distortion: the ratio of embedding to tree distance over the pairs.

    Over the ``P`` pairs ``i < j`` with tree distance ``t > 0`` (and ``t >= min_distance``),
    with ``r = d_emb / t``:

    - ``mean_ratio``, ``median_ratio``: the mean and the median of ``r`` (the median of an
      even count is the mean of the two middle values, as ``numpy.median``). These are a
      *scale*, not a distortion: the ideal is a constant ``r``, not 1, as a uniformly scaled
      embedding is as good as the tree itself.
    - ``average``: the scale-free average distortion about the median ratio ``s``,

      .. math:: \frac{1}{P} \sum_{pairs} \max(r / s, s / r) \ge 1,

      1 exactly when every ratio equals ``s``; it is unchanged when the embedding distances
      are scaled. (The median, not the mean, is the reference scale: a few huge ratios move
      the mean, not the median.)
    - ``max_expansion`` = ``max r``; ``max_contraction`` = ``1 / min r``, both relative to the
      unit scale: ``max_contraction < 1`` means that no pair was contracted (every embedding
      distance exceeds its tree distance), ``max_expansion < 1`` that none was expanded.
    - ``worst`` = ``max r / min r`` = max_expansion x max_contraction, the usual worst-case
      distortion of a metric embedding (1 means the embedding is the tree metric up to scale).

    ``max_contraction``, ``worst`` and ``average`` are ``inf`` when two distinct nodes share a
    point.

    Parameters
    ----------
    embedding_distances : array or Tensor, shape (N, N)
        Non-negative.
    tree_distances : array or Tensor, shape (N, N)
    min_distance : float, default 0.0

    Returns
    -------
    dict
        Keys ``mean_ratio``, ``median_ratio``, ``average``, ``worst``, ``max_expansion``,
        ``max_contraction`` (all ``nan`` when no pair has a positive tree distance).

    Notes
    -----
    These keys were ``mean`` and ``median`` before: renamed because "distortion mean"
    read as an average distortion, while it is the average *ratio* (a scale).
    """
    embedding, tree = _encoded_pair_inputs(embedding_distances, tree_distances)
    check_non_negative(embedding, "embedding_distances")
    min_distance = check_nonnegative(min_distance, "min_distance")
    return pair_statistics(embedding, tree, min_distance, distortion=True)["distortion"]
