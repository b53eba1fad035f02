"""hyperloss: hyperbolic embeddings that respect a taxonomy.

The public API, layer by layer (see DESIGN.md): geometry on geoopt's Lorentz model, tree ground
truth and datasets, fidelity metrics, ranking losses, and the embedding of a whole tree
(combinatorial construction, Riemannian training, the ``Embedding`` result).
Input checks shared by every layer live in :mod:`hyperloss.validation`.
"""

from hyperloss.construction import construct
from hyperloss.datasets import balanced_tree, icd10cm, naics, random_tree
from hyperloss.embedding import Embedding
from hyperloss.geometry import (
    LorentzDistance,
    expmap0,
    hyperbolic_radius,
    logmap0,
    lorentz,
    lorentz_distance,
    lorentz_to_poincare,
    pairwise_distances,
    poincare_to_lorentz,
)
from hyperloss.losses import (
    GlobalRankLoss,
    LambdaRankLoss,
    RankOrderListLoss,
    RankOrderPreservationLoss,
    TreeDistanceMatrix,
    global_rank_loss,
    lambda_rank_loss,
    rank_order_list_loss,
    rank_order_preservation_loss,
)
from hyperloss.metrics import (
    FidelityReport,
    cophenetic_correlation,
    distortion,
    evaluate,
    mean_average_precision,
    mean_rank,
    monitor_metrics,
    ndcg_at_k,
    per_anchor_spearman,
    spearman,
    spearman_ceiling,
)
from hyperloss.optim import TangentRiemannianAdam
from hyperloss.relevance import tree_relevance
from hyperloss.training import fit
from hyperloss.trees import Tree, UnknownNodeError

__version__ = "0.1.0"

__all__ = [
    "Embedding",
    "FidelityReport",
    "GlobalRankLoss",
    "LambdaRankLoss",
    "LorentzDistance",
    "RankOrderListLoss",
    "RankOrderPreservationLoss",
    "TangentRiemannianAdam",
    "Tree",
    "TreeDistanceMatrix",
    "UnknownNodeError",
    "balanced_tree",
    "construct",
    "cophenetic_correlation",
    "distortion",
    "evaluate",
    "expmap0",
    "fit",
    "global_rank_loss",
    "hyperbolic_radius",
    "icd10cm",
    "lambda_rank_loss",
    "logmap0",
    "lorentz",
    "lorentz_distance",
    "lorentz_to_poincare",
    "mean_average_precision",
    "mean_rank",
    "monitor_metrics",
    "naics",
    "ndcg_at_k",
    "pairwise_distances",
    "per_anchor_spearman",
    "poincare_to_lorentz",
    "random_tree",
    "rank_order_list_loss",
    "rank_order_preservation_loss",
    "spearman",
    "spearman_ceiling",
    "tree_relevance",
]
