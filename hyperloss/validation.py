"""Input checks shared by every layer (the one home of these rules, like sklearn.utils.validation).

Each check takes the value and the argument's name, returns the value in its canonical Python
type, and raises an error whose message names the argument and says what was wrong:
``TypeError`` for a value of the wrong kind, ``ValueError`` for a value of the right kind that
is out of range.

Rules
-----
- Integers: any ``numbers.Integral`` (``int``, ``numpy.int64``, ...) except ``bool``; returned
  as ``int``. A float is never accepted as an integer, even ``2.0``.
- Real numbers: any ``numbers.Real`` (``int``, ``float``, numpy scalars) except ``bool``, and a
  one-element tensor; returned as ``float``; NaN and infinities are rejected unless a check says
  otherwise.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_callable",
    "check_chunk_size",
    "check_curvature",
    "check_finite_tensor",
    "check_int",
    "check_nonnegative",
    "check_point_matrix",
    "check_positive",
    "check_real",
]


def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """An integer (numpy integers included, bools excluded), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(value: Any, name: str) -> float:
    """A finite real number (numpy scalars and one-element tensors included, bools excluded)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def check_positive(value: Any, name: str) -> float:
    """A finite real number > 0."""
    result = check_real(value, name)
    if result <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return result


def check_nonnegative(value: Any, name: str) -> float:
    """A finite real number >= 0."""
    result = check_real(value, name)
    if result < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return result


def check_curvature(value: Any, name: str = "curvature") -> float:
    """``c > 0``, finite: the space has sectional curvature ``-c``."""
    return check_positive(value, name)


def check_chunk_size(value: Any, name: str = "chunk_size") -> int | None:
    """``None`` (automatic) or an int >= 1."""
    if value is None:
        return None
    return check_int(value, name, minimum=1)


def check_callable(value: Any, name: str) -> Any:
    """Anything callable (a function, a module, a distance object)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def check_finite_tensor(value: Any, name: str) -> Tensor:
    """A floating-point tensor without NaN or inf."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return value


def check_point_matrix(value: Any, name: str) -> Tensor:
    """A finite floating-point ``(N, D)`` tensor of points (one per row)."""
    if isinstance(value, Tensor) and value.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(value.shape)}")
    return check_finite_tensor(value, name)
