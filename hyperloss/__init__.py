"""hyperloss: hyperbolic embeddings that respect a taxonomy.

The public API, layer by layer (see DESIGN.md): geometry on geoopt's Lorentz model, tree ground
truth and datasets, fidelity metrics, ranking losses, and the embedding of a whole tree
(combinatorial construction, Riemannian training, the ``Embedding`` result).
"""

from hyperloss.construction import construct
from hyperloss.datasets import balanced_tree, naics, random_tree
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
    LambdaRankLoss,
    RankOrderPreservationLoss,
    lambda_rank_loss,
    rank_order_preservation_loss,
)
from hyperloss.metrics import (
    FidelityReport,
    cophenetic_correlation,
    distortion,
    evaluate,
    mean_average_precision,
    mean_rank,
    ndcg_at_k,
    per_anchor_spearman,
    spearman,
    spearman_ceiling,
)
from hyperloss.training import fit
from hyperloss.trees import Tree, UnknownNodeError

__version__ = "0.1.0"

__all__ = [
    "Embedding",
    "FidelityReport",
    "LambdaRankLoss",
    "LorentzDistance",
    "RankOrderPreservationLoss",
    "Tree",
    "UnknownNodeError",
    "balanced_tree",
    "construct",
    "cophenetic_correlation",
    "distortion",
    "evaluate",
    "expmap0",
    "fit",
    "hyperbolic_radius",
    "lambda_rank_loss",
    "logmap0",
    "lorentz",
    "lorentz_distance",
    "lorentz_to_poincare",
    "mean_average_precision",
    "mean_rank",
    "naics",
    "ndcg_at_k",
    "pairwise_distances",
    "per_anchor_spearman",
    "poincare_to_lorentz",
    "random_tree",
    "rank_order_preservation_loss",
    "spearman",
    "spearman_ceiling",
]
