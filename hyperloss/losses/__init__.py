"""Ranking losses that make embedding distances respect a tree.

- :class:`RankOrderPreservationLoss` / :func:`rank_order_preservation_loss`: a margin hinge on
  every (anchor, closer, farther) triple of a block of nodes, exact and vectorized.
- :class:`LambdaRankLoss` / :func:`lambda_rank_loss`: LambdaRank on per-anchor lists
  [positive, negatives...] for NDCG@k, with the NDCG relevance of
  :func:`hyperloss.relevance.tree_relevance`.
- :class:`GlobalRankLoss` / :func:`global_rank_loss`: a margin hinge over every pair of pairs
  of a block, with a scale-relative margin (what Spearman over all pairs rewards).
- :class:`RankOrderListLoss` / :func:`rank_order_list_loss`: the rank-order hinge on per-anchor
  lists [positive, negatives...] (the local term of training from random points).

The functional forms take distance tensors. The modules are built from a
:class:`~hyperloss.trees.Tree` and take points indexed by tree index, integer index tensors
and any distance callable with the ``geoopt.Manifold.dist`` broadcasting contract; tree
distances come from the tree on demand, for exactly the index pairs needed (nothing N x N).
:class:`TreeDistanceMatrix` adapts a dense matrix and a name map (the original signatures).
"""

from hyperloss.losses.functional import (
    global_rank_loss,
    lambda_rank_loss,
    rank_order_list_loss,
    rank_order_preservation_loss,
)
from hyperloss.losses.modules import (
    GlobalRankLoss,
    LambdaRankLoss,
    RankOrderListLoss,
    RankOrderPreservationLoss,
)
from hyperloss.losses.sources import TreeDistanceMatrix

__all__ = [
    "GlobalRankLoss",
    "LambdaRankLoss",
    "RankOrderListLoss",
    "RankOrderPreservationLoss",
    "TreeDistanceMatrix",
    "global_rank_loss",
    "lambda_rank_loss",
    "rank_order_list_loss",
    "rank_order_preservation_loss",
]
