"""Wall time and peak memory of :func:`hyperloss.metrics.evaluate` on a large random tree.

Usage::

    .venv/bin/python benchmarks/evaluate_large.py [--nodes 20000] [--dim 10] [--seed 0]

Builds ``hyperloss.datasets.random_tree(nodes)``, places the nodes at random Lorentz points
(``expmap0`` of Gaussian tangent vectors), runs ``evaluate`` once on one thread and prints the
report, the wall time of each step and the peak resident memory of the process
(``resource.getrusage``; Linux reports it in KiB).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from hyperloss.datasets import random_tree
from hyperloss.geometry import expmap0
from hyperloss.metrics import evaluate


def _peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if sys.platform != "darwin" else 1 / 1024) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    tree = random_tree(args.nodes, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    tangent = torch.randn(args.nodes, args.dim, dtype=torch.float64, generator=generator)
    points = expmap0(tangent)
    setup_s = time.perf_counter() - started
    rss_before = _peak_rss_gib()

    started = time.perf_counter()
    report = evaluate(points, tree)
    evaluate_s = time.perf_counter() - started

    print(report)
    summary = {
        "nodes": args.nodes,
        "height": tree.height,
        "dim": args.dim,
        "threads": args.threads,
        "setup_s": round(setup_s, 2),
        "evaluate_s": round(evaluate_s, 2),
        "peak_rss_gib_before_evaluate": round(rss_before, 3),
        "peak_rss_gib": round(_peak_rss_gib(), 3),
        "distance_matrix_gib": round(8 * args.nodes**2 / 2**30, 3),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
