"""Input checks of the metrics package (private), built from :mod:`hyperloss.validation`.

Every public function of :mod:`hyperloss.metrics` validates its arguments here or with the
shared checks of :mod:`hyperloss.validation` (integers, chunk sizes, callables, point matrices)
and then trusts them: errors name the argument and say what was wrong. What stays here is
particular to the metrics: distance matrices read as numpy arrays, ``k`` as one int or a list,
``sample=``, and the tree-like objects the metrics accept.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hyperloss.metrics._common import PAIR_BLOCK_ELEMENTS, rows_per_block
from hyperloss.validation import check_float_tensor, check_point_matrix


def as_numpy(value: Any, name: str) -> np.ndarray:
    """A numpy view (or copy) of a real array, tensor (any device) or nested list."""
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


def as_matrix(value: Any, name: str, *, allow_bool: bool = False) -> np.ndarray:
    """A finite, square ``(N, N)`` real matrix with ``N >= 2`` (floats as float32/float64)."""
    matrix = as_numpy(value, name)
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
        check_finite_rows(matrix, f"{name} must be finite, found nan or inf")
    return matrix


def check_finite_rows(matrix: np.ndarray, message: str) -> None:
    """Raise ``ValueError(message)`` if ``matrix`` holds nan or inf (checked in row blocks)."""
    block_rows = rows_per_block(matrix.shape[-1] if matrix.ndim else 1, PAIR_BLOCK_ELEMENTS)
    for first in range(0, max(1, matrix.shape[0] if matrix.ndim else 1), block_rows):
        if not np.isfinite(matrix[first : first + block_rows]).all():
            raise ValueError(message)


def check_pair_inputs(embedding_distances: Any, tree_distances: Any) -> tuple[np.ndarray, Any]:
    """Embedding (float) and tree distance matrices of the same shape."""
    return _with_embedding_distances(embedding_distances, tree_distances, "tree_distances")


def check_relevance_inputs(
    embedding_distances: Any, relevant: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Embedding distances (float) and a boolean relevance matrix of the same shape."""
    embedding, relevance = _with_embedding_distances(
        embedding_distances, relevant, "relevant", allow_bool=True
    )
    if relevance.dtype.kind != "b":
        if not np.isin(relevance, (0, 1)).all():
            raise ValueError("relevant must be boolean or hold only 0 and 1")
        relevance = relevance != 0
    return embedding, relevance


def _with_embedding_distances(
    embedding_distances: Any, other: Any, name: str, *, allow_bool: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Embedding distances (as float) and another matrix ``name`` of the same shape."""
    embedding = as_matrix(embedding_distances, "embedding_distances")
    matrix = as_matrix(other, name, allow_bool=allow_bool)
    if embedding.shape != matrix.shape:
        raise ValueError(
            f"embedding_distances and {name} must have the same shape, got "
            f"{embedding.shape} and {matrix.shape}"
        )
    if embedding.dtype.kind != "f":
        embedding = embedding.astype(np.float64)
    return embedding, matrix


def check_non_negative(matrix: np.ndarray, name: str) -> None:
    block_rows = rows_per_block(matrix.shape[0], PAIR_BLOCK_ELEMENTS)
    for first in range(0, matrix.shape[0], block_rows):
        lowest = float(matrix[first : first + block_rows].min())
        if lowest < 0:
            raise ValueError(f"{name} must be non-negative, got a minimum of {lowest:g}")


def check_ks(k: Any) -> tuple[list[int], bool]:
    """``k`` as a list of distinct ints >= 1 (order kept) and whether it was one integer.

    One integer is a Python or numpy integer, or a 0-d integer array or tensor; a sequence is
    a list, tuple, 1-D array or 1-D tensor of them.
    """
    if isinstance(k, torch.Tensor):
        k = k.detach().cpu().numpy()
    if isinstance(k, np.ndarray) and k.ndim == 0:
        k = k[()]
    single = isinstance(k, numbers.Integral) and not isinstance(k, (bool, np.bool_))
    if single:
        items = [k]
    elif isinstance(k, np.ndarray) or (isinstance(k, Sequence) and not isinstance(k, str)):
        items = list(k.tolist() if isinstance(k, np.ndarray) else k)
        if not items:
            raise ValueError("k must be an int or a non-empty sequence of ints, got an empty one")
    else:
        raise TypeError(f"k must be an int or a sequence of ints, got {type(k).__name__} {k!r}")
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise TypeError(f"k must hold ints, got {type(item).__name__} {item!r}")
        if item < 1:
            raise ValueError(f"k must be >= 1, got {item}")
    return list(dict.fromkeys(int(item) for item in items)), single


def check_sample(sample: Any) -> str | bool:
    if sample is True or sample is False or (isinstance(sample, str) and sample == "auto"):
        return sample
    raise ValueError(f"sample must be 'auto', True or False, got {sample!r}")


def check_tree(tree: Any, *, sampled: bool = False) -> None:
    """A Tree-like object: dense rows always, ``distance(u, v)`` for sampled pairs too."""
    needed = ("distances", "closure", "__len__", "height")
    if not all(hasattr(tree, name) for name in needed):
        raise TypeError(f"tree must be a hyperloss.trees.Tree, got {type(tree).__name__}")
    if sampled and not callable(getattr(tree, "distance", None)):
        raise TypeError(
            f"tree must provide distance(u, v) (hyperloss.trees.Tree) for a sampled "
            f"evaluation; {type(tree).__name__} has none"
        )


def check_points(points: Any, n_nodes: int) -> torch.Tensor:
    """Finite floating ``(N, dim + 1)`` points, one row per tree node (detached)."""
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(points)
    if not isinstance(points, torch.Tensor):
        raise TypeError(
            f"points must be a torch tensor, a numpy array or an Embedding, got "
            f"{type(points).__name__}"
        )
    points = check_float_tensor(points, "points").detach()
    if points.dim() == 2 and points.shape[0] != n_nodes:
        raise ValueError(
            f"points must have one row per tree node: the tree has {n_nodes} nodes, "
            f"points has {points.shape[0]} rows"
        )
    return check_point_matrix(points, "points", rows=n_nodes)
