"""Graded relevance of tree nodes to an anchor: the one NDCG relevance of hyperloss.

Both the NDCG metric (:mod:`hyperloss.metrics`) and the LambdaRank loss
(:class:`hyperloss.losses.LambdaRankLoss`) grade a candidate ``j`` of an anchor by its tree
distance ``t_j`` from the anchor, relative to the largest tree distance ``t_max`` among the
anchor's candidates:

.. math:: r_j = \\frac{t_{max} - t_j + \\varepsilon}{t_{max} + \\varepsilon},
          \\qquad \\varepsilon = 10^{-6}.

It lives here, in the trees layer, so that the metric and the loss (two layers below) share one
definition. The grade is a linear, decreasing function of the tree distance: 1 only for a
candidate at tree distance 0 (the anchor itself), :math:`1 - t_j / t_{max}` up to
:math:`\\varepsilon` in between, and :math:`\\varepsilon / (t_{max} + \\varepsilon)` (about 0,
but positive) for the farthest candidates. The tree-nearest candidate of a list therefore gets
``(t_max - t_min + eps) / (t_max + eps)``, which is below 1 whenever ``t_min > 0``.
``eps`` keeps the farthest candidates' grade positive and the grade defined when every tree
distance is 0 (then all grades are 1); its value is the research code's (users port numbers).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["RELEVANCE_EPS", "tree_relevance"]

#: Added to the numerator and denominator of :func:`tree_relevance`.
RELEVANCE_EPS = 1e-6


def tree_relevance(
    tree_distances: Any,
    *,
    mask: Any = None,
    max_distance: Any = None,
) -> Any:
    r"""Relevance grades :math:`r = (t_{max} - t + \varepsilon) / (t_{max} + \varepsilon)`.

    Parameters
    ----------
    tree_distances : Tensor or ndarray, shape (..., L)
        Tree distances from each anchor (leading dimensions) to its ``L`` candidates,
        non-negative, finite at the valid candidates.
    mask : bool Tensor or ndarray, shape (..., L), optional
        True at the valid candidates. Invalid candidates take no part in ``t_max`` and get
        relevance 0. Default: all valid.
    max_distance : float, Tensor or ndarray broadcasting to (..., 1), optional
        :math:`t_{max}`. Default: the largest tree distance among each row's valid candidates
        (0 for a row without one).

    Returns
    -------
    Tensor or ndarray, shape (..., L)
        float64, of the kind of ``tree_distances`` (torch on its device, or numpy). In
        ``(0, 1]`` at valid candidates with ``t <= t_max``.

    Raises
    ------
    TypeError
        If ``tree_distances`` is not a Tensor or array, or ``mask`` is not boolean.
    ValueError
        If ``mask`` does not have the shape of ``tree_distances``.

    Examples
    --------
    >>> import torch
    >>> tree_relevance(torch.tensor([[0.0, 1.0, 2.0, 4.0]], dtype=torch.float64))
    tensor([[1.0000e+00, 7.5000e-01, 5.0000e-01, 2.5000e-07]], dtype=torch.float64)
    """
    if isinstance(tree_distances, Tensor):
        return _relevance_torch(tree_distances, mask, max_distance)
    if isinstance(tree_distances, np.ndarray):
        return _relevance_numpy(tree_distances, mask, max_distance)
    raise TypeError(
        f"tree_distances must be a torch.Tensor or numpy array, got {type(tree_distances).__name__}"
    )


def _grade(max_distance: Any, tree_distances: Any) -> Any:
    """The formula itself, for torch and numpy alike."""
    return (max_distance - tree_distances + RELEVANCE_EPS) / (max_distance + RELEVANCE_EPS)


def _relevance_torch(tree_distances: Tensor, mask: Any, max_distance: Any) -> Tensor:
    tree_distances = tree_distances.to(torch.float64)
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool torch.Tensor, got {_describe(mask)}")
        if mask.shape != tree_distances.shape:
            raise ValueError(
                f"mask must have the shape of tree_distances {tuple(tree_distances.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        mask = mask.to(tree_distances.device)
        # Invalid entries may hold anything (even NaN): replace them before any arithmetic.
        tree_distances = torch.where(mask, tree_distances, 0.0)
    if max_distance is None:
        if tree_distances.shape[-1] == 0:
            return tree_distances.clone()
        valid_distances = (
            tree_distances if mask is None else tree_distances.masked_fill(~mask, -math.inf)
        )
        max_distance = valid_distances.amax(dim=-1, keepdim=True)
        # a row without a valid candidate: t_max = 0 (its grades are masked to 0 anyway)
        max_distance = torch.where(torch.isfinite(max_distance), max_distance, 0.0)
    elif isinstance(max_distance, Tensor):
        max_distance = max_distance.to(device=tree_distances.device, dtype=torch.float64)
    relevance = _grade(max_distance, tree_distances)
    if mask is not None:
        relevance = torch.where(mask, relevance, 0.0)
    return relevance


def _relevance_numpy(tree_distances: np.ndarray, mask: Any, max_distance: Any) -> np.ndarray:
    tree_distances = np.asarray(tree_distances, dtype=np.float64)
    if mask is not None:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            raise TypeError(f"mask must be a bool numpy array, got {_describe(mask)}")
        if mask.shape != tree_distances.shape:
            raise ValueError(
                f"mask must have the shape of tree_distances {tree_distances.shape}, "
                f"got {mask.shape}"
            )
        tree_distances = np.where(mask, tree_distances, 0.0)
    if max_distance is None:
        if tree_distances.shape[-1] == 0:
            return tree_distances.copy()
        valid_distances = (
            tree_distances if mask is None else np.where(mask, tree_distances, -np.inf)
        )
        max_distance = valid_distances.max(axis=-1, keepdims=True)
        max_distance = np.where(np.isfinite(max_distance), max_distance, 0.0)
    relevance = _grade(max_distance, tree_distances)
    if mask is not None:
        relevance = np.where(mask, relevance, 0.0)
    return relevance


def _describe(value: Any) -> str:
    dtype = getattr(value, "dtype", None)
    return f"{type(value).__name__} of dtype {dtype}" if dtype is not None else type(value).__name__
