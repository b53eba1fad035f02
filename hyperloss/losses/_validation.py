"""Input checks of the losses' own inputs (private), built from :mod:`hyperloss.validation`.

The generic rules (integers, real numbers, finite tensors, node-index tensors, callables) live
in :mod:`hyperloss.validation`; the functional losses and the modules import them from there.
This module holds only what is particular to the losses: a padding mask of a given shape and a
square distance matrix. Each raises ``TypeError`` for a wrong kind of value and ``ValueError``
for a wrong value, with a message that names the argument.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hyperloss.validation import check_tensor


def check_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> None:
    """A bool tensor of exactly ``shape``."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")


def check_square_matrix(matrix: Any, name: str) -> Tensor:
    """A tensor of shape ``(N, N)`` (any dtype; values not read)."""
    matrix = check_tensor(matrix, name)
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{name} must be a square (N, N) matrix, got shape {tuple(matrix.shape)}")
    return matrix
