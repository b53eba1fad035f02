"""Benchmark the ranking losses: vectorized vs the plain-loop references, and at scale.

Run from the repository root::

    .venv/bin/python benchmarks/losses.py

One run prints one table. Every time is the median of several forward+backward passes on one
CPU thread (``torch.set_num_threads(1)``), float64, points on the Lorentz model (dim 2) and
``distance_fn = hyperloss.geometry.LorentzDistance()``; nodes are sampled from NAICS (the
rank-order blocks uniformly; the LambdaRank lists by ``hyperloss.sampling.ListSampler`` with the
defaults that ``fit`` uses). The modules run their index path: points for every node of the
tree (indexed by tree index), LongTensor blocks / lists, tree distances from the ``Tree`` on
demand.

Two like-for-like comparisons, each against a plain-loop reference from
``tests/reference_losses.py`` (the code the tests hold the losses against: Python loops over
anchors, pairs and triples with one torch scalar per term):

* from points: ``module``, the ``nn.Module`` from points and index tensors (gather, distances,
  tree distances, loss) + backward, against ``loop, from points``, the research code's way:
  the same loops with each embedding distance computed inside them by its own ``distance_fn``
  call on two points and tree distances read from the dense matrix
  (``reference_*_from_points``) + backward.
* from distances: ``loss only``, the functional form on a leaf ``(N, N)`` / ``(B, 1 + K)``
  distance tensor + backward, against ``loop, distances given``, the loops on the same leaf
  distance tensor (``reference_rank_order_loss`` / ``reference_lambda_rank_loss``) + backward.
* ``peak memory``: peak resident set size during one forward+backward minus the resident set
  size just before it, in a fresh subprocess per size after a warm-up. The kernel's peak
  (``VmHWM``) is reset first through ``/proc/self/clear_refs`` and free heap memory is handed
  back with ``malloc_trim``, so the figure is the pass's own peak; where that reset is not
  allowed it falls back to the ``resource.getrusage(...).ru_maxrss`` increase (a lower
  bound). It counts everything torch allocates, which ``tracemalloc`` would not see.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the plain-loop references live beside the tests

from reference_losses import (  # noqa: E402
    reference_lambda_rank_loss,
    reference_lambda_rank_loss_from_points,
    reference_rank_order_loss,
    reference_rank_order_loss_from_points,
)

from hyperloss.datasets import naics  # noqa: E402
from hyperloss.geometry import LorentzDistance, expmap0, pairwise_distances  # noqa: E402
from hyperloss.losses import (  # noqa: E402
    LambdaRankLoss,
    RankOrderPreservationLoss,
    lambda_rank_loss,
    rank_order_preservation_loss,
)
from hyperloss.sampling import ListSampler  # noqa: E402

RANK_ORDER = dict(weight=0.1, min_distance=0.1, margin=0.1, reduction="violations")
LAMBDA_RANK = dict(weight=0.15, sigma=1.0, ndcg_k=10)


def median_seconds(run: Callable[[], object], repeats: int, *, warm_up: bool = True) -> float:
    if warm_up:
        run()  # lazy imports, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_points(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return expmap0(torch.randn(n, 2, dtype=torch.float64, generator=generator))


def rank_order_inputs(n: int, seed: int = 0):
    """NAICS, a block of n nodes, points for every node (tree index order), the module."""
    tree = naics()
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(tree), generator=generator)[:n].sort().values
    points = random_points(len(tree), seed).requires_grad_(True)
    module = RankOrderPreservationLoss(tree, **RANK_ORDER)
    return tree, rows, points, module


def backward(loss: torch.Tensor) -> float:
    loss.backward()
    return float(loss.detach())


def compare_rank_order(n: int, repeats: int, reference_repeats: int) -> dict:
    tree, rows, points, module = rank_order_inputs(n)
    distance = LorentzDistance()
    tree_distances = tree.distances()[rows][:, rows]
    distances = pairwise_distances(distance, points[rows]).detach().requires_grad_(True)
    options = {key: RANK_ORDER[key] for key in ("min_distance", "margin", "reduction")}
    weight = RANK_ORDER["weight"]

    def loss_only():
        return backward(weight * rank_order_preservation_loss(distances, tree_distances, **options))

    def reference():
        return backward(weight * reference_rank_order_loss(distances, tree_distances, **options))

    all_tree_distances = tree.distances()

    def reference_from_points():
        loss = reference_rank_order_loss_from_points(
            points[rows], rows.tolist(), distance, all_tree_distances, **RANK_ORDER
        )
        return backward(loss)

    def run_module():
        return backward(module(points, rows, distance))

    return _timed_row(
        f"rank-order  N={n}",
        (run_module, reference_from_points, loss_only, reference),
        repeats,
        reference_repeats,
    )


def _timed_row(case: str, runs, repeats: int, reference_repeats: int) -> dict:
    """Medians of (module, from-points loop, loss only, distances-given loop) + value gap."""
    run_module, reference_from_points, loss_only, reference = runs
    values = [run() for run in runs]  # also the warm-up of the vectorized ones
    return dict(
        case=case,
        module=median_seconds(run_module, repeats),
        reference_from_points=median_seconds(
            reference_from_points, reference_repeats, warm_up=False
        ),
        loss_only=median_seconds(loss_only, repeats),
        reference=median_seconds(reference, reference_repeats, warm_up=False),
        value_gap=max(abs(v - values[3]) for v in values[:3]),
    )


def compare_lambda_rank(batch: int, k: int, repeats: int, reference_repeats: int) -> dict:
    tree = naics()
    n = len(tree)
    # The lists training feeds the loss: ListSampler with fit()'s defaults (positive within
    # tree distance 2, tree-distance-aware negatives at temperature 1).
    lists = ListSampler.from_tree(tree, k_negatives=k, seed=0).sample_random(batch)
    anchors = lists.anchor
    items = torch.cat([lists.positive[:, None], lists.negatives], dim=1)  # (B, 1 + K)
    points = random_points(n, 1).requires_grad_(True)
    module = LambdaRankLoss(tree, **LAMBDA_RANK)
    distance = LorentzDistance()
    tree_distances = tree.distances()[anchors[:, None], items]
    distances = distance(points[anchors][:, None, :], points[items]).detach().requires_grad_(True)
    options = dict(sigma=LAMBDA_RANK["sigma"], ndcg_k=LAMBDA_RANK["ndcg_k"])
    weight = LAMBDA_RANK["weight"]

    def run_module():
        return backward(module(points, anchors, items, distance))

    def loss_only():
        return backward(weight * lambda_rank_loss(distances, tree_distances, **options))

    def reference():
        return backward(weight * reference_lambda_rank_loss(distances, tree_distances, **options))

    all_tree_distances = tree.distances()

    def reference_from_points():
        loss = reference_lambda_rank_loss_from_points(
            points[anchors], points[items], anchors.tolist(), items.tolist(), distance,
            all_tree_distances, **LAMBDA_RANK,
        )  # fmt: skip
        return backward(loss)

    return _timed_row(
        f"LambdaRank  B={batch}, K={k}",
        (run_module, reference_from_points, loss_only, reference),
        repeats,
        reference_repeats,
    )


def worker_rank_order(n: int, repeats: int) -> dict:
    """One size in a fresh process: peak RSS increase of one pass, then the median time."""
    torch.set_num_threads(1)
    _, rows, points, module = rank_order_inputs(n)
    distance = LorentzDistance()
    # warm-up on a few rows: lazy imports and first allocations do not count as the loss's
    backward(module(points, rows[:8], distance))
    peak_kib, method = peak_memory_kib(lambda: backward(module(points, rows, distance)))
    seconds = median_seconds(lambda: backward(module(points, rows, distance)), repeats)
    return dict(
        case=f"rank-order  N={n}", module=seconds, peak_mib=peak_kib / 1024, memory_method=method
    )


def peak_memory_kib(run: Callable[[], object]) -> tuple[int, str]:
    """Peak RSS increase of run() in KiB, and how it was measured."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset VmHWM to the current RSS
        before = _proc_status_kib("VmRSS")
        run()
        return _proc_status_kib("VmHWM") - before, "VmHWM"
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, "ru_maxrss"


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def run_worker(n: int, repeats: int) -> dict:
    command = [sys.executable, __file__, "--worker", str(n), "--repeats", str(repeats)]
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(output.stdout.strip().splitlines()[-1])


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="runs per vectorized median")
    parser.add_argument("--reference-repeats", type=int, default=3, help="runs per loop median")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker_rank_order(args.worker, args.repeats)))
        return

    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    rows = [
        compare_rank_order(32, args.repeats, args.reference_repeats),
        compare_rank_order(64, args.repeats, args.reference_repeats),
        compare_lambda_rank(32, 24, args.repeats, args.reference_repeats),
    ]
    large = [(256, 10), (1024, 3), (len(naics()), 3)]
    rows += [run_worker(n, repeats) for n, repeats in large]
    rows[-1]["case"] += " (all NAICS)"
    memory_method = "VmHWM" if all(r["memory_method"] == "VmHWM" for r in rows[3:]) else "ru_maxrss"
    if memory_method == "VmHWM":
        memory_method = "RSS (VmHWM reset via /proc/self/clear_refs)"
    else:
        memory_method = "ru_maxrss increase (lower bound)"

    print(
        f"hyperloss.losses: forward+backward, median of {args.repeats} runs "
        f"({args.reference_repeats} for the loop references, 10/3/3 for N = 256/1,024/2,126); "
        f"torch {torch.__version__}, 1 thread, float64, {platform.machine()} "
        f"({os.cpu_count()} cores, load average {load:.1f} at start); "
        "Lorentz points (dim 2), LorentzDistance; peak memory = "
        f"{memory_method} peak minus RSS before the pass, fresh subprocess per size"
    )
    columns = [
        ("case", 32, "<"),
        ("module", 11, ">"),
        ("loop, from points", 19, ">"),
        ("speed-up", 10, ">"),
        ("loss only", 12, ">"),
        ("loop, distances given", 23, ">"),
        ("speed-up", 10, ">"),
        ("peak memory", 13, ">"),
    ]
    widths = [width for _, width, _ in columns]
    group_from_points = "from points: module vs loop".center(sum(widths[1:4]) - 2, "-")
    group_from_distances = "from distances: loss vs loop".center(sum(widths[4:7]) - 2, "-")
    print(f"{'':<{widths[0]}}  {group_from_points}  {group_from_distances}")
    header = "".join(f"{name:{align}{width}}" for name, width, align in columns)
    print(header)
    print("-" * len(header))
    gaps = []
    for row in rows:
        from_points = row.get("reference_from_points")
        given = row.get("reference")
        cells = [
            row["case"],
            format_seconds(row["module"]),
            format_seconds(from_points),
            f"{from_points / row['module']:,.0f}x" if from_points else "-",
            format_seconds(row.get("loss_only")),
            format_seconds(given),
            f"{given / row['loss_only']:,.0f}x" if given else "-",
            f"{row['peak_mib']:,.0f} MiB" if "peak_mib" in row else "-",
        ]
        print("".join(f"{c:{a}{w}}" for c, (_, w, a) in zip(cells, columns, strict=True)))
        if "value_gap" in row:
            gaps.append(row["value_gap"])
    print(
        "from points: both sides take points, tree indices and LorentzDistance; the loop calls "
        "distance_fn once per pair inside its loops (the research code's way)."
    )
    print(
        "from distances: both sides take the same leaf tensor of embedding distances "
        "(the loop gets its distances for free)."
    )
    print(f"largest |vectorized - reference| loss value in the compared rows: {max(gaps):.1e}")


if __name__ == "__main__":
    main()
