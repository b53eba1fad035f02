"""Block sizes and tiny helpers shared by the metric engines (private)."""

from __future__ import annotations

import math

# Entries per anchor block of the per-anchor metrics (each entry costs ~130 bytes of
# temporaries while a block is sorted and scored, so ~270 MB per block).
ANCHOR_BLOCK_ELEMENTS = 1 << 21
# Entries per row block when the upper triangle is streamed (global metrics, input checks).
PAIR_BLOCK_ELEMENTS = 1 << 22
# Point coordinates per broadcast block handed to distance_fn (each intermediate ~16 MB).
DISTANCE_BLOCK_ELEMENTS = 1 << 21


def rows_per_block(n_columns: int, elements: int) -> int:
    """Rows of ``n_columns`` entries that fit in a block of about ``elements`` entries (>= 1)."""
    return max(1, elements // max(1, n_columns))


def mean(total: float, count: int) -> float:
    """``total / count``, ``nan`` for an empty count."""
    return total / count if count else math.nan
