"""Index batches for training: ranking lists and node blocks drawn from a tree.

Everything here works on tree indices and the tree-distance matrix ``(N, N)``; names never
appear. A :class:`ListSampler` draws, for a batch of anchors, one positive (a close tree
neighbour) and ``k`` negatives per anchor:

``anchor``    LongTensor ``(B,)``
``positive``  LongTensor ``(B,)``  with ``0 < t[anchor, positive] <= max_positive_distance``
``negatives`` LongTensor ``(B, K)`` never equal to the anchor

These are the ``[positive, negative_1, ..., negative_K]`` lists that
:class:`hyperloss.losses.LambdaRankLoss` scores; node blocks (:meth:`ListSampler.nodes`) feed
:class:`hyperloss.losses.RankOrderPreservationLoss`.

Negative strategies (``negatives=``):

``"uniform"``
    Uniform over all nodes except the anchor.
``"farther"``
    Uniform over the nodes strictly farther from the anchor in the tree than the positive (the
    classic "negative" of Nickel & Kiela 2017); an anchor whose positive is already among its
    farthest nodes falls back to ``"uniform"``.
``"tree"``
    Tree-distance aware: node ``j`` is drawn with probability proportional to
    ``exp(-t[anchor, j] / temperature)`` (``j != anchor``), so nodes close in the tree, the
    ones that are hard to rank, are drawn more often. Small ``temperature`` = harder.

All draws come from one seeded :class:`torch.Generator` (reproducible; its state can be saved
and restored with :meth:`ListSampler.state_dict` for exact resumption) and are vectorized: no
Python loop runs over anchors or samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

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

    anchor: torch.Tensor
    positive: torch.Tensor
    negatives: torch.Tensor

    @property
    def items(self) -> torch.Tensor:
        """The lists ``[positive, negatives...]`` as one LongTensor ``(B, 1 + K)``."""
        return torch.cat([self.positive[:, None], self.negatives], dim=1)


class ListSampler:
    """Draw (anchor, positive, k negatives) index batches from a tree-distance matrix.

    Parameters
    ----------
    tree_distances : Tensor (N, N)
        Symmetric, non-negative, zero diagonal (e.g. ``tree.distances()``); ``N >= 2``.
    k_negatives : int, default 24
        Negatives per anchor, ``K >= 1``. Drawn with replacement.
    max_positive_distance : float, default 2.0
        Positives are the nodes ``j != anchor`` with ``t[anchor, j] <= max_positive_distance``
        (2.0: parent, children, siblings, grandparent, grandchildren). Every node needs at least
        one, so it must be at least the distance to the nearest other node.
    negatives : {"uniform", "farther", "tree"}, default "tree"
        How negatives are drawn (see the module docstring).
    temperature : float, default 1.0
        For ``negatives="tree"``: weights ``exp(-t / temperature)``; ``> 0``.
    seed : int, default 0
        Seeds the sampler's own :class:`torch.Generator`.

    Examples
    --------
    >>> import torch
    >>> t = torch.tensor([[0.0, 1, 1, 2], [1, 0, 2, 3], [1, 2, 0, 1], [2, 3, 1, 0]])
    >>> sampler = ListSampler(t, k_negatives=2, max_positive_distance=1.0, seed=0)
    >>> batch = sampler.sample(torch.tensor([0, 3]))
    >>> batch.negatives.shape
    torch.Size([2, 2])
    >>> bool((batch.negatives != batch.anchor[:, None]).all())
    True
    """

    def __init__(
        self,
        tree_distances: torch.Tensor,
        *,
        k_negatives: int = 24,
        max_positive_distance: float = 2.0,
        negatives: str = "tree",
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        distances = _check_tree_distances(tree_distances)
        self.k_negatives = _check_int("k_negatives", k_negatives, minimum=1)
        self.max_positive_distance = _check_positive("max_positive_distance", max_positive_distance)
        if negatives not in NEGATIVE_STRATEGIES:
            raise ValueError(f"negatives must be one of {NEGATIVE_STRATEGIES}, got {negatives!r}")
        self.negatives = negatives
        self.temperature = _check_positive("temperature", temperature)
        self.seed = _check_int("seed", seed, minimum=None)
        self.tree_distances = distances
        self.n_nodes = distances.shape[0]
        self.generator = torch.Generator().manual_seed(self.seed)

        # Positives in CSR form: the candidates of anchor a are
        # positive_index[positive_offset[a] : positive_offset[a] + positive_count[a]].
        off_diagonal = ~torch.eye(self.n_nodes, dtype=torch.bool)
        candidate = (distances <= self.max_positive_distance) & off_diagonal
        self.positive_count = candidate.sum(dim=1)
        if (self.positive_count == 0).any():
            lonely = int(torch.nonzero(self.positive_count == 0)[0])
            nearest = float(distances[lonely][off_diagonal[lonely]].min())
            raise ValueError(
                f"max_positive_distance={self.max_positive_distance:g} leaves node index {lonely} "
                f"without a positive (its nearest node is at tree distance {nearest:g})"
            )
        self.positive_offset = torch.cumsum(self.positive_count, dim=0) - self.positive_count
        self.positive_index = torch.nonzero(candidate)[:, 1]  # row-major: grouped by anchor

        if negatives == "farther":
            # Each row sorted by tree distance: the nodes farther than d are a suffix.
            sorted_rows = torch.sort(distances, dim=1, stable=True)
            self._sorted_distances = sorted_rows.values
            self._sorted_index = sorted_rows.indices
        elif negatives == "tree":
            weights = torch.exp(-distances / self.temperature)
            weights.fill_diagonal_(0.0)
            self._negative_weights = weights

    @classmethod
    def from_tree(cls, tree: Any, *, lineal_discount: float = 0.0, **kwargs: Any) -> ListSampler:
        """Build from a :class:`hyperloss.trees.Tree` (``tree.distances(lineal_discount=...)``).

        Parameters
        ----------
        tree : hyperloss.trees.Tree
        lineal_discount : float, default 0.0
            Passed to ``tree.distances``.
        **kwargs
            Passed to :class:`ListSampler`.
        """
        return cls(tree.distances(lineal_discount=lineal_discount), **kwargs)

    # ----------------------------------------------------------------- drawing
    def sample(self, anchors: torch.Tensor) -> ListBatch:
        """Draw one positive and ``k_negatives`` negatives for each given anchor.

        Parameters
        ----------
        anchors : LongTensor (B,)
            Tree indices in ``[0, N)``.

        Returns
        -------
        ListBatch
            ``anchor (B,)``, ``positive (B,)``, ``negatives (B, K)``.
        """
        anchors = self._check_anchors(anchors)
        positives = self._positives(anchors)
        return ListBatch(anchors, positives, self._negatives_for(anchors, positives))

    def sample_random(self, batch_size: int) -> ListBatch:
        """:meth:`sample` for ``batch_size`` anchors drawn uniformly with replacement."""
        batch_size = _check_int("batch_size", batch_size, minimum=1)
        anchors = torch.randint(self.n_nodes, (batch_size,), generator=self.generator)
        return self.sample(anchors)

    def epoch(self, batch_size: int) -> Iterator[ListBatch]:
        """One pass over all nodes as anchors, in a random order, ``batch_size`` at a time.

        The last batch may be smaller. The permutation is drawn when iteration starts.
        """
        batch_size = _check_int("batch_size", batch_size, minimum=1)
        order = torch.randperm(self.n_nodes, generator=self.generator)
        for start in range(0, self.n_nodes, batch_size):
            yield self.sample(order[start : start + batch_size])

    def nodes(self, size: int) -> torch.Tensor:
        """A random block of distinct node indices (for the rank-order loss).

        Parameters
        ----------
        size : int
            ``>= 1``; capped at ``N``.

        Returns
        -------
        LongTensor (min(size, N),)
            Sorted ascending (so the block keeps the tree's index order).
        """
        size = _check_int("size", size, minimum=1)
        block = torch.randperm(self.n_nodes, generator=self.generator)[: min(size, self.n_nodes)]
        return torch.sort(block).values

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The generator state (a ByteTensor) and the settings, for exact resumption."""
        return {"generator": self.generator.get_state(), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state saved by :meth:`state_dict`."""
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        extra = f", temperature={self.temperature:g}" if self.negatives == "tree" else ""
        return (
            f"ListSampler(n_nodes={self.n_nodes}, k_negatives={self.k_negatives}, "
            f"max_positive_distance={self.max_positive_distance:g}, "
            f"negatives={self.negatives!r}{extra}, seed={self.seed})"
        )

    # ----------------------------------------------------------------- helpers
    def _positives(self, anchors: torch.Tensor) -> torch.Tensor:
        count = self.positive_count[anchors]
        uniform = torch.rand(anchors.shape, generator=self.generator, dtype=torch.float64)
        # floor(u * count) is in [0, count); the clamp guards u * count rounding up to count.
        pick = torch.minimum((uniform * count).long(), count - 1)
        return self.positive_index[self.positive_offset[anchors] + pick]

    def _negatives_for(self, anchors: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        shape = (anchors.shape[0], self.k_negatives)
        if self.negatives == "tree":
            return torch.multinomial(
                self._negative_weights[anchors],
                self.k_negatives,
                replacement=True,
                generator=self.generator,
            )
        if self.negatives == "uniform":
            return self._uniform_except_anchor(anchors, shape)
        return self._farther_than_positive(anchors, positives, shape)

    def _uniform_except_anchor(self, anchors: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        # Draw from N - 1 values and skip the anchor: exactly uniform over the other nodes.
        draw = torch.randint(self.n_nodes - 1, shape, generator=self.generator)
        return draw + (draw >= anchors[:, None]).long()

    def _farther_than_positive(
        self, anchors: torch.Tensor, positives: torch.Tensor, shape: tuple[int, int]
    ) -> torch.Tensor:
        positive_distance = self.tree_distances[anchors, positives]
        rows = self._sorted_distances[anchors]
        # First position in the sorted row whose distance exceeds the positive's.
        first_farther = torch.searchsorted(rows, positive_distance[:, None], right=True)[:, 0]
        n_farther = self.n_nodes - first_farther
        uniform = torch.rand(shape, generator=self.generator, dtype=torch.float64)
        pick = torch.minimum((uniform * n_farther[:, None]).long(), n_farther[:, None] - 1)
        # Anchors with no farther node get an out-of-range position; clamp it and replace it
        # with the uniform fallback below.
        position = (first_farther[:, None] + pick.clamp_min(0)).clamp_max(self.n_nodes - 1)
        farther = torch.gather(self._sorted_index[anchors], 1, position)
        fallback = self._uniform_except_anchor(anchors, shape)
        return torch.where((n_farther > 0)[:, None], farther, fallback)

    def _check_anchors(self, anchors: torch.Tensor) -> torch.Tensor:
        if not isinstance(anchors, torch.Tensor):
            raise TypeError(f"anchors must be a LongTensor, got {type(anchors).__name__}")
        if anchors.dtype != torch.long or anchors.ndim != 1:
            raise ValueError(
                f"anchors must be a 1-D LongTensor, got dtype {anchors.dtype} and shape "
                f"{tuple(anchors.shape)}"
            )
        if anchors.numel() and (anchors.min() < 0 or anchors.max() >= self.n_nodes):
            raise ValueError(f"anchors must be tree indices in [0, {self.n_nodes})")
        return anchors


def _check_tree_distances(tree_distances: torch.Tensor) -> torch.Tensor:
    if not isinstance(tree_distances, torch.Tensor):
        raise TypeError(
            f"tree_distances must be a torch.Tensor, got {type(tree_distances).__name__}"
        )
    if tree_distances.ndim != 2 or tree_distances.shape[0] != tree_distances.shape[1]:
        raise ValueError(
            "tree_distances must be a square (N, N) matrix, got shape "
            f"{tuple(tree_distances.shape)}"
        )
    if tree_distances.shape[0] < 2:
        raise ValueError(
            f"tree_distances must cover at least 2 nodes, got {tree_distances.shape[0]}"
        )
    distances = tree_distances.detach().to(torch.float64)
    if not torch.isfinite(distances).all() or (distances < 0).any():
        raise ValueError("tree_distances must be finite and non-negative")
    return distances


def _check_int(name: str, value: Any, *, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)
