"""Where the loss modules take tree distances from: a :class:`~hyperloss.trees.Tree`, or a
dense matrix for the original ``(tree_distances, code_to_idx)`` signatures.

A *tree-distance source* is any object with

* ``len(source)``: the number of nodes ``N``;
* ``source.distance(u, v)``: float64 tree distances of index tensors ``u``, ``v`` that
  broadcast to a common shape ``S``, shape ``S``;
* ``source.indices(names)``: a LongTensor of the names' indices, raising
  :class:`~hyperloss.trees.UnknownNodeError` (a ``KeyError`` and ``ValueError``) that names
  any unknown name.

:class:`~hyperloss.trees.Tree` is one (on demand, by lowest common ancestors: nothing N x N);
:class:`TreeDistanceMatrix` wraps a dense ``(N, N)`` matrix and a name map.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hyperloss.losses._validation import check_square_matrix
from hyperloss.trees import UnknownNodeError
from hyperloss.validation import check_finite_tensor, check_index, check_int

__all__ = ["TreeDistanceMatrix", "as_tree_source"]


class TreeDistanceMatrix:
    """A dense ``(N, N)`` tree-distance matrix (and a name map) as a tree-distance source.

    The adapter behind the original signatures ``LambdaRankLoss(tree_distances, code_to_idx)``
    and ``RankOrderPreservationLoss(tree_distances, code_to_idx)``. It holds the whole matrix
    (``8 N^2`` bytes in float64), so it is for small trees and for tree distances that do not
    come from a :class:`~hyperloss.trees.Tree`; pass the ``Tree`` itself otherwise.

    Parameters
    ----------
    tree_distances : Tensor or array-like, shape (N, N)
        Tree distances, finite; stored as a float64 CPU tensor (a copy).
    code_to_idx : Mapping[str, int], optional
        Row of ``tree_distances`` for each name. Without it, only index tensors can be used.

    Raises
    ------
    TypeError
        If ``tree_distances`` is not array-like or ``code_to_idx`` is not a mapping to ints.
    ValueError
        If ``tree_distances`` is not square or not finite, or a ``code_to_idx`` value is not a
        row of it.

    Examples
    --------
    >>> import torch
    >>> source = TreeDistanceMatrix(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), {"a": 0, "b": 1})
    >>> source.distance(source.indices(["a", "b"]), torch.tensor(1))
    tensor([1., 0.], dtype=torch.float64)
    """

    def __init__(self, tree_distances: Any, code_to_idx: Mapping[str, int] | None = None) -> None:
        self.tree_distances = _check_matrix(tree_distances)
        n_nodes = self.tree_distances.shape[0]
        self.code_to_idx = None if code_to_idx is None else _check_names(code_to_idx, n_nodes)

    def __len__(self) -> int:
        return self.tree_distances.shape[0]

    def __repr__(self) -> str:
        names = "no names" if self.code_to_idx is None else f"{len(self.code_to_idx)} names"
        return f"TreeDistanceMatrix(n_nodes={len(self)}, {names})"

    def distance(self, u: Any, v: Any) -> Tensor:
        """Entries ``tree_distances[u, v]`` (float64, broadcast shape, on ``u``'s device)."""
        first = check_index(torch.as_tensor(u), "u", len(self))
        second = check_index(torch.as_tensor(v), "v", len(self))
        device = u.device if isinstance(u, Tensor) else torch.device("cpu")
        return self.tree_distances[first, second].to(device)

    def indices(self, names: Iterable[str]) -> Tensor:
        """Rows of ``names`` as a LongTensor ``(len(names),)``.

        Raises
        ------
        UnknownNodeError
            Naming the names not in ``code_to_idx``.
        TypeError
            If the source has no name map, or ``names`` is a single ``str``.
        """
        if self.code_to_idx is None:
            raise TypeError(
                "these tree distances came without names (no code_to_idx): pass integer "
                "index tensors instead of names"
            )
        if isinstance(names, str):
            raise TypeError("names must be an iterable of names, not a single str")
        names = list(names)
        get = self.code_to_idx.get
        found = [get(name) if isinstance(name, str) else None for name in names]
        unknown = [name for name, index in zip(names, found, strict=True) if index is None]
        if unknown:
            shown = ", ".join(repr(name) for name in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise UnknownNodeError(f"unknown node name(s): {shown}{more}")
        return torch.tensor(found, dtype=torch.int64)


def as_tree_source(tree: Any, code_to_idx: Mapping[str, int] | None = None) -> Any:
    """The tree-distance source of a loss module's ``tree`` argument.

    A :class:`~hyperloss.trees.Tree` (or any object with ``__len__``, ``distance`` and
    ``indices``) is used as is; a matrix (Tensor or array) becomes a
    :class:`TreeDistanceMatrix` with ``code_to_idx``.
    """
    if code_to_idx is None and _is_source(tree):
        return tree
    if isinstance(tree, Tensor | np.ndarray | list | tuple):
        return TreeDistanceMatrix(tree, code_to_idx)
    if code_to_idx is not None:
        raise TypeError(
            "code_to_idx goes with a dense (N, N) tree_distances matrix; with a Tree, drop it "
            "(names are looked up in the tree)"
        )
    raise TypeError(
        "tree must be a hyperloss.trees.Tree (or an object with len(), distance(u, v) and "
        f"indices(names)), or an (N, N) tree-distance matrix; got {type(tree).__name__}"
    )


def _is_source(value: Any) -> bool:
    return all(
        callable(getattr(value, attribute, None))
        for attribute in ("__len__", "distance", "indices")
    )


def _check_matrix(tree_distances: Any) -> Tensor:
    if not isinstance(tree_distances, Tensor):
        try:
            tree_distances = torch.as_tensor(np.asarray(tree_distances, dtype=np.float64))
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"tree_distances must be a tensor or array-like, got "
                f"{type(tree_distances).__name__}"
            ) from error
    check_square_matrix(tree_distances, "tree_distances")
    tree_distances = tree_distances.detach().to(device="cpu", dtype=torch.float64).clone()
    return check_finite_tensor(tree_distances, "tree_distances")


def _check_names(code_to_idx: Any, n_nodes: int) -> dict[str, int]:
    if not isinstance(code_to_idx, Mapping):
        raise TypeError(
            f"code_to_idx must be a mapping name -> index, got {type(code_to_idx).__name__}"
        )
    checked: dict[str, int] = {}
    for name, index in code_to_idx.items():
        index = check_int(index, f"code_to_idx[{name!r}]")
        if not 0 <= index < n_nodes:
            raise ValueError(
                f"code_to_idx[{name!r}] = {index} is not a row of tree_distances (0..{n_nodes - 1})"
            )
        checked[name] = int(index)
    return checked
