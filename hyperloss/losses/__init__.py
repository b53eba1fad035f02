"""Ranking losses that make embedding distances respect a tree.

- :class:`RankOrderPreservationLoss` / :func:`rank_order_preservation_loss`: a margin hinge on
  every (anchor, closer, farther) triple of the tree, exact and vectorized.
- :class:`LambdaRankLoss` / :func:`lambda_rank_loss`: LambdaRank on per-anchor lists
  [positive, negatives...] for NDCG@k.

The functional forms take distance tensors; the modules take names (or indices), points and
any distance callable with the ``geoopt.Manifold.dist`` broadcasting contract.
"""

from hyperloss.losses.functional import lambda_rank_loss, rank_order_preservation_loss
from hyperloss.losses.modules import LambdaRankLoss, RankOrderPreservationLoss

__all__ = [
    "LambdaRankLoss",
    "RankOrderPreservationLoss",
    "lambda_rank_loss",
    "rank_order_preservation_loss",
]
