"""Fit a hyperbolic embedding of a tree with the ranking losses.

:func:`fit` is the one-call entry point: it places the nodes (``init``), then minimises a
weighted sum of ranking losses with a Riemannian Adam step, and returns an
:class:`~hyperloss.embedding.Embedding`.

Design and evidence
-------------------
All numbers: NAICS 2022 (2,126 nodes), ``hyperloss.metrics``, one seed, on the shared 2-core
development machine (``torch.set_num_threads(1)``); Spearman over all pairs has a tie ceiling of
0.9768 on NAICS (``metrics.spearman_ceiling``).

*Parametrisation: tangent vectors at the origin.* Each point is stored as ``v`` with
``x = expmap0(v)`` and stepped by :class:`~hyperloss.optim.TangentRiemannianAdam`, Riemannian
Adam written in these coordinates. Evidence: from the 10-D construction (hyperbolic radius up
to 23.5), one epoch of ``geoopt.optim.RiemannianAdam`` on a ``geoopt.ManifoldParameter``
turned points into NaN (the losses refused the embeddings at the second step); the tangent
version stays finite and keeps NDCG@10 = 1.0. Near the origin both give the same steps
(checked: identical metrics after 10 epochs from random points).
``parametrization="lorentz"`` keeps the geoopt path.

*Objective.* ``default_losses``: :class:`~hyperloss.losses.RankOrderPreservationLoss`
(weight 0.1) and :class:`~hyperloss.losses.GlobalRankLoss` (weight 10) on a block of 256
random nodes per step, :class:`~hyperloss.losses.LambdaRankLoss` (weight 10) on 128 lists of
[positive within tree distance 2, 24 tree-weighted negatives]. Fine-tuning the 2-D
construction (Spearman 0.9427, NDCG@10 0.99934), 60 epochs, lr 0.02, cosine schedule,
best state kept:

==========================================  =========  ========
weights (rank-order, LambdaRank, global)    Spearman   NDCG@10
==========================================  =========  ========
1, 1, 0 (no global term; constant lr 0.01)   0.9649     0.99937
0.1, 3, 2.5                                  0.9712     0.99936
0.1, 3, 5                                    0.9720     0.99934
0.1, 3, 10 (NDCG fell to 0.99924: kept       0.9427     0.99934
construction)
0.1, 10, 10 (default)                        0.9723     0.99938
==========================================  =========  ========

The global term (every pair against every pair, i.e. what Spearman measures) adds ~0.007
Spearman; more LambdaRank weight protects NDCG@10; dropping the rank-order term lowered
NDCG@10 (0.99903 vs 0.99927 in an otherwise equal run with an earlier global weighting). A
constant learning rate let NDCG@10 drift down after ~20 epochs (constant lr 0.03: 0.9965 at
epoch 30); the cosine decay keeps it. In 5 and 10 dimensions the construction is already at
the Spearman ceiling with NDCG@10 = 1.0, and 60 epochs of fine-tuning leave both unchanged,
so early stopping ends those runs after 5 evaluations.

*Encoders* (``encoder=``, :mod:`hyperloss.encoders`): NAICS, 10% of the codes held out
(``holdout_split(N, 0.1, seed)``), TF-IDF title features (12,038, fit on the training titles),
10-D; figure: held-out NDCG@10, each held-out code ranking all other codes (ranking by TF-IDF
cosine instead: 0.692 at seed 0). An MLP on the TF-IDF vectors
(``HyperbolicEncoder(F, 10, hidden=(256,))``):

=====================================================  ========  ========
MLP on TF-IDF, seed 0 unless stated                    held-out  training
=====================================================  ========  ========
fine-tuning objective, lr 0.003, 20 epochs (former      0.866     0.941
default; seeds 1, 2: 0.855, 0.814)
hidden 1024                                             0.811     0.904
input dropout 0.3                                       0.854     0.906
n-grams in at least 2 training titles (min_df 2)        0.845     0.923
from-scratch objective, 96 negatives, 30 epochs,        0.849     0.913
lr 0.003
the same, lr 0.01 (``--encoder text-mlp``)              0.894     0.963
=====================================================  ========  ========

Why it stalls: the worst held-out codes sat next to the root and to *other held-out codes*
(``611691 Exam Preparation and Tutoring``: Sawmills, Beverage and Tobacco...): a title with
unfamiliar words lands where the other uncertain ones do. Yet placing each held-out code at the
point of its most TF-IDF-similar training code scored 0.889 with the MLP's own points, and
0.919 with free points trained on the training codes alone (a soft vote over the 10 most
similar, temperature 0.1: 0.935). :func:`~hyperloss.encoders.neighbour_features` builds that
vote as the features of a linear encoder, which learns one vector per training code with the
losses:

=====================================================  ========  ========
neighbour votes (k 10, temperature 0.1), linear        held-out  training
=====================================================  ========  ========
fit's former encoder defaults (fine-tuning objective,   0.679     0.642
lr 0.003, 20 epochs)
fine-tuning objective, 24 negatives, lr 0.03,           0.905     0.948
60 epochs
from-scratch objective, lr 0.03, 60 epochs              0.913     0.955
from-scratch objective, lr 0.1, 30 epochs (default)     0.926     0.972
the same, 60 epochs                                     0.926     0.972
the same, 150 epochs                                    0.917     0.965
k 5                                                     0.925     0.973
k 20                                                    0.922     0.970
temperature 0.05                                        0.925     0.972
temperature 0.2                                         0.923     0.976
an MLP (256) on the votes, lr 0.01                      0.900     0.944
=====================================================  ========  ========

The default over five seeded splits (``hyperloss embed naics --encoder text --holdout 0.1
--seed S``, S = 0..4): 0.926, 0.924, 0.891, 0.901, 0.905 (TF-IDF cosine 0.692, 0.687, 0.652,
0.686, 0.679); ``--encoder text-mlp`` at seeds 0 and 2: 0.894 and 0.849 in twice the time.

*From random points* (``init="random"``): points uniform in ``[-1e-3, 1e-3]^dim`` tangent
coordinates; the objective is ``default_losses(tree, init="random")``: the rank-order hinge
(margin 0.1, ``'violations'`` reduction) on a block of 256 random nodes
(:class:`~hyperloss.losses.RankOrderPreservationLoss`, weight 1) **and** on the 128 sampled
lists of 1 positive and 96 tree-weighted negatives
(:class:`~hyperloss.losses.RankOrderListLoss`, weight 1.1); lr 0.1, no burn-in, cosine
decay, 150 epochs.

Why the fine-tuning objective stalls from scratch (NAICS 10-D, 30 epochs, lr 0.1, no burn-in,
one term at a time unless stated; steps/s on the shared machine):

==================================================  ========  =======  ====================
objective (weights)                                 Spearman  NDCG@10  note
==================================================  ========  =======  ====================
fine-tuning default (0.1 / 10 / 10), burn-in 20      0.301    0.810    Spearman < 0 in
                                                                       burn-in (-0.32)
LambdaRank alone (10)                                0.154    0.802    radius 2.7
global rank alone (10)                               0.896    0.506    radius 0.28
rank-order on blocks alone (1)                       0.946    0.605    radius 1.3
rank-order on blocks, margin 1, ``'mean'``           0.908    0.467
rank-order (1) + LambdaRank (10)                     0.355    0.805
rank-order (10) + LambdaRank (1)                     0.955    0.854
rank-order (1) + LambdaRank (1), uniform negatives   0.891    0.628
rank-order on lists alone (1)                        0.656    0.933
rank-order on blocks (1) + on lists (1)              0.935    0.958    19 steps/s
the same, 100 epochs                                 0.9727   0.9992   88 s
==================================================  ========  =======  ====================

* LambdaRank's lists hold one positive and 24 tree-weighted negatives, mostly nodes close in
  the tree: it learns only local order, and pushing those close negatives away first makes
  the early embedding anti-correlated with the tree (Spearman -0.32 after the burn-in). At
  weight 10 it dominates the other terms (Adam normalises the summed gradient per point).
  Its logistic pair loss with ``sigma = 1`` barely tells orders apart while distances differ
  by much less than 1, which they all do near the origin.
* The global rank term has a scale-relative margin on purpose (for fine-tuning), so it never
  expands the embedding: from the origin it stays at radius ~0.3 where there is no room for a
  tree. A fixed margin of 0.1 in distance units does expand it (radius 3-4 after training).
* Random blocks of 256 of 2,126 nodes rarely hold an anchor's tree neighbours, so the block
  hinge orders the far field (Spearman) but not the top of each ranking (NDCG@10). The same
  hinge on the sampled lists, whose negatives are mostly close in the tree, supplies exactly
  that local order: together they reach both.

Settings of the two-hinge objective (5-D unless stated, 150 epochs):

==================================================  ========  =======  ====================
change                                              Spearman  NDCG@10  note
==================================================  ========  =======  ====================
24 negatives, list weight 1, margin 0.1, lr 0.1       0.9574   0.9699   10 steps/s (busy)
margin 0.03, 100 epochs                              0.779    0.520    collapses: radius
                                                                       0.66 -> 0.28
margin 0.3, 60 epochs                                0.908    0.761    (0.1: 0.946 / 0.917
                                                                       at epoch 60 of 100)
lr 0.3, 60 epochs                                    0.930    0.909
list weight 3, lr 0.2, 100 epochs                    0.925    0.981
list weight 2, lr 0.2                                0.937    0.978
list weight 2                                        0.944    0.984
48 negatives                                         0.9611   0.9730
48 negatives, list weight 1.5                        0.9539   0.9854
64 negatives, list weight 1                          0.9583   0.9746
64 negatives, list weight 1.25                       0.9546   0.9811
96 negatives                                         0.9600   0.9785   ~40% slower per
                                                                       step than 48
96 negatives, list weight 1.1 (default)              0.9585   0.9820
==================================================  ========  =======  ====================

The list weight trades Spearman for NDCG@10 in 5-D; more negatives per list move both up
(more close triples per anchor), at a cost per step.

With the defaults, ``fit(naics(), dim, init="random")`` (one seed; wall time on the shared
2-core machine, steps/s alongside since other jobs share it; tie ceiling 0.9768):

===  ========  =======  ========  =========  ====================================
dim  Spearman  NDCG@10  wall      steps/s    before (fine-tuning objective)
===  ========  =======  ========  =========  ====================================
10   0.9738    0.9998   148 s     17.2       0.811 / 0.892, 102 s
5    0.9585    0.9820   135 s     19.0       0.762 / 0.786
2    0.6183    0.3521   210 s     12.2       0.621 / 0.283
===  ========  =======  ========  =========  ====================================

10-D and 5-D reach 99.7% and 98.1% of the tie ceiling; 2-D does not train from scratch
(a tree of 2,126 nodes needs large radii in 2-D, where the construction gets 0.9723 /
0.9994), which is why ``init="auto"`` means ``"construct"`` for ``dim >= 2``. Not varied
here: the initial scale (1e-3), the curvature, the batch and block sizes and the optimizer's
lazy sparse steps. The ``'violations'`` reduction (sum over
the positive terms / their number) keeps the gradient of order one as the violations become
few; with a margin that is too small the hinge is satisfied at ever smaller scales and the
embedding shrinks.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geoopt
import torch
from torch import Tensor, nn

from hyperloss import distributed
from hyperloss.embedding import Embedding
from hyperloss.encoders import _EncoderRows, _StepRows, check_encoder_inputs
from hyperloss.geometry import LorentzDistance, expmap0, logmap0
from hyperloss.losses import (
    GlobalRankLoss,
    LambdaRankLoss,
    RankOrderListLoss,
    RankOrderPreservationLoss,
)
from hyperloss.metrics import monitor_metrics, subset_monitor
from hyperloss.optim import TangentRiemannianAdam
from hyperloss.sampling import NEGATIVE_STRATEGIES, ListSampler
from hyperloss.trees import Tree
from hyperloss.validation import check_curvature, check_int, check_positive

__all__ = ["FitState", "default_losses", "fit"]

CHECKPOINT_VERSION = 1
INITS = ("construct", "random")
PARAMETRIZATIONS = ("tangent", "lorentz")
SCHEDULES = ("cosine", "constant")


@dataclass
class FitState:
    """What a callback sees at the end of every epoch.

    Attributes
    ----------
    epoch : int
        Epochs completed (1-based).
    epochs : int
        Total epochs requested.
    loss : float
        Mean training loss over the epoch's steps.
    metrics : dict
        The latest monitoring metrics (``"spearman"``, ``"ndcg@10"``, ...) and the epoch they
        were measured at (``"epoch"``); empty before the first evaluation.
    history : list of dict
        Every evaluation so far (each a ``metrics``-like dict).
    points : Tensor (N, dim + 1)
        The current Lorentz points (a detached copy).
    """

    epoch: int
    epochs: int
    loss: float
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    points: Tensor | None = None


# ---------------------------------------------------------------------------------------------
# fit


def fit(
    tree: Any,
    dim: int = 2,
    *,
    losses: Sequence[nn.Module] | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    lr: float | None = None,
    curvature: float = 1.0,
    seed: int = 0,
    init: str | Embedding = "auto",
    callbacks: Sequence[Callable[[FitState], bool | None]] = (),
    progress: bool = True,
    checkpoint: str | os.PathLike[str] | None = None,
    eval_every: int | None = None,
    early_stopping: int | str | None = "auto",
    monitor: str = "ndcg@10+spearman",
    restore_best: bool = True,
    block_size: int = 256,
    k_negatives: int | None = None,
    negatives: str = "tree",
    max_positive_distance: float = 2.0,
    burn_in: int | None = None,
    schedule: str = "cosine",
    parametrization: str = "tangent",
    encoder: nn.Module | None = None,
    features: Any = None,
    train_nodes: Tensor | None = None,
) -> Embedding:
    """Embed ``tree`` in ``dim``-dimensional hyperbolic space with the ranking losses.

    Parameters
    ----------
    tree : hyperloss.trees.Tree
        At least 2 nodes.
    dim : int, default 2
        Dimension of the hyperbolic space (points have ``dim + 1`` Lorentz coordinates).
    losses : sequence of nn.Module, optional
        Replaces the default objective. A :class:`~hyperloss.losses.LambdaRankLoss` or
        :class:`~hyperloss.losses.RankOrderListLoss` is applied to the sampled lists; any
        other module is called as ``loss(embeddings, node_index,
        distance_fn)`` on a block of ``block_size`` random nodes (the
        :class:`~hyperloss.losses.RankOrderPreservationLoss` signature). Weights are the
        modules' own ``weight``. Default: see Notes.
    epochs : int, optional
        Passes over all nodes as anchors (each ``ceil(N / batch_size)`` steps). Default
        depends on ``init`` (Notes).
    batch_size : int, default 128
        Anchors (ranking lists) per step.
    lr : float, optional
        Learning rate (hyperbolic length of a typical step). Default depends on ``init``.
    curvature : float, default 1.0
        ``c > 0``: sectional curvature ``-c``.
    seed : int, default 0
        Seeds everything (initial points, sampling); the same seed gives the same result.
    init : {"auto", "construct", "random"} or Embedding, default "auto"
        ``"construct"``: :func:`hyperloss.construction.construct`, then fine-tuning;
        ``"random"``: points drawn near the origin; an :class:`Embedding` of the same names,
        dim and curvature: continue from it. ``"auto"`` is ``"construct"`` for ``dim >= 2``
        and ``"random"`` for ``dim = 1``.
    callbacks : sequence of callables
        Each is called as ``callback(state)`` with a :class:`FitState` after every epoch;
        returning True stops training.
    progress : bool, default True
        Show a tqdm bar with the loss and the latest Spearman / NDCG@10.
    checkpoint : path, optional
        File to save the full training state to at every evaluation and at the end. If it
        exists when ``fit`` starts, training resumes from it (exactly: the result equals an
        uninterrupted run); it must come from a run with the same settings.
    eval_every : int, optional
        Evaluate the monitoring metrics (Spearman and NDCG@10 over all nodes) every this many
        epochs, and at the start and the end. Default depends on ``init`` (Notes).
    early_stopping : int, None or "auto", default "auto"
        Stop after this many evaluations without improvement of ``monitor``; None: never.
        ``"auto"``: 5 when starting from given points (construct / Embedding), None from
        random points.
    monitor : str, default "ndcg@10+spearman"
        Metric to select the best state by: ``"spearman"``, ``"ndcg@10"`` or their sum
        ``"ndcg@10+spearman"``. When fine-tuning given points (construct / Embedding), a state
        whose NDCG@10 is below the starting one is never selected.
    restore_best : bool, default True
        Return the best evaluated state (by ``monitor``; the starting state counts) rather than
        the last one. With a construct / Embedding start, fine-tuning therefore never returns a
        lower NDCG@10 than it started from.
    block_size : int, default 256
        Nodes per block for the rank-order loss.
    k_negatives : int, optional
        Negatives per ranking list. Default depends on ``init`` (Notes).
    negatives : {"tree", "uniform", "farther"}, default "tree"
        Negative sampling (see :mod:`hyperloss.sampling`).
    max_positive_distance : float, default 2.0
        Positives are nodes within this tree distance of the anchor.
    burn_in : int, optional
        Epochs at ``lr / 10`` at the start (Nickel & Kiela 2017). Default depends on ``init``.
    schedule : {"cosine", "constant"}, default "cosine"
        After the burn-in, the learning rate decays from ``lr`` to ``lr / 100`` along a
        half cosine (or stays at ``lr``).
    parametrization : {"tangent", "lorentz"}, default "tangent"
        ``"tangent"``: points as tangent vectors at the origin optimized with
        :class:`TangentRiemannianAdam` (stable at any radius); ``"lorentz"``: one
        ``geoopt.ManifoldParameter`` on ``geoopt.Lorentz`` with ``geoopt.optim.RiemannianAdam``
        (fine near the origin, NaN-prone beyond radius ~15).
    encoder : torch.nn.Module, optional
        Train this model instead of free points (see :mod:`hyperloss.encoders`): it maps
        feature rows to ``(M, dim)`` tangent vectors at the origin, and node ``i``'s point is
        ``expmap0(encoder(features[i]))``. Its parameters are stepped by ``torch.optim.Adam``
        with learning rate ``lr``; it is trained in place and left in ``eval()`` mode with the
        returned (best) state. ``init`` must stay ``"auto"`` and ``parametrization`` is not
        used. Defaults: Notes.
    features : Tensor (N, F) or scipy.sparse matrix, optional
        With ``encoder`` (required then): the features of every node in tree index order.
    train_nodes : LongTensor (M,), optional
        Train on these tree indices only: anchors, positives, negatives and node blocks are
        drawn from them (:class:`~hyperloss.sampling.ListSampler` ``nodes=``), and the
        monitor and the best-state selection look at them only
        (:func:`hyperloss.metrics.subset_monitor`). The other nodes still get points: from
        their features with an encoder (held-out generalisation); without one they keep their
        initial points. An epoch is one pass over the ``M`` training nodes.

    Returns
    -------
    Embedding
        Points in the tree's index order; ``metrics`` holds the monitoring metrics of the
        returned state.

    Notes
    -----
    Defaults that depend on the start (the module docstring has the evidence):

    ============  ======  =====  =======  ==========  ==============  ===========
    init          epochs  lr     burn_in  eval_every  early_stopping  k_negatives
    ============  ======  =====  =======  ==========  ==============  ===========
    construct     60      0.02   0        3           5               24
    Embedding     60      0.02   0        3           5               24
    random        150     0.1    0        10          None            96
    encoder       30      0.1    0        5           None            96
    ============  ======  =====  =======  ==========  ==============  ===========

    The objective also depends on the start: :func:`default_losses` with ``init`` (an encoder
    starts from its own random output and gets the ``"random"`` objective). The encoder row was
    measured with the linear encoder on :func:`hyperloss.encoders.neighbour_features`; an MLP
    on raw features wants a smaller step (``lr=0.01`` for the TF-IDF MLP of the evidence
    table).

    The epochs, eval_every and burn_in of the table are for trees of up to about 2,200 nodes
    (17 steps per epoch at the default batch size). A larger tree keeps the same number of
    optimizer steps: the three are multiplied by ``17 / ceil(N / batch_size)`` and rounded up
    (at least 1 epoch). ICD-10-CM (98,506 nodes) thus fine-tunes for 2 epochs by default.

    Every epoch takes ``ceil(N / batch_size)`` steps; each step draws ``batch_size`` anchors
    (in a random permutation of all nodes) with one positive and ``k_negatives`` negatives
    each, and one block of ``block_size`` random nodes. All randomness comes from ``seed``,
    so a run is deterministic; a checkpoint stores the points, the optimizer moments, the
    sampler's generator state, the epoch and the best state, which makes resumption exact.

    Memory and time do not grow with N^2 anywhere: tree distances come from the tree on demand
    (:meth:`~hyperloss.trees.Tree.distance`) for the pairs of a step; a step looks up only the
    rows it uses (a sparse gradient, so :class:`~hyperloss.optim.TangentRiemannianAdam` moves
    only those rows, as ``torch.optim.SparseAdam`` does); the monitoring metrics are exact for
    trees of up to 4,096 nodes and otherwise come from one fixed seeded sample (64 anchors
    against all nodes for NDCG@10, 200,000 node pairs for Spearman, see
    :func:`hyperloss.metrics.monitor_metrics`), so every evaluation compares the same
    quantities.

    Examples
    --------
    >>> from hyperloss.datasets import balanced_tree
    >>> tree = balanced_tree(2, 3)
    >>> embedding = fit(tree, 2, epochs=5, progress=False)
    >>> embedding.points.shape
    torch.Size([15, 3])
    """
    config = _FitConfig.build(
        tree,
        dim=dim,
        losses=losses,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        curvature=curvature,
        seed=seed,
        init=init,
        callbacks=callbacks,
        progress=progress,
        checkpoint=checkpoint,
        eval_every=eval_every,
        early_stopping=early_stopping,
        monitor=monitor,
        restore_best=restore_best,
        block_size=block_size,
        k_negatives=k_negatives,
        negatives=negatives,
        max_positive_distance=max_positive_distance,
        burn_in=burn_in,
        schedule=schedule,
        parametrization=parametrization,
        encoder=encoder,
        features=features,
        train_nodes=train_nodes,
    )
    # Under torchrun: join (or start) the process group; a single process passes through.
    with distributed.process_group():
        if config.encoder is None:
            return _Run(tree, config).train()
        # A module may draw random numbers in its forward (dropout): seed them, without
        # touching the caller's global generator; the checkpoint stores the state for exact
        # resumption.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return _Run(tree, config).train()


# ---------------------------------------------------------------------------------------------
# Settings

# Defaults per starting point; the evidence is in the module docstring.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "construct": {
        "epochs": 60,
        "lr": 2e-2,
        "burn_in": 0,
        "eval_every": 3,
        "early_stopping": 5,
        "k_negatives": 24,
    },
    "embedding": {
        "epochs": 60,
        "lr": 2e-2,
        "burn_in": 0,
        "eval_every": 3,
        "early_stopping": 5,
        "k_negatives": 24,
    },
    "random": {
        "epochs": 150,
        "lr": 1e-1,
        "burn_in": 0,
        "eval_every": 10,
        "early_stopping": None,
        "k_negatives": 96,
    },
}
# Encoder runs (hyperloss.encoders): the start is the encoder's output, lr is Adam's. Measured
# with the linear encoder on neighbour_features (module docstring).
_DEFAULTS["encoder"] = {
    "epochs": 30,
    "lr": 1e-1,
    "burn_in": 0,
    "eval_every": 5,
    "early_stopping": None,
    "k_negatives": 96,
}
# The table's epochs and evaluation cadences are NAICS-sized: 17 steps per epoch at batch 128.
# A larger tree keeps the same number of optimizer steps (at least one epoch), so a default run
# costs about the same whatever N: ICD-10-CM (98.5k nodes, 770 steps per epoch) fine-tunes for
# 2 epochs, a 1,000,000-node tree for 1.
_REFERENCE_STEPS_PER_EPOCH = 17
_MONITORS = ("ndcg@10+spearman", "ndcg@10", "spearman")
# Scale of the random initial tangent vectors (uniform in [-a, a] per coordinate), as in
# Nickel & Kiela (2017).
_RANDOM_INIT_SCALE = 1e-3


@dataclass
class _FitConfig:
    dim: int
    losses: list[nn.Module] | None
    epochs: int
    batch_size: int
    lr: float
    curvature: float
    seed: int
    init: str
    init_embedding: Embedding | None
    callbacks: list[Callable[[FitState], bool | None]]
    progress: bool
    checkpoint: Path | None
    eval_every: int
    early_stopping: int | None
    monitor: str
    restore_best: bool
    block_size: int
    k_negatives: int
    negatives: str
    max_positive_distance: float
    burn_in: int
    schedule: str
    parametrization: str
    encoder: nn.Module | None = None
    features: Any = None  # hyperloss.encoders._FeatureRows
    train_nodes: Tensor | None = None

    @classmethod
    def build(cls, tree: Any, **kw: Any) -> _FitConfig:
        if not isinstance(tree, Tree):
            raise TypeError(f"tree must be a hyperloss.trees.Tree, got {type(tree).__name__}")
        if len(tree.names) < 2:
            raise ValueError(f"tree must have at least 2 nodes, got {len(tree.names)}")
        dim = check_int(kw["dim"], "dim", minimum=1)
        curvature = check_curvature(kw["curvature"])
        init, init_embedding = kw["init"], None
        encoder, features, train_nodes = check_encoder_inputs(
            kw["encoder"], kw["features"], kw["train_nodes"], len(tree.names)
        )
        if encoder is not None:
            if not (isinstance(init, str) and init == "auto"):
                raise ValueError(
                    "init does not apply with an encoder (the start is the encoder's initial "
                    f"output): leave init='auto', got {init!r}"
                )
            init = "encoder"
        if isinstance(init, Embedding):
            init_embedding = _check_init_embedding(init, tree, dim, curvature)
            init = "embedding"
        elif isinstance(init, str):
            if init == "auto":
                init = "construct" if dim >= 2 else "random"
            if init not in INITS and init != "encoder":
                raise ValueError(
                    f"init must be 'auto', one of {INITS} or an Embedding, got {init!r}"
                )
            if init == "construct" and dim < 2:
                raise ValueError("init='construct' needs dim >= 2; use init='random' for dim 1")
        else:
            raise TypeError(f"init must be a str or an Embedding, got {type(init).__name__}")
        defaults = _scaled_defaults(
            _DEFAULTS[init], len(tree.names), check_int(kw["batch_size"], "batch_size", minimum=1)
        )
        epochs = defaults["epochs"] if kw["epochs"] is None else kw["epochs"]
        lr = defaults["lr"] if kw["lr"] is None else kw["lr"]
        burn_in = defaults["burn_in"] if kw["burn_in"] is None else kw["burn_in"]
        eval_every = defaults["eval_every"] if kw["eval_every"] is None else kw["eval_every"]
        k_negatives = defaults["k_negatives"] if kw["k_negatives"] is None else kw["k_negatives"]
        callbacks = kw["callbacks"]
        if callable(callbacks) or not isinstance(callbacks, Sequence | tuple | list):
            raise TypeError("callbacks must be a sequence of callables")
        for callback in callbacks:
            if not callable(callback):
                raise TypeError(f"callbacks must be callables, got {type(callback).__name__}")
        checkpoint = kw["checkpoint"]
        if checkpoint is not None:
            if not isinstance(checkpoint, str | os.PathLike):
                raise TypeError(f"checkpoint must be a path, got {type(checkpoint).__name__}")
            checkpoint = Path(checkpoint)
            if checkpoint.is_dir():
                raise ValueError(f"checkpoint {str(checkpoint)!r} is a directory; give a file")
        early_stopping = kw["early_stopping"]
        if isinstance(early_stopping, str):
            if early_stopping != "auto":
                raise ValueError(
                    f"early_stopping must be an int >= 1, None or 'auto', got {early_stopping!r}"
                )
            early_stopping = defaults["early_stopping"]
        if early_stopping is not None:
            early_stopping = check_int(early_stopping, "early_stopping", minimum=1)
        if kw["monitor"] not in _MONITORS:
            raise ValueError(f"monitor must be one of {_MONITORS}, got {kw['monitor']!r}")
        if kw["negatives"] not in NEGATIVE_STRATEGIES:
            raise ValueError(
                f"negatives must be one of {NEGATIVE_STRATEGIES}, got {kw['negatives']!r}"
            )
        if kw["schedule"] not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {kw['schedule']!r}")
        if kw["parametrization"] not in PARAMETRIZATIONS:
            raise ValueError(
                f"parametrization must be one of {PARAMETRIZATIONS}, got {kw['parametrization']!r}"
            )
        return cls(
            dim=dim,
            losses=_check_losses(kw["losses"], tree),
            epochs=check_int(epochs, "epochs", minimum=1),
            batch_size=check_int(kw["batch_size"], "batch_size", minimum=1),
            lr=check_positive(lr, "lr"),
            curvature=curvature,
            seed=check_int(kw["seed"], "seed", minimum=None),
            init=init,
            init_embedding=init_embedding,
            callbacks=list(callbacks),
            progress=bool(kw["progress"]),
            checkpoint=checkpoint,
            eval_every=check_int(eval_every, "eval_every", minimum=1),
            early_stopping=early_stopping,
            monitor=kw["monitor"],
            restore_best=bool(kw["restore_best"]),
            block_size=check_int(kw["block_size"], "block_size", minimum=3),
            k_negatives=check_int(k_negatives, "k_negatives", minimum=1),
            negatives=kw["negatives"],
            max_positive_distance=check_positive(
                kw["max_positive_distance"], "max_positive_distance"
            ),
            burn_in=check_int(burn_in, "burn_in", minimum=0),
            schedule=kw["schedule"],
            parametrization=kw["parametrization"],
            encoder=encoder,
            features=features,
            train_nodes=train_nodes,
        )

    def fingerprint(self, tree: Any) -> dict[str, Any]:
        """The settings a checkpoint must share with the run that resumes it."""
        init = self.init
        if self.init_embedding is not None:
            init = f"embedding:{_tensor_digest(self.init_embedding.points)}"
        return {
            "n_nodes": len(tree.names),
            "names": _text_digest("\n".join(tree.names)),
            "dim": self.dim,
            "losses": None if self.losses is None else [repr(loss) for loss in self.losses],
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "curvature": self.curvature,
            "seed": self.seed,
            "init": init,
            "eval_every": self.eval_every,
            "early_stopping": self.early_stopping,
            "monitor": self.monitor,
            "restore_best": self.restore_best,
            "block_size": self.block_size,
            "k_negatives": self.k_negatives,
            "negatives": self.negatives,
            "max_positive_distance": self.max_positive_distance,
            "burn_in": self.burn_in,
            "schedule": self.schedule,
            "parametrization": self.parametrization,
            **_encoder_fingerprint(self),
        }


def _encoder_fingerprint(config: _FitConfig) -> dict[str, Any]:
    """Encoder-run settings a checkpoint must share: the module's structure (not its weights,
    which training changes in place), the features and the training nodes."""
    if config.encoder is None and config.train_nodes is None:
        return {}
    encoder = config.encoder
    return {
        "encoder": None
        if encoder is None
        else [repr(encoder), [tuple(p.shape) for p in encoder.parameters()]],
        "features": None if config.features is None else config.features.digest(),
        "train_nodes": None if config.train_nodes is None else _tensor_digest(config.train_nodes),
    }


def _scaled_defaults(defaults: dict[str, Any], n_nodes: int, batch_size: int) -> dict[str, Any]:
    """The per-init defaults with epoch counts scaled to keep the number of steps (see above)."""
    steps_per_epoch = math.ceil(n_nodes / batch_size)
    scale = _REFERENCE_STEPS_PER_EPOCH / max(steps_per_epoch, _REFERENCE_STEPS_PER_EPOCH)
    scaled = dict(defaults)
    for key in ("epochs", "eval_every"):
        scaled[key] = max(1, math.ceil(defaults[key] * scale))
    scaled["burn_in"] = min(math.ceil(defaults["burn_in"] * scale), scaled["epochs"] - 1)
    return scaled


def _check_losses(losses: Any, tree: Any) -> list[nn.Module] | None:
    if losses is None:
        return None
    if callable(losses) or not isinstance(losses, Sequence):
        raise TypeError("losses must be a sequence of loss modules (or None for the default)")
    if len(losses) == 0:
        raise ValueError("losses must not be empty (pass None for the default objective)")
    for loss in losses:
        if not callable(loss):
            raise TypeError(f"losses must be callables, got {type(loss).__name__}")
        # A loss built for another tree would read wrong tree distances without any error.
        n_nodes = getattr(loss, "n_nodes", None)
        if n_nodes is not None and n_nodes != len(tree.names):
            raise ValueError(
                f"losses: {type(loss).__name__} was built for {n_nodes} nodes, the tree has "
                f"{len(tree.names)}"
            )
        source = getattr(loss, "tree", None)
        if isinstance(source, Tree) and source is not tree and source.names != tree.names:
            raise ValueError(
                f"losses: {type(loss).__name__} was built for another tree (its node names "
                "differ from this tree's)"
            )
    return list(losses)


def _check_init_embedding(embedding: Embedding, tree: Any, dim: int, curvature: float) -> Embedding:
    if embedding.dim != dim:
        raise ValueError(f"init: the embedding has dim {embedding.dim}, fit was asked for {dim}")
    if not math.isclose(embedding.curvature, curvature, rel_tol=1e-12):
        raise ValueError(
            f"init: the embedding has curvature {embedding.curvature:g}, fit was asked for "
            f"{curvature:g}"
        )
    try:
        points = embedding.points_for(tree)
    except ValueError as error:
        raise ValueError(f"init: {error}") from error
    return Embedding(points, list(tree.names), curvature=curvature)


def _tensor_digest(tensor: Tensor) -> str:
    import hashlib

    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def _text_digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The training run

_LORENTZ_HINT = "; parametrization='tangent' is stable far from the origin"
# Losses that score the sampled (anchor, [positive, negatives...]) lists; any other loss module
# gets a block of random nodes.
_LIST_LOSSES = (LambdaRankLoss, RankOrderListLoss)
# Trees up to hyperloss.metrics.EXACT_LIMIT (4,096) nodes are monitored exactly; larger ones on
# one fixed seeded sample of anchors (each against all nodes, for NDCG@10) and of node pairs (for
# Spearman): about 2 s per evaluation at 1,000,000 nodes.
_MONITOR_ANCHORS = 64
_MONITOR_PAIRS = 200_000


@contextlib.contextmanager
def _single_threaded() -> Any:
    """Run the training steps on one intra-op thread, then restore torch's setting.

    A step's tensors are small (a block of 256 nodes, 128 lists of 25), so more threads buy
    little and, on a machine whose cores are busy, cost a lot: on the 2-core development
    machine one epoch on a 1,000,000-node tree took 710 s with one thread and over an hour
    with two, and a 98,506-node ICD-10-CM epoch 49 s against several minutes. (torchrun sets
    OMP_NUM_THREADS=1 per process for the same reason.) Evaluation keeps torch's setting.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _TangentRows:
    """The points of a tangent-coordinate parameter, computed for the looked-up rows only.

    ``table[index]`` is ``expmap0(parameter[index])`` for a LongTensor ``index`` of any shape
    (shape ``index.shape + (dim + 1,)``). The lookup is ``torch.nn.functional.embedding`` with
    ``sparse=True``: the parameter gets a sparse gradient holding just the rows a step used,
    and :class:`~hyperloss.optim.TangentRiemannianAdam` updates just those rows, so a step
    costs O(batch), not O(N), on a 1,000,000-node tree.
    """

    def __init__(self, parameter: Tensor, curvature: float) -> None:
        self.parameter = parameter
        self.curvature = curvature

    def __len__(self) -> int:
        return self.parameter.shape[0]

    def __getitem__(self, index: Tensor) -> Tensor:
        rows = nn.functional.embedding(index, self.parameter, sparse=True)
        return expmap0(rows, curvature=self.curvature)


class _SubsetMonitor:
    """:class:`_Monitor` among the training nodes only (a run with ``train_nodes``)."""

    def __init__(
        self,
        tree: Any,
        distance_fn: Callable[[Tensor, Tensor], Tensor],
        nodes: Tensor,
        *,
        seed: int,
    ) -> None:
        self.tree, self.distance_fn, self.nodes, self.seed = tree, distance_fn, nodes, seed

    def __call__(self, points: Tensor) -> dict[str, float]:
        metrics = subset_monitor(
            points, self.tree, self.distance_fn, self.nodes, k=10, seed=self.seed
        )
        return {"spearman": float(metrics["spearman"]), "ndcg@10": float(metrics["ndcg@10"])}


class _Monitor:
    """Spearman and NDCG@10 of the current points: exact on small trees, sampled on large ones.

    One fixed seed, so every evaluation of a run scores the same anchors and pairs.
    """

    def __init__(self, tree: Any, distance_fn: Callable[[Tensor, Tensor], Tensor], *, seed: int):
        self.tree = tree
        self.distance_fn = distance_fn
        self.seed = seed

    def __call__(self, points: Tensor) -> dict[str, float]:
        metrics = monitor_metrics(
            points,
            self.tree,
            self.distance_fn,
            k=10,
            n_anchors=_MONITOR_ANCHORS,
            n_pairs=_MONITOR_PAIRS,
            seed=self.seed,
        )
        return {"spearman": float(metrics["spearman"]), "ndcg@10": float(metrics["ndcg@10"])}


class _Run:
    """One call of :func:`fit`: state, steps, evaluation, checkpoints."""

    def __init__(self, tree: Any, config: _FitConfig) -> None:
        self.tree = tree
        self.config = config
        self.lorentz_distance = LorentzDistance(config.curvature)
        self.sampler = ListSampler(
            tree,
            k_negatives=config.k_negatives,
            max_positive_distance=config.max_positive_distance,
            negatives=config.negatives,
            seed=config.seed,
            nodes=config.train_nodes,
        )
        self.block_losses, self.list_losses = self._objective()
        if config.encoder is not None:
            self.parameter = None
            self.optimizer = torch.optim.Adam(config.encoder.parameters(), lr=config.lr)
            self.rows = _EncoderRows(config.encoder, config.features, config.dim, config.curvature)
        else:
            self.parameter, self.optimizer = self._parameter(self._initial_points())
        self.monitor: Callable[[Tensor], dict[str, float]] = _Monitor(
            tree, self.lorentz_distance, seed=config.seed
        )
        if config.train_nodes is not None:
            self.monitor = _SubsetMonitor(
                tree, self.lorentz_distance, config.train_nodes, seed=config.seed
            )
        # Data-parallel under torchrun (hyperloss/distributed.py): None in a single process.
        self.shard = distributed.FitShard.current(config.seed)
        if self.shard is not None:
            for parameter in self._trained_parameters():
                self.shard.broadcast_(parameter)  # every rank starts from rank 0's state
            self.monitor = _checked_monitor(self.shard, self.monitor)
        self.epoch = 0
        self.stopped = False
        self.history: list[dict[str, float]] = []
        self.best: dict[str, Any] | None = None
        self.start_metrics: dict[str, float] | None = None
        self.stale = 0
        self.best_value: float | None = None

    # ------------------------------------------------------------------ set-up
    def _objective(self) -> tuple[list[Callable[..., Tensor]], list[nn.Module]]:
        losses = self.config.losses
        if losses is None:
            # An encoder starts from its own (random) output: the from-scratch objective.
            init = "random" if self.config.init == "encoder" else self.config.init
            losses = default_losses(self.tree, init=init)
        block = [loss for loss in losses if not isinstance(loss, _LIST_LOSSES)]
        lists = [loss for loss in losses if isinstance(loss, _LIST_LOSSES)]
        return block, lists

    def _initial_points(self) -> Tensor:
        config = self.config
        if config.init == "embedding":
            return config.init_embedding.points.clone()
        if config.init == "construct":
            from hyperloss.construction import construct

            return construct(self.tree, config.dim, curvature=config.curvature).points.clone()
        generator = torch.Generator().manual_seed(config.seed)
        tangent = torch.rand(len(self.tree.names), config.dim, generator=generator)
        tangent = (2.0 * tangent - 1.0).to(torch.float64) * _RANDOM_INIT_SCALE
        return expmap0(tangent, curvature=config.curvature)

    def _parameter(self, points: Tensor) -> tuple[nn.Parameter, torch.optim.Optimizer]:
        config = self.config
        if config.parametrization == "tangent":
            parameter = nn.Parameter(logmap0(points, curvature=config.curvature).contiguous())
            optimizer = TangentRiemannianAdam([parameter], lr=config.lr, curvature=config.curvature)
        else:
            manifold = geoopt.Lorentz(k=torch.tensor(1.0 / config.curvature, dtype=torch.float64))
            parameter = geoopt.ManifoldParameter(points.contiguous(), manifold=manifold)
            optimizer = geoopt.optim.RiemannianAdam([parameter], lr=config.lr)
        return parameter, optimizer

    # ------------------------------------------------------------------- state
    def points(self) -> Tensor:
        """Current Lorentz points (N, dim + 1), detached."""
        if self.config.encoder is not None:
            self.config.encoder.eval()
            return self.rows.all_points()
        with torch.no_grad():
            if self.config.parametrization == "tangent":
                return expmap0(self.parameter.detach(), curvature=self.config.curvature)
            return self.parameter.detach().clone()

    def _table(self) -> Any:
        """What the losses index by tree index: ``table[index]`` are the Lorentz points."""
        if self.config.encoder is not None:
            self.config.encoder.train()
            return self.rows
        if self.config.parametrization == "tangent":
            return _TangentRows(self.parameter, self.config.curvature)
        return self.parameter

    # -------------------------------------------------------------------- loop
    def train(self) -> Embedding:
        config = self.config
        resumed = config.checkpoint is not None and config.checkpoint.exists()
        if self.shard is not None:  # rank 0's file decides (ranks may not share a disk)
            resumed = self.shard.on_rank_zero(lambda: resumed)()
        if resumed:
            self._load_checkpoint()
        else:
            self._evaluate()
        bar = _progress_bar(config, initial=self.epoch) if self._is_rank_zero() else None
        try:
            while self.epoch < config.epochs and not self.stopped:
                with _single_threaded():
                    loss = self._train_epoch()
                self.epoch += 1
                evaluate = self.epoch % config.eval_every == 0 or self.epoch == config.epochs
                if evaluate:
                    self._evaluate()
                    if config.early_stopping is not None and self.stale >= config.early_stopping:
                        self.stopped = True
                state = FitState(
                    epoch=self.epoch,
                    epochs=config.epochs,
                    loss=loss,
                    metrics=dict(self.history[-1]) if self.history else {},
                    history=[dict(h) for h in self.history],
                    points=self.points(),
                )
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(_postfix(loss, state.metrics), refresh=False)
                if evaluate or self.stopped:
                    self._save_checkpoint()
                for callback in config.callbacks:
                    if callback(state):
                        self.stopped = True
                if self.shard is not None:  # a stop on any rank stops all together
                    self.stopped = self.shard.any(self.stopped)
                if self.stopped:
                    self._save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        if self.history[-1]["epoch"] != self.epoch:
            self._evaluate()  # stopped by a callback between evaluations
            self._save_checkpoint()
        return self._result()

    def _learning_rate(self) -> float:
        config = self.config
        if self.epoch < config.burn_in:
            return config.lr / 10.0
        if config.schedule == "constant":
            return config.lr
        # Cosine decay from lr to lr / 100 over the epochs after the burn-in.
        progress = (self.epoch - config.burn_in) / max(config.epochs - config.burn_in, 1)
        return config.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def _train_epoch(self) -> float:
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate()
        total, steps = 0.0, 0
        table = self._table()
        shard = self.shard
        batches, block_size = self.sampler.epoch(config.batch_size), config.block_size
        if shard is not None:  # this rank's share of every step
            batches = shard.epoch(self.sampler, config.batch_size, self.epoch)
            block_size = shard.block_size(config.block_size)
        for batch in batches:
            self.optimizer.zero_grad(set_to_none=True)
            loss = torch.zeros((), dtype=torch.float64)
            if config.encoder is not None:
                # One encoder call per step for everything the losses will look up.
                nodes = self.sampler.nodes(block_size) if self.block_losses else None
                needed = [batch.anchor, batch.items.reshape(-1)]
                table = _StepRows(self.rows, torch.cat(needed + [nodes] * (nodes is not None)))
            if self.block_losses:
                if config.encoder is None:
                    nodes = self.sampler.nodes(block_size)
                for block_loss in self.block_losses:
                    loss = loss + block_loss(table, nodes, self.lorentz_distance)
            items = batch.items
            for list_loss in self.list_losses if batch.anchor.numel() else ():
                list_term = list_loss(table, batch.anchor, items, self.lorentz_distance)
                loss = loss + (list_term if shard is None else shard.list_weight * list_term)
            if shard is not None:
                loss = shard.global_loss(loss)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {float(loss)} at epoch {self.epoch + 1}"
                    + _LORENTZ_HINT * (config.parametrization == "lorentz")
                )
            if loss.requires_grad:
                loss.backward()
            trained = self._trained_parameters()
            if shard is not None:  # every rank, even one without a gradient this step
                for parameter in trained:
                    shard.all_reduce_gradient(parameter)
            if any(parameter.grad is not None for parameter in trained):
                self.optimizer.step()
            total += float(loss.detach())
            steps += 1
        if not self._finite():
            raise FloatingPointError(
                f"points became non-finite at epoch {self.epoch + 1}"
                + _LORENTZ_HINT * (config.parametrization == "lorentz")
            )
        return total / max(steps, 1)

    def _trained_parameters(self) -> list[Tensor]:
        """The free points' parameter, or the encoder's parameters."""
        if self.config.encoder is None:
            return [self.parameter]
        return list(self.config.encoder.parameters())

    def _finite(self) -> bool:
        if self.config.encoder is None:
            return bool(torch.isfinite(self.parameter).all())
        return all(bool(torch.isfinite(p).all()) for p in self.config.encoder.parameters())

    # -------------------------------------------------------------- evaluation
    def _evaluate(self) -> None:
        points = self.points()
        metrics = {"epoch": float(self.epoch), **self.monitor(points)}
        self.history.append(metrics)
        if self.start_metrics is None:
            self.start_metrics = dict(metrics)
        # Patience follows the plain monitor value: NDCG@10 often dips below its start for a
        # few evaluations while Spearman climbs, then recovers (2-D NAICS, epochs 3-15).
        value = sum(metrics[name] for name in self.config.monitor.split("+"))
        if self.best_value is None or value > self.best_value:
            self.best_value = value
            self.stale = 0
        else:
            self.stale += 1
        score = self._score(value, metrics)
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "metrics": dict(metrics), "points": points.clone()}
            if self.config.encoder is not None:
                self.best["encoder"] = _state_copy(self.config.encoder)

    def _score(self, value: float, metrics: Mapping[str, float]) -> float:
        """Selection score; fine-tuning from given points never selects a lower NDCG@10."""
        start = self.start_metrics
        if self.config.init not in ("random", "encoder") and start is not None:
            if metrics["ndcg@10"] < start["ndcg@10"]:
                return -math.inf
        return value

    def _result(self) -> Embedding:
        if self.config.restore_best and self.best is not None:
            points, metrics = self.best["points"], self.best["metrics"]
            if self.config.encoder is not None:
                self.config.encoder.load_state_dict(self.best["encoder"])
        else:
            points, metrics = self.points(), self.history[-1]
        return Embedding(points, list(self.tree.names), self.config.curvature, metrics=metrics)

    # ------------------------------------------------------------- checkpoint
    def _save_checkpoint(self) -> None:
        path = self.config.checkpoint
        if path is None or not self._is_rank_zero():
            return
        state = {
            "format": "hyperloss.fit-checkpoint",
            "version": CHECKPOINT_VERSION,
            "config": self.config.fingerprint(self.tree),
            "epoch": self.epoch,
            "stopped": self.stopped,
            "parameter": self._parameter_state(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "history": self.history,
            "best": self.best,
            "start_metrics": self.start_metrics,
            "stale": self.stale,
            "best_value": self.best_value,
            "world_size": 1 if self.shard is None else self.shard.world_size,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        torch.save(state, temporary)
        os.replace(temporary, path)  # atomic: an interruption never leaves half a file

    def _parameter_state(self) -> Any:
        if self.config.encoder is None:
            return self.parameter.detach().clone()
        # The module's weights, and the global generator that fit seeded (dropout and the like).
        return {"encoder": _state_copy(self.config.encoder), "torch_rng": torch.get_rng_state()}

    def _load_checkpoint(self) -> None:
        path = self.config.checkpoint
        try:
            if self.shard is None:
                state = torch.load(path, weights_only=True)
            else:  # rank 0 reads, every rank gets the state (or the error)
                state = self.shard.on_rank_zero(torch.load)(path, weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
            raise ValueError(
                f"checkpoint {str(path)!r} is not a readable checkpoint: {error}"
            ) from error
        if not isinstance(state, dict) or state.get("format") != "hyperloss.fit-checkpoint":
            raise ValueError(f"checkpoint {str(path)!r} is not a hyperloss fit checkpoint")
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint {str(path)!r} has version {state.get('version')!r}, "
                f"expected {CHECKPOINT_VERSION}"
            )
        expected = self.config.fingerprint(self.tree)
        different = sorted(key for key in expected if state["config"].get(key) != expected[key])
        if different:
            details = ", ".join(
                f"{key}: {state['config'].get(key)!r} != {expected[key]!r}" for key in different
            )
            raise ValueError(
                f"checkpoint {str(path)!r} was written by a run with other settings ({details}); "
                "use the same settings or another checkpoint path"
            )
        if self.config.encoder is not None:
            self.config.encoder.load_state_dict(state["parameter"]["encoder"])
            torch.set_rng_state(state["parameter"]["torch_rng"])
        else:
            with torch.no_grad():
                self.parameter.copy_(state["parameter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.epoch = state["epoch"]
        self.stopped = state["stopped"]
        self.history = state["history"]
        self.best = state["best"]
        self.start_metrics = state["start_metrics"]
        self.stale = state["stale"]
        self.best_value = state["best_value"]
        _warn_other_world_size(state.get("world_size", 1), self.shard, path)

    def _is_rank_zero(self) -> bool:
        return self.shard is None or self.shard.is_zero


def _checked_monitor(shard: Any, monitor: _Monitor) -> Callable[[Tensor], dict[str, float]]:
    """The monitor on rank 0, for all ranks, after checking that they hold the same points."""
    on_rank_zero = shard.on_rank_zero(monitor)

    def call(points: Tensor) -> dict[str, float]:
        shard.check_identical(points)
        return on_rank_zero(points)

    return call


def _warn_other_world_size(saved: int, shard: Any, path: Path) -> None:
    current = 1 if shard is None else shard.world_size
    if saved != current and (shard is None or shard.is_zero):
        import warnings

        warnings.warn(
            f"checkpoint {str(path)!r} was written by a run of {saved} process(es), resumed with "
            f"{current}: points, optimizer moments and the best state are restored exactly, the "
            "later lists and blocks are drawn as this world size draws them (not bitwise an "
            "uninterrupted run)",
            stacklevel=4,
        )


def _state_copy(module: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def default_losses(tree: Any, init: str = "construct") -> list[nn.Module]:
    """The default objective of :func:`fit` for ``tree`` (see the module docstring).

    Parameters
    ----------
    tree : hyperloss.trees.Tree
        The tree the losses read tree distances from (on demand).
    init : {"construct", "embedding", "random"}, default "construct"
        The start of the run the objective is for: fine-tuning given points, or training
        from random points.

    Returns
    -------
    list of nn.Module
        Fine-tuning (``"construct"`` / ``"embedding"``):
        ``RankOrderPreservationLoss(weight=0.1)``, ``LambdaRankLoss(weight=10.0)`` and
        ``GlobalRankLoss(weight=10.0)``. From random points (``"random"``):
        ``RankOrderPreservationLoss(weight=1.0)`` on node blocks and
        ``RankOrderListLoss(weight=1.1)`` on the sampled lists, both with margin 0.1 and the
        ``'violations'`` reduction. Each is built from ``tree``; pass a modified copy as
        ``fit(losses=...)``.

    Raises
    ------
    ValueError
        If ``init`` is not one of the three.
    """
    if init not in ("construct", "embedding", "random"):
        raise ValueError(f"init must be 'construct', 'embedding' or 'random', got {init!r}")
    if init == "random":
        return [
            RankOrderPreservationLoss(tree, weight=1.0, margin=0.1),
            RankOrderListLoss(tree, weight=1.1, margin=0.1),
        ]
    return [
        RankOrderPreservationLoss(tree, weight=0.1, margin=0.1),
        LambdaRankLoss(tree, weight=10.0, sigma=1.0, ndcg_k=10),
        GlobalRankLoss(tree, weight=10.0, margin=0.1),
    ]


def _progress_bar(config: _FitConfig, *, initial: int) -> Any:
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.epochs, initial=initial, desc="fit", unit="epoch", leave=True)


def _postfix(loss: float, metrics: Mapping[str, float]) -> dict[str, str]:
    postfix = {"loss": f"{loss:.4g}"}
    if metrics:
        postfix["spearman"] = f"{metrics['spearman']:.4f}"
        postfix["ndcg@10"] = f"{metrics['ndcg@10']:.4f}"
    return postfix
