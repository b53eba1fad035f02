"""Ablation of the encoder objective on NAICS with held-out codes (issue 9, item 4).

Trains :class:`hyperloss.encoders.HyperbolicEncoder` on TF-IDF title features with 10% of the
codes held out (``holdout_split(N, 0.1, seed=0)``, features fit on the training titles only)
and prints one row per variant:

- geometry: hyperbolic (``expmap0`` of the encoder output, Lorentz distance) vs Euclidean (the
  same output used as Euclidean points, Euclidean distance), with the same losses;
- objective: rank-order only, LambdaRank only, both, and the default (both + the global term).

Every variant runs the same loop: the library's :class:`~hyperloss.sampling.ListSampler`
restricted to the training nodes, the loss modules of :func:`hyperloss.training.default_losses`
(same weights), ``torch.optim.Adam`` at a constant learning rate, the same seed, the same
number of steps; the last state is scored (no model selection). Figures: NDCG@10 and
per-anchor Spearman of the held-out codes and of the training codes, each anchor ranking all
other 2,125 nodes (:func:`hyperloss.metrics.evaluate_anchors`), and the TF-IDF cosine baseline.

Usage::

    python benchmarks/ablation.py            # 10 epochs per variant, about 6-10 min on 1 core
    python benchmarks/ablation.py --epochs 3 # a quick look
"""

from __future__ import annotations

import argparse
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
    text_features,
)
from hyperloss.geometry import LorentzDistance
from hyperloss.losses import LambdaRankLoss
from hyperloss.metrics import anchor_scores, evaluate_anchors
from hyperloss.sampling import ListSampler
from hyperloss.training import default_losses


class EuclideanDistance:
    """``|x - y|`` with a gradient that stays finite at ``x == y``."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x - y) ** 2).sum(dim=-1).clamp_min(1e-18).sqrt()


def objective(tree, name):
    rank_order, lambda_rank, global_rank = default_losses(tree)
    return {
        "rank-order only": [rank_order],
        "LambdaRank only": [lambda_rank],
        "rank-order + LambdaRank": [rank_order, lambda_rank],
        "default (+ global)": [rank_order, lambda_rank, global_rank],
    }[name]


def train(tree, features, train_nodes, *, geometry, losses, dim, epochs, lr, seed):
    torch.manual_seed(seed)
    encoder = HyperbolicEncoder(features.shape[1], dim, seed=seed)
    rows = _EncoderRows(
        encoder, _FeatureRows(features, "features"), dim, 1.0, lorentz=geometry == "hyperbolic"
    )
    distance = LorentzDistance(1.0) if geometry == "hyperbolic" else EuclideanDistance()
    sampler = ListSampler(tree, seed=seed, nodes=train_nodes)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    block = [loss for loss in losses if not isinstance(loss, LambdaRankLoss)]
    lists = [loss for loss in losses if isinstance(loss, LambdaRankLoss)]
    encoder.train()
    for _ in range(epochs):
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
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    tree = naics()
    train_nodes, held = holdout_split(len(tree), 0.1, seed=args.seed)
    titles = [tree.title(name) for name in tree.names]
    features = text_features(titles, fit_on=train_nodes)
    print(
        f"NAICS: {len(tree)} nodes, {held.numel()} held out (seed {args.seed}), "
        f"{features.shape[1]} TF-IDF features, dim {args.dim}, {args.epochs} epochs, "
        f"Adam lr {args.lr}"
    )
    similarity = (features[held.numpy()] @ features.T).toarray()
    baseline = anchor_scores(1.0 - similarity, tree, held)
    rows = [
        (
            "TF-IDF cosine (no training)",
            "-",
            float(np.nanmean(baseline["ndcg@10"])),
            float(np.nanmean(baseline["spearman"])),
            float("nan"),
            float("nan"),
            0.0,
        )
    ]
    variants = [
        ("hyperbolic", "default (+ global)"),
        ("euclidean", "default (+ global)"),
        ("hyperbolic", "rank-order + LambdaRank"),
        ("euclidean", "rank-order + LambdaRank"),
        ("hyperbolic", "rank-order only"),
        ("hyperbolic", "LambdaRank only"),
    ]
    for geometry, name in variants:
        start = time.perf_counter()
        points, distance = train(
            tree,
            features,
            train_nodes,
            geometry=geometry,
            losses=objective(tree, name),
            dim=args.dim,
            epochs=args.epochs,
            lr=args.lr,
            seed=args.seed,
        )
        seconds = time.perf_counter() - start
        held_scores = evaluate_anchors(points, tree, distance, anchors=held)
        train_scores = evaluate_anchors(points, tree, distance, anchors=train_nodes)
        rows.append(
            (
                name,
                geometry,
                held_scores["ndcg@10"],
                held_scores["spearman"],
                train_scores["ndcg@10"],
                train_scores["spearman"],
                seconds,
            )
        )
        print(f"  done: {geometry}, {name} ({seconds:.0f} s)", flush=True)

    print()
    print(
        "| objective | geometry | held-out NDCG@10 | held-out Spearman | train NDCG@10 "
        "| train Spearman | time |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, geometry, hn, hs, tn, ts, seconds in rows:
        cells = [f"{v:.3f}" if v == v else "-" for v in (hn, hs, tn, ts)]
        print(f"| {name} | {geometry} | {' | '.join(cells)} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
