"""Compare the ranking losses on the same budget: rank-order only, LambdaRank only, both.

Each run trains NAICS 2022 from random points near the origin (so that the losses, not the
construction, do the work) with the same seed, epochs and learning rate, and differs only in
``losses``. Rank-order preservation targets the global order of distances (Spearman),
LambdaRank the top of each node's neighbour list (NDCG@10); together they should get both.

    python examples/compare_losses.py                     # dim 10, 40 epochs each
    python examples/compare_losses.py --dim 5 --epochs 80
    HYPERLOSS_QUICK=1 python examples/compare_losses.py   # sector 54 only, 3 epochs each
"""

import argparse
import os
import time

import torch

from hyperloss.datasets import naics
from hyperloss.losses import LambdaRankLoss, RankOrderPreservationLoss
from hyperloss.training import fit

QUICK = os.environ.get("HYPERLOSS_QUICK", "") not in ("", "0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3 if QUICK else 40)
    parser.add_argument("--lr", type=float, default=None, help="default: fit's for init=random")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(min(torch.get_num_threads(), 2))

    tree = naics().subtree("54") if QUICK else naics()
    objectives = {
        "rank-order only": [RankOrderPreservationLoss.from_tree(tree)],
        "LambdaRank only": [LambdaRankLoss.from_tree(tree)],
        "both": [RankOrderPreservationLoss.from_tree(tree), LambdaRankLoss.from_tree(tree)],
    }
    budget = {"epochs": args.epochs, "seed": args.seed, "init": "random", "progress": False}
    if args.lr is not None:
        budget["lr"] = args.lr
    print(f"{len(tree)} nodes, dim {args.dim}, {args.epochs} epochs from random init\n")

    header = f"| {'losses':<16} | Spearman | NDCG@10 |   MAP  | mean rank | wall time |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for label, losses in objectives.items():
        start = time.perf_counter()
        embedding = fit(tree, args.dim, losses=losses, **budget)
        seconds = time.perf_counter() - start
        report = embedding.evaluate(tree)
        print(
            f"| {label:<16} | {report.spearman:8.4f} | {report.ndcg[10]:7.4f} | "
            f"{report.map:6.4f} | {report.mean_rank:9.2f} | {seconds:7.1f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
