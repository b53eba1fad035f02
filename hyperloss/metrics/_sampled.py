"""Sampled evaluation: per-anchor rows and pairs computed on demand (private).

Nothing here is ``N x N``: an anchor block costs ``O(rows * N)`` (its embedding distances from
``distance_fn``, its tree distances from ``tree.distances(rows=...)``, its relevance from
``tree.closure(rows=...)``), a pair sample ``O(n_pairs)`` (``distance_fn`` on gathered point
pairs, ``tree.distance(u, v)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from hyperloss.metrics._anchors import discount_cumsum, score_rows
from hyperloss.metrics._codes import path_length_values, tree_row_codes
from hyperloss.metrics._common import (
    ANCHOR_BLOCK_ELEMENTS,
    DISTANCE_BLOCK_ELEMENTS,
    rows_per_block,
)
from hyperloss.metrics._pairs import sample_statistics
from hyperloss.metrics._validation import as_numpy

#: Random groups behind the standard errors of the pair-sample statistics.
PAIR_GROUPS = 25
# Pairs per call of tree.distance (memory O(pairs) there).
_TREE_PAIR_BLOCK = 1 << 20


def draw_anchors(n_nodes: int, n_anchors: int, generator: np.random.Generator) -> np.ndarray:
    """``min(n_anchors, N)`` distinct anchors, uniformly without replacement, sorted."""
    if n_anchors >= n_nodes:
        return np.arange(n_nodes)
    return np.sort(generator.choice(n_nodes, size=n_anchors, replace=False))


def draw_pairs(
    n_nodes: int, n_pairs: int, generator: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` i.i.d. uniform pairs of distinct nodes ``(u, v)``, ``u != v``.

    ``v = u + 1 + U{0..N-2} (mod N)`` is uniform over the nodes other than ``u``, so
    ``(u, v)`` is uniform over ordered pairs of distinct nodes: the symmetric metrics see a
    uniform draw of unordered pairs, without rejection.
    """
    first = generator.integers(0, n_nodes, size=n_pairs)
    second = (first + 1 + generator.integers(0, n_nodes - 1, size=n_pairs)) % n_nodes
    return first, second


def distance_rows(
    points: torch.Tensor,
    rows: np.ndarray,
    distance_fn: Callable[..., torch.Tensor],
) -> np.ndarray:
    """Embedding distances from the ``rows`` points to every point, (len(rows), N) float64.

    ``distance_fn`` sees ``(r, 1, D)`` against ``(1, c, D)`` with ``r * c * D`` at most about
    ``2**21`` coordinates, so its intermediates stay near 16 MB whatever N is.
    """
    n_nodes, width = points.shape
    out = np.empty((rows.size, n_nodes), dtype=np.float64)
    columns_per_call = min(n_nodes, max(1, DISTANCE_BLOCK_ELEMENTS // width))
    rows_per_call = rows_per_block(columns_per_call * width, DISTANCE_BLOCK_ELEMENTS)
    row_index = torch.from_numpy(rows)
    with torch.no_grad():
        for r0 in range(0, rows.size, rows_per_call):
            x = points[row_index[r0 : r0 + rows_per_call]][:, None, :]
            for c0 in range(0, n_nodes, columns_per_call):
                y = points[None, c0 : c0 + columns_per_call, :]
                block = distance_fn(x, y)
                expected = (x.shape[0], y.shape[1])
                if tuple(block.shape) != expected:
                    raise ValueError(
                        f"distance_fn must broadcast (r, 1, D) against (1, c, D) to (r, c); "
                        f"got shape {tuple(block.shape)} for {expected}"
                    )
                out[r0 : r0 + x.shape[0], c0 : c0 + y.shape[1]] = as_numpy(
                    block, "distance_fn output"
                )
    if not np.isfinite(out).all():
        raise ValueError("distance_fn returned non-finite distances (nan or inf)")
    return out


def pair_distances(
    points: torch.Tensor,
    first: np.ndarray,
    second: np.ndarray,
    distance_fn: Callable[..., torch.Tensor],
) -> np.ndarray:
    """``distance_fn(points[u], points[v])`` for the pairs, (P,) float64, in bounded blocks."""
    out = np.empty(first.size, dtype=np.float64)
    per_call = max(1, DISTANCE_BLOCK_ELEMENTS // points.shape[1])
    with torch.no_grad():
        for start in range(0, first.size, per_call):
            u = torch.from_numpy(first[start : start + per_call])
            v = torch.from_numpy(second[start : start + per_call])
            block = distance_fn(points[u], points[v])
            if tuple(block.shape) != (u.numel(),):
                raise ValueError(
                    f"distance_fn must map two (P, D) point tensors to (P,) distances; got "
                    f"shape {tuple(block.shape)} for P = {u.numel()}"
                )
            out[start : start + u.numel()] = as_numpy(block, "distance_fn output")
    if not np.isfinite(out).all():
        raise ValueError("distance_fn returned non-finite distances (nan or inf)")
    return out


def tree_pair_distances(tree: Any, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``tree.distance(u, v)`` for the pairs, (P,) float64 (O(log height) per pair)."""
    out = np.empty(first.size, dtype=np.float64)
    for start in range(0, first.size, _TREE_PAIR_BLOCK):
        u = torch.from_numpy(first[start : start + _TREE_PAIR_BLOCK])
        v = torch.from_numpy(second[start : start + _TREE_PAIR_BLOCK])
        out[start : start + u.numel()] = as_numpy(tree.distance(u, v), "tree.distance()")
    return out


def anchor_estimates(
    points: torch.Tensor,
    tree: Any,
    distance_fn: Callable[..., torch.Tensor],
    anchors: np.ndarray,
    *,
    ks: Sequence[int],
    chunk_size: int | None,
    spearman: bool = True,
    retrieval: bool = True,
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-anchor metrics averaged over ``anchors``, each exact for its anchor, with se's.

    Returns ``(values, standard_errors)`` keyed ``ndcg@k``, ``per_anchor_spearman``, ``map``,
    ``mean_rank``. Standard errors: ``std / sqrt(n)`` over the anchors where the metric is
    defined, times the finite-population factor ``sqrt(1 - n / N)`` (anchors are drawn
    without replacement; all ``N`` anchors give 0). Mean rank is a ratio of sums over
    anchors (it averages over relevant pairs); its se is the usual ratio-estimator one,
    ``sqrt(sum (R_i - m C_i)^2 / (n (n - 1))) / mean(C)`` (Cochran, *Sampling Techniques*,
    6.4), with ``R_i`` the rank sum and ``C_i`` the relevant count of anchor ``i``.
    """
    n_nodes = len(tree)
    block_rows = chunk_size or rows_per_block(n_nodes, ANCHOR_BLOCK_ELEMENTS)
    values = path_length_values(tree)
    discounts = {k: discount_cumsum(k, n_nodes) for k in ks}
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, anchors.size, block_rows):
        block = anchors[start : start + block_rows]
        rows = torch.from_numpy(block)
        scored = score_rows(
            distance_rows(points, block, distance_fn),
            block,
            codes=tree_row_codes(tree, rows),
            values=values,
            relevant=as_numpy(tree.closure(rows=rows), "tree.closure()") if retrieval else None,
            ks=ks,
            discounts=discounts,
            spearman=spearman,
            retrieval=retrieval,
        )
        for k, per_row in scored.get("ndcg", {}).items():
            collected.setdefault(f"ndcg@{k}", []).append(per_row)
        for key, name in (("spearman", "per_anchor_spearman"), ("ap", "map")):
            if key in scored:
                collected.setdefault(name, []).append(scored[key])
        if retrieval:
            collected.setdefault("rank_sum", []).append(scored["rank_sum"])
            collected.setdefault("rank_count", []).append(scored["rank_count"])

    population = math.sqrt(max(0.0, 1.0 - anchors.size / n_nodes))
    estimates: dict[str, float] = {}
    errors: dict[str, float] = {}
    for name, parts in collected.items():
        if name in ("rank_sum", "rank_count"):
            continue
        per_anchor = np.concatenate(parts)
        per_anchor = per_anchor[~np.isnan(per_anchor)]
        estimates[name], errors[name] = _mean_and_error(per_anchor, population)
    if retrieval:
        rank_sum = np.concatenate(collected["rank_sum"])
        rank_count = np.concatenate(collected["rank_count"]).astype(np.float64)
        estimates["mean_rank"], errors["mean_rank"] = _ratio_and_error(
            rank_sum, rank_count, population
        )
    return estimates, errors


def _mean_and_error(values: np.ndarray, population: float) -> tuple[float, float]:
    if values.size == 0:
        return math.nan, math.nan
    if values.size == 1:
        return float(values[0]), math.nan if population > 0 else 0.0
    error = float(np.std(values, ddof=1)) / math.sqrt(values.size) * population
    return float(np.mean(values)), error


def _ratio_and_error(
    numerator: np.ndarray, denominator: np.ndarray, population: float
) -> tuple[float, float]:
    n = numerator.size
    total = float(denominator.sum())
    if total == 0:
        return math.nan, math.nan
    ratio = float(numerator.sum()) / total
    if n < 2:
        return ratio, math.nan if population > 0 else 0.0
    residual = numerator - ratio * denominator
    error = math.sqrt(float(np.dot(residual, residual)) / (n * (n - 1))) / (total / n)
    return ratio, error * population


def pair_estimates(
    points: torch.Tensor,
    tree: Any,
    distance_fn: Callable[..., torch.Tensor],
    first: np.ndarray,
    second: np.ndarray,
    *,
    n_groups: int | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Global metrics of the sampled pairs with their random-group standard errors.

    ``n_groups``: random groups (default ``PAIR_GROUPS``, fewer for tiny samples; 0: no
    standard errors).
    """
    embedding_pairs = pair_distances(points, first, second, distance_fn)
    tree_pairs = tree_pair_distances(tree, first, second)
    if n_groups is None:
        n_groups = max(2, min(PAIR_GROUPS, first.size // 2))
    return sample_statistics(embedding_pairs, tree_pairs, n_groups=n_groups)
