"""Fidelity metrics: how faithfully embedding distances reproduce a tree.

Two public modules, re-exported here:

- :mod:`hyperloss.metrics.functional`: each metric as a plain, exact function of dense
  ``(N, N)`` matrices (embedding distances against tree distances or a relevance matrix),
  checked against scipy and scikit-learn: :func:`spearman`, :func:`spearman_ceiling`,
  :func:`per_anchor_spearman`, :func:`ndcg_at_k`, :func:`mean_average_precision`,
  :func:`mean_rank`, :func:`cophenetic_correlation`, :func:`distortion`.
- :mod:`hyperloss.metrics.evaluation`: :func:`evaluate` scores points (or an ``Embedding``)
  against a tree at any size and returns a :class:`FidelityReport`: exact up to
  :data:`EXACT_LIMIT` (4,096) nodes, above it from a seeded sample of anchors (each scored
  exactly against all nodes) and of pairs, with a standard error for every figure and
  nothing ``N x N`` built. :func:`monitor_metrics` is the cheap version for watching a fit
  (Spearman and NDCG@k only; seconds at a million nodes).

- :mod:`hyperloss.metrics.subsets`: the per-anchor figures for *given* anchors and
  candidates (held-out evaluation): :func:`anchor_scores`, :func:`evaluate_anchors`,
  :func:`subset_monitor`.

Private engines: ``_anchors`` (per-anchor scans: one sort per anchor row), ``_pairs``
(streamed and sampled pair statistics), ``_sampled`` (rows and pairs computed on demand),
``_codes`` (tree distances as small integer codes), ``_validation`` (every input check).
"""

from hyperloss.metrics.evaluation import (
    DEFAULT_ANCHORS,
    DEFAULT_PAIRS,
    EXACT_LIMIT,
    FidelityReport,
    evaluate,
    monitor_metrics,
)
from hyperloss.metrics.functional import (
    cophenetic_correlation,
    distortion,
    mean_average_precision,
    mean_rank,
    ndcg_at_k,
    per_anchor_spearman,
    spearman,
    spearman_ceiling,
)
from hyperloss.metrics.subsets import anchor_scores, evaluate_anchors, subset_monitor

__all__ = [
    "DEFAULT_ANCHORS",
    "DEFAULT_PAIRS",
    "EXACT_LIMIT",
    "FidelityReport",
    "anchor_scores",
    "cophenetic_correlation",
    "distortion",
    "evaluate",
    "evaluate_anchors",
    "mean_average_precision",
    "mean_rank",
    "monitor_metrics",
    "ndcg_at_k",
    "per_anchor_spearman",
    "spearman",
    "spearman_ceiling",
    "subset_monitor",
]
