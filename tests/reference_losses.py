"""Plain-loop references of the ranking losses, written straight from their definitions.

They loop in Python over anchors, pairs and triples the way the research code did, with one
torch scalar per term so autograd gives their gradients. ``tests/test_losses.py`` holds the
vectorized losses against them; ``benchmarks/losses.py`` times them.
"""

from __future__ import annotations

import math

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
