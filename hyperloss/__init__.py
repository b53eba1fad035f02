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
from hyperloss.losses import LambdaRankLoss, RankOrderPreservationLoss
from hyperloss.metrics import FidelityReport, evaluate
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
    "evaluate",
    "expmap0",
    "hyperbolic_radius",
    "logmap0",
    "lorentz",
    "lorentz_distance",
    "lorentz_to_poincare",
    "naics",
    "pairwise_distances",
    "poincare_to_lorentz",
    "random_tree",
]
