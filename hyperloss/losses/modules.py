"""``nn.Module`` wrappers of the ranking losses: a tree, points and index tensors in, a loss out.

Index first. Each module is built from a :class:`~hyperloss.trees.Tree` and takes
``points`` indexed by **tree index** plus integer index tensors; it gathers the rows it
needs, computes their embedding distances with one call of the distance callable per block
or batch of lists, takes the tree distances of exactly those index pairs from the tree
(``tree.distance(u, v)``, by lowest common ancestors: nothing N x N), and calls the functional
form in :mod:`hyperloss.losses.functional`. Memory is O(batch^2) whatever the size of the tree.

``points``
    An ``(N, D + 1)`` tensor with one row per tree node, or any object whose
    ``__getitem__(index)``, for a LongTensor ``index`` of shape ``(M,)``, returns the points of
    those nodes as a floating-point tensor ``(M, D + 1)``: a lazy row table, or an encoder
    wrapper that runs the encoder on the requested nodes' features. The modules call it once
    per forward, with the distinct indices they need.

``distance_fn``
    Anything with the broadcasting contract of ``geoopt.Manifold.dist``: ``distance_fn(x, y)``
    takes two point tensors of shapes that broadcast over the leading dimensions,
    ``(..., D + 1)``, and returns the distances with the broadcast shape ``(...)``; for
    example ``geoopt.Lorentz().dist``, ``geoopt.PoincareBall().dist``,
    :class:`hyperloss.geometry.LorentzDistance` or ``lambda x, y: (x - y).norm(dim=-1)``.

Names become indices at the edge (``tree.indices(names)``; an unknown name raises
:class:`~hyperloss.trees.UnknownNodeError`, a ``KeyError`` and ``ValueError`` naming it). The
original signatures keep working as thin adapters over the index path: a dense matrix plus a
name map (``LossModule(tree_distances, code_to_idx, ...)``, see
:class:`~hyperloss.losses.sources.TreeDistanceMatrix`) instead of a tree, and forward calls
with lists of names and embeddings aligned with them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hyperloss.geometry import pairwise_distances
from hyperloss.losses._validation import check_mask
from hyperloss.losses.functional import (
    _check_lists_finite,
    _lambda_rank,
    _rank_order_lists,
    global_rank_loss,
    rank_order_preservation_loss,
)
from hyperloss.losses.sources import as_tree_source
from hyperloss.validation import (
    check_callable,
    check_chunk_size,
    check_index,
    check_int,
    check_nonnegative,
    check_point_matrix,
    check_positive,
    check_real,
)

__all__ = [
    "GlobalRankLoss",
    "LambdaRankLoss",
    "RankOrderListLoss",
    "RankOrderPreservationLoss",
]

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
_SEED_LIST_ARGUMENTS = frozenset(
    {
        "anchor_emb",
        "positive_emb",
        "negative_embs",
        "anchor_codes",
        "positive_codes",
        "negative_codes",
        "batch_size",
        "k_negatives",
    }
)


class _TreeLoss(nn.Module):
    """Shared by the three modules: the tree-distance source and the edge checks."""

    def __init__(self, tree: Any, args: tuple, kwargs: dict, options: Callable) -> None:
        super().__init__()
        # The original signature passes code_to_idx second: (tree_distances, code_to_idx, ...).
        kwargs = dict(kwargs)
        code_to_idx = kwargs.pop("code_to_idx", None)
        if code_to_idx is None and args and isinstance(args[0], Mapping):
            code_to_idx, args = args[0], args[1:]
        self.tree = as_tree_source(tree, code_to_idx)
        try:
            bound = inspect.signature(options).bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{type(self).__name__}(): {error}") from None
        bound.apply_defaults()
        options(*bound.args, **bound.kwargs)

    @classmethod
    def from_tree(cls, tree: Any, **kwargs: Any) -> Any:
        """``cls(tree, **kwargs)``: kept from the original API, where the module needed the
        tree's dense distance matrix."""
        return cls(tree, **kwargs)

    @property
    def n_nodes(self) -> int:
        return len(self.tree)

    # ------------------------------------------------------------------ the edge
    def _check_table(self, points: Any) -> None:
        """A tensor ``points`` must have one row per tree node (a duck type is trusted)."""
        if isinstance(points, Tensor) and (points.dim() != 2 or points.shape[0] != self.n_nodes):
            raise ValueError(
                f"points must hold one row per tree node, shape ({self.n_nodes}, D + 1), got "
                f"{tuple(points.shape)}; with embeddings aligned with a list of nodes, pass the "
                "names instead of an index tensor (the name form)"
            )

    def _rows(self, points: Any, index: Tensor, name: str) -> Tensor:
        """``points[index]`` checked: (M, D + 1) floating point, finite."""
        device = points.device if isinstance(points, Tensor) else torch.device("cpu")
        rows = points[index.to(device)]
        check_point_matrix(rows, name, rows=index.shape[0])
        return rows

    def _names(self, names: Any, length: int | None, name: str) -> Tensor:
        """Indices (CPU LongTensor) of a sequence of names, or of an index tensor."""
        if isinstance(names, Tensor):
            return check_index(names, name, self.n_nodes, shape=(length,))
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise TypeError(
                f"{name} must be a sequence of names or an integer tensor of tree indices, "
                f"got {type(names).__name__}"
            )
        if length is not None and len(names) != length:
            raise ValueError(f"{name} must have {length} entries, got {len(names)}")
        return self.tree.indices(names)

    def _block(self, points: Any, nodes: Any) -> tuple[Tensor, Tensor]:
        """(points of the block (n, D + 1), their tree indices (n,) on the CPU)."""
        if isinstance(nodes, Tensor):
            index = check_index(nodes, "nodes", self.n_nodes, shape=(None,))
            self._check_table(points)
            return self._rows(points, index, "points[nodes]"), index
        # The name form: embeddings aligned with the names.
        if not isinstance(points, Tensor) or points.dim() != 2:
            got = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
            raise ValueError(
                f"points (the embeddings of the names) must be a tensor of shape (n, D + 1), "
                f"got {got}"
            )
        index = self._names(nodes, points.shape[0], "nodes")
        check_point_matrix(points, "points (the embeddings of the names)", rows=index.shape[0])
        return points, index

    def _block_distances(
        self, block: Tensor, index: Tensor, distance_fn: Any, chunk_size: int | None
    ) -> tuple[Tensor, Tensor]:
        """Embedding (n, n) and tree (n, n, float64) distances of a block."""
        check_callable(distance_fn, "distance_fn")
        embedding_distances = _pairwise(distance_fn, block, chunk_size)
        tree_distances = self.tree.distance(index[:, None], index[None, :])
        return embedding_distances, tree_distances.to(embedding_distances.device, torch.float64)


class RankOrderPreservationLoss(_TreeLoss):
    r"""Penalise triples whose embedding distances contradict the tree's order of distances.

    "If node A is closer to B than to C in the tree, the embedding distance A-B should be
    smaller than A-C." On a block of ``n`` nodes with :math:`d` the embedding and :math:`t`
    the tree distances among them, the candidates of anchor :math:`i` are the :math:`j \ne i`
    with :math:`t_{ij} \ge` ``min_distance``, and every unordered candidate pair
    :math:`\{j, k\}` with :math:`t_{ij} < t_{ik}` gives the term
    :math:`\max(0, d_{ij} - d_{ik} + \text{margin})` (see
    :func:`~hyperloss.losses.functional.rank_order_preservation_loss`). The result is
    ``weight`` times the reduced loss.

    Parameters
    ----------
    tree : Tree
        The tree (any tree-distance source: ``len``, ``distance(u, v)``, ``indices(names)``;
        see :mod:`hyperloss.losses.sources`). The original form
        ``RankOrderPreservationLoss(tree_distances, code_to_idx, ...)`` with a dense
        ``(N, N)`` matrix and a name map also works (a
        :class:`~hyperloss.losses.sources.TreeDistanceMatrix`).
    weight : float, default=0.1
        Non-negative factor applied to the reduced loss.
    min_distance : float, default=0.1
        Candidates of an anchor are the other nodes at tree distance ``>= min_distance``.
    margin : float, default=0.1
        Non-negative hinge margin.
    reduction : {'violations', 'mean', 'sum', 'none'}, default='violations'
        ``'violations'``: sum of the terms / number of positive terms (0 when none is
        positive); ``'mean'``: divided by the number of terms instead; ``'sum'``; ``'none'``:
        the per-anchor sums, shape ``(n,)``.
    chunk_size : int, optional
        Anchors per block (of the distance matrix and of the loss's count tables); bounds
        the memory. Default: automatic.

    Shape
    -----
    ``forward(points, nodes, distance_fn)``:

    - points: ``(N, D + 1)`` indexed by tree index, or an object whose ``points[index]``
      returns ``(n, D + 1)`` (see :mod:`hyperloss.losses.modules`);
    - nodes: LongTensor ``(n,)`` of tree indices in ``[0, N)``;
    - output: scalar, or ``(n,)`` for ``reduction='none'``.

    The name form ``forward(embeddings, names, distance_fn)`` takes embeddings ``(n, D + 1)``
    aligned with a list of ``n`` names (the original signature).

    Raises
    ------
    UnknownNodeError
        A name not in the tree (``KeyError`` and ``ValueError``).
    TypeError, ValueError
        Bad options, index tensors (dtype, shape, range), points (shape, dtype, NaN or inf) or
        a ``distance_fn`` that does not follow the broadcasting contract.

    Examples
    --------
    >>> import torch
    >>> from hyperloss.geometry import LorentzDistance, expmap0
    >>> from hyperloss.trees import Tree
    >>> tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a", "a2": "a", "b1": "b"})
    >>> loss_fn = RankOrderPreservationLoss(tree, weight=1.0)
    >>> points = expmap0(torch.randn(len(tree), 2, dtype=torch.float64)).requires_grad_()
    >>> loss = loss_fn(points, torch.tensor([0, 2, 3, 4, 5]), LorentzDistance())
    >>> loss.backward()
    >>> bool(loss >= 0), points.grad.shape
    (True, torch.Size([6, 3]))
    """

    def __init__(self, tree: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tree, args, kwargs, self._configure)

    def _configure(
        self,
        weight: float = 0.1,
        min_distance: float = 0.1,
        margin: float = 0.1,
        reduction: str = "violations",
        *,
        chunk_size: int | None = None,
    ) -> None:
        self.weight = check_nonnegative(weight, "weight")
        self.min_distance = check_real(min_distance, "min_distance")
        self.margin = check_nonnegative(margin, "margin")
        reductions = ("violations", "mean", "sum", "none")
        if reduction not in reductions:
            raise ValueError(f"reduction must be one of {reductions}, got {reduction!r}")
        self.reduction = reduction
        self.chunk_size = check_chunk_size(chunk_size)

    def forward(
        self, points: Any, nodes: Tensor | Sequence[str], distance_fn: DistanceFn
    ) -> Tensor:
        """``weight`` times the loss of the block ``nodes`` (see the class docstring)."""
        block, index = self._block(points, nodes)
        n = index.shape[0]
        if n < 3:  # no triple: 0, still attached to the graph so backward() works
            zero = block.sum() * 0.0
            return zero.expand(n).clone() if self.reduction == "none" else zero
        embedding_distances, tree_distances = self._block_distances(
            block, index, distance_fn, self.chunk_size
        )
        loss = rank_order_preservation_loss(
            embedding_distances,
            tree_distances,
            margin=self.margin,
            min_distance=self.min_distance,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )
        return self.weight * loss

    def extra_repr(self) -> str:
        return (
            f"n_nodes={self.n_nodes}, weight={self.weight}, min_distance={self.min_distance}, "
            f"margin={self.margin}, reduction={self.reduction!r}"
        )


class GlobalRankLoss(_TreeLoss):
    r"""Rank order over *all* pairs of a block: the term that drives global Spearman up.

    :class:`RankOrderPreservationLoss` compares two distances from the same anchor; Spearman
    correlation compares every pair with every other pair. This loss does the latter on a
    block of ``n`` nodes: over its ``P = n (n - 1) / 2`` pairs, with :math:`d` the embedding
    and :math:`t` the tree distances and :math:`\rho = \bar d / \bar t` the current scale
    (held constant),

    .. math::
        L = \text{weight} \cdot \frac{1}{|\{(a, b): t_a < t_b\}|}
            \sum_{(a, b):\, t_a < t_b} \max(0,\ d_a - d_b + \rho\,\text{margin})

    (:func:`~hyperloss.losses.functional.global_rank_loss`). The margin follows the scale, so
    the term neither grows nor shrinks the embedding, and its gradient is of order one at any
    scale.

    Parameters
    ----------
    tree : Tree
        The tree (any tree-distance source). The original form ``GlobalRankLoss(tree_distances)``
        with a dense ``(N, N)`` matrix also works (index tensors only, unless
        ``code_to_idx`` is given).
    weight : float, default=10.0
        Non-negative factor applied to the reduced loss.
    margin : float, default=0.1
        Non-negative margin, in tree-distance units.
    reduction : {'mean', 'sum'}, default='mean'
        As in :func:`~hyperloss.losses.functional.global_rank_loss`.

    Shape
    -----
    ``forward(points, nodes, distance_fn)`` as :class:`RankOrderPreservationLoss`
    (``points`` indexed by tree index, ``nodes`` a LongTensor ``(n,)``; or embeddings aligned
    with a list of names); output: scalar.

    Examples
    --------
    >>> import torch
    >>> from hyperloss.geometry import LorentzDistance, expmap0
    >>> from hyperloss.trees import Tree
    >>> tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a", "a2": "a", "b1": "b"})
    >>> points = expmap0(torch.randn(len(tree), 2, dtype=torch.float64))
    >>> loss = GlobalRankLoss(tree, weight=1.0)(points, torch.arange(6), LorentzDistance())
    >>> bool(loss >= 0)
    True
    """

    def __init__(self, tree: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tree, args, kwargs, self._configure)

    def _configure(
        self, weight: float = 10.0, margin: float = 0.1, reduction: str = "mean"
    ) -> None:
        self.weight = check_nonnegative(weight, "weight")
        self.margin = check_nonnegative(margin, "margin")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be one of ('mean', 'sum'), got {reduction!r}")
        self.reduction = reduction

    def forward(
        self, points: Any, nodes: Tensor | Sequence[str], distance_fn: DistanceFn
    ) -> Tensor:
        """``weight`` times the loss of the block ``nodes`` (see the class docstring)."""
        block, index = self._block(points, nodes)
        if index.shape[0] < 3:  # fewer than two pairs: 0, still attached to the graph
            return block.sum() * 0.0
        embedding_distances, tree_distances = self._block_distances(block, index, distance_fn, None)
        loss = global_rank_loss(
            embedding_distances, tree_distances, margin=self.margin, reduction=self.reduction
        )
        return self.weight * loss

    def extra_repr(self) -> str:
        return (
            f"n_nodes={self.n_nodes}, weight={self.weight}, margin={self.margin}, "
            f"reduction={self.reduction!r}"
        )


class _ListLoss(_TreeLoss):
    """Shared by the list losses: gather the points of (anchor, items) lists, their embedding
    and tree distances, then ``_list_objective(embedding (B, L), tree (B, L), valid)``."""

    def _forward_lists(
        self,
        points: Any,
        anchors: Tensor,
        items: Tensor,
        distance_fn: DistanceFn,
        mask: Tensor | None = None,
    ) -> Tensor:
        anchor_index = check_index(anchors, "anchors", self.n_nodes, shape=(None,))
        batch = anchor_index.shape[0]
        if mask is not None:
            if not isinstance(items, Tensor) or items.dim() != 2:
                check_index(items, "items", self.n_nodes, shape=(batch, None))  # raises
            check_mask(mask, tuple(items.shape), "mask")
            mask = mask.cpu()
        item_index = check_index(items, "items", self.n_nodes, shape=(batch, None), valid=mask)
        check_callable(distance_fn, "distance_fn")
        self._check_table(points)
        if mask is not None:  # padding is never read: stand the anchor in for it
            item_index = torch.where(mask, item_index, anchor_index[:, None])
        # One read of the points: the distinct nodes of the batch.
        needed, inverse = torch.unique(
            torch.cat([anchor_index, item_index.reshape(-1)]), return_inverse=True
        )
        rows = self._rows(points, needed, "points[anchors | items]")
        anchor_points = rows[inverse[:batch].to(rows.device)]
        item_points = rows[inverse[batch:].to(rows.device)].view(batch, item_index.shape[1], -1)
        return self._lists_loss(
            anchor_points, item_points, anchor_index, item_index, distance_fn, mask
        )

    def _lists_loss(
        self,
        anchor_points: Tensor,
        item_points: Tensor,
        anchor_index: Tensor,
        item_index: Tensor,
        distance_fn: DistanceFn,
        valid: Tensor | None,
    ) -> Tensor:
        """The loss of lists whose points and (valid, CPU) indices are known."""
        device = anchor_points.device
        if valid is not None and bool(valid.all()):
            valid = None
        if valid is None:
            embedding_distances = _call_broadcast(
                distance_fn, anchor_points[:, None, :], item_points
            )
        else:
            valid = valid.to(device)
            valid_pairs = valid.nonzero()
            if valid_pairs.shape[0] == 0:  # nothing valid: 0, still attached to the graph
                zero = (anchor_points.sum() + item_points.sum()) * 0.0
                return (
                    zero.expand(anchor_points.shape[0]).clone()
                    if self.reduction == "none"
                    else zero
                )
            # distance_fn sees only the valid (anchor, item) pairs, as two (M, D + 1) tensors:
            # padding never reaches it, so it cannot produce NaN gradients.
            pair_rows, columns = valid_pairs[:, 0], valid_pairs[:, 1]
            pair_distances = _call_paired(
                distance_fn, anchor_points[pair_rows], item_points[pair_rows, columns]
            )
            embedding_distances = pair_distances.new_zeros(valid.shape)
            embedding_distances = embedding_distances.index_put(
                (pair_rows, columns), pair_distances
            )
        tree_lists = self.tree.distance(anchor_index[:, None], item_index)
        tree_lists = tree_lists.to(device=device, dtype=torch.float64)
        if valid is None:
            _check_lists_finite(embedding_distances, tree_lists)
        return self._list_objective(embedding_distances, tree_lists, valid)

    def _list_objective(
        self, embedding_distances: Tensor, tree_lists: Tensor, valid: Tensor | None
    ) -> Tensor:
        raise NotImplementedError


class LambdaRankLoss(_ListLoss):
    r"""LambdaRank on per-anchor lists of items (e.g. [positive, negatives...]), for NDCG@k.

    The relevance of item :math:`j` for anchor :math:`a` is, by default, the graded relevance
    :func:`hyperloss.relevance.tree_relevance` of the NDCG metric,
    :math:`r_j = (t_{max} - t_j + 10^{-6}) / (t_{max} + 10^{-6})` with :math:`t` the tree
    distance from :math:`a` and :math:`t_{max}` the largest in the list (1 at tree distance 0,
    about 0 at :math:`t_{max}`); the scores are :math:`s = -d`. The loss of one list is
    :math:`\sum_{r_i > r_j} |\Delta\mathrm{NDCG@k}_{ij}| \log(1 + e^{-\sigma(s_i - s_j)})`
    with :math:`|\Delta\mathrm{NDCG@k}|` held constant, reduced over the anchors and times
    ``weight`` (see :func:`~hyperloss.losses.functional.lambda_rank_loss`, which documents
    ties, the cut-off and invalid anchors).

    Parameters
    ----------
    tree : Tree
        The tree (any tree-distance source). The original form
        ``LambdaRankLoss(tree_distances, code_to_idx, ...)`` with a dense ``(N, N)`` matrix
        and a name map also works.
    weight : float, default=0.15
        Non-negative factor applied to the reduced loss.
    sigma : float, default=1.0
        Positive steepness of the pairwise logistic loss.
    ndcg_k : int, default=10
        NDCG cut-off, ``>= 1``.
    reduction : {'mean', 'sum', 'none'}, default='mean'
        ``'mean'`` over the anchors with a valid item; ``'sum'``; ``'none'``: per anchor,
        shape ``(B,)``.
    relevance : callable, optional
        ``relevance(tree_distances (B, L), mask=None or bool (B, L)) -> (B, L)``, the grades
        (default :func:`hyperloss.relevance.tree_relevance`); see
        :func:`~hyperloss.losses.functional.lambda_rank_loss`.

    Shape
    -----
    ``forward(points, anchors, items, distance_fn, mask=None)``:

    - points: ``(N, D + 1)`` indexed by tree index, or an object whose ``points[index]``
      returns ``(M, D + 1)`` (see :mod:`hyperloss.losses.modules`);
    - anchors: LongTensor ``(B,)`` of tree indices; items: LongTensor ``(B, L)``, anchor
      ``b``'s list in row ``b`` (e.g. ``ListBatch.items``: [positive, negatives...]);
    - mask: optional bool ``(B, L)``, True at the real items; where it is False the entry
      of ``items`` is not read (padding may hold any integer, e.g. -1);
    - output: scalar, or ``(B,)`` for ``reduction='none'``.

    The original form ``forward(anchor_emb (B, D + 1), positive_emb (B, D + 1),
    negative_embs (B * K, D + 1), anchor_codes, positive_codes, negative_codes, distance_fn,
    batch_size, k_negatives, mask=None)`` takes embeddings aligned with the lists, names (or
    index tensors: ``(B,)``, ``(B,)``, ``(B, K)`` or ``(B * K,)``) and a ``(B, K)`` mask over
    the negatives; it converts them and runs the index path. An unknown name is an error.

    Notes
    -----
    ``distance_fn`` is called once: as ``distance_fn(anchors[:, None, :], items)`` on
    ``(B, 1, D + 1)`` and ``(B, L, D + 1)`` points when every item is valid, else on the
    valid (anchor, item) pairs only, stacked as two ``(M, D + 1)`` tensors, so padding never
    reaches it and gets a zero gradient.

    Examples
    --------
    >>> import torch
    >>> from hyperloss.geometry import LorentzDistance, expmap0
    >>> from hyperloss.trees import Tree
    >>> tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a", "a2": "a", "b1": "b"})
    >>> loss_fn = LambdaRankLoss(tree, ndcg_k=3)
    >>> points = expmap0(torch.randn(len(tree), 2, dtype=torch.float64))
    >>> anchors = tree.indices(["a1", "b1"])
    >>> items = torch.stack([tree.indices(["a", "a2", "b", "b1"]),
    ...                      tree.indices(["b", "a", "a1", "a1"])])
    >>> mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    >>> loss = loss_fn(points, anchors, items, LorentzDistance(), mask=mask)
    >>> bool(loss > 0)
    True

    References
    ----------
    C. J. C. Burges, "From RankNet to LambdaRank to LambdaMART: An Overview", Microsoft
    Research Technical Report MSR-TR-2010-82, 2010.
    """

    def __init__(self, tree: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tree, args, kwargs, self._configure)

    def _configure(
        self,
        weight: float = 0.15,
        sigma: float = 1.0,
        ndcg_k: int = 10,
        reduction: str = "mean",
        *,
        relevance: Callable[..., Tensor] | None = None,
    ) -> None:
        self.weight = check_nonnegative(weight, "weight")
        self.sigma = check_positive(sigma, "sigma")
        self.ndcg_k = check_int(ndcg_k, "ndcg_k", minimum=1)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be one of ('mean', 'sum', 'none'), got {reduction!r}")
        self.reduction = reduction
        if relevance is not None and not callable(relevance):
            raise TypeError(f"relevance must be callable or None, got {type(relevance).__name__}")
        self.relevance = relevance

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """``forward(points, anchors, items, distance_fn, mask=None)``, or the original form
        (see the class docstring)."""
        if len(args) + len(kwargs) > 5 or _SEED_LIST_ARGUMENTS & set(kwargs):
            return self._forward_named(*args, **kwargs)
        return self._forward_lists(*args, **kwargs)

    def _forward_named(
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
        """The original signature: embeddings aligned with lists of names -> the index path."""
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        k_negatives = check_int(k_negatives, "k_negatives", minimum=1)
        check_point_matrix(anchor_emb, "anchor_emb", rows=batch_size)
        width = anchor_emb.shape[1]
        if not isinstance(positive_emb, Tensor) or positive_emb.shape != anchor_emb.shape:
            got = tuple(positive_emb.shape) if isinstance(positive_emb, Tensor) else positive_emb
            raise ValueError(
                f"positive_emb must have the shape of anchor_emb {tuple(anchor_emb.shape)}, "
                f"got {got}"
            )
        check_point_matrix(positive_emb, "positive_emb", rows=batch_size)
        check_point_matrix(negative_embs, "negative_embs", rows=batch_size * k_negatives)
        if negative_embs.shape[1] != width:
            raise ValueError(
                f"negative_embs must have shape (batch_size * k_negatives, D + 1) = "
                f"({batch_size * k_negatives}, {width}), got {tuple(negative_embs.shape)}"
            )
        check_callable(distance_fn, "distance_fn")
        anchor_index = self._names(anchor_codes, batch_size, "anchor_codes")
        positive_index = self._names(positive_codes, batch_size, "positive_codes")
        negative_index = self._negative_names(negative_codes, batch_size, k_negatives)
        item_index = torch.cat([positive_index[:, None], negative_index], dim=1)
        valid = None
        if mask is not None:
            check_mask(mask, (batch_size, k_negatives), "mask")
            valid = torch.cat([torch.ones(batch_size, 1, dtype=torch.bool), mask.cpu()], dim=1)
        item_points = torch.cat(
            [positive_emb[:, None, :], negative_embs.reshape(batch_size, k_negatives, -1)], dim=1
        )
        return self._lists_loss(
            anchor_emb, item_points, anchor_index, item_index, distance_fn, valid
        )

    def _negative_names(self, negative_codes: Any, batch_size: int, k_negatives: int) -> Tensor:
        """Indices (B, K) of the negatives: B lists of K names, or (B, K) / (B * K,) indices."""
        if isinstance(negative_codes, Tensor):
            if negative_codes.shape not in ((batch_size, k_negatives), (batch_size * k_negatives,)):
                raise ValueError(
                    f"negative_codes must have shape (batch_size, k_negatives) = ({batch_size}, "
                    f"{k_negatives}) or ({batch_size * k_negatives},), got "
                    f"{tuple(negative_codes.shape)}"
                )
            flat = negative_codes.reshape(-1)
            index = check_index(
                flat, "negative_codes", self.n_nodes, shape=(batch_size * k_negatives,)
            )
            return index.view(batch_size, k_negatives)
        if isinstance(negative_codes, str) or not isinstance(negative_codes, Sequence):
            raise TypeError(
                "negative_codes must be B lists of K names or an integer tensor, got "
                f"{type(negative_codes).__name__}"
            )
        if len(negative_codes) != batch_size:
            raise ValueError(
                f"negative_codes must hold batch_size={batch_size} lists, got {len(negative_codes)}"
            )
        names: list[Any] = []
        for row in negative_codes:
            if isinstance(row, str) or not isinstance(row, Sequence) or len(row) != k_negatives:
                raise ValueError(
                    f"negative_codes must hold lists of k_negatives={k_negatives} names, "
                    f"got {row!r}"
                )
            names.extend(row)
        return self.tree.indices(names).view(batch_size, k_negatives)

    def _list_objective(
        self, embedding_distances: Tensor, tree_lists: Tensor, valid: Tensor | None
    ) -> Tensor:
        return _lambda_rank(
            embedding_distances,
            tree_lists,
            self.sigma,
            self.ndcg_k,
            valid,
            self.reduction,
            self.weight,
            relevance=self.relevance,
        )

    def extra_repr(self) -> str:
        return (
            f"n_nodes={self.n_nodes}, weight={self.weight}, sigma={self.sigma}, "
            f"ndcg_k={self.ndcg_k}, reduction={self.reduction!r}"
        )


class RankOrderListLoss(_ListLoss):
    r"""The rank-order hinge on per-anchor lists (e.g. [positive, negatives...]).

    :class:`RankOrderPreservationLoss` compares the distances from an anchor to the other
    nodes of a random block, which rarely holds the anchor's tree neighbours; this compares
    them within the anchor's sampled list, whose tree-weighted negatives are mostly close
    nodes: the local order that NDCG@k measures. Every pair of list items :math:`j, k` with
    tree distances :math:`t_{aj} < t_{ak}` (both ``>= min_distance``) gives the term
    :math:`\max(0, d_{aj} - d_{ak} + \text{margin})`
    (:func:`~hyperloss.losses.functional.rank_order_list_loss`). The result is ``weight``
    times the reduced loss. With the block form it is the default objective of
    :func:`hyperloss.fit` from random points (the evidence is in :mod:`hyperloss.training`).

    Parameters
    ----------
    tree : Tree
        The tree (any tree-distance source, see :mod:`hyperloss.losses.sources`), or a dense
        ``(N, N)`` matrix and a name map.
    weight : float, default=1.0
        Non-negative factor applied to the reduced loss.
    margin : float, default=0.1
        Non-negative hinge margin, in embedding-distance units.
    min_distance : float, default=0.1
        Candidates are the list items at tree distance ``>= min_distance``.
    reduction : {'violations', 'mean', 'sum', 'none'}, default='violations'
        As in :class:`RankOrderPreservationLoss`; ``'none'``: per anchor, shape ``(B,)``.

    Shape
    -----
    ``forward(points, anchors, items, distance_fn, mask=None)`` as
    :class:`LambdaRankLoss`: points ``(N, D + 1)`` indexed by tree index (or a lazy row
    table), anchors LongTensor ``(B,)``, items LongTensor ``(B, L)``, mask optional bool
    ``(B, L)`` (False entries of ``items`` are not read); output scalar, or ``(B,)`` for
    ``reduction='none'``.

    Raises
    ------
    TypeError, ValueError
        Bad options, index tensors (dtype, shape, range), points (shape, dtype, NaN or inf) or
        a ``distance_fn`` that does not follow the broadcasting contract.

    Examples
    --------
    >>> import torch
    >>> from hyperloss.geometry import LorentzDistance, expmap0
    >>> from hyperloss.trees import Tree
    >>> tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a", "a2": "a", "b1": "b"})
    >>> points = expmap0(torch.randn(len(tree), 2, dtype=torch.float64))
    >>> anchors = tree.indices(["a1", "b1"])
    >>> items = torch.stack([tree.indices(["a2", "a", "b1"]), tree.indices(["b", "a", "a1"])])
    >>> loss = RankOrderListLoss(tree)(points, anchors, items, LorentzDistance())
    >>> bool(loss >= 0)
    True
    """

    def __init__(self, tree: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tree, args, kwargs, self._configure)

    def _configure(
        self,
        weight: float = 1.0,
        margin: float = 0.1,
        min_distance: float = 0.1,
        reduction: str = "violations",
    ) -> None:
        self.weight = check_nonnegative(weight, "weight")
        self.margin = check_nonnegative(margin, "margin")
        self.min_distance = check_real(min_distance, "min_distance")
        reductions = ("violations", "mean", "sum", "none")
        if reduction not in reductions:
            raise ValueError(f"reduction must be one of {reductions}, got {reduction!r}")
        self.reduction = reduction

    def forward(
        self,
        points: Any,
        anchors: Tensor,
        items: Tensor,
        distance_fn: DistanceFn,
        mask: Tensor | None = None,
    ) -> Tensor:
        """``weight`` times the loss of the lists (see the class docstring)."""
        return self._forward_lists(points, anchors, items, distance_fn, mask)

    def _list_objective(
        self, embedding_distances: Tensor, tree_lists: Tensor, valid: Tensor | None
    ) -> Tensor:
        if valid is not None:
            _check_valid_finite(embedding_distances, tree_lists, valid)
        return _rank_order_lists(
            embedding_distances,
            tree_lists,
            self.margin,
            self.min_distance,
            valid,
            self.reduction,
            self.weight,
        )

    def extra_repr(self) -> str:
        return (
            f"n_nodes={self.n_nodes}, weight={self.weight}, margin={self.margin}, "
            f"min_distance={self.min_distance}, reduction={self.reduction!r}"
        )


# --------------------------------------------------------------------------------------------
# helpers


def _check_valid_finite(embedding_distances: Tensor, tree_lists: Tensor, valid: Tensor) -> None:
    """ValueError unless the lists are finite at their valid items (the masked path)."""
    if not bool((torch.isfinite(embedding_distances) | ~valid).all()):
        raise ValueError("embedding_distances contains NaN or inf at a valid item")
    if not bool((torch.isfinite(tree_lists) | ~valid).all()):
        raise ValueError("tree_distances contains NaN or inf at a valid item")


def _pairwise(distance_fn: DistanceFn, points: Tensor, chunk_size: int | None) -> Tensor:
    """(n, n) embedding distances; a callable that fails on broadcast shapes -> ValueError."""
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
