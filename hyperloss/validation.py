"""Input checks shared by every layer (the one home of these rules, like sklearn.utils.validation).

Each check takes the value and the argument's name, returns the value in its canonical type,
and raises an error whose message names the argument and says what was wrong: ``TypeError``
for a value of the wrong kind, ``ValueError`` for a value of the right kind that is out of
range. Checks of one package's own inputs (a mask of a given shape, a square distance matrix,
metric inputs as numpy arrays) live in that package's private ``_validation`` module and are
built from these.

Rules
-----
- Integers: any ``numbers.Integral`` (``int``, ``numpy.int64``, ...) except ``bool``; returned
  as ``int``. A float is never accepted as an integer, even ``2.0``.
- Real numbers: any ``numbers.Real`` (``int``, ``float``, numpy scalars) except ``bool``, and a
  one-element real tensor; returned as ``float``. NaN and infinities are refused.
- Tensors: a ``torch.Tensor`` (never converted silently from a list); "floating" means a
  floating-point dtype; "finite" means no NaN and no infinity.
- Node indices: an integer tensor (``bool`` refused) with every entry in ``[0, n_nodes)``;
  negative indices do not wrap around. Returned as an int64 CPU tensor (trees keep their
  tables on the CPU).

Examples
--------
>>> import numpy as np
>>> check_int(np.int64(3), "dim", minimum=2)
3
>>> check_int(2.0, "dim")
Traceback (most recent call last):
    ...
TypeError: dim must be an int, got float 2.0
>>> check_positive(np.float32(0.5), "lr")
0.5
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "all_finite",
    "check_callable",
    "check_chunk_size",
    "check_curvature",
    "check_finite_tensor",
    "check_float_tensor",
    "check_index",
    "check_int",
    "check_nonnegative",
    "check_point_matrix",
    "check_positive",
    "check_real",
    "check_tensor",
    "check_tree",
]

# Entries per block when a finiteness check falls back to the exact, blockwise test: bounds the
# boolean temporary ``isfinite`` makes (4 MiB) whatever the size of the tensor.
_FINITE_BLOCK_ELEMENTS = 2**22


# ----------------------------------------------------------------------------- scalars
def check_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """An integer (numpy integers included, bools excluded), at least ``minimum`` if given.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (a ``bool`` or a float such as ``2.0`` included).
    ValueError
        If ``value < minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real(value: Any, name: str) -> float:
    """A finite real number (numpy scalars and one-element tensors included, bools excluded).

    Raises
    ------
    TypeError
        If ``value`` is not a real number.
    ValueError
        If ``value`` is NaN or infinite.
    """
    if isinstance(value, Tensor) and value.numel() == 1 and not value.dtype.is_complex:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def check_positive(value: Any, name: str) -> float:
    """A finite real number > 0 (see :func:`check_real`)."""
    result = check_real(value, name)
    if result <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return result


def check_nonnegative(value: Any, name: str) -> float:
    """A finite real number >= 0 (see :func:`check_real`)."""
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


def check_tree(value: Any, name: str = "tree") -> Any:
    """A :class:`hyperloss.trees.Tree`."""
    # Imported here: trees.py itself uses this module, which must stay importable first.
    from hyperloss.trees import Tree

    if not isinstance(value, Tree):
        raise TypeError(f"{name} must be a hyperloss.trees.Tree, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------------- tensors
def check_tensor(value: Any, name: str, *, ndim: int | None = None) -> Tensor:
    """A ``torch.Tensor``, with ``ndim`` dimensions if given (any dtype)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must be a {ndim}-D tensor, got shape {tuple(value.shape)}")
    return value


def check_float_tensor(value: Any, name: str) -> Tensor:
    """A floating-point tensor; its values are not read (no device synchronisation)."""
    value = check_tensor(value, name)
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def all_finite(values: Tensor) -> bool:
    """Whether every entry of a tensor is finite (integer and bool tensors always are).

    Costs one reduction and no temporary of the tensor's size: a sum is finite only if every
    term is (NaN and inf propagate). A non-finite sum of finite terms (an overflow) falls back
    to the exact test, block by block, so a large tensor never gets a same-sized bool copy.
    """
    if not (values.is_floating_point() or values.is_complex()):
        return True
    values = values.detach()
    if bool(torch.isfinite(values.sum())):
        return True
    if values.dim() == 0:
        return False
    # Blocks of whole rows (a split along dim 0 is a view, even of a non-contiguous tensor).
    rows = max(1, _FINITE_BLOCK_ELEMENTS // max(1, values[0].numel()))
    return all(bool(torch.isfinite(block).all()) for block in torch.split(values, rows))


def check_finite_tensor(value: Any, name: str) -> Tensor:
    """A floating-point tensor without NaN or inf (see :func:`all_finite` for the cost)."""
    value = check_float_tensor(value, name)
    if not all_finite(value):
        raise ValueError(f"{name} contains NaN or inf")
    return value


def check_point_matrix(value: Any, name: str, *, rows: int | None = None) -> Tensor:
    """A finite floating-point ``(N, D)`` tensor of points, one per row (``N == rows`` if given).

    Raises
    ------
    TypeError
        If ``value`` is not a floating-point tensor.
    ValueError
        If it is not 2-D, has the wrong number of rows, or holds NaN or inf.
    """
    value = check_tensor(value, name)
    if value.dim() != 2 or (rows is not None and value.shape[0] != rows):
        want = "(N, D)" if rows is None else f"({rows}, D)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")
    return check_finite_tensor(value, name)


def check_index(
    value: Any,
    name: str,
    n_nodes: int,
    *,
    shape: Sequence[int | None] | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """An integer tensor of node indices in ``[0, n_nodes)``, as an int64 CPU tensor.

    Parameters
    ----------
    value : Tensor
        Integer indices (any integer dtype, any device; ``bool`` is refused).
    name : str
        The argument's name, for the messages.
    n_nodes : int
        The number of nodes: valid indices are ``0 .. n_nodes - 1``.
    shape : sequence of int or None, optional
        The required shape; ``None`` in a position allows any size there.
    valid : Tensor of bool, optional
        Where ``valid`` is False the entry is not read (padding) and may hold anything.

    Returns
    -------
    Tensor
        ``value`` as int64 on the CPU, detached.

    Raises
    ------
    TypeError
        If ``value`` is not a tensor or has a non-integer dtype.
    ValueError
        If its shape differs from ``shape`` or an index falls outside ``[0, n_nodes)``.
    """
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{name} must be an integer torch.Tensor of node indices, got {type(value).__name__}"
        )
    dtype = value.dtype
    if dtype == torch.bool or dtype.is_floating_point or dtype.is_complex:
        raise TypeError(f"{name} must hold integer node indices, got dtype {dtype}")
    if shape is not None and (
        value.dim() != len(shape)
        or any(s is not None and s != got for s, got in zip(shape, value.shape, strict=True))
    ):
        expected = "(" + ", ".join("n" if s is None else str(s) for s in shape)
        expected += ",)" if len(shape) == 1 else ")"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(value.shape)}")
    index = value.detach().to(device="cpu", dtype=torch.int64)
    checked = index if valid is None else index[valid.cpu()]
    if checked.numel():
        low, high = int(checked.min()), int(checked.max())
        if low < 0 or high >= n_nodes:
            bad = low if low < 0 else high
            raise ValueError(
                f"{name} must hold node indices in [0, {n_nodes}), got {bad}; the tree has "
                f"{n_nodes} nodes and an index outside that range ({bad}) does not wrap around"
            )
    return index
