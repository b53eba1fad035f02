"""``nn.Module`` wrappers of the ranking losses: names and points in, a loss out.

Each module holds a tree-distance matrix (a buffer, so ``.to(device)`` moves it) and a map from
names to its rows. ``forward`` turns names (or an index tensor) into indices, computes the
embedding distances with the given distance callable, gathers the matching tree distances,
and calls the functional form in :mod:`hyperloss.losses.functional`.

A distance callable is anything with the broadcasting contract of ``geoopt.Manifold.dist``:
``distance_fn(x, y)`` takes two point tensors of shapes that broadcast over the leading
dimensions, ``(..., D + 1)``, and returns the distances with the broadcast shape ``(...)``;
for example ``geoopt.Lorentz().dist``, ``geoopt.PoincareBall().dist``,
:class:`hyperloss.geometry.LorentzDistance` or ``lambda x, y: (x - y).norm(dim=-1)``.
"""

from __future__ import annotations

import array
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from hyperloss.geometry import pairwise_distances
from hyperloss.losses.functional import (
    _check_lists_finite,
    _lambda_rank,
    rank_order_preservation_loss,
)

if TYPE_CHECKING:
    from hyperloss.trees import Tree

__all__ = ["LambdaRankLoss", "RankOrderPreservationLoss"]

DistanceFn = Callable[[Tensor, Tensor], Tensor]

_BROADCAST_CONTRACT = (
    "distance_fn must broadcast over leading dimensions like geoopt.Manifold.dist: "
    "distance_fn(x, y) with x of shape (B, 1, D+1) and y of shape (B, M, D+1) must return "
    "shape (B, M)"
)
_PAIRED_CONTRACT = (
    "distance_fn must follow the geoopt.Manifold.dist contract (broadcast over leading "
    "dimensions): distance_fn(x, y) with x and y of shape (M, D+1) must return shape (M,)"
)


class RankOrderPreservationLoss(nn.Module):
    r"""Penalise triples whose embedding distances contradict the tree's order of distances.

    "If code A is closer to B than to C in the tree, the embedding distance A-B should be
    smaller than A-C." Names not in ``code_to_idx`` are dropped; with fewer than 3 left the loss
    is 0. With :math:`d` the embedding and :math:`t` the tree distances among the kept rows, the
    candidates of anchor :math:`i` are the :math:`j \ne i` with :math:`t_{ij} \ge`
    ``min_distance``, and every unordered candidate pair :math:`\{j, k\}` with
    :math:`t_{ij} < t_{ik}` gives the term :math:`\max(0, d_{ij} - d_{ik} + \text{margin})`
    (see :func:`~hyperloss.losses.functional.rank_order_preservation_loss`).

    Parameters
    ----------
    tree_distances : Tensor or array-like, shape (N_nodes, N_nodes)
        Tree-distance matrix, e.g. ``Tree.distances()``; stored as a float64 buffer.
    code_to_idx : Mapping[str, int]
        Row of ``tree_distances`` for each name, e.g. ``Tree.index``.
    weight : float, default=0.1
        Non-negative factor applied to the reduced loss.
    min_distance : float, default=0.1
        Candidates of an anchor are the other rows at tree distance ``>= min_distance``.
    margin : float, default=0.1
        Non-negative hinge margin.
    reduction : {'violations', 'mean', 'sum', 'none'}, default='violations'
        ``'violations'``: ``weight`` * (sum of the terms) / (number of positive terms), 0 when
        none is positive; ``'mean'``: divided by the number of terms instead; ``'sum'``;
        ``'none'``: ``weight`` * the per-anchor sums, shape ``(N,)`` aligned with ``codes``
        (0 at dropped names).
    chunk_size : int, optional
        Anchors per block (of the distance matrix and of the loss's count tables); bounds
        the memory. Default: automatic.

    Shape
    -----
    - embeddings: ``(N, D + 1)``; codes: N names or a LongTensor ``(N,)`` of tree indices.
    - Output: scalar, or ``(N,)`` for ``reduction='none'``.

    Examples
    --------
    >>> import torch
    >>> from hyperloss.geometry import LorentzDistance, expmap0
    >>> from hyperloss.trees import Tree
    >>> tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a", "a2": "a", "b1": "b"})
    >>> loss_fn = RankOrderPreservationLoss.from_tree(tree, weight=1.0)
    >>> points = expmap0(torch.randn(len(tree), 2, dtype=torch.float64)).requires_grad_()
    >>> loss = loss_fn(points, tree.names, LorentzDistance())
    >>> loss.backward()
    >>> bool(loss >= 0), points.grad.shape
    (True, torch.Size([6, 3]))
    """

    tree_distances: Tensor

    def __init__(
        self,
        tree_distances: Tensor,
        code_to_idx: Mapping[str, int],
        weight: float = 0.1,
        min_distance: float = 0.1,
        margin: float = 0.1,
        reduction: str = "violations",
        *,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("tree_distances", _check_tree_distances(tree_distances))
        self.code_to_idx = _check_code_to_idx(code_to_idx, self.tree_distances.shape[0])
        self.weight = _check_nonnegative(weight, "weight")
        self.min_distance = _check_finite(min_distance, "min_distance")
        self.margin = _check_nonnegative(margin, "margin")
        if reduction not in ("violations", "mean", "sum", "none"):
            raise ValueError(
                f"reduction must be one of ('violations', 'mean', 'sum', 'none'), got {reduction!r}"
            )
        self.reduction = reduction
        self.chunk_size = _check_chunk_size(chunk_size)

    @classmethod
    def from_tree(cls, tree: Tree, **kwargs: Any) -> RankOrderPreservationLoss:
        """Build the loss from a :class:`~hyperloss.trees.Tree` (its distances and index).

        ``kwargs`` go to the constructor (``weight``, ``min_distance``, ``margin``, ...).
        """
        return cls(tree.distances(), tree.index, **kwargs)

    def forward(
        self, embeddings: Tensor, codes: Sequence[str] | Tensor, distance_fn: DistanceFn
    ) -> Tensor:
        """Loss of the embeddings of ``codes``.

        Parameters
        ----------
        embeddings : Tensor, shape (N, D + 1)
            Points, finite, floating point.
        codes : sequence of N names, or LongTensor (N,)
            Names (looked up in ``code_to_idx``; unknown names are dropped) or tree indices
            (must all be valid rows).
        distance_fn : callable
            ``distance_fn(x, y)`` with the ``geoopt.Manifold.dist`` broadcasting contract.

        Returns
        -------
        Tensor
            Scalar, or ``(N,)`` for ``reduction='none'``.
        """
        _check_points(embeddings, "embeddings")
        _check_callable(distance_fn)
        n = embeddings.shape[0]
        indices = _codes_to_indices(codes, self.code_to_idx, n, "codes", self.tree_distances)
        known = indices >= 0
        rows = known.nonzero().squeeze(1)
        kept = indices[rows]
        if kept.numel() < 3:
            zero = embeddings.sum() * 0.0  # keeps the graph, so backward() works
            if self.reduction == "none":
                return zero.expand(n).clone()
            return zero
        points = embeddings[rows]
        embedding_distances = _pairwise(distance_fn, points, self.chunk_size)
        kept = kept.to(self.tree_distances.device)
        tree_block = self.tree_distances[kept[:, None], kept[None, :]]
        loss = rank_order_preservation_loss(
            embedding_distances,
            tree_block,
            margin=self.margin,
            min_distance=self.min_distance,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )
        if self.reduction == "none":
            loss = loss.new_zeros(n).index_put((rows.to(loss.device),), loss)
        return self.weight * loss

    def extra_repr(self) -> str:
        return (
            f"n_nodes={self.tree_distances.shape[0]}, weight={self.weight}, "
            f"min_distance={self.min_distance}, margin={self.margin}, "
            f"reduction={self.reduction!r}"
        )


class LambdaRankLoss(nn.Module):
    r"""LambdaRank on per-anchor lists [positive, negative_1, ..., negative_K], for NDCG@k.

    Relevance of item :math:`j` for anchor :math:`a`:
    :math:`r_j = (t_{max} - t_j + 10^{-6}) / (t_{max} + 10^{-6})`, :math:`t` the tree distance
    from :math:`a` and :math:`t_{max}` the largest in the list; scores :math:`s = -d`. The loss of
    one list is :math:`\sum_{r_i > r_j} |\Delta\mathrm{NDCG@k}_{ij}| \log(1 +
    e^{-\sigma(s_i - s_j)})` with :math:`|\Delta\mathrm{NDCG@k}|` held constant; the result is
    the mean over valid anchors, times ``weight`` (see
    :func:`~hyperloss.losses.functional.lambda_rank_loss`, which documents ties, the cut-off
    and invalid anchors).

    Parameters
    ----------
    tree_distances : Tensor or array-like, shape (N_nodes, N_nodes)
        Tree-distance matrix, e.g. ``Tree.distances()``; stored as a float64 buffer.
    code_to_idx : Mapping[str, int]
        Row of ``tree_distances`` for each name, e.g. ``Tree.index``.
    weight : float, default=0.15
        Non-negative factor applied to the mean loss.
    sigma : float, default=1.0
        Positive steepness of the pairwise logistic loss.
    ndcg_k : int, default=10
        NDCG cut-off, ``>= 1``.

    Shape
    -----
    - anchor_emb, positive_emb: ``(B, D + 1)``; negative_embs: ``(B * K, D + 1)``, anchor
      ``b``'s negatives in rows ``b * K`` to ``b * K + K - 1``.
    - anchor_codes, positive_codes: B names or LongTensor ``(B,)``; negative_codes: B lists of
      K names, or LongTensor ``(B, K)`` (or ``(B * K,)``).
    - mask: optional bool ``(B, K)``, True at real (non-padded) negatives.
    - Output: scalar.

    Notes
    -----
    A negative whose name is unknown is masked; an anchor whose anchor or positive name is
    unknown is skipped (it is not counted in the mean). ``distance_fn`` is called once: as
    ``distance_fn(anchor_emb[:, None, :], items)`` with ``items`` ``(B, 1 + K, D + 1)`` when
    every item is valid, else on the valid (anchor, item) pairs only, stacked as two
    ``(M, D + 1)`` tensors. Masked negatives and skipped anchors never reach it, so padding
    rows may hold any finite values (even points off the manifold) and get a zero gradient.

    Examples
    --------
    >>> import torch
    >>> from hyperloss.geometry import LorentzDistance, expmap0
    >>> from hyperloss.trees import Tree
    >>> tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a", "a2": "a", "b1": "b"})
    >>> loss_fn = LambdaRankLoss.from_tree(tree, ndcg_k=3)
    >>> points = expmap0(torch.randn(len(tree), 2, dtype=torch.float64))
    >>> anchors, positives = ["a1", "b1"], ["a", "b"]
    >>> negatives = [["a2", "b", "b1"], ["a", "a1", "unknown"]]  # "unknown" is masked
    >>> rows = tree.indices(anchors + positives)
    >>> negative_rows = tree.indices(["a2", "b", "b1", "a", "a1", "a1"])
    >>> loss = loss_fn(points[rows[:2]], points[rows[2:]], points[negative_rows],
    ...                anchors, positives, negatives, LorentzDistance(), 2, 3)
    >>> bool(loss > 0)
    True

    References
    ----------
    C. J. C. Burges, "From RankNet to LambdaRank to LambdaMART: An Overview", Microsoft
    Research Technical Report MSR-TR-2010-82, 2010.
    """

    tree_distances: Tensor

    def __init__(
        self,
        tree_distances: Tensor,
        code_to_idx: Mapping[str, int],
        weight: float = 0.15,
        sigma: float = 1.0,
        ndcg_k: int = 10,
    ) -> None:
        super().__init__()
        self.register_buffer("tree_distances", _check_tree_distances(tree_distances))
        self.code_to_idx = _check_code_to_idx(code_to_idx, self.tree_distances.shape[0])
        self.weight = _check_nonnegative(weight, "weight")
        self.sigma = _check_finite(sigma, "sigma")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if isinstance(ndcg_k, bool) or not isinstance(ndcg_k, numbers.Integral):
            raise TypeError(f"ndcg_k must be an int, got {type(ndcg_k).__name__}")
        if ndcg_k < 1:
            raise ValueError(f"ndcg_k must be >= 1, got {ndcg_k}")
        self.ndcg_k = int(ndcg_k)

    @classmethod
    def from_tree(cls, tree: Tree, **kwargs: Any) -> LambdaRankLoss:
        """Build the loss from a :class:`~hyperloss.trees.Tree` (its distances and index).

        ``kwargs`` go to the constructor (``weight``, ``sigma``, ``ndcg_k``).
        """
        return cls(tree.distances(), tree.index, **kwargs)

    def forward(
        self,
        anchor_emb: Tensor,
        positive_emb: Tensor,
        negative_embs: Tensor,
        anchor_codes: Sequence[str] | Tensor,
        positive_codes: Sequence[str] | Tensor,
        negative_codes: Sequence[Sequence[str]] | Tensor,
        distance_fn: DistanceFn,
        batch_size: int,
        k_negatives: int,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Mean LambdaRank loss over the valid anchors of the batch, times ``weight``.

        See the class docstring for the shapes. Returns a scalar tensor.
        """
        batch_size = _check_count(batch_size, "batch_size")
        k_negatives = _check_count(k_negatives, "k_negatives")
        _check_point_tensor(anchor_emb, "anchor_emb")
        _check_point_tensor(positive_emb, "positive_emb")
        _check_point_tensor(negative_embs, "negative_embs")
        _check_all_finite(
            (anchor_emb, "anchor_emb"),
            (positive_emb, "positive_emb"),
            (negative_embs, "negative_embs"),
        )
        _check_callable(distance_fn)
        if anchor_emb.shape[0] != batch_size:
            raise ValueError(
                f"anchor_emb must have batch_size={batch_size} rows, got {anchor_emb.shape[0]}"
            )
        if positive_emb.shape != anchor_emb.shape:
            raise ValueError(
                f"positive_emb must have the shape of anchor_emb {tuple(anchor_emb.shape)}, "
                f"got {tuple(positive_emb.shape)}"
            )
        if negative_embs.shape != (batch_size * k_negatives, anchor_emb.shape[1]):
            raise ValueError(
                f"negative_embs must have shape (batch_size * k_negatives, D + 1) = "
                f"({batch_size * k_negatives}, {anchor_emb.shape[1]}) for batch_size="
                f"{batch_size}, k_negatives={k_negatives}, got {tuple(negative_embs.shape)}"
            )
        device = anchor_emb.device
        lists = self._list_indices(
            anchor_codes, positive_codes, negative_codes, batch_size, k_negatives
        )
        # rows: (B, 2 + K) tree rows [anchor, positive, negative_1, ...], -1 where unknown
        rows, all_known = lists
        anchor_index, item_index = rows[:, 0], rows[:, 1:]
        if all_known and mask is None:
            item_valid = None
        else:
            item_valid = (item_index >= 0) & (rows[:, :2] >= 0).all(dim=1, keepdim=True)
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
            if mask.shape != (batch_size, k_negatives):
                raise ValueError(
                    f"mask must have shape (batch_size, k_negatives) = ({batch_size}, "
                    f"{k_negatives}), got {tuple(mask.shape)}"
                )
            item_valid[:, 1:] &= mask.to(device="cpu", dtype=torch.bool)
        all_valid = item_valid is None or bool(item_valid.all())

        items = torch.cat(
            [positive_emb[:, None, :], negative_embs.reshape(batch_size, k_negatives, -1)], dim=1
        )
        if all_valid:
            embedding_distances = _call_broadcast(distance_fn, anchor_emb[:, None, :], items)
        else:
            # distance_fn sees only the valid (anchor, item) pairs, as two (M, D + 1) tensors:
            # padded or unknown entries never reach it, so they cannot produce NaN gradients.
            valid_pairs = item_valid.to(device).nonzero()
            if valid_pairs.shape[0] == 0:  # every anchor skipped: 0, still attached to the graph
                return (anchor_emb.sum() + positive_emb.sum() + negative_embs.sum()) * 0.0
            pair_rows, columns = valid_pairs[:, 0], valid_pairs[:, 1]
            pair_distances = _call_paired(
                distance_fn, anchor_emb[pair_rows], items[pair_rows, columns]
            )
            embedding_distances = pair_distances.new_zeros(item_valid.shape)
            embedding_distances = embedding_distances.index_put(
                (pair_rows, columns), pair_distances
            )

        # Tree distances of the lists: one gather from the flattened matrix.
        tree_distances = self.tree_distances
        n_nodes = tree_distances.shape[0]
        if all_known:
            flat = anchor_index[:, None] * n_nodes + item_index
        else:
            flat = anchor_index.clamp(min=0)[:, None] * n_nodes + item_index.clamp(min=0)
        tree_lists = tree_distances.reshape(-1).take(flat.to(tree_distances.device))
        tree_lists = tree_lists.to(device=device, dtype=torch.float64)
        if all_valid:
            _check_lists_finite(embedding_distances, tree_lists)
            valid = None
        else:
            valid = item_valid.to(device)
        return _lambda_rank(
            embedding_distances, tree_lists, self.sigma, self.ndcg_k, valid, "mean", self.weight
        )

    def _list_indices(
        self,
        anchor_codes: Any,
        positive_codes: Any,
        negative_codes: Any,
        batch_size: int,
        k_negatives: int,
    ) -> tuple[Tensor, bool]:
        """LongTensor (B, 2 + K) of tree rows [anchor, positive, negatives], -1 at unknown
        names, and whether every name is known."""
        if not any(isinstance(c, Tensor) for c in (anchor_codes, positive_codes, negative_codes)):
            fast = _fast_list_indices(
                self.code_to_idx, anchor_codes, positive_codes, negative_codes, k_negatives
            )
            if fast is not None:
                rows, all_known = fast
                if rows.numel() == batch_size * (k_negatives + 2):
                    return rows.view(batch_size, k_negatives + 2), all_known
        anchor_index = _codes_to_indices(
            anchor_codes, self.code_to_idx, batch_size, "anchor_codes", self.tree_distances
        )
        positive_index = _codes_to_indices(
            positive_codes, self.code_to_idx, batch_size, "positive_codes", self.tree_distances
        )
        negative_index = _negative_indices(
            negative_codes, self.code_to_idx, batch_size, k_negatives, self.tree_distances
        )
        rows = torch.cat([anchor_index[:, None], positive_index[:, None], negative_index], dim=1)
        return rows, bool((rows >= 0).all())

    def extra_repr(self) -> str:
        return (
            f"n_nodes={self.tree_distances.shape[0]}, weight={self.weight}, "
            f"sigma={self.sigma}, ndcg_k={self.ndcg_k}"
        )


# --------------------------------------------------------------------------------------------
# helpers


def _pairwise(distance_fn: DistanceFn, points: Tensor, chunk_size: int | None) -> Tensor:
    """(N, N) embedding distances; a callable that fails on broadcast shapes -> ValueError."""
    kwargs = {} if chunk_size is None else {"chunk_size": chunk_size}
    try:
        distances = pairwise_distances(distance_fn, points, **kwargs)
    except (RuntimeError, IndexError) as error:
        raise ValueError(f"{_BROADCAST_CONTRACT}; calling it failed: {error}") from error
    if distances.shape != (points.shape[0], points.shape[0]):
        raise ValueError(f"{_BROADCAST_CONTRACT}; got shape {tuple(distances.shape)}")
    return distances


def _call_paired(distance_fn: DistanceFn, x: Tensor, y: Tensor) -> Tensor:
    """distance_fn(x (M, D+1), y (M, D+1)) -> (M,), checked."""
    return _call_checked(distance_fn, x, y, (x.shape[0],), _PAIRED_CONTRACT)


def _call_broadcast(distance_fn: DistanceFn, x: Tensor, y: Tensor) -> Tensor:
    """distance_fn(x (B, 1, D+1), y (B, M, D+1)) -> (B, M), checked."""
    return _call_checked(distance_fn, x, y, (y.shape[0], y.shape[1]), _BROADCAST_CONTRACT)


def _call_checked(
    distance_fn: DistanceFn, x: Tensor, y: Tensor, expected: tuple[int, ...], contract: str
) -> Tensor:
    try:
        distances = distance_fn(x, y)
    except (RuntimeError, IndexError) as error:
        raise ValueError(f"{contract}; calling it failed: {error}") from error
    if not isinstance(distances, Tensor) or distances.shape != expected:
        got = tuple(distances.shape) if isinstance(distances, Tensor) else type(distances).__name__
        raise ValueError(f"{contract}; expected shape {expected}, got {got}")
    return distances


def _check_tree_distances(tree_distances: Any) -> Tensor:
    if not isinstance(tree_distances, Tensor):
        try:
            tree_distances = torch.as_tensor(tree_distances)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"tree_distances must be a tensor or array-like, got {type(tree_distances)}"
            ) from error
    if tree_distances.dim() != 2 or tree_distances.shape[0] != tree_distances.shape[1]:
        raise ValueError(
            f"tree_distances must be a square (N, N) matrix, got shape "
            f"{tuple(tree_distances.shape)}"
        )
    tree_distances = tree_distances.detach().to(torch.float64)
    if not bool(torch.isfinite(tree_distances).all()):
        raise ValueError("tree_distances contains NaN or inf")
    return tree_distances


def _check_code_to_idx(code_to_idx: Any, n_nodes: int) -> dict[str, int]:
    if not isinstance(code_to_idx, Mapping):
        raise TypeError(f"code_to_idx must be a mapping name -> index, got {type(code_to_idx)}")
    checked: dict[str, int] = {}
    for name, index in code_to_idx.items():
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"code_to_idx values must be ints, got {index!r} for {name!r}")
        if not 0 <= index < n_nodes:
            raise ValueError(
                f"code_to_idx[{name!r}] = {index} is not a row of tree_distances (0..{n_nodes - 1})"
            )
        checked[name] = int(index)
    return checked


def _codes_to_indices(
    codes: Any, code_to_idx: Mapping[str, int], length: int, name: str, tree_distances: Tensor
) -> Tensor:
    """LongTensor (length,) of tree rows, -1 at unknown names; validates index tensors."""
    if isinstance(codes, Tensor):
        if codes.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"{name} must be names or an integer tensor, got dtype {codes.dtype}")
        if codes.dim() != 1 or codes.shape[0] != length:
            raise ValueError(f"{name} must have shape ({length},), got {tuple(codes.shape)}")
        indices = codes.detach().to(device="cpu", dtype=torch.int64)
        n_nodes = tree_distances.shape[0]
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_nodes):
            raise ValueError(f"{name} holds indices outside 0..{n_nodes - 1}")
        return indices
    if isinstance(codes, str) or not isinstance(codes, Sequence):
        raise TypeError(f"{name} must be a sequence of names or a LongTensor, got {type(codes)}")
    if len(codes) != length:
        raise ValueError(f"{name} must have {length} entries (one per embedding), got {len(codes)}")
    return torch.tensor(_lookup(codes, code_to_idx), dtype=torch.int64)


def _lookup(codes: Sequence[Any], code_to_idx: Mapping[str, int]) -> list[int]:
    """Tree rows of names (non-str names are coerced with str()), -1 where unknown."""
    get = code_to_idx.get
    return [get(code, -1) if type(code) is str else get(str(code), -1) for code in codes]


def _negative_indices(
    negative_codes: Any,
    code_to_idx: Mapping[str, int],
    batch_size: int,
    k_negatives: int,
    tree_distances: Tensor,
) -> Tensor:
    """LongTensor (B, K) of tree rows, -1 at unknown names."""
    if isinstance(negative_codes, Tensor):
        if negative_codes.shape not in ((batch_size, k_negatives), (batch_size * k_negatives,)):
            raise ValueError(
                f"negative_codes must have shape (batch_size, k_negatives) = ({batch_size}, "
                f"{k_negatives}) or ({batch_size * k_negatives},), got "
                f"{tuple(negative_codes.shape)}"
            )
        flat = _codes_to_indices(
            negative_codes.reshape(-1),
            code_to_idx,
            batch_size * k_negatives,
            "negative_codes",
            tree_distances,
        )
        return flat.view(batch_size, k_negatives)
    if isinstance(negative_codes, str) or not isinstance(negative_codes, Sequence):
        raise TypeError(
            f"negative_codes must be B lists of K names or a LongTensor, got {type(negative_codes)}"
        )
    if len(negative_codes) != batch_size:
        raise ValueError(
            f"negative_codes must hold batch_size={batch_size} lists, got {len(negative_codes)}"
        )
    flat: list[Any] = []
    for row in negative_codes:
        if isinstance(row, str) or not isinstance(row, Sequence) or len(row) != k_negatives:
            raise ValueError(
                f"negative_codes must hold lists of k_negatives={k_negatives} names, got {row!r}"
            )
        flat.extend(row)
    indices = torch.tensor(_lookup(flat, code_to_idx), dtype=torch.int64)
    return indices.view(batch_size, k_negatives)


def _fast_list_indices(
    code_to_idx: dict[str, int],
    anchor_codes: Any,
    positive_codes: Any,
    negative_codes: Any,
    k_negatives: int,
) -> tuple[Tensor, bool] | None:
    """Tree rows of B lists of names in one lookup, or None (then the checked path decides).

    Only for plain lists/tuples of ``str`` names whose rows all have ``k_negatives`` entries
    and the same count; anything else (tensors, other sequences, odd lengths, non-str names)
    returns None. Returns a LongTensor (B * (2 + K),) laid out per anchor as [anchor, positive,
    negative_1, ..., negative_K] and whether every name was found.
    """
    sequences = (list, tuple)
    if not (
        type(anchor_codes) in sequences
        and type(positive_codes) in sequences
        and type(negative_codes) in sequences
    ):
        return None
    batch = len(anchor_codes)
    if len(positive_codes) != batch or len(negative_codes) != batch or batch == 0:
        return None
    names: list[Any] = []
    extend = names.extend
    for anchor, positive, row in zip(anchor_codes, positive_codes, negative_codes, strict=True):
        if type(row) not in sequences or len(row) != k_negatives:
            return None
        names.append(anchor)
        names.append(positive)
        extend(row)
    try:
        found = list(map(code_to_idx.get, names))
    except TypeError:  # an unhashable name: the exact lookup below
        return None
    if None in found:  # unknown (or non-str) names: the exact lookup below
        if set(map(type, names)) != {str}:
            return None
        found = [-1 if index is None else index for index in found]
        all_known = False
    else:
        # A name found in a dict of str keys is equal to a str; str() of a non-str name could
        # still differ from it, so only plain str names take this path.
        if set(map(type, names)) != {str}:
            return None
        all_known = True
    return torch.frombuffer(array.array("q", found), dtype=torch.int64), all_known


def _check_point_tensor(points: Any, name: str) -> None:
    """Type, rank and dtype of a (N, D + 1) point tensor (finiteness: _check_all_finite)."""
    if not isinstance(points, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D + 1), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {points.dtype}")


def _check_all_finite(*named: tuple[Tensor, str]) -> None:
    """ValueError naming the first tensor with NaN or inf; one sum per tensor when all are
    finite (a sum is finite only if every entry is; an overflowing sum gets the exact test)."""
    total = sum(float(points.detach().sum()) for points, _ in named)
    if math.isfinite(total):
        return
    for points, name in named:
        if not bool(torch.isfinite(points).all()):
            raise ValueError(f"{name} contains NaN or inf")


def _check_points(points: Any, name: str) -> None:
    if not isinstance(points, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D + 1), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {points.dtype}")
    if not bool(torch.isfinite(points).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _check_callable(distance_fn: Any) -> None:
    if not callable(distance_fn):
        raise TypeError(f"distance_fn must be callable, got {type(distance_fn).__name__}")


def _check_finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_nonnegative(value: Any, name: str) -> float:
    value = _check_finite(value, name)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    return _check_count(chunk_size, "chunk_size")
