"""Metrics over a subset of anchors (and of candidates): held-out evaluation.

:func:`evaluate` scores every anchor (or a uniform sample); generalisation to nodes that a
model never saw needs the same per-anchor figures for a *given* set of anchors:

- :func:`anchor_scores`: per-anchor NDCG@k and Spearman from precomputed distance rows
  ``(A, C)`` (any distance: an embedding's, or ``1 - cosine`` of text vectors for a baseline);
- :func:`evaluate_anchors`: the means over given anchors of an embedding, its rows computed
  on demand in bounded blocks;
- :func:`subset_monitor`: Spearman and NDCG@k among a node subset only (what :func:`fit`
  watches when it trains on a subset, so that held-out nodes take no part in model selection).

Each anchor's candidates are the ``candidates`` (default: all nodes) other than the anchor; the
relevance of a candidate is the one NDCG relevance of the package,
:func:`hyperloss.relevance.tree_relevance` of its tree distance, and ties, gains and
discounts are exactly those of :func:`hyperloss.metrics.ndcg_at_k` (with ``candidates=None``
and every node as an anchor, :func:`evaluate_anchors` equals ``ndcg_at_k`` on the dense
matrices, and its Spearman equals :func:`hyperloss.metrics.per_anchor_spearman`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from hyperloss.geometry import LorentzDistance
from hyperloss.metrics._anchors import discount_cumsum, score_rows
from hyperloss.metrics._codes import path_length_values, tree_row_codes
from hyperloss.metrics._common import ANCHOR_BLOCK_ELEMENTS, rows_per_block
from hyperloss.metrics._sampled import distance_rows, pair_estimates
from hyperloss.metrics._validation import as_numpy, check_points, check_tree
from hyperloss.validation import check_callable, check_int

__all__ = ["anchor_scores", "evaluate_anchors", "subset_monitor"]

# Below this many subset pairs, subset_monitor's Spearman uses every pair (about 1 s).
_ALL_PAIRS_LIMIT = 2_000_000


def anchor_scores(
    distances: Any,
    tree: Any,
    anchors: Any,
    *,
    candidates: Any = None,
    k: int = 10,
) -> dict[str, np.ndarray]:
    """Per-anchor NDCG@k and Spearman of precomputed distance rows.

    Parameters
    ----------
    distances : array or Tensor, shape (A, C)
        ``distances[a, c]``: any dissimilarity from ``anchors[a]`` to ``candidates[c]``
        (smaller = closer), finite. Dense: ``O(A * C)`` memory, so pass blocks of anchors on
        a large tree.
    tree : hyperloss.trees.Tree
    anchors : LongTensor or int array, shape (A,)
        Tree indices; each must be among ``candidates`` (its own column is skipped).
    candidates : LongTensor or int array, shape (C,), optional
        Tree indices of the columns; default all ``N`` nodes in index order.
    k : int, default 10

    Returns
    -------
    dict
        ``"ndcg@<k>"`` and ``"spearman"``: float64 arrays ``(A,)`` (``nan`` for an anchor
        without candidates / with constant tree or embedding distances).

    Raises
    ------
    ValueError
        If a shape does not match, an index is out of range, an anchor is not a candidate, or
        a distance is not finite.

    Examples
    --------
    >>> import torch
    >>> from hyperloss.datasets import balanced_tree
    >>> tree = balanced_tree(2, 2)
    >>> rows = tree.distances(rows=torch.tensor([1, 3]))  # the tree's own distances: perfect
    >>> scores = anchor_scores(rows, tree, torch.tensor([1, 3]), k=3)
    >>> scores["ndcg@3"].round(6).tolist()
    [1.0, 1.0]
    """
    check_tree(tree)
    n_nodes = len(tree)
    k = check_int(k, "k", minimum=1)
    anchors = _index_array(anchors, "anchors", n_nodes)
    candidates = (
        np.arange(n_nodes)
        if candidates is None
        else _index_array(candidates, "candidates", n_nodes)
    )
    rows = np.array(as_numpy(distances, "distances"), dtype=np.float64)
    if rows.shape != (anchors.size, candidates.size):
        raise ValueError(
            f"distances must have shape (len(anchors), len(candidates)) = "
            f"{(anchors.size, candidates.size)}, got {rows.shape}"
        )
    if not np.isfinite(rows).all():
        raise ValueError("distances must be finite, found nan or inf")
    self_columns = _self_columns(anchors, candidates)
    if anchors.size == 0:
        return {f"ndcg@{k}": np.empty(0), "spearman": np.empty(0)}
    codes = tree_row_codes(tree, torch.from_numpy(anchors))[:, candidates]
    scored = score_rows(
        rows,
        self_columns,
        codes=codes,
        values=path_length_values(tree),
        ks=[k],
        discounts={k: discount_cumsum(k, candidates.size)},
        spearman=True,
    )
    return {f"ndcg@{k}": scored["ndcg"][k], "spearman": scored["spearman"]}


def evaluate_anchors(
    points: Any,
    tree: Any,
    distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    *,
    anchors: Any,
    candidates: Any = None,
    k: int = 10,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Mean NDCG@k and per-anchor Spearman of an embedding over the given anchors, exactly.

    Each anchor's row (embedding distances to every candidate) is computed on demand, scored
    by :func:`anchor_scores`, and dropped: memory ``O(block * C)``, never ``N x N``.

    Parameters
    ----------
    points : Tensor (N, D) or Embedding
        Points in tree index order (an Embedding is read with ``points_for(tree)``).
    tree : hyperloss.trees.Tree
    distance_fn : callable, optional
        Broadcasting distance ``(x, y) -> d``; default the Lorentz distance (of the
        Embedding's curvature, or curvature 1).
    anchors : LongTensor or int array (A,)
        Tree indices, each among ``candidates``.
    candidates : LongTensor or int array (C,), optional
        Default all nodes.
    k : int, default 10
    chunk_size : int, optional
        Anchor rows per block.

    Returns
    -------
    dict
        ``{"ndcg@<k>": mean, "spearman": mean per-anchor Spearman, "n_anchors": A}`` (means
        over the anchors where each is defined).

    Examples
    --------
    >>> import torch
    >>> from hyperloss.construction import construct
    >>> from hyperloss.datasets import balanced_tree
    >>> tree = balanced_tree(3, 3)
    >>> scores = evaluate_anchors(construct(tree, 5), tree, anchors=torch.tensor([0, 5, 20]))
    >>> round(scores["ndcg@10"], 6), scores["n_anchors"]
    (1.0, 3)
    """
    check_tree(tree)
    n_nodes = len(tree)
    points, distance_fn = _points_and_distance(points, tree, distance_fn)
    anchor_index = _index_array(anchors, "anchors", n_nodes)
    columns = (
        np.arange(n_nodes)
        if candidates is None
        else _index_array(candidates, "candidates", n_nodes)
    )
    positions = _self_columns(anchor_index, columns)
    column_points = points[torch.from_numpy(columns)]
    block = chunk_size or rows_per_block(columns.size, ANCHOR_BLOCK_ELEMENTS)
    ndcg, spearman = [], []
    for start in range(0, anchor_index.size, block):
        rows = distance_rows(column_points, positions[start : start + block], distance_fn)
        scores = anchor_scores(
            rows, tree, anchor_index[start : start + block], candidates=columns, k=k
        )
        ndcg.append(scores[f"ndcg@{k}"])
        spearman.append(scores["spearman"])
    return {
        f"ndcg@{k}": _nanmean(ndcg),
        "spearman": _nanmean(spearman),
        "n_anchors": int(anchor_index.size),
    }


def subset_monitor(
    points: Any,
    tree: Any,
    distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    nodes: Any,
    *,
    k: int = 10,
    n_anchors: int = 512,
    n_pairs: int = 200_000,
    seed: int = 0,
) -> dict[str, float]:
    """Spearman and NDCG@k among ``nodes`` only: the fit monitor of a run on a node subset.

    Nothing outside ``nodes`` is looked at (no anchor, candidate or pair), so choosing the
    best state by it never peeks at held-out nodes.

    NDCG@k: mean over ``min(n_anchors, M)`` anchors drawn from ``nodes`` (all when fewer),
    each ranking the other members. Spearman: tie-aware, over every pair of members when
    there are at most 2,000,000 of them, else over ``n_pairs`` uniform pairs of distinct
    members. One seed: every call scores the same anchors and pairs.

    Parameters
    ----------
    points : Tensor (N, D)
        All points in tree index order.
    tree : hyperloss.trees.Tree
    distance_fn : callable or None
    nodes : LongTensor (M,)
        Distinct tree indices, ``M >= 2``.
    k, n_anchors, n_pairs, seed
        As described above.

    Returns
    -------
    dict
        ``{"spearman": float, "ndcg@<k>": float}``.
    """
    check_tree(tree)
    n_nodes = len(tree)
    points, distance_fn = _points_and_distance(points, tree, distance_fn)
    members = np.unique(_index_array(nodes, "nodes", n_nodes))
    if members.size < 2:
        raise ValueError(f"nodes must hold at least 2 distinct indices, got {members.size}")
    generator = np.random.default_rng(seed)
    anchors = members
    if members.size > n_anchors:
        anchors = np.sort(generator.choice(members, size=n_anchors, replace=False))
    ndcg = evaluate_anchors(points, tree, distance_fn, anchors=anchors, candidates=members, k=k)
    m = members.size
    if m * (m - 1) // 2 <= _ALL_PAIRS_LIMIT:
        first, second = np.triu_indices(m, 1)
    else:
        first = generator.integers(0, m, size=n_pairs)
        second = (first + 1 + generator.integers(0, m - 1, size=n_pairs)) % m
    pairs, _ = pair_estimates(
        points, tree, distance_fn, members[first], members[second], n_groups=0
    )
    return {"spearman": float(pairs["spearman"]), f"ndcg@{k}": ndcg[f"ndcg@{k}"]}


# ---------------------------------------------------------------------------------- helpers
def _points_and_distance(points: Any, tree: Any, distance_fn: Any) -> tuple[torch.Tensor, Any]:
    if hasattr(points, "points_for") and hasattr(points, "curvature"):
        if distance_fn is None:
            distance_fn = LorentzDistance(float(points.curvature))
        points = points.points_for(tree)
    elif distance_fn is None:
        distance_fn = LorentzDistance(1.0)
    return check_points(points, len(tree)), check_callable(distance_fn, "distance_fn")


def _index_array(index: Any, name: str, n_nodes: int) -> np.ndarray:
    array = as_numpy(index, name)
    if array.ndim != 1 or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D array of integer tree indices, got {array.shape}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= n_nodes):
        raise ValueError(f"{name} must be tree indices in [0, {n_nodes})")
    return array


def _self_columns(anchors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The column of each anchor among the candidates (each anchor must be one)."""
    if np.unique(candidates).size != candidates.size:
        raise ValueError("candidates must not repeat an index")
    order = np.argsort(candidates)
    position = np.searchsorted(candidates[order], anchors).clip(0, max(candidates.size - 1, 0))
    found = candidates.size > 0 and candidates[order][position] == anchors
    if anchors.size and not np.all(found):
        missing = anchors[~np.asarray(found)][:5].tolist()
        raise ValueError(f"anchors must be among the candidates; not found: {missing}")
    return order[position] if anchors.size else np.empty(0, dtype=np.int64)


def _nanmean(parts: list[np.ndarray]) -> float:
    values = np.concatenate(parts) if parts else np.empty(0)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan
