"""Plain-loop references of the ranking losses, written straight from their definitions.

They loop in Python over anchors, pairs and triples the way the research code did, with one
torch scalar per term so autograd gives their gradients. ``reference_rank_order_loss``,
``reference_lambda_rank_loss`` and ``reference_global_rank_loss`` take the embedding distances
as given (like the functional losses); the ``..._from_points`` versions start, like the
modules, from points, their tree rows and a distance callable, compute each distance with its
own ``distance_fn`` call inside the loops, as the research code did, and read tree distances
from a dense matrix (``Tree.distances()`` on a small tree: independent of the on-demand
``Tree.distance`` the modules use). ``tests/test_losses.py`` holds the vectorized losses and
modules against them; ``benchmarks/losses.py`` times them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def reference_rank_order_loss(
    embedding_distances: Tensor,
    tree_distances: Tensor,
    *,
    margin: float = 0.1,
    min_distance: float = 0.1,
    reduction: str = "violations",
) -> Tensor:
    """The rank-order preservation loss by loops over anchors and candidate pairs."""
    d = embedding_distances
    t = tree_distances.tolist()
    n = d.shape[0]
    per_anchor = []
    n_terms = 0
    n_positive = 0
    for i in range(n):
        candidates = [j for j in range(n) if j != i and t[i][j] >= min_distance]
        terms = []
        if len(candidates) >= 2:
            for a in range(len(candidates)):
                for b in range(a + 1, len(candidates)):
                    j, k = candidates[a], candidates[b]
                    if t[i][j] == t[i][k]:
                        continue
                    if t[i][j] > t[i][k]:
                        j, k = k, j
                    term = torch.relu(d[i, j] - d[i, k] + margin)
                    terms.append(term)
                    n_terms += 1
                    if term.item() > 0:
                        n_positive += 1
        per_anchor.append(torch.stack(terms).sum() if terms else d.new_zeros(()))
    per_anchor = torch.stack(per_anchor) if per_anchor else d.new_zeros(0)
    if reduction == "none":
        return per_anchor
    total = per_anchor.sum()
    if reduction == "sum":
        return total
    if reduction == "violations":
        return total / n_positive if n_positive else total * 0.0
    if reduction == "mean":
        return total / n_terms if n_terms else total * 0.0
    raise ValueError(reduction)


def reference_lambda_rank_loss(
    embedding_distances: Tensor,
    tree_distances: Tensor,
    *,
    sigma: float = 1.0,
    ndcg_k: int = 10,
    mask: Tensor | None = None,
    reduction: str = "mean",
    relevance: Callable[[float, float], float] | None = None,
) -> Tensor:
    """LambdaRank by loops over anchors and ordered pairs of list items.

    |dNDCG@k| is found literally: swap the two items in the current ranking and recompute
    NDCG@k (independent of the closed form the vectorized loss uses). ``relevance(t, t_max)``
    grades one item (default: ``(t_max - t + 1e-6) / (t_max + 1e-6)``, written out here).
    """
    d = embedding_distances
    batch, n = d.shape

    def discount(position: int) -> float:
        return 1.0 / math.log2(position + 1) if position <= ndcg_k else 0.0

    per_anchor = []
    valid_anchors = 0
    for b in range(batch):
        items = [j for j in range(n) if mask is None or bool(mask[b, j])]
        if not items:
            per_anchor.append(d.new_zeros(()))
            continue
        valid_anchors += 1
        t = {j: float(tree_distances[b, j]) for j in items}
        max_t = max(t.values())
        if relevance is None:
            grades = {j: (max_t - t[j] + 1e-6) / (max_t + 1e-6) for j in items}
        else:
            grades = {j: relevance(t[j], max_t) for j in items}
        scores = {j: -d[b, j] for j in items}
        ranked = sorted(items, key=lambda j: -scores[j].item())  # stable: list order on ties
        position = {j: p for p, j in enumerate(ranked)}
        ideal = sorted(grades.values(), reverse=True)
        ideal_dcg = sum(r * discount(p + 1) for p, r in enumerate(ideal))

        def ndcg(ranking, grades=grades, ideal_dcg=ideal_dcg):
            if ideal_dcg == 0:  # every grade 0: no pair below either
                return 0.0
            return sum(grades[j] * discount(p + 1) for p, j in enumerate(ranking)) / ideal_dcg

        current_ndcg = ndcg(ranked)
        terms = []
        for i in items:
            for j in items:
                if grades[i] > grades[j]:
                    # |change in NDCG@k| when i and j swap places in the current ranking
                    swapped = list(ranked)
                    swapped[position[i]], swapped[position[j]] = j, i
                    delta_ndcg = abs(ndcg(swapped) - current_ndcg)
                    pair_loss = torch.log1p(torch.exp(-sigma * (scores[i] - scores[j])))
                    terms.append(delta_ndcg * pair_loss)
        per_anchor.append(torch.stack(terms).sum() if terms else d.new_zeros(()))
    per_anchor = torch.stack(per_anchor)
    if reduction == "none":
        return per_anchor
    if reduction == "sum":
        return per_anchor.sum()
    return per_anchor.sum() / max(valid_anchors, 1)


def reference_global_rank_loss(
    embedding_distances: Tensor,
    tree_distances: Tensor,
    *,
    margin: float = 0.1,
    relative_margin: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """The global rank loss by loops over every ordered pair of pairs.

    Takes pair vectors (P,) or an (n, n) block (its pairs i < j); the margin is scaled by
    mean(d) / mean(t) (a constant) when ``relative_margin``.
    """
    d, t = embedding_distances, tree_distances
    if d.dim() == 2:
        n = d.shape[0]
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
        d = torch.stack([d[i, j] for i, j in pairs]) if pairs else d.new_zeros(0)
        t = torch.tensor([float(t[i, j]) for i, j in pairs], dtype=torch.float64)
    t = [float(x) for x in t]
    if relative_margin and len(t):
        mean_t = sum(t) / len(t)
        scale = float(d.detach().sum()) / len(t) / mean_t if mean_t > 0 else 0.0
        margin = margin * scale
    terms = []
    for a in range(len(t)):
        for b in range(len(t)):
            if t[a] < t[b]:
                terms.append(torch.relu(d[a] - d[b] + margin))
    total = torch.stack(terms).sum() if terms else d.sum() * 0.0
    return total if reduction == "sum" else total / max(len(terms), 1)


# ----------------------------------------------------------------------------------------------
# From points, the way the research code ran: one distance_fn call per pair inside the loops
# ----------------------------------------------------------------------------------------------


def _block_from_points(embeddings, tree_rows, distance_fn, tree_distances):
    """(n, n) embedding distances by one distance_fn call per pair, and the (n, n) tree block."""
    n = len(tree_rows)
    rows = [[embeddings.new_zeros(()) for _ in range(n)] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            distance = distance_fn(embeddings[i], embeddings[j])
            rows[i][j] = rows[j][i] = distance
    embedding_distances = torch.stack([torch.stack(row) for row in rows])
    tree_block = torch.tensor(
        [[float(tree_distances[a, b]) for b in tree_rows] for a in tree_rows], dtype=torch.float64
    )
    return embedding_distances, tree_block


def reference_rank_order_loss_from_points(
    embeddings: Tensor,
    tree_rows: Sequence[int],
    distance_fn: Callable[[Tensor, Tensor], Tensor],
    tree_distances: Tensor,
    *,
    weight: float = 0.1,
    margin: float = 0.1,
    min_distance: float = 0.1,
    reduction: str = "violations",
) -> Tensor:
    """``RankOrderPreservationLoss`` of the block ``tree_rows`` by plain loops.

    ``embeddings`` (n, D + 1) holds the points of the nodes ``tree_rows`` (n ints), in that
    order; each embedding distance is one ``distance_fn(x_i, x_j)`` call on two single points,
    made in a loop over the pairs ``i < j``; then :func:`reference_rank_order_loss`.
    """
    n = len(tree_rows)
    if n < 3:
        zero = embeddings.sum() * 0.0
        return zero.expand(n).clone() if reduction == "none" else zero
    embedding_distances, tree_block = _block_from_points(
        embeddings, list(tree_rows), distance_fn, tree_distances
    )
    return weight * reference_rank_order_loss(
        embedding_distances, tree_block, margin=margin, min_distance=min_distance,
        reduction=reduction,
    )  # fmt: skip


def reference_global_rank_loss_from_points(
    embeddings: Tensor,
    tree_rows: Sequence[int],
    distance_fn: Callable[[Tensor, Tensor], Tensor],
    tree_distances: Tensor,
    *,
    weight: float = 10.0,
    margin: float = 0.1,
    reduction: str = "mean",
) -> Tensor:
    """``GlobalRankLoss`` of the block ``tree_rows`` by plain loops (scale-relative margin)."""
    if len(tree_rows) < 3:
        return embeddings.sum() * 0.0
    embedding_distances, tree_block = _block_from_points(
        embeddings, list(tree_rows), distance_fn, tree_distances
    )
    return weight * reference_global_rank_loss(
        embedding_distances, tree_block, margin=margin, reduction=reduction
    )


def reference_lambda_rank_loss_from_points(
    anchor_points: Tensor,
    item_points: Tensor,
    anchor_rows: Sequence[int],
    item_rows: Sequence[Sequence[int]],
    distance_fn: Callable[[Tensor, Tensor], Tensor],
    tree_distances: Tensor,
    *,
    weight: float = 0.15,
    sigma: float = 1.0,
    ndcg_k: int = 10,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``LambdaRankLoss`` by plain loops over anchors and list items.

    ``anchor_points`` (B, D + 1) and ``item_points`` (B, L, D + 1) hold the points of the nodes
    ``anchor_rows`` (B ints) and ``item_rows`` (B lists of L ints). An item whose ``mask``
    entry is False is dropped from its list; an anchor with no item left is not counted.
    Each embedding distance is one ``distance_fn(anchor, item)`` call on two single points;
    each list then goes through :func:`reference_lambda_rank_loss`, and the result is
    ``weight`` times the mean over the anchors kept (or the per-anchor losses, 0 where none).
    """
    per_anchor = []
    for b, anchor in enumerate(anchor_rows):
        items = [j for j in range(len(item_rows[b])) if mask is None or bool(mask[b, j])]
        if not items:
            per_anchor.append(None)
            continue
        distances = torch.stack([distance_fn(anchor_points[b], item_points[b, j]) for j in items])
        item_tree = [float(tree_distances[anchor, item_rows[b][j]]) for j in items]
        per_anchor.append(
            reference_lambda_rank_loss(
                distances[None],
                torch.tensor([item_tree], dtype=torch.float64),
                sigma=sigma,
                ndcg_k=ndcg_k,
                reduction="sum",
            )
        )
    kept = [loss for loss in per_anchor if loss is not None]
    zero = (anchor_points.sum() + item_points.sum()) * 0.0
    if reduction == "none":
        return weight * torch.stack([zero if loss is None else loss for loss in per_anchor])
    if not kept:
        return zero
    total = torch.stack(kept).sum()
    return weight * (total if reduction == "sum" else total / len(kept))
