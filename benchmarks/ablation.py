"""Ablation of the encoder, its geometry and its objective on NAICS with held-out codes.

Two encoders of the code titles, 10% of the codes held out (``holdout_split(N, 0.1, seed=0)``;
TF-IDF fit on the training titles only):

- ``neighbour votes, linear``: :func:`hyperloss.encoders.neighbour_features` of the TF-IDF
  vectors against the training codes, into ``HyperbolicEncoder(M, dim, hidden=())`` (what
  ``hyperloss embed --encoder text`` trains); fit's encoder defaults: Adam lr 0.1, 30 epochs,
  96 negatives;
- ``TF-IDF MLP``: ``HyperbolicEncoder(F, dim, hidden=(256,))`` on the TF-IDF vectors
  (``--encoder text-mlp``): lr 0.01, 30 epochs, 96 negatives.

Each row varies one thing:

- geometry: hyperbolic (``expmap0`` of the encoder output, Lorentz distance) vs Euclidean (the
  same output used as Euclidean points, Euclidean distance), with the same losses;
- objective: rank-order only (:class:`~hyperloss.losses.RankOrderPreservationLoss` on node
  blocks + :class:`~hyperloss.losses.RankOrderListLoss` on the sampled lists: fit's default for
  encoders), LambdaRank only, both, and the fine-tuning objective (rank-order + LambdaRank +
  global rank term), all with the weights of :func:`hyperloss.training.default_losses`.

Every row runs the same loop as ``fit`` (the :class:`~hyperloss.sampling.ListSampler` restricted
to the training nodes, 128 lists and a 256-node block per step, ``torch.optim.Adam`` with fit's
cosine decay to lr / 100, the same seed); the last state is scored (no model selection).
Figures: NDCG@10 and per-anchor Spearman of the held-out codes and of the training codes, each
anchor ranking all other 2,125 nodes (:func:`hyperloss.metrics.evaluate_anchors`), and the
TF-IDF cosine baseline.

Usage::

    python benchmarks/ablation.py               # about 6 min on 1 core
    python benchmarks/ablation.py --scale 0.2   # a quick look (a fifth of the epochs)
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from hyperloss.datasets import naics
from hyperloss.encoders import (
    HyperbolicEncoder,
    _EncoderRows,
    _FeatureRows,
    _StepRows,
    holdout_split,
    neighbour_features,
    text_features,
)
from hyperloss.geometry import LorentzDistance
from hyperloss.losses import LambdaRankLoss, RankOrderListLoss
from hyperloss.metrics import anchor_scores, evaluate_anchors
from hyperloss.sampling import ListSampler
from hyperloss.training import default_losses

# Settings per encoder: (hidden widths, Adam lr, epochs, negatives per list).
SETTINGS = {"neighbour votes, linear": ((), 0.1, 30, 96), "TF-IDF MLP": ((256,), 1e-2, 30, 96)}
VARIANTS = [
    ("neighbour votes, linear", "hyperbolic", "rank-order (default)"),
    ("neighbour votes, linear", "euclidean", "rank-order (default)"),
    ("neighbour votes, linear", "hyperbolic", "LambdaRank only"),
    ("neighbour votes, linear", "hyperbolic", "rank-order + LambdaRank"),
    ("neighbour votes, linear", "hyperbolic", "fine-tuning (+ LambdaRank, global)"),
    ("TF-IDF MLP", "hyperbolic", "rank-order (default)"),
    ("TF-IDF MLP", "euclidean", "rank-order (default)"),
    ("TF-IDF MLP", "hyperbolic", "fine-tuning (+ LambdaRank, global)"),
]


class EuclideanDistance:
    """``|x - y|`` with a gradient that stays finite at ``x == y``."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x - y) ** 2).sum(dim=-1).clamp_min(1e-18).sqrt()


def objective(tree, name):
    block_rank_order, list_rank_order = default_losses(tree, "random")
    fine_tuning = default_losses(tree, "construct")
    lambda_rank = fine_tuning[1]
    return {
        "rank-order (default)": [block_rank_order, list_rank_order],
        "LambdaRank only": [lambda_rank],
        "rank-order + LambdaRank": [block_rank_order, list_rank_order, lambda_rank],
        "fine-tuning (+ LambdaRank, global)": fine_tuning,
    }[name]


def train(
    tree, features, train_nodes, *, geometry, losses, dim, hidden, lr, epochs, negatives, seed
):
    torch.manual_seed(seed)
    encoder = HyperbolicEncoder(features.shape[1], dim, hidden=hidden, seed=seed)
    rows = _EncoderRows(
        encoder, _FeatureRows(features, "features"), dim, 1.0, lorentz=geometry == "hyperbolic"
    )
    distance = LorentzDistance(1.0) if geometry == "hyperbolic" else EuclideanDistance()
    sampler = ListSampler(tree, k_negatives=negatives, seed=seed, nodes=train_nodes)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    list_types = (LambdaRankLoss, RankOrderListLoss)
    block = [loss for loss in losses if not isinstance(loss, list_types)]
    lists = [loss for loss in losses if isinstance(loss, list_types)]
    encoder.train()
    for epoch in range(epochs):
        # fit's schedule: a half cosine from lr to lr / 100.
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)))
        for batch in sampler.epoch(128):
            optimizer.zero_grad(set_to_none=True)
            nodes = sampler.nodes(256)
            table = _StepRows(rows, torch.cat([batch.anchor, batch.items.reshape(-1), nodes]))
            loss = torch.zeros((), dtype=torch.float64)
            for module in block:
                loss = loss + module(table, nodes, distance)
            for module in lists:
                loss = loss + module(table, batch.anchor, batch.items, distance)
            loss.backward()
            optimizer.step()
    encoder.eval()
    return rows.all_points(), distance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the epochs")
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    tree = naics()
    train_nodes, held = holdout_split(len(tree), 0.1, seed=args.seed)
    titles = [tree.title(name) for name in tree.names]
    text = text_features(titles, fit_on=train_nodes)
    features = {
        "neighbour votes, linear": neighbour_features(text, train_nodes),
        "TF-IDF MLP": text,
    }
    print(
        f"NAICS: {len(tree)} nodes, {held.numel()} held out (seed {args.seed}), "
        f"{text.shape[1]} TF-IDF features, dim {args.dim}, epochs x {args.scale:g}"
    )
    similarity = (text[held.numpy()] @ text.T).toarray()
    baseline = anchor_scores(1.0 - similarity, tree, held)
    nan = float("nan")
    held_ndcg, held_spearman = np.nanmean(baseline["ndcg@10"]), np.nanmean(baseline["spearman"])
    rows = [("TF-IDF cosine (no training)", "-", "-", held_ndcg, held_spearman, nan, nan, 0.0)]
    for encoder_name, geometry, name in VARIANTS:
        hidden, lr, epochs, negatives = SETTINGS[encoder_name]
        start = time.perf_counter()
        points, distance = train(
            tree,
            features[encoder_name],
            train_nodes,
            geometry=geometry,
            losses=objective(tree, name),
            dim=args.dim,
            hidden=hidden,
            lr=lr,
            epochs=max(1, round(epochs * args.scale)),
            negatives=negatives,
            seed=args.seed,
        )
        seconds = time.perf_counter() - start
        held_scores = evaluate_anchors(points, tree, distance, anchors=held)
        train_scores = evaluate_anchors(points, tree, distance, anchors=train_nodes)
        rows.append(
            (
                encoder_name,
                geometry,
                name,
                held_scores["ndcg@10"],
                held_scores["spearman"],
                train_scores["ndcg@10"],
                train_scores["spearman"],
                seconds,
            )
        )
        print(f"  done: {encoder_name}, {geometry}, {name} ({seconds:.0f} s)", flush=True)

    print()
    print(
        "| encoder | geometry | objective | held-out NDCG@10 | held-out Spearman "
        "| train NDCG@10 | train Spearman | time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for encoder_name, geometry, name, hn, hs, tn, ts, seconds in rows:
        cells = [f"{v:.3f}" if v == v else "-" for v in (hn, hs, tn, ts)]
        print(f"| {encoder_name} | {geometry} | {name} | {' | '.join(cells)} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
