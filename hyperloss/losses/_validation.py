"""Input checks shared by the functional losses and the modules (one home per rule).

Each raises ``TypeError`` for a wrong kind of value and ``ValueError`` for a wrong value, with
a message that names the argument.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def check_real(value: Any, name: str) -> float:
    """A finite real number (a one-element tensor is accepted) as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_nonnegative(value: Any, name: str) -> float:
    """A finite real number ``>= 0`` as a float."""
    value = check_real(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_count(value: Any, name: str) -> int:
    """An int ``>= 1`` (bool refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> None:
    """A bool tensor of exactly ``shape``."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")


def check_index(
    index: Any, shape: tuple[int | None, ...], n_nodes: int, name: str, valid: Tensor | None = None
) -> Tensor:
    """An integer tensor of the given shape (None: any size) with entries in ``[0, n_nodes)``.

    Where ``valid`` (a bool tensor of the index's shape) is False the entry is not read and may
    hold anything. Returns an int64 CPU copy (the trees keep their tables on the CPU).
    """
    if not isinstance(index, Tensor):
        raise TypeError(
            f"{name} must be an integer torch.Tensor of tree indices, got {type(index).__name__}"
        )
    if index.dtype not in _INTEGER_DTYPES:
        raise TypeError(
            f"{name} must be an integer tensor of tree indices, got dtype {index.dtype}"
        )
    expected = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
    if index.dim() != len(shape) or any(
        s is not None and s != got for s, got in zip(shape, index.shape, strict=True)
    ):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(index.shape)}")
    index = index.detach().to(device="cpu", dtype=torch.int64)
    checked = index if valid is None else index[valid.cpu()]
    if checked.numel() and (int(checked.min()) < 0 or int(checked.max()) >= n_nodes):
        bad = checked[(checked < 0) | (checked >= n_nodes)]
        raise ValueError(
            f"{name} holds tree indices outside [0, {n_nodes}) (the tree has {n_nodes} nodes), "
            f"e.g. {int(bad[0])}"
        )
    return index


def check_point_rows(points: Any, rows: int | None, name: str) -> None:
    """A floating-point tensor of shape (rows, D + 1) (rows None: any), finite.

    One sum decides finiteness when every entry is finite (a sum is finite only if every entry
    is); a non-finite sum gets the exact test, so an overflowing sum is not refused.
    """
    if not isinstance(points, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() != 2 or (rows is not None and points.shape[0] != rows):
        want = "(n, D + 1)" if rows is None else f"({rows}, D + 1)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {points.dtype}")
    if not math.isfinite(float(points.detach().sum())) and not bool(torch.isfinite(points).all()):
        raise ValueError(f"{name} contains NaN or inf")
