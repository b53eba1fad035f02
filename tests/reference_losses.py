"""Plain-loop references of the ranking losses, written straight from their definitions.

They loop in Python over anchors, pairs and triples the way the research code did, with one
torch scalar per term so autograd gives their gradients. ``reference_rank_order_loss`` and
``reference_lambda_rank_loss`` take the embedding distances as given (like the functional
losses); the ``..._from_points`` versions start, like the modules, from points, names and a
distance callable, and compute each distance with its own ``distance_fn`` call inside the
loops, as the research code did. ``tests/test_losses.py`` holds the vectorized losses and
modules against them; ``benchmarks/losses.py`` times them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

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
) -> Tensor:
    """LambdaRank by loops over anchors and ordered pairs of list items.

    |dNDCG@k| is found literally: swap the two items in the current ranking and recompute
    NDCG@k (independent of the closed form the vectorized loss uses).
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
        relevance = {j: (max_t - t[j] + 1e-6) / (max_t + 1e-6) for j in items}
        scores = {j: -d[b, j] for j in items}
        ranked = sorted(items, key=lambda j: -scores[j].item())  # stable: list order on ties
        position = {j: p for p, j in enumerate(ranked)}
        ideal = sorted(relevance.values(), reverse=True)
        ideal_dcg = sum(r * discount(p + 1) for p, r in enumerate(ideal))

        def ndcg(ranking, relevance=relevance, ideal_dcg=ideal_dcg):
            return sum(relevance[j] * discount(p + 1) for p, j in enumerate(ranking)) / ideal_dcg

        current_ndcg = ndcg(ranked)
        terms = []
        for i in items:
            for j in items:
                if relevance[i] > relevance[j]:
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


# ----------------------------------------------------------------------------------------------
# From points, the way the research code ran: one distance_fn call per pair inside the loops
# ----------------------------------------------------------------------------------------------


def reference_rank_order_loss_from_points(
    embeddings: Tensor,
    codes: Sequence[str] | Tensor,
    distance_fn: Callable[[Tensor, Tensor], Tensor],
    tree_distances: Tensor,
    code_to_idx: Mapping[str, int],
    *,
    weight: float = 0.1,
    margin: float = 0.1,
    min_distance: float = 0.1,
    reduction: str = "violations",
) -> Tensor:
    """``RankOrderPreservationLoss`` from points and names by plain loops.

    Names not in ``code_to_idx`` are dropped (a LongTensor of tree indices is used as is); each
    embedding distance is one ``distance_fn(x_i, x_j)`` call on two single points, made in a
    loop over the pairs ``i < j`` of kept rows; then :func:`reference_rank_order_loss`.
    """
    if isinstance(codes, Tensor):
        tree_rows = [int(index) for index in codes]
    else:
        tree_rows = [code_to_idx.get(code) for code in codes]
    kept = [row for row, tree_row in enumerate(tree_rows) if tree_row is not None]
    n = len(kept)
    if n < 3:
        zero = embeddings.sum() * 0.0
        return zero.expand(len(tree_rows)).clone() if reduction == "none" else zero
    rows = [[embeddings.new_zeros(()) for _ in range(n)] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            distance = distance_fn(embeddings[kept[i]], embeddings[kept[j]])
            rows[i][j] = rows[j][i] = distance
    embedding_distances = torch.stack([torch.stack(row) for row in rows])
    kept_tree_rows = [tree_rows[row] for row in kept]
    tree_block = tree_distances[kept_tree_rows][:, kept_tree_rows].to(torch.float64)
    loss = weight * reference_rank_order_loss(
        embedding_distances,
        tree_block,
        margin=margin,
        min_distance=min_distance,
        reduction=reduction,
    )
    if reduction != "none":
        return loss
    per_row = [embeddings.new_zeros(()) for _ in tree_rows]
    for position, row in enumerate(kept):
        per_row[row] = loss[position]
    return torch.stack(per_row)


def reference_lambda_rank_loss_from_points(
    anchor_emb: Tensor,
    positive_emb: Tensor,
    negative_embs: Tensor,
    anchor_codes: Sequence[str],
    positive_codes: Sequence[str],
    negative_codes: Sequence[Sequence[str]],
    distance_fn: Callable[[Tensor, Tensor], Tensor],
    tree_distances: Tensor,
    code_to_idx: Mapping[str, int],
    *,
    weight: float = 0.15,
    sigma: float = 1.0,
    ndcg_k: int = 10,
    mask: Tensor | None = None,
) -> Tensor:
    """``LambdaRankLoss`` from points and names by plain loops over anchors and list items.

    An anchor whose anchor or positive name is unknown is skipped; a negative whose name is
    unknown or whose ``mask`` entry is False is dropped from its list. Each embedding distance
    is one ``distance_fn(anchor, item)`` call on two single points; each list then goes
    through :func:`reference_lambda_rank_loss`, and the result is ``weight`` times the mean
    over the anchors kept.
    """
    k = len(negative_codes[0]) if len(negative_codes) else 0
    losses = []
    for b, (anchor, positive) in enumerate(zip(anchor_codes, positive_codes, strict=True)):
        if anchor not in code_to_idx or positive not in code_to_idx:
            continue
        items = [(positive, positive_emb[b])]
        for j, code in enumerate(negative_codes[b]):
            if code in code_to_idx and (mask is None or bool(mask[b, j])):
                items.append((code, negative_embs[b * k + j]))
        distances = torch.stack([distance_fn(anchor_emb[b], point) for _, point in items])
        tree_row = code_to_idx[anchor]
        item_tree_distances = [float(tree_distances[tree_row, code_to_idx[c]]) for c, _ in items]
        losses.append(
            reference_lambda_rank_loss(
                distances[None],
                torch.tensor([item_tree_distances], dtype=torch.float64),
                sigma=sigma,
                ndcg_k=ndcg_k,
            )
        )
    if not losses:
        return (anchor_emb.sum() + positive_emb.sum() + negative_embs.sum()) * 0.0
    return weight * torch.stack(losses).mean()
