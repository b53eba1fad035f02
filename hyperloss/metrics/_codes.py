"""Tree distances as small integer codes into their sorted distinct values (private).

Both engines work on codes: path lengths take few distinct values (at most ``2 * height + 1``),
so a code costs 1 or 2 bytes per entry, ranks of tree distances come from counting codes, and
per-distance sums are ``bincount`` over codes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from hyperloss.metrics._common import PAIR_BLOCK_ELEMENTS, rows_per_block
from hyperloss.metrics._validation import as_numpy


@dataclasses.dataclass
class TreeCodes:
    """Tree distances as ``values[codes]``: ``values`` sorted distinct float64, ``codes`` (R, N)."""

    codes: np.ndarray
    values: np.ndarray

    def first_code_at_least(self, min_distance: float) -> int:
        return int(np.searchsorted(self.values, min_distance, side="left"))


def encode_tree(tree_distances: np.ndarray, name: str) -> TreeCodes:
    """Replace a tree-distance matrix by small integer codes into its sorted distinct values.

    Path lengths are small integers (the fast path: one cast). Other values are collected
    block by block; only a matrix with more than 65,536 distinct values falls back to a full
    ``np.unique`` (exact, but it sorts all N^2 entries).
    """
    n_nodes = tree_distances.shape[0]
    block_rows = rows_per_block(n_nodes, PAIR_BLOCK_ELEMENTS)
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
        codes = np.empty((n_nodes, n_nodes), dtype=code_dtype(values.size))
        for first in range(0, n_nodes, block_rows):
            block = tree_distances[first : first + block_rows]
            np.subtract(block, offset, out=codes[first : first + block_rows], casting="unsafe")
        return TreeCodes(codes, values)

    values = np.zeros(0, dtype=np.float64)
    for first in range(0, n_nodes, block_rows):
        block = np.asarray(tree_distances[first : first + block_rows], dtype=np.float64)
        missing = ~_member(values, block)
        if missing.any():
            values = np.union1d(values, block[missing])
            if values.size > 1 << 16:
                unique, inverse = np.unique(tree_distances, return_inverse=True)
                return TreeCodes(
                    inverse.reshape(n_nodes, n_nodes), unique.astype(np.float64, copy=False)
                )
    codes = np.empty((n_nodes, n_nodes), dtype=code_dtype(values.size))
    for first in range(0, n_nodes, block_rows):
        block = np.asarray(tree_distances[first : first + block_rows], dtype=np.float64)
        codes[first : first + block_rows] = np.searchsorted(values, block)
    return TreeCodes(codes, values)


def _member(values: np.ndarray, block: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.zeros(block.shape, dtype=bool)
    position = np.minimum(np.searchsorted(values, block), values.size - 1)
    return values[position] == block


def code_dtype(n_values: int) -> np.dtype:
    """The smallest unsigned dtype holding codes ``0 .. n_values - 1``."""
    if n_values <= 1 << 8:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if n_values <= 1 << 16 else np.dtype(np.uint32)


def path_length_values(tree: Any) -> np.ndarray:
    """All path lengths a tree can have, ``0 .. 2 * height``, as float64 code values."""
    return np.arange(2 * int(tree.height) + 1, dtype=np.float64)


def tree_row_codes(tree: Any, rows: torch.Tensor) -> np.ndarray:
    """Codes of ``tree.distances(rows=rows)``, shape (len(rows), N): O(N) per row.

    Path lengths are integers, so the code of a distance is the distance itself.
    """
    block = as_numpy(tree.distances(rows=rows), "tree.distances()")
    return block.astype(code_dtype(2 * int(tree.height) + 1))


def dense_tree_codes(tree: Any, chunk_size: int | None) -> TreeCodes:
    """Codes of all ``tree.distances()`` (N, N), built row block by row block.

    Dense: ``N^2`` bytes (small trees only; :func:`hyperloss.metrics.evaluate` calls it up
    to ``EXACT_LIMIT`` nodes).
    """
    n_nodes = len(tree)
    values = path_length_values(tree)
    codes = np.empty((n_nodes, n_nodes), dtype=code_dtype(values.size))
    block_rows = chunk_size or rows_per_block(n_nodes, PAIR_BLOCK_ELEMENTS)
    for first in range(0, n_nodes, block_rows):
        rows = torch.arange(first, min(n_nodes, first + block_rows))
        codes[first : first + rows.numel()] = tree_row_codes(tree, rows)
    return TreeCodes(codes, values)
