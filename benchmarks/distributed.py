"""1 vs 2 processes: data-parallel fit on NAICS, and the cost of the sparse gradient exchange.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/distributed.py --epochs 30 --processes 1 2

Part 1 trains ``fit(naics(), 10, init="random")`` for ``--epochs`` epochs with 1 and with 2
processes (gloo on localhost, started as torchrun would start them) at the same total work
(global batch 128 lists and 256 block nodes per step, 17 steps per epoch; see
:mod:`hyperloss.distributed`), one thread per process, and prints the median seconds per epoch
and the fidelity (exact Spearman and NDCG@10 of the monitor) at the end. Part 2 times one
exchange of a sparse gradient between 2 processes, "dense" against "gather", with as many rows
per rank as a NAICS step touches, for NAICS's N and for larger N.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import time

import torch


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment(rank: int, world_size: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)


def _train(rank: int, world_size: int, port: int, epochs: int, queue: object) -> None:
    _environment(rank, world_size, port)
    from hyperloss.datasets import naics
    from hyperloss.training import fit

    stamps: list[float] = []
    embedding = fit(
        naics(),
        10,
        init="random",
        epochs=epochs,
        eval_every=epochs,
        progress=False,
        restore_best=False,
        callbacks=[lambda state: stamps.append(time.perf_counter())],
    )
    if rank == 0:
        intervals = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        queue.put((statistics.median(intervals), dict(embedding.metrics)))


def _exchange(rank: int, world_size: int, port: int, sizes: list[int], rows: int, queue: object):
    _environment(rank, world_size, port)
    from hyperloss.distributed import all_reduce_gradient, process_group

    timings = {}
    with process_group():
        for n_nodes in sizes:
            parameter = torch.zeros(n_nodes, 10, dtype=torch.float64, requires_grad=True)
            generator = torch.Generator().manual_seed(rank)
            index = torch.randperm(n_nodes, generator=generator)[: min(rows, n_nodes)]
            grad = torch.sparse_coo_tensor(
                index[None], torch.randn(index.numel(), 10, dtype=torch.float64), parameter.shape
            ).coalesce()
            for method in ("dense", "gather"):
                times = []
                for _ in range(30):
                    parameter.grad = grad.clone()
                    start = time.perf_counter()
                    all_reduce_gradient(parameter, method=method)
                    times.append(time.perf_counter() - start)
                timings[(n_nodes, method)] = statistics.median(times)
    if rank == 0:
        queue.put(timings)


def _launch(target, world_size: int, *args: object) -> object:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    processes = [
        context.Process(target=target, args=(rank, world_size, port, *args, queue))
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    result = queue.get(timeout=1800)
    for process in processes:
        process.join()
    return result


def _rows_per_rank_step() -> int:
    """Distinct rows one rank of 2 looks up in a NAICS step (block 128, 64 lists of 25)."""
    from hyperloss.datasets import naics
    from hyperloss.sampling import ListSampler

    sampler = ListSampler(naics(), seed=0)
    counts = []
    for _ in range(10):
        batch = sampler.sample_random(64)
        rows = torch.cat([sampler.nodes(128), batch.items.flatten(), batch.anchor])
        counts.append(torch.unique(rows).numel())
    return int(statistics.median(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"cores visible: {os.cpu_count()}; one thread per process")
    print("| processes | s / epoch | speed-up | Spearman | NDCG@10 |")
    print("|---|---|---|---|---|")
    base = None
    for world_size in args.processes:
        seconds, metrics = _launch(_train, world_size, args.epochs)
        base = base or seconds
        print(
            f"| {world_size} | {seconds:.2f} | {base / seconds:.2f}x | "
            f"{metrics['spearman']:.4f} | {metrics['ndcg@10']:.4f} |",
            flush=True,
        )
    rows = _rows_per_rank_step()
    sizes = [2_126, 98_506, 1_000_000]
    timings = _launch(_exchange, 2, sizes, rows)
    print(f"\nsparse gradient exchange, 2 processes, {rows} rows per rank, dim 10 (median of 30)")
    print("| N | dense (ms) | gather (ms) | auto picks |")
    print("|---|---|---|---|")
    for n_nodes in sizes:
        auto = "gather" if 2 * rows < n_nodes / 2 else "dense"
        print(
            f"| {n_nodes:,} | {1e3 * timings[(n_nodes, 'dense')]:.2f} | "
            f"{1e3 * timings[(n_nodes, 'gather')]:.2f} | {auto} |"
        )


if __name__ == "__main__":
    main()
