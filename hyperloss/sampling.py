"""Index batches for training: ranking lists and node blocks drawn from a tree.

Everything here works on tree indices of a :class:`hyperloss.trees.Tree`; names never appear,
and tree distances are computed on demand from the tree's structure, never as an ``(N, N)``
matrix. A :class:`ListSampler` draws, for a batch of anchors, one positive (a close tree
neighbour) and ``k`` negatives per anchor:

``anchor``    LongTensor ``(B,)``
``positive``  LongTensor ``(B,)``  with ``0 < t(anchor, positive) <= max_positive_distance``
``negatives`` LongTensor ``(B, K)`` never equal to the anchor

where ``t`` is the tree distance (``tree.distances(lineal_discount=...)``: path length, minus
``lineal_discount`` between an ancestor and its descendant). These are the
``[positive, negative_1, ..., negative_K]`` lists that :class:`hyperloss.losses.LambdaRankLoss`
scores; node blocks (:meth:`ListSampler.nodes`) feed
:class:`hyperloss.losses.RankOrderPreservationLoss`.

Positives are uniform over the nodes ``j != anchor`` with ``t(anchor, j) <=
max_positive_distance``. Negative strategies (``negatives=``):

``"uniform"``
    Uniform over all nodes except the anchor.
``"farther"``
    Uniform over the nodes strictly farther from the anchor in the tree than the positive (the
    classic "negative" of Nickel & Kiela 2017); an anchor whose positive is already among its
    farthest nodes falls back to ``"uniform"``.
``"tree"``
    Tree-distance aware: node ``j`` is drawn with probability proportional to
    ``exp(-t(anchor, j) / temperature)`` (``j != anchor``), so nodes close in the tree, the
    ones that are hard to rank, are drawn more often. Small ``temperature`` = harder.

Training on a subset of the nodes
---------------------------------
``ListSampler(tree, nodes=index)`` restricts every draw to the given nodes (for example the
training split when some nodes are held out to test generalisation): anchors, positives,
negatives and node blocks are all members of ``index``; the others never appear. The tree
itself, and so every tree distance, stays the full tree's: a held-out internal node still
separates its children from their cousins. The distributions above are the exact ones
restricted to the subset (each count below counts members only, via a prefix sum over a
membership mask), with one addition: a member with no other member within
``max_positive_distance`` draws its positive uniformly among its nearest members instead.

How the draws stay exact without the distance matrix
----------------------------------------------------
Index order is breadth first, so ``parent`` is non-decreasing and the children of a contiguous
range ``[lo, hi)`` of same-depth nodes are the contiguous range
``[first_child[lo], first_child[hi])``, where ``first_child[v] = searchsorted(parent, v)`` (one
``(N + 1,)`` array) is where the children of ``v`` start. Hence the descendants at depth ``L``
of each ancestor ``a_e`` (depth ``e``) of an anchor ``v`` (depth ``d``) are a range ``R_e(L)``,
nested ``R_e(L) ⊇ R_{e+1}(L)``, and the ring ``R_e(L) \\ R_{e+1}(L)`` (two ranges) holds
exactly the nodes at depth ``L`` whose lowest common ancestor with ``v`` is ``a_e``: all at
path length ``d + L - 2e``, lineal (an ancestor or descendant of ``v``) iff ``e == d`` or
``e == L``. One sweep over the depth levels (one ``first_child`` lookup per level for the whole
batch) counts every anchor's nodes per distance class ``(path length, lineal)``; each draw then
picks a class with probability ``count * weight`` (the strategy's weight of that distance) and
a uniform rank inside it, and a second sweep turns ranks into node indices. Both are exact.

Cost per batch of ``B`` anchors: two sweeps of at most ``height + 1`` levels, each level a few
dozen small tensor operations on ``(B, A)`` integers, where ``A <= height + 1`` counts the
ancestor depths whose ring can still be non-empty (about 2 on a path-like tree); memory
``O(N + B * (height + K))``. Nothing ``N x N`` exists; the only ``O(N)`` arrays are the tree's
parent and depth and ``first_child``. Measured (one CPU thread, ``B = 128``, ``K = 24``):
NAICS (2,126 nodes, height 5) about 3.5 ms per batch; ``random_tree(1_000_000)`` (height 31)
about 20 ms; a 4,000-node caterpillar of height 2,000 about 1.9 s (time grows with the height,
linearly).

All draws come from one seeded :class:`torch.Generator` (reproducible; its state can be saved
and restored with :meth:`ListSampler.state_dict` for exact resumption) and are vectorized: no
Python loop runs over anchors or samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch import Tensor

from hyperloss.trees import Tree, _check_discount
from hyperloss.validation import check_int, check_positive

__all__ = ["ListBatch", "ListSampler", "NEGATIVE_STRATEGIES"]

NEGATIVE_STRATEGIES = ("uniform", "farther", "tree")


class ListBatch(NamedTuple):
    """A batch of ranking lists as tree indices.

    Attributes
    ----------
    anchor : LongTensor (B,)
    positive : LongTensor (B,)
        A close tree neighbour of each anchor.
    negatives : LongTensor (B, K)
        Never equal to the row's anchor.
    """

    anchor: Tensor
    positive: Tensor
    negatives: Tensor

    @property
    def items(self) -> Tensor:
        """The lists ``[positive, negatives...]`` as one LongTensor ``(B, 1 + K)``."""
        return torch.cat([self.positive[:, None], self.negatives], dim=1)


class ListSampler:
    """Draw (anchor, positive, k negatives) index batches from a tree, with no N x N matrix.

    Parameters
    ----------
    tree : hyperloss.trees.Tree
        At least 2 nodes. Only ``tree.parent`` and ``tree.depth`` are kept (``O(N)``).
    k_negatives : int, default 24
        Negatives per anchor, ``K >= 1``. Drawn with replacement.
    max_positive_distance : float, default 2.0
        Positives are the nodes ``j != anchor`` with ``t(anchor, j) <= max_positive_distance``
        (2.0: parent, children, siblings, grandparent, grandchildren). Every node needs at least
        one, so it must be at least the distance to a parent or child, ``1 - lineal_discount``.
    negatives : {"uniform", "farther", "tree"}, default "tree"
        How negatives are drawn (see the module docstring).
    temperature : float, default 1.0
        For ``negatives="tree"``: weights ``exp(-t / temperature)``; ``> 0``.
    lineal_discount : float, default 0.0
        The tree distance ``t`` is the path length minus this between an ancestor and its
        descendant, as in ``tree.distances(lineal_discount=...)``; ``0 <= lineal_discount < 1``.
    seed : int, default 0
        Seeds the sampler's own :class:`torch.Generator`.
    nodes : LongTensor (M,), optional
        Draw only these tree indices (distinct, ``M >= 2``) as anchors, positives, negatives
        and block nodes (see "Training on a subset of the nodes" in the module docstring).
        Default: all nodes. Costs ``O(N)`` memory (a prefix count) and no more time per batch.

    Raises
    ------
    TypeError
        If ``tree`` is not a :class:`~hyperloss.trees.Tree` (a distance matrix included) or a
        setting has the wrong type.
    ValueError
        If the tree has fewer than 2 nodes or a setting is out of range (naming it).

    Examples
    --------
    >>> import torch
    >>> from hyperloss.datasets import random_tree
    >>> tree = random_tree(50, seed=0)
    >>> sampler = ListSampler(tree, k_negatives=4, max_positive_distance=1.0, seed=0)
    >>> batch = sampler.sample(torch.tensor([0, 7]))
    >>> batch.negatives.shape
    torch.Size([2, 4])
    >>> tree.distances(rows=batch.anchor).gather(1, batch.positive[:, None]).flatten()
    tensor([1., 1.], dtype=torch.float64)
    >>> bool((batch.negatives != batch.anchor[:, None]).all())
    True
    """

    def __init__(
        self,
        tree: Tree,
        *,
        k_negatives: int = 24,
        max_positive_distance: float = 2.0,
        negatives: str = "tree",
        temperature: float = 1.0,
        lineal_discount: float = 0.0,
        seed: int = 0,
        nodes: Tensor | None = None,
    ) -> None:
        _check_tree(tree)
        self.k_negatives = check_int(k_negatives, "k_negatives", minimum=1)
        self.max_positive_distance = check_positive(max_positive_distance, "max_positive_distance")
        if negatives not in NEGATIVE_STRATEGIES:
            raise ValueError(f"negatives must be one of {NEGATIVE_STRATEGIES}, got {negatives!r}")
        self.negatives = negatives
        self.temperature = check_positive(temperature, "temperature")
        self.lineal_discount = _check_discount(lineal_discount)
        self.seed = check_int(seed, "seed", minimum=None)
        # Every node has a parent or a child, both lineal at path length 1, and nothing closer:
        # the nearest other node of every node is at 1 - lineal_discount.
        nearest = 1.0 - self.lineal_discount
        if self.max_positive_distance < nearest:
            raise ValueError(
                f"max_positive_distance={self.max_positive_distance:g} leaves every node without "
                f"a positive (the nearest other node, a parent or child, is at tree distance "
                f"{nearest:g})"
            )
        self.n_nodes = len(tree)
        self.height = tree.height
        self._parent = tree.parent
        # Breadth-first order puts the children of every node in one contiguous range, and the
        # children of consecutive nodes one after the other: first_child[v] is the index of v's
        # first child (or where it would be), first_child[N] = N. O(N) memory, once.
        child_count = torch.bincount(self._parent[1:], minlength=self.n_nodes)
        self._first_child = torch.cat(
            [torch.ones(1, dtype=torch.long), 1 + torch.cumsum(child_count, dim=0)]
        )
        self._depth = tree.depth
        self.generator = torch.Generator().manual_seed(self.seed)
        # Distance classes c = 2 * path_length + lineal, path lengths 0 .. 2 * height.
        n_classes = 2 * (2 * self.height + 1)
        class_index = torch.arange(n_classes)
        self._class_distance = (class_index // 2).double() - self.lineal_discount * (
            class_index % 2
        ).double()
        self._class_distance[:2] = 0.0  # path length 0 is the anchor itself, not lineal
        # The subset: sorted members (M,) and prefix[i] = number of members below index i, so
        # the members in a contiguous index range [lo, hi) are members[prefix[lo]:prefix[hi]].
        self._members: Tensor | None = None
        self._prefix: Tensor | None = None
        if nodes is not None:
            self._members = _check_nodes(nodes, self.n_nodes)
            mask = torch.zeros(self.n_nodes, dtype=torch.long)
            mask[self._members] = 1
            self._prefix = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(mask, 0)])

    @property
    def n_members(self) -> int:
        """How many nodes can be drawn: ``M`` with ``nodes=``, else ``N``."""
        return self.n_nodes if self._members is None else int(self._members.numel())

    @classmethod
    def from_tree(cls, tree: Tree, *, lineal_discount: float = 0.0, **kwargs: Any) -> ListSampler:
        """Same as ``ListSampler(tree, lineal_discount=lineal_discount, **kwargs)``.

        Kept for code written when the constructor took ``tree.distances(...)``.

        Parameters
        ----------
        tree : hyperloss.trees.Tree
        lineal_discount : float, default 0.0
            See :class:`ListSampler`.
        **kwargs
            Passed to :class:`ListSampler`.
        """
        return cls(tree, lineal_discount=lineal_discount, **kwargs)

    # ----------------------------------------------------------------- drawing
    def sample(self, anchors: Tensor) -> ListBatch:
        """Draw one positive and ``k_negatives`` negatives for each given anchor.

        Parameters
        ----------
        anchors : LongTensor (B,)
            Tree indices in ``[0, N)``.

        Returns
        -------
        ListBatch
            ``anchor (B,)``, ``positive (B,)``, ``negatives (B, K)``.

        Raises
        ------
        TypeError, ValueError
            If ``anchors`` is not a 1-D LongTensor of indices in ``[0, N)``.
        """
        anchors = self._check_anchors(anchors)
        shape = (anchors.shape[0], self.k_negatives)
        if anchors.numel() == 0:
            empty = torch.empty(0, dtype=torch.long)
            return ListBatch(anchors, empty, empty.reshape(shape))
        anchor_depth, ancestors = self._ancestor_table(anchors)
        # Positives only need path lengths up to max_positive_distance + lineal_discount.
        # (A subset may leave an anchor without a close member: then the whole row is needed.)
        reach = None
        if self.negatives == "uniform" and self._members is None:
            reach = int(self.max_positive_distance) + 1
        counts = self._class_counts(anchor_depth, ancestors, reach)

        positive_weight = counts * (self._class_distance <= self.max_positive_distance)
        positive_weight[:, :2] = 0  # path length 0: the anchor itself
        if self._members is not None:
            positive_weight = self._nearest_fallback(counts, positive_weight)
        positive_class = torch.multinomial(
            positive_weight.double(), 1, replacement=True, generator=self.generator
        )
        positive_rank = self._uniform_rank(counts, positive_class)
        if self.negatives == "uniform":
            positives = self._resolve(anchor_depth, ancestors, positive_class, positive_rank)
            return ListBatch(anchors, positives[:, 0], self._uniform_except_anchor(anchors, shape))

        if self.negatives == "tree":
            negative_class = self._tree_classes(counts)
            fallback = None
        else:
            negative_class, has_farther = self._farther_classes(counts, positive_class[:, 0])
            fallback = (has_farther, self._uniform_except_anchor(anchors, shape))
        negative_rank = self._uniform_rank(counts, negative_class)
        nodes = self._resolve(
            anchor_depth,
            ancestors,
            torch.cat([positive_class, negative_class], dim=1),
            torch.cat([positive_rank, negative_rank], dim=1),
        )
        positives, negatives = nodes[:, 0], nodes[:, 1:]
        if fallback is not None:
            has_farther, uniform = fallback
            negatives = torch.where(has_farther[:, None], negatives, uniform)
        return ListBatch(anchors, positives, negatives)

    def sample_random(self, batch_size: int) -> ListBatch:
        """:meth:`sample` for ``batch_size`` anchors drawn uniformly with replacement."""
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        anchors = torch.randint(self.n_members, (batch_size,), generator=self.generator)
        if self._members is not None:
            anchors = self._members[anchors]
        return self.sample(anchors)

    def epoch(self, batch_size: int) -> Iterator[ListBatch]:
        """One pass over all nodes (the ``nodes=`` subset) as anchors, in a random order,
        ``batch_size`` at a time.

        The last batch may be smaller. The permutation (``O(N)`` memory) is drawn when
        iteration starts.
        """
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        order = torch.randperm(self.n_members, generator=self.generator)
        if self._members is not None:
            order = self._members[order]
        for start in range(0, order.numel(), batch_size):
            yield self.sample(order[start : start + batch_size])

    def nodes(self, size: int) -> Tensor:
        """A random block of distinct node indices (for the rank-order loss).

        Every subset of ``min(size, N)`` nodes (of ``M`` members with ``nodes=``) is equally
        likely. A small block of a large tree
        is drawn by rejecting repeats (``O(size)``), so a step does not pay ``O(N)`` for it.

        Parameters
        ----------
        size : int
            ``>= 1``; capped at ``N``.

        Returns
        -------
        LongTensor (min(size, N),)
            Sorted ascending (so the block keeps the tree's index order).
        """
        block = self._member_positions(check_int(size, "size", minimum=1))
        # Members are sorted, so sorted positions give sorted node indices.
        return block if self._members is None else self._members[block]

    def _member_positions(self, size: int) -> Tensor:
        """A uniform random subset of ``min(size, M)`` positions in ``[0, M)``, sorted."""
        n_members = self.n_members
        size = min(size, n_members)
        if 4 * size > n_members:
            block = torch.randperm(n_members, generator=self.generator)[:size]
            return torch.sort(block).values
        # The first `size` distinct values of a uniform stream are a uniform random subset.
        # With size <= N / 4, 2 * size draws hold about 1.8 * size distinct values, so a second
        # round is rare.
        draws = torch.empty(0, dtype=torch.long)
        while True:
            more = torch.randint(n_members, (2 * size,), generator=self.generator)
            draws = torch.cat([draws, more])
            values, inverse = torch.unique(draws, return_inverse=True)
            if values.numel() >= size:
                break
        position = torch.arange(draws.numel())
        first_seen = torch.full((values.numel(),), draws.numel(), dtype=torch.long)
        first_seen.scatter_reduce_(0, inverse, position, reduce="amin")
        chosen = torch.argsort(first_seen)[:size]
        return torch.sort(values[chosen]).values

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The generator state (a ByteTensor) and the settings, for exact resumption."""
        return {"generator": self.generator.get_state(), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state saved by :meth:`state_dict`."""
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        extra = f", temperature={self.temperature:g}" if self.negatives == "tree" else ""
        if self.lineal_discount:
            extra += f", lineal_discount={self.lineal_discount:g}"
        return (
            f"ListSampler(n_nodes={self.n_nodes}, k_negatives={self.k_negatives}, "
            f"max_positive_distance={self.max_positive_distance:g}, "
            f"negatives={self.negatives!r}{extra}, seed={self.seed}"
            + (")" if self._members is None else f", n_members={self.n_members})")
        )

    # ------------------------------------------------------ distance classes
    def _ancestor_table(self, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Anchor depths ``(B,)`` and ``ancestors[b, e]``, the ancestor at depth ``e`` of
        ``anchors[b]`` (itself at its own depth; 0 past it), ``(B, max depth + 1)``."""
        anchor_depth = self._depth[anchors]
        n_levels = int(anchor_depth.max()) + 1
        ancestors = torch.zeros((anchors.shape[0], n_levels), dtype=torch.long)
        rows = torch.arange(anchors.shape[0])
        current = anchors
        for step in range(n_levels):  # one step up per depth level
            level = anchor_depth - step
            inside = level >= 0
            ancestors[rows[inside], level[inside]] = current[inside]
            current = self._parent[current].clamp_min(0)
        return anchor_depth, ancestors

    def _level_rings(
        self, anchor_depth: Tensor, ancestors: Tensor, last_level: int
    ) -> Iterator[tuple[int, Tensor, Tensor, Tensor, Tensor, Tensor]]:
        """Per depth level ``L = 0 .. last_level``: ``(L, column_depth, lo, inner_lo, inner_hi,
        size)``.

        ``column_depth (A,)`` lists the ancestor depths still tracked (ascending); the others are
        ``(B, A)``. ``[lo, lo + size)`` is split by the nested range ``[inner_lo, inner_hi)``:
        the ring ``[lo, inner_lo) + [inner_hi, lo + size + (inner_hi - inner_lo))`` holds the
        nodes at depth ``L`` whose lca with the anchor is the ancestor at depth
        ``column_depth[a]`` (``size`` is 0 where that is deeper than the anchor).

        A column enters at its own depth, and leaves once its ring is empty in every row after
        the next tracked column has entered: the ranges are then equal (or both empty) and stay
        so at every deeper level, as children of equal ranges are equal. Columns left out are
        empty rings; the next tracked column is the inner range of the one before. This keeps
        the width small on deep, narrow trees (a path: about 2 columns instead of ``height``).
        """
        n_rows, n_columns = ancestors.shape
        depth = anchor_depth[:, None]
        column_depth = torch.empty(0, dtype=torch.long)
        ranges = torch.empty((2, n_rows, 0), dtype=torch.long)  # [lo, hi) per row and column
        beyond = torch.tensor([n_columns])  # the depth of no ancestor: the last inner is empty
        for level in range(last_level + 1):
            if level > 0:
                # Children of [lo, hi): [first_child[lo], first_child[hi]). first_child is
                # non-decreasing, so nested ranges stay nested, empty ones included.
                ranges = self._first_child[ranges]
            if level < n_columns:
                enters = anchor_depth >= level
                entry = torch.where(enters, ancestors[:, level], 0)
                entry = torch.stack([entry, torch.where(enters, entry + 1, 0)])
                ranges = torch.cat([ranges, entry[:, :, None]], dim=2)
                column_depth = torch.cat([column_depth, torch.tensor([level])])
            lo, hi = ranges[0], ranges[1]
            # The next column is the inner range where it exists for the row, else the inner
            # range is empty (parked at hi so both ring pieces are valid ranges).
            next_depth = torch.cat([column_depth[1:], beyond])
            inner_exists = next_depth[None, :] <= depth
            inner_lo = torch.where(inner_exists, torch.cat([lo[:, 1:], hi[:, -1:]], dim=1), hi)
            inner_hi = torch.where(inner_exists, torch.cat([hi[:, 1:], hi[:, -1:]], dim=1), hi)
            size = torch.where(column_depth[None, :] <= depth, (hi - lo) - (inner_hi - inner_lo), 0)
            yield level, column_depth, lo, inner_lo, inner_hi, size
            dead = (size == 0).all(dim=0) & (column_depth < level)
            if bool(dead.any()):
                column_depth, ranges = column_depth[~dead], ranges[:, :, ~dead]

    def _class_counts(self, anchor_depth: Tensor, ancestors: Tensor, reach: int | None) -> Tensor:
        """Number of nodes of each anchor in each distance class, LongTensor ``(B, C)``.

        Class ``2 * path_length + lineal``; ``reach`` (path lengths) stops the sweep early when
        only close classes are needed.
        """
        counts = torch.zeros(
            (anchor_depth.shape[0], self._class_distance.numel()), dtype=torch.long
        )
        last_level = self.height
        if reach is not None:
            last_level = min(last_level, int(anchor_depth.max()) + reach)
        depth = anchor_depth[:, None]
        for level, column_depth, lo, inner_lo, inner_hi, size in self._level_rings(
            anchor_depth, ancestors, last_level
        ):
            # Path length depth + level - 2 * column; lineal below the anchor or at the
            # ancestor itself. Rows where the column is past the anchor have size 0.
            column = column_depth[None, :]
            lineal = (column == depth) | (column == level)
            ring_class = (2 * (depth + level - 2 * column) + lineal).clamp_min(0)
            counts.scatter_add_(1, ring_class, self._member_count(lo, inner_lo, inner_hi, size))
        return counts

    def _resolve(
        self, anchor_depth: Tensor, ancestors: Tensor, draw_class: Tensor, rank: Tensor
    ) -> Tensor:
        """Node index of the ``rank``-th node (in level, then index order) of each drawn class.

        ``draw_class``, ``rank``: ``(B, S)``; returns LongTensor ``(B, S)``.
        """
        path_length = draw_class // 2
        lineal = (draw_class % 2).bool()
        depth = anchor_depth[:, None]
        # At level L the class can only sit at lca depth e = (depth - path_length + L) / 2, for
        # |depth - path_length| <= L <= depth + path_length (e in [0, min(depth, L)]) with the
        # right parity; it is lineal exactly at the two ends (e = depth or e = L).
        first_level = (depth - path_length).abs()
        last_level_here = depth + path_length
        ancestor_level = depth - path_length
        remaining = rank.clone()
        node = torch.zeros_like(rank)
        last_level = min(self.height, int(last_level_here.max()))
        for level, column_depth, lo, inner_lo, inner_hi, size in self._level_rings(
            anchor_depth, ancestors, last_level
        ):
            at_end = (last_level_here == level) | (ancestor_level == level)
            here = (first_level <= level) & (last_level_here >= level) & (at_end == lineal)
            here &= (last_level_here - level) % 2 == 0
            lca_depth = (ancestor_level + level) // 2
            column = torch.searchsorted(column_depth, lca_depth).clamp_max(column_depth.numel() - 1)
            here &= column_depth[column] == lca_depth  # a column left out is an empty ring
            bounds = torch.stack([lo, inner_lo, inner_hi, size])
            ring_lo, ring_inner_lo, ring_inner_hi, ring_size = bounds.gather(
                2, column.expand(4, -1, -1)
            )
            if self._members is None:
                first_piece = ring_inner_lo - ring_lo
                ring_size = torch.where(here, ring_size, 0)
                hit = (remaining >= 0) & (remaining < ring_size)
                found = torch.where(
                    remaining < first_piece,
                    ring_lo + remaining,
                    ring_inner_hi + (remaining - first_piece),
                )
            else:
                # The same two pieces, counting members only: the r-th member of [lo, ...)
                # is members[prefix[lo] + r].
                prefix = self._prefix
                first_piece = prefix[ring_inner_lo] - prefix[ring_lo]
                member_size = self._member_count(ring_lo, ring_inner_lo, ring_inner_hi, ring_size)
                ring_size = torch.where(here, member_size, 0)
                hit = (remaining >= 0) & (remaining < ring_size)
                position = torch.where(
                    remaining < first_piece,
                    prefix[ring_lo] + remaining,
                    prefix[ring_inner_hi] + (remaining - first_piece),
                )
                found = self._members[position.clamp(0, self._members.numel() - 1)]
            node = torch.where(hit, found, node)
            remaining = remaining - ring_size
        return node

    # ----------------------------------------------------------------- helpers
    def _member_count(self, lo: Tensor, inner_lo: Tensor, inner_hi: Tensor, size: Tensor) -> Tensor:
        """Members in the ring ``[lo, inner_lo) + [inner_hi, hi)`` (``size`` nodes); ``size``
        itself without a subset."""
        if self._members is None:
            return size
        hi = lo + size + (inner_hi - inner_lo)
        prefix = self._prefix
        count = (prefix[inner_lo] - prefix[lo]) + (
            prefix[hi.clamp(0, self.n_nodes)] - prefix[inner_hi]
        )
        # A ring of size 0 (also the columns past the anchor, whose bounds mean nothing) has
        # no members.
        return torch.where(size > 0, count, 0)

    def _nearest_fallback(self, counts: Tensor, positive_weight: Tensor) -> Tensor:
        """Rows without a member within ``max_positive_distance`` weight their nearest
        non-empty distance classes instead (members at the smallest distance, uniformly)."""
        empty = positive_weight.sum(dim=1) == 0
        if not bool(empty.any()):
            return positive_weight
        distance = self._class_distance[None, :].expand_as(counts).clone()
        distance[counts == 0] = math.inf
        distance[:, :2] = math.inf  # the anchor itself
        nearest = distance.min(dim=1, keepdim=True).values
        fallback = counts * (distance == nearest)
        return torch.where(empty[:, None], fallback, positive_weight)

    def _uniform_rank(self, counts: Tensor, draw_class: Tensor) -> Tensor:
        """A uniform rank in ``[0, count)`` of each drawn class, ``(B, S)``."""
        count = counts.gather(1, draw_class)
        uniform = torch.rand(draw_class.shape, generator=self.generator, dtype=torch.float64)
        # floor(u * count) is in [0, count); the clamp guards u * count rounding up to count.
        return torch.minimum((uniform * count).long(), count - 1)

    def _tree_classes(self, counts: Tensor) -> Tensor:
        """Classes drawn with probability ``count * exp(-distance / temperature)``, ``(B, K)``."""
        log_weight = counts.double().log() - self._class_distance / self.temperature
        log_weight[:, :2] = -math.inf  # the anchor
        # Shift by the row maximum so a small temperature cannot underflow every weight to 0.
        weight = torch.exp(log_weight - log_weight.max(dim=1, keepdim=True).values)
        return torch.multinomial(
            weight, self.k_negatives, replacement=True, generator=self.generator
        )

    def _farther_classes(self, counts: Tensor, positive_class: Tensor) -> tuple[Tensor, Tensor]:
        """Classes strictly farther than the positive's, drawn proportionally to their counts
        ``(B, K)``, and whether any exists ``(B,)`` (rows without one get placeholder draws)."""
        positive_distance = self._class_distance[positive_class]
        farther = counts * (self._class_distance[None, :] > positive_distance[:, None])
        has_farther = farther.sum(dim=1) > 0
        # Rows without a farther node still draw (from the positive's class) to keep the
        # generator stream independent of the data; their draws are replaced by the fallback.
        placeholder = torch.nn.functional.one_hot(positive_class, counts.shape[1])
        weight = torch.where(has_farther[:, None], farther, placeholder).double()
        draw = torch.multinomial(
            weight, self.k_negatives, replacement=True, generator=self.generator
        )
        return draw, has_farther

    def _uniform_except_anchor(self, anchors: Tensor, shape: tuple[int, int]) -> Tensor:
        # Draw from N - 1 values and skip the anchor: exactly uniform over the other nodes.
        draw = torch.randint(self.n_members - 1, shape, generator=self.generator)
        if self._members is None:
            return draw + (draw >= anchors[:, None]).long()
        # The same over member positions; the anchor (a member) sits at position prefix[anchor].
        position = self._prefix[anchors][:, None]
        return self._members[draw + (draw >= position).long()]

    def _check_anchors(self, anchors: Tensor) -> Tensor:
        if not isinstance(anchors, Tensor):
            raise TypeError(f"anchors must be a LongTensor, got {type(anchors).__name__}")
        if anchors.dtype != torch.long or anchors.ndim != 1:
            raise ValueError(
                f"anchors must be a 1-D LongTensor, got dtype {anchors.dtype} and shape "
                f"{tuple(anchors.shape)}"
            )
        if anchors.numel() and (anchors.min() < 0 or anchors.max() >= self.n_nodes):
            raise ValueError(f"anchors must be tree indices in [0, {self.n_nodes})")
        if self._prefix is not None and anchors.numel():
            inside = self._prefix[anchors + 1] - self._prefix[anchors]
            if not bool(inside.all()):
                outside = anchors[inside == 0][:5].tolist()
                raise ValueError(
                    f"anchors must be among the sampler's nodes (nodes=); got {outside} outside"
                )
        return anchors


def _check_tree(tree: Any) -> None:
    if isinstance(tree, Tensor):
        raise TypeError(
            "tree must be a hyperloss.trees.Tree, got a Tensor: ListSampler now computes tree "
            "distances on demand, so pass the tree itself instead of tree.distances()"
        )
    if not isinstance(tree, Tree):
        raise TypeError(f"tree must be a hyperloss.trees.Tree, got {type(tree).__name__}")
    if len(tree) < 2:
        raise ValueError(f"tree must have at least 2 nodes, got {len(tree)}")


def _check_nodes(nodes: Any, n_nodes: int) -> Tensor:
    """The subset as sorted distinct indices, or a clear error."""
    if not isinstance(nodes, Tensor):
        raise TypeError(f"nodes must be a LongTensor of tree indices, got {type(nodes).__name__}")
    if nodes.dtype != torch.long or nodes.ndim != 1:
        raise ValueError(
            f"nodes must be a 1-D LongTensor, got dtype {nodes.dtype} and shape "
            f"{tuple(nodes.shape)}"
        )
    if nodes.numel() and (nodes.min() < 0 or nodes.max() >= n_nodes):
        raise ValueError(f"nodes must be tree indices in [0, {n_nodes})")
    members = torch.unique(nodes)  # sorted
    if members.numel() != nodes.numel():
        raise ValueError("nodes must not repeat an index")
    if members.numel() < 2:
        raise ValueError(f"nodes must hold at least 2 indices, got {members.numel()}")
    return members
