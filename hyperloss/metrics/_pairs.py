"""Pair engine: global statistics over pairs of nodes (private).

Two drivers share the same accumulators (:class:`PairSums`, :class:`RangeRanker`,
:class:`MedianSearch`): :func:`pair_statistics` streams the upper triangle of dense ``(N, N)``
inputs (exact), :func:`sample_statistics` takes a 1-D sample of pairs (sampled evaluation,
with random-group standard errors).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import numpy as np

from hyperloss.metrics._codes import TreeCodes, code_dtype
from hyperloss.metrics._common import PAIR_BLOCK_ELEMENTS, rows_per_block

# Pairs ranked by one sort in the global Spearman (~17 bytes each while ranked).
_RANK_RANGE_PAIRS = 1 << 25
# Random pairs kept to place value-range boundaries (Spearman) and the median bracket.
_SAMPLE_PAIRS = 1 << 16

DISTORTION_KEYS = (
    "mean_ratio",
    "median_ratio",
    "average",
    "worst",
    "max_expansion",
    "max_contraction",
)
#: Distortion entries that are extremes of the ratio: a sample only bounds them from one side.
EXTREME_DISTORTION_KEYS = ("worst", "max_expansion", "max_contraction")


# ====================================================================== exact, streamed
def pair_statistics(
    embedding: np.ndarray | None,
    tree: TreeCodes,
    min_distance: float,
    *,
    spearman: bool = False,
    ceiling: bool = False,
    cophenetic: bool = False,
    distortion: bool = False,
) -> dict[str, Any]:
    """Global metrics over the pairs ``i < j`` of dense inputs with ``t_ij >= min_distance``.

    Only the requested statistics are accumulated (no sums of squares of distances for a
    Spearman correlation: they would overflow on distances near 1e300). A random sample of
    pairs first places the Spearman value ranges and the median bracket. The first pass over
    the pairs then counts them per tree distance, accumulates the sums of the cophenetic
    correlation and the distortion, collects the ratios near the median and ranks the first
    value range. Each further value range takes one more pass.
    """
    first_code = tree.first_code_at_least(min_distance)
    n_nodes = tree.codes.shape[0]
    if not (spearman or cophenetic or distortion):
        embedding = None
    generator = np.random.default_rng(0)
    embedding_sample, ratio_sample = _sample_pairs(
        embedding, tree, first_code, generator, spearman=spearman, distortion=distortion
    )
    ranges = _value_ranges(embedding_sample, n_nodes * (n_nodes - 1) // 2) if spearman else []
    ranker = RangeRanker(len(tree.values)) if spearman else None
    median = MedianSearch(ratio_sample) if distortion else None
    sums = PairSums(tree.values, cophenetic=cophenetic, distortion=distortion)

    first_range = ranges[0] if len(ranges) > 1 else None
    for embedding_pairs, code_pairs in _upper_pairs(embedding, tree, first_code):
        ratios = ratios_of(embedding_pairs, code_pairs, tree.values) if distortion else None
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
            median.add(ratios_of(embedding_pairs, code_pairs, tree.values))
        median.finish_pass(sums.n_ratios)

    result: dict[str, Any] = {}
    if ceiling:
        result["spearman_ceiling"] = ceiling_of(sums.counts)
    if ranker is not None:
        result["spearman"] = ranker.correlation(sums.counts)
    if cophenetic:
        result["cophenetic"] = sums.pearson()
    if median is not None:
        result["distortion"] = sums.distortion(median.value, median.average_distortion)
    return result


def ceiling_of(counts: np.ndarray) -> float:
    """Spearman ceiling ``sqrt((P^3 - sum n_g^3) / (P^3 - P))`` from tie-group sizes, exactly."""
    exact_counts = [int(c) for c in counts if c]
    n_pairs = sum(exact_counts)
    denominator = n_pairs**3 - n_pairs
    numerator = n_pairs**3 - sum(c**3 for c in exact_counts)
    if n_pairs < 2 or not numerator:
        return math.nan
    return math.sqrt(Fraction(numerator, denominator))


def _upper_pairs(
    embedding: np.ndarray | None,
    tree: TreeCodes,
    first_code: int,
    value_range: tuple[float, float] | None = None,
) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """The pairs ``i < j`` with code >= first_code, as 1-D arrays, one row block at a time.

    With ``value_range = (low, high)`` only pairs with ``low <= embedding < high``.
    """
    n_nodes = tree.codes.shape[0]
    block_rows = rows_per_block(n_nodes, PAIR_BLOCK_ELEMENTS)
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
    tree: TreeCodes,
    first_code: int,
    generator: np.random.Generator,
    *,
    spearman: bool,
    distortion: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted embedding distances and ratios of about _SAMPLE_PAIRS random kept pairs."""
    if embedding is None or not (spearman or distortion):
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
        if spearman:
            distances.append(sample.astype(np.float64))
        if distortion:
            ratios.append(ratios_of(sample, codes[keep], tree.values))
        n_sampled += sample.size
        if n_sampled >= _SAMPLE_PAIRS:
            break
    return (
        np.sort(np.concatenate(distances)) if distances else np.zeros(0),
        np.sort(np.concatenate(ratios)) if ratios else np.zeros(0),
    )


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


# ====================================================================== sampled pairs
def sample_statistics(
    embedding_pairs: np.ndarray, tree_pairs: np.ndarray, *, n_groups: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """Global metrics of a uniform sample of pairs, with standard errors.

    Parameters
    ----------
    embedding_pairs, tree_pairs : ndarray, shape (P,)
        Embedding and tree distances of ``P`` pairs drawn independently and uniformly (with
        replacement) from all pairs of distinct nodes, in the order drawn.
    n_groups : int
        Number of random groups for the standard errors (0: no standard errors).

    Returns
    -------
    values : dict
        ``spearman``, ``spearman_ceiling``, ``cophenetic`` and ``distortion`` (dict) of the
        whole sample.
    standard_errors : dict
        ``spearman``, ``spearman_ceiling``, ``cophenetic``, ``distortion_mean_ratio``,
        ``distortion_median_ratio``, ``distortion_average``.

    Notes
    -----
    Standard errors by random groups (Wolter, *Introduction to Variance Estimation*, ch. 2):
    the pairs are i.i.d. draws, so consecutive slices of the sample are independent
    subsamples; with ``theta_g`` the statistic of group ``g`` of ``G``,
    ``se = std(theta_g, ddof=1) / sqrt(G)`` estimates the standard deviation of the statistic
    on all ``P`` pairs. It needs no formula per statistic (Spearman, its tie ceiling, Pearson,
    a median and the average distortion alike) and costs one more pass of the same sorts.
    """
    values, codes = np.unique(tree_pairs, return_inverse=True)
    codes = codes.reshape(-1).astype(code_dtype(values.size))
    whole = _statistics_of_sample(embedding_pairs, codes, values)
    if n_groups == 0:
        return whole, {}
    group_values: list[dict[str, float]] = []
    for group in np.array_split(np.arange(embedding_pairs.size), n_groups):
        group_values.append(
            _flat_estimates(_statistics_of_sample(embedding_pairs[group], codes[group], values))
        )
    standard_errors = {}
    for key in group_values[0]:
        estimates = np.array([g[key] for g in group_values])
        finite = estimates[np.isfinite(estimates)]
        standard_errors[key] = (
            float(np.std(finite, ddof=1) / math.sqrt(finite.size)) if finite.size >= 2 else math.nan
        )
    return whole, standard_errors


def _flat_estimates(statistics: dict[str, Any]) -> dict[str, float]:
    flat = {name: statistics[name] for name in ("spearman", "spearman_ceiling", "cophenetic")}
    for name in ("mean_ratio", "median_ratio", "average"):
        flat[f"distortion_{name}"] = statistics["distortion"][name]
    return flat


def _statistics_of_sample(
    embedding_pairs: np.ndarray, codes: np.ndarray, values: np.ndarray
) -> dict[str, Any]:
    sums = PairSums(values, cophenetic=True, distortion=True)
    ratios = ratios_of(embedding_pairs, codes, values)
    sums.add(embedding_pairs, codes, ratios)
    ranker = RangeRanker(len(values))
    ranker.collect(embedding_pairs, codes, None)
    ranker.rank_collected(int(sums.counts.sum()))
    if ratios.size:
        median = float(np.median(ratios))
        average = average_distortion(ratios, median)
    else:
        median = average = math.nan
    return {
        "spearman": ranker.correlation(sums.counts),
        "spearman_ceiling": ceiling_of(sums.counts),
        "cophenetic": sums.pearson(),
        "distortion": sums.distortion(median, average),
    }


def average_distortion(ratios: np.ndarray, scale: float) -> float:
    """Mean of ``max(r / scale, scale / r)`` over the ratios ``r``; ``inf`` if one is 0."""
    if ratios.size == 0:
        return math.nan
    if scale <= 0 or float(ratios.min()) <= 0:
        return math.inf
    return float(np.mean(np.maximum(ratios / scale, scale / ratios)))


# ====================================================================== accumulators
def ratios_of(
    embedding_pairs: np.ndarray, code_pairs: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """Embedding / tree distance (float64) of the pairs with a positive tree distance."""
    if values[0] > 0:
        return np.divide(embedding_pairs, values[code_pairs], dtype=np.float64)
    positive = code_pairs != 0  # values are sorted: only code 0 can be a zero distance
    return np.divide(embedding_pairs[positive], values[code_pairs[positive]], dtype=np.float64)


class PairSums:
    """Counts per tree distance and, on request, the sums of the Pearson correlation and the
    ratio statistics of the distortion."""

    def __init__(self, values: np.ndarray, *, cophenetic: bool, distortion: bool) -> None:
        self.values = values
        self.cophenetic = cophenetic
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
        if self.cophenetic and embedding_pairs is not None and embedding_pairs.size:
            if self.shift is None:
                # Sums of (e - shift) with shift near the mean keep the variance free of
                # cancellation.
                self.shift = float(np.mean(embedding_pairs, dtype=np.float64))
            shifted = np.subtract(embedding_pairs, self.shift, dtype=np.float64)
            self.shifted_sum_per_code += np.bincount(
                code_pairs, weights=shifted, minlength=n_values
            )
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

    def distortion(self, median: float, average: float) -> dict[str, float]:
        if self.n_ratios == 0:
            return dict.fromkeys(DISTORTION_KEYS, math.nan)
        contraction = 1.0 / self.ratio_min if self.ratio_min > 0 else math.inf
        return {
            "mean_ratio": self.ratio_sum / self.n_ratios,
            "median_ratio": median,
            "average": average,
            "worst": self.ratio_max * contraction,
            "max_expansion": self.ratio_max,
            "max_contraction": contraction,
        }


def average_tie_runs(ranks: np.ndarray, equal_next: np.ndarray) -> None:
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


def sort_carrying_codes(values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


class RangeRanker:
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
        keys, codes = sort_carrying_codes(distances, codes)
        del distances
        n_range = keys.size
        # 1-based rank = position + 1, then centred; tie runs get their average below.
        centred_rank = np.arange(n_range, dtype=np.float64)
        centred_rank += self.pairs_below + 1 - (n_pairs + 1) / 2.0
        average_tie_runs(centred_rank, keys[1:] == keys[:-1])
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


class MedianSearch:
    """Exact median of values streamed in passes, holding only those near the median.

    A random sample brackets the middle; a pass counts the values below the bracket and equal
    to its ends and keeps those strictly inside. If the bracket missed the two middle order
    statistics (unlikely), it is widened to the open side and the pass repeated.

    The same pass gives the average distortion about the median ``s`` of non-negative ratios,
    ``mean(max(r / s, s / r))``, without a second pass: every value below the bracket is below
    ``s`` (it adds ``s / r``: the pass sums ``1 / r`` there), every value above is above ``s``
    (it adds ``r / s``: the pass sums ``r``), and the values inside are kept anyway.
    """

    def __init__(self, sorted_sample: np.ndarray) -> None:
        self.value = math.nan
        self.average_distortion = math.nan
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
        self.inverse_sum_below = 0.0
        self.sum_above = 0.0
        self.has_zero = False
        self.inside: list[np.ndarray] = []

    def add(self, values: np.ndarray) -> None:
        below = values[values < self.low]
        self.n_below += below.size
        if below.size:
            positive = below[below > 0]
            self.has_zero |= positive.size < below.size
            self.inverse_sum_below += float(np.sum(1.0 / positive))
        self.sum_above += float(np.sum(values[values > self.high]))
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
        self.average_distortion = self._average(inside, n_values)
        self.done = True

    def _average(self, inside: np.ndarray, n_values: int) -> float:
        """``mean(max(r / s, s / r))`` about the median ``s`` (``inf`` if some ``r <= 0``)."""
        scale = self.value
        if self.has_zero or scale <= 0 or (inside.size and float(inside.min()) <= 0):
            return math.inf
        if (self.n_at_low and self.low <= 0) or (self.n_at_high and self.high <= 0):
            return math.inf
        total = scale * self.inverse_sum_below + self.sum_above / scale
        total += float(np.sum(np.maximum(inside / scale, scale / inside)))
        for value, count in ((self.low, self.n_at_low), (self.high, self.n_at_high)):
            if count:
                total += count * max(value / scale, scale / value)
        return total / n_values
