"""Wall time and peak memory of :func:`hyperloss.metrics.evaluate` on a large random tree.

Usage::

    .venv/bin/python benchmarks/evaluate_large.py [--nodes 1000000] [--dim 10] [--seed 0]
        [--sample auto|true|false] [--n-anchors 200] [--n-pairs 1000000] [--monitor]

Builds ``hyperloss.datasets.random_tree(nodes)``, places the nodes at random Lorentz points
(``expmap0`` of Gaussian tangent vectors), runs ``evaluate`` once on one thread (and, with
``--monitor``, :func:`hyperloss.metrics.monitor_metrics` with its defaults) and prints the
report, the wall time of each step and the peak resident memory of the process
(``resource.getrusage``; Linux reports it in KiB). Above ``EXACT_LIMIT`` (4,096) nodes the
evaluation is sampled and nothing ``N x N`` is built.

Measured on the shared 2-core development machine (load average about 1), one thread,
10-D random points, default samples (``evaluate``: 200 anchors, 1,000,000 pairs;
``monitor_metrics``: 32 anchors, 100,000 pairs)::

    nodes      height  build tree  evaluate  monitor  peak RSS (whole process)
    98,500     26      0.4 s       5.5 s     0.7 s    0.53 GiB
    1,000,000  31      4.7 s       58.5 s    7.7 s    0.92 GiB (0.92 before evaluate)

Per anchor, a 10^6-node row costs about 0.3 s (0.1 s for ``distance_fn``, 0.1 s for the
argsort, the rest for scoring); 10^6 sampled pairs about 2 s.
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
from hyperloss.metrics import DEFAULT_ANCHORS, DEFAULT_PAIRS, evaluate, monitor_metrics


def _peak_rss_gib() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if sys.platform != "darwin" else 1 / 1024) / 2**20


def _sample_mode(text: str) -> bool | str:
    modes = {"auto": "auto", "true": True, "false": False}
    if text.lower() not in modes:
        raise argparse.ArgumentTypeError(f"--sample must be auto, true or false, got {text!r}")
    return modes[text.lower()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample", type=_sample_mode, default="auto")
    parser.add_argument("--n-anchors", type=int, default=DEFAULT_ANCHORS)
    parser.add_argument("--n-pairs", type=int, default=DEFAULT_PAIRS)
    parser.add_argument("--monitor", action="store_true", help="also time monitor_metrics")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    tree = random_tree(args.nodes, seed=args.seed)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(args.seed)
    tangent = torch.randn(args.nodes, args.dim, dtype=torch.float64, generator=generator)
    points = expmap0(tangent)
    del tangent
    points_s = time.perf_counter() - started
    rss_before = _peak_rss_gib()

    started = time.perf_counter()
    report = evaluate(
        points,
        tree,
        sample=args.sample,
        n_anchors=args.n_anchors,
        n_pairs=args.n_pairs,
        seed=args.seed,
    )
    evaluate_s = time.perf_counter() - started
    rss_evaluate = _peak_rss_gib()
    print(report)

    summary = {
        "nodes": args.nodes,
        "height": tree.height,
        "dim": args.dim,
        "threads": args.threads,
        "sampled": report.sampled,
        "n_anchors": report.n_anchors,
        "n_pairs": report.n_pairs,
        "build_tree_s": round(build_s, 2),
        "points_s": round(points_s, 2),
        "evaluate_s": round(evaluate_s, 2),
        "peak_rss_gib_before_evaluate": round(rss_before, 3),
        "peak_rss_gib_after_evaluate": round(rss_evaluate, 3),
    }
    if args.monitor:
        started = time.perf_counter()
        summary["monitor"] = monitor_metrics(points, tree, seed=args.seed)
        summary["monitor_s"] = round(time.perf_counter() - started, 2)
        summary["peak_rss_gib"] = round(_peak_rss_gib(), 3)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
