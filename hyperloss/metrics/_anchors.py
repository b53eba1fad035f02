"""Per-anchor engine: sort each anchor's row once, score every per-anchor metric (private).

One function, :func:`score_rows`, scores a block of anchor rows ``(R, N)`` and returns one
value per anchor (``nan`` where a metric is undefined for that anchor). The exact metrics sum
it over all anchors of a dense matrix (:func:`scan_anchors`); the sampled evaluation feeds it
rows computed on demand for a random set of anchors and averages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hyperloss.metrics._codes import TreeCodes
from hyperloss.metrics._common import ANCHOR_BLOCK_ELEMENTS, rows_per_block
from hyperloss.relevance import tree_relevance

#: Added to the numerator and denominator of the NDCG relevance so that the farthest candidates
#: keep a tiny positive relevance and a zero ``max_t`` stays defined (original research code).
GAINS = ("linear", "exponential")
# Tree-distance codes: a per-row count table over codes is used up to this many distinct values.
_MAX_COUNTED_CODES = 4096


def discount_cumsum(k: int, n_columns: int) -> np.ndarray:
    """``C[p] = sum of the first p discounts``, discount ``1/log2(rank + 1)`` up to rank k."""
    discount = 1.0 / np.log2(np.arange(n_columns, dtype=np.float64) + 2.0)
    discount[k:] = 0.0
    return np.concatenate(([0.0], np.cumsum(discount)))


def score_rows(
    distances: np.ndarray,
    self_columns: np.ndarray,
    *,
    codes: np.ndarray | None = None,
    values: np.ndarray | None = None,
    relevant: np.ndarray | None = None,
    first_code: int = 0,
    ks: Sequence[int] = (),
    discounts: Mapping[int, np.ndarray] | None = None,
    gain: str = "linear",
    spearman: bool = False,
    retrieval: bool = False,
) -> dict[str, Any]:
    """Per-anchor metrics of a block of anchor rows.

    Parameters
    ----------
    distances : ndarray, shape (R, N), float32 or float64
        Embedding distances from each anchor to every node; overwritten.
    self_columns : ndarray, shape (R,)
        The column of each anchor itself (never a candidate).
    codes : ndarray, shape (R, N), optional
        Tree-distance codes into ``values`` (needed for NDCG and per-anchor Spearman).
    relevant : ndarray, shape (R, N), bool, optional
        Relevance of graph reconstruction (needed for ``retrieval``).
    first_code : int
        Candidates need a code of at least this (``min_distance``).

    Returns
    -------
    dict
        ``"ndcg"``: {k: (R,)}, ``"spearman"``: (R,), ``"ap"``: (R,) (``nan`` where undefined),
        ``"rank_sum"``, ``"rank_count"``: (R,) sums of graph-reconstruction ranks and their
        counts, for the metrics requested.

    Notes
    -----
    Non-candidates get distance ``+inf`` so that they sort after every candidate and form
    their own tie; in sorted order the candidates of a row with ``m`` of them are exactly the
    positions ``< m``. Tie runs are described by their first and last position.
    """
    n_rows, n_columns = distances.shape
    row_of = np.arange(n_rows)
    candidate = np.ones((n_rows, n_columns), dtype=bool)
    candidate[row_of, self_columns] = False
    if codes is not None and first_code > 0:
        candidate &= codes >= first_code
    n_candidates = candidate.sum(axis=1)
    distances[~candidate] = np.inf
    # Gathers go through flat indices (np.take), much faster than take_along_axis.
    row_offset = (row_of * n_columns)[:, None]
    flat_order = np.argsort(distances, axis=1)
    flat_order += row_offset
    run_start, run_end = _tie_runs(_take(distances, flat_order))
    in_list = np.arange(n_columns)[None, :] < n_candidates[:, None]

    out: dict[str, Any] = {}
    if codes is not None and (ks or spearman):
        sorted_codes = _take(codes, flat_order)
        if ks:
            out["ndcg"] = _row_ndcg(
                sorted_codes, values, in_list, n_candidates, run_start, run_end, ks, discounts, gain
            )
        if spearman:
            tree_rank = _row_average_ranks(codes, sorted_codes, candidate, flat_order, len(values))
            out["spearman"] = _row_spearman(run_start, run_end, tree_rank, in_list, n_candidates)
            del tree_rank
        del sorted_codes
    if retrieval:
        sorted_relevant = _take(relevant & candidate, flat_order)
        out.update(_row_retrieval(sorted_relevant, in_list, run_start, run_end, row_offset))
    return out


def scan_anchors(
    embedding: np.ndarray,
    *,
    tree: TreeCodes | None = None,
    relevant: np.ndarray | None = None,
    min_distance: float = 0.0,
    chunk_size: int | None = None,
    ks: Sequence[int] = (),
    gain: str = "linear",
    spearman: bool = False,
    retrieval: bool = False,
) -> dict[str, Any]:
    """Sums of the per-anchor metrics over every anchor (row) of dense ``(N, N)`` inputs.

    Returns ``ndcg_sum`` ({k: float}), ``ndcg_count``, ``spearman_sum``, ``spearman_count``,
    ``ap_sum``, ``ap_count``, ``rank_sum``, ``rank_count``.
    """
    n_nodes = embedding.shape[0]
    block_rows = chunk_size or rows_per_block(n_nodes, ANCHOR_BLOCK_ELEMENTS)
    work_dtype = np.float32 if embedding.dtype == np.float32 else np.float64
    first_code = tree.first_code_at_least(min_distance) if tree is not None else 0
    discounts = {kk: discount_cumsum(kk, n_nodes) for kk in ks}
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
        rows = score_rows(
            np.array(embedding[first:last], dtype=work_dtype),
            np.arange(first, last),
            codes=tree.codes[first:last] if tree is not None else None,
            values=tree.values if tree is not None else None,
            relevant=relevant[first:last] if relevant is not None else None,
            first_code=first_code,
            ks=ks,
            discounts=discounts,
            gain=gain,
            spearman=spearman,
            retrieval=retrieval,
        )
        add_row_sums(totals, rows)
    return totals


def add_row_sums(totals: dict[str, Any], rows: Mapping[str, Any]) -> None:
    """Add one block's per-anchor values (from :func:`score_rows`) to running sums."""
    if "ndcg" in rows:
        defined = None
        for k, values in rows["ndcg"].items():
            defined = ~np.isnan(values)
            totals["ndcg_sum"][k] += float(np.sum(values[defined]))
        totals["ndcg_count"] += int(defined.sum())
    if "spearman" in rows:
        defined = ~np.isnan(rows["spearman"])
        totals["spearman_sum"] += float(np.sum(rows["spearman"][defined]))
        totals["spearman_count"] += int(defined.sum())
    if "ap" in rows:
        defined = ~np.isnan(rows["ap"])
        totals["ap_sum"] += float(np.sum(rows["ap"][defined]))
        totals["ap_count"] += int(defined.sum())
        totals["rank_sum"] += float(np.sum(rows["rank_sum"]))
        totals["rank_count"] += int(np.sum(rows["rank_count"]))


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


def _row_ndcg(
    sorted_codes: np.ndarray,
    values: np.ndarray,
    in_list: np.ndarray,
    n_candidates: np.ndarray,
    run_start: np.ndarray,
    run_end: np.ndarray,
    ks: Sequence[int],
    discounts: Mapping[int, np.ndarray],
    gain: str,
) -> dict[int, np.ndarray]:
    n_rows, n_columns = sorted_codes.shape
    result = {k: np.full(n_rows, np.nan) for k in ks}
    rows = n_candidates > 0
    if not rows.any():
        return result
    sorted_tree = values[sorted_codes]
    relevance = tree_relevance(sorted_tree, mask=in_list)
    gains = np.exp2(relevance) - 1.0 if gain == "exponential" else relevance
    del sorted_tree, relevance

    # Ideal DCG: the largest gains in decreasing order (ties there change nothing).
    top = min(max(ks), n_columns)
    best = -np.partition(-gains, top - 1, axis=1)[:, :top] if top < n_columns else gains
    best = -np.sort(-best, axis=1)
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
        result[k][rows] = dcg[rows] / ideal[rows]
    return result


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


def _row_spearman(
    run_start: np.ndarray,
    run_end: np.ndarray,
    tree_rank: np.ndarray,
    in_list: np.ndarray,
    n_candidates: np.ndarray,
) -> np.ndarray:
    # Average ranks are multiples of 1/2 and both sides have mean (m + 1) / 2, so the centred
    # sums below are exact in float64 for any N below ~10^5 (and accurate to ~1e-16 beyond).
    centre = (n_candidates[:, None] + 1) / 2.0
    x = np.where(in_list, (run_start + run_end) / 2.0 + 1.0 - centre, 0.0)
    y = np.where(in_list, tree_rank - centre, 0.0)
    sxy = np.einsum("ij,ij->i", x, y)
    sxx = np.einsum("ij,ij->i", x, x)
    syy = np.einsum("ij,ij->i", y, y)
    defined = (n_candidates >= 2) & (sxx > 0) & (syy > 0)
    result = np.full(n_candidates.shape, np.nan)
    result[defined] = sxy[defined] / np.sqrt(sxx[defined] * syy[defined])
    return result


def _row_retrieval(
    sorted_relevant: np.ndarray,
    in_list: np.ndarray,
    run_start: np.ndarray,
    run_end: np.ndarray,
    row_offset: np.ndarray,
) -> dict[str, np.ndarray]:
    n_relevant = sorted_relevant.sum(axis=1)
    # Average precision: each relevant node scores the precision at the end of its tie run
    # (sklearn's precision-recall thresholds are the distinct scores).
    hits = np.cumsum(sorted_relevant, axis=1, dtype=np.int32)
    precision = _take(hits, run_end + row_offset) / (run_end + 1.0)
    del hits
    ap_total = np.where(sorted_relevant, precision, 0.0).sum(axis=1)
    del precision
    rows = n_relevant > 0
    average_precision = np.full(n_relevant.shape, np.nan)
    average_precision[rows] = ap_total[rows] / n_relevant[rows]
    # Mean rank: 1 + non-relevant candidates before the relevant node's tie run.
    misses = in_list & ~sorted_relevant
    misses_before = np.cumsum(misses, axis=1, dtype=np.int32) - misses
    rank = 1 + _take(misses_before, run_start + row_offset)
    rank_sum = np.where(sorted_relevant, rank, 0).sum(axis=1, dtype=np.float64)
    return {"ap": average_precision, "rank_sum": rank_sum, "rank_count": n_relevant}
