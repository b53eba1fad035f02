"""Data-parallel fit on torch.distributed: 2 CPU processes (gloo on localhost), bounded time.

Each multi-process test starts its ranks with ``multiprocessing`` (spawn) and the environment
``torchrun`` would set (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` on a free
port), so ``fit`` itself detects the run and initialises the process group. Every rank writes
its outcome (a result or its exception) to a file; the parent waits with a deadline and kills
the ranks if they outlive it, so a hang fails the test instead of stalling the suite. One test
runs the real command under ``python -m torch.distributed.run``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hyperloss import distributed
from hyperloss.distributed import FitShard, RankInfo, all_reduce_gradient

DEADLINE_S = 90.0  # per multi-process run; each takes ~5-20 s on the shared 2-core machine


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- the harness
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_main(rank, world_size, port, out_dir, env, target, kwargs):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        OMP_NUM_THREADS="1",
        **env,
    )
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        outcome = {"result": target(rank, **kwargs)}
    except BaseException as error:  # noqa: BLE001 - the parent checks which error
        outcome = {"error": type(error).__name__, "message": str(error)}
    outcome["seconds"] = time.perf_counter() - start
    torch.save(outcome, Path(out_dir) / f"rank{rank}.pt")


def _run_ranks(tmp_path, target, world_size=2, env=None, **kwargs):
    """Outcomes of ``target(rank, **kwargs)`` on ``world_size`` ranks, rank order."""
    out_dir = tmp_path / f"ranks-{time.monotonic_ns()}"
    out_dir.mkdir()
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [
        context.Process(
            target=_rank_main,
            args=(rank, world_size, port, str(out_dir), env or {}, target, kwargs),
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + DEADLINE_S
    for process in processes:
        process.join(timeout=max(deadline - time.monotonic(), 0.1))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join()
    assert not hung, f"ranks {hung} still running after {DEADLINE_S} s: a hang"
    return [
        torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)
    ]


def _results(outcomes):
    for rank, outcome in enumerate(outcomes):
        assert "result" in outcome, f"rank {rank} failed: {outcome}"
    return [outcome["result"] for outcome in outcomes]


# ---------------------------------------------------------------------------- rank targets
def _subtree():
    from hyperloss.datasets import naics

    return naics().subtree("54")  # 95 nodes, height 4


def _noisy_construction(tree):
    """The 2-D construction with seeded tangent noise: a start that fine-tuning changes."""
    from hyperloss.construction import construct
    from hyperloss.embedding import Embedding
    from hyperloss.geometry import expmap0, logmap0

    tangent = logmap0(construct(tree, 2).points)
    noise = torch.randn(tangent.shape, generator=torch.Generator().manual_seed(123))
    return Embedding(expmap0(tangent + 0.3 * noise.double()), tree.names, 1.0)


QUALITY = {
    "batch_size": 32,
    "block_size": 32,
    "epochs": 40,
    "eval_every": 40,
    "early_stopping": None,
    "restore_best": False,
    "lr": 0.02,
    "progress": False,
}


def _fit_quality(rank, seed):
    from hyperloss.training import fit

    tree = _subtree()
    embedding = fit(tree, 2, init=_noisy_construction(tree), seed=seed, **QUALITY)
    return {"metrics": dict(embedding.metrics), "points": embedding.points}


def _small_fit_kwargs(**extra):
    kwargs = {
        "init": "random",
        "epochs": 6,
        "eval_every": 2,
        "batch_size": 16,
        "block_size": 20,
        "progress": False,
        "early_stopping": None,
        "restore_best": False,
        "seed": 3,
    }
    kwargs.update(extra)
    return kwargs


def _fit_small(rank, checkpoint=None, stop_at=None, fail_rank=None, sleep_rank=None, **extra):
    from hyperloss.datasets import random_tree
    from hyperloss.training import fit

    seen = []

    def callback(state):
        seen.append(state.epoch)
        if fail_rank == rank and state.epoch == 2:
            raise ValueError(f"callback failed on rank {rank}")
        if sleep_rank == rank and state.epoch == 2:
            time.sleep(20)
        if stop_at is not None and state.epoch == stop_at:
            raise KeyboardInterrupt  # every rank is interrupted at the same epoch

    if checkpoint is not None:
        checkpoint = Path(checkpoint.format(rank=rank))
    embedding = fit(
        random_tree(60, seed=2),
        2,
        checkpoint=checkpoint,
        callbacks=[callback],
        **_small_fit_kwargs(**extra),
    )
    return {"points": embedding.points, "epochs": seen}


def _fit_sequence(rank, runs):
    """Several fits in one process group that the caller initialised (fit then joins it)."""
    outcomes = []
    with distributed.process_group():
        for run in runs:
            try:
                outcomes.append(_fit_small(rank, **run))
            except KeyboardInterrupt:
                outcomes.append({"error": "KeyboardInterrupt"})
    return outcomes


def _gradient_exchange(rank, method, n_nodes, dense_rank=None, empty_rank=None):
    parameter = torch.zeros(n_nodes, 3, dtype=torch.float64, requires_grad=True)
    generator = torch.Generator().manual_seed(rank)
    rows = torch.randint(n_nodes, (7,), generator=generator)
    values = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    local = torch.sparse_coo_tensor(rows[None], values, parameter.shape, check_invariants=True)
    if rank == empty_rank:
        parameter.grad = None
    elif rank == dense_rank:
        parameter.grad = local.to_dense()
    else:
        parameter.grad = local
    with distributed.process_group():  # what fit does: join torchrun's group
        used = all_reduce_gradient(parameter, method=method)
    grad = parameter.grad
    return {
        "local": local,
        "used": used,
        "sparse": grad.is_sparse,
        "rows": grad.coalesce().indices()[0] if grad.is_sparse else None,
        "dense": grad.to_dense(),
    }


def _shard_batches(rank):
    from hyperloss.datasets import random_tree
    from hyperloss.sampling import ListSampler

    tree = random_tree(15, seed=0)
    shard = FitShard(seed=5, info=RankInfo(rank, 2, rank))
    sampler = ListSampler(tree, k_negatives=3, seed=5)
    steps = []
    for batch in shard.epoch(sampler, 4, epoch=0):  # 4 global batches: 4, 4, 4, 3 anchors
        steps.append((batch.anchor.clone(), shard.list_weight))
    return {"steps": steps, "block": shard.block_size(20)}


# ---------------------------------------------------------------------------- quality
def test_two_ranks_match_one_process_quality_at_the_same_total_work(tmp_path):
    from hyperloss.geometry import LorentzDistance
    from hyperloss.metrics import monitor_metrics

    single = _run_ranks(tmp_path, _fit_quality, world_size=1, seed=0)[0]["result"]["metrics"]
    two = _results(_run_ranks(tmp_path, _fit_quality, seed=0))
    tree = _subtree()
    start = monitor_metrics(_noisy_construction(tree).points, tree, LorentzDistance(1.0), k=10)
    for name in ("spearman", "ndcg@10"):
        assert abs(two[0]["metrics"][name] - single[name]) <= 0.005, (name, two, single)
    # Not vacuous: the fine-tuning moved the metrics well beyond the tolerance.
    moved = max(abs(single[name] - float(start[name])) for name in ("spearman", "ndcg@10"))
    assert moved > 0.01
    # Every rank ends with the same points (also checked at every evaluation inside fit).
    assert torch.equal(two[0]["points"], two[1]["points"])


# ---------------------------------------------------------------------------- determinism
def test_same_seed_and_world_size_give_the_same_points(tmp_path):
    runs = [{}, {}, {"seed": 4}]
    ranks = _results(_run_ranks(tmp_path, _fit_sequence, runs=runs))
    first, second, other_seed = ranks[0]
    assert torch.equal(first["points"], ranks[1][0]["points"])  # identical on every rank
    assert torch.equal(first["points"], second["points"])
    assert not torch.equal(first["points"], other_seed["points"])
    assert torch.isfinite(first["points"]).all()


def test_each_rank_takes_its_share_of_every_global_batch(tmp_path):
    ranks = _results(_run_ranks(tmp_path, _shard_batches))
    everything = []
    for step in range(4):
        (anchors0, weight0), (anchors1, weight1) = ranks[0]["steps"][step], ranks[1]["steps"][step]
        assert not set(anchors0.tolist()) & set(anchors1.tolist())
        everything += anchors0.tolist() + anchors1.tolist()
        # The mean over ranks of (weight x the rank's mean) is the mean over the global batch.
        values = {0: anchors0.double(), 1: anchors1.double()}
        weights = {0: weight0, 1: weight1}
        combined = sum(weights[r] * values[r].mean() for r in (0, 1) if values[r].numel()) / 2
        global_mean = torch.cat([values[0], values[1]]).mean()
        assert torch.isclose(combined, global_mean)
    assert sorted(everything) == list(range(15))  # one epoch: every node once as an anchor
    assert ranks[0]["block"] == ranks[1]["block"] == 10


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("method", ["dense", "gather", "auto"])
def test_sparse_gradient_average_equals_the_dense_oracle(tmp_path, method):
    ranks = _results(_run_ranks(tmp_path, _gradient_exchange, method=method, n_nodes=40))
    oracle = (ranks[0]["local"].to_dense() + ranks[1]["local"].to_dense()) / 2
    union = torch.unique(
        torch.cat([ranks[0]["local"].coalesce().indices()[0], ranks[1]["local"]._indices()[0]])
    )
    for result in ranks:
        assert result["sparse"]
        assert torch.allclose(result["dense"], oracle, rtol=0, atol=1e-15)
        assert torch.equal(result["rows"], union)  # rows touched anywhere, no others
    assert torch.equal(ranks[0]["dense"], ranks[1]["dense"])
    expected = {"dense": "dense", "gather": "gather", "auto": "gather"}[method]  # 2 * 7 < 40 / 2
    assert ranks[0]["used"] == expected


def test_gradient_exchange_with_a_dense_or_missing_gradient(tmp_path):
    dense = _results(
        _run_ranks(tmp_path, _gradient_exchange, method="auto", n_nodes=9, dense_rank=1)
    )
    oracle = (dense[0]["local"].to_dense() + dense[1]["local"].to_dense()) / 2
    assert dense[0]["used"] == "dense-gradient" and not dense[0]["sparse"]
    assert torch.allclose(dense[0]["dense"], oracle, rtol=0, atol=1e-15)
    empty = _results(
        _run_ranks(tmp_path, _gradient_exchange, method="auto", n_nodes=9, empty_rank=0)
    )
    assert torch.allclose(empty[0]["dense"], empty[1]["local"].to_dense() / 2, rtol=0, atol=1e-15)
    assert torch.equal(empty[0]["dense"], empty[1]["dense"])


# ---------------------------------------------------------------------------- files, resume
def test_only_rank_zero_writes_the_checkpoint(tmp_path):
    pattern = str(tmp_path / "ckpt-rank{rank}.pt")
    _results(_run_ranks(tmp_path, _fit_small, checkpoint=pattern))
    assert (tmp_path / "ckpt-rank0.pt").is_file()
    assert not (tmp_path / "ckpt-rank1.pt").exists()
    state = torch.load(tmp_path / "ckpt-rank0.pt", weights_only=True)
    assert state["world_size"] == 2 and state["epoch"] == 6


def test_resume_under_two_ranks_equals_an_uninterrupted_run(tmp_path):
    first, second = str(tmp_path / "first.pt"), str(tmp_path / "second.pt")
    runs = [
        {},  # uninterrupted
        {"checkpoint": first, "stop_at": 3},  # interrupted between evaluations
        {"checkpoint": first},
        {"checkpoint": second, "stop_at": 4},  # right after an evaluation
        {"checkpoint": second},
    ]
    for rank_runs in _results(_run_ranks(tmp_path, _fit_sequence, runs=runs)):
        uninterrupted, stopped_3, resumed_3, stopped_4, resumed_4 = rank_runs
        assert stopped_3 == stopped_4 == {"error": "KeyboardInterrupt"}
        assert resumed_3["epochs"][0] == 3 and resumed_4["epochs"][0] == 5  # did not start over
        assert torch.equal(resumed_3["points"], uninterrupted["points"])
        assert torch.equal(resumed_4["points"], uninterrupted["points"])


def test_resume_with_another_world_size_warns_and_continues(tmp_path):
    from hyperloss.datasets import random_tree
    from hyperloss.training import fit

    path = tmp_path / "run.pt"
    interrupted = _run_ranks(tmp_path, _fit_small, checkpoint=str(path), stop_at=3)
    assert interrupted[0]["error"] == "KeyboardInterrupt"
    saved = torch.load(path, weights_only=True)
    seen = []
    with pytest.warns(UserWarning, match="2 process"):
        embedding = fit(
            random_tree(60, seed=2),
            2,
            checkpoint=path,
            callbacks=[lambda state: seen.append(state.epoch)],
            **_small_fit_kwargs(),
        )
    assert seen[0] == 3 and seen[-1] == 6  # continued from epoch 2 of the 2-rank run
    assert torch.isfinite(embedding.points).all()
    assert not torch.equal(embedding.points, saved["parameter"])  # it trained on


# ---------------------------------------------------------------------------- failures
def test_a_failing_rank_ends_the_run_with_a_clear_error(tmp_path):
    start = time.monotonic()
    outcomes = _run_ranks(
        tmp_path, _fit_small, fail_rank=1, env={distributed.TIMEOUT_ENV: "30"}, epochs=20
    )
    assert outcomes[1]["error"] == "ValueError" and "rank 1" in outcomes[1]["message"]
    assert outcomes[0]["error"] == "DistributedError"
    assert "another rank failed" in outcomes[0]["message"]
    assert time.monotonic() - start < 60


def test_a_stalled_rank_ends_the_run_at_the_timeout(tmp_path):
    outcomes = _run_ranks(
        tmp_path, _fit_small, sleep_rank=1, env={distributed.TIMEOUT_ENV: "3"}, epochs=20
    )
    assert outcomes[0]["error"] == "DistributedError"
    assert outcomes[0]["seconds"] < 15  # the 3 s timeout, not the 20 s sleep


# ---------------------------------------------------------------------------- the command
def test_the_command_under_torchrun_writes_once_from_rank_zero(tmp_path):
    from hyperloss.datasets import random_tree

    tree_file = tmp_path / "tree.tsv"
    random_tree(40, seed=1).write_tsv(tree_file)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "hyperloss",
        "embed",
        "--tree",
        str(tree_file),
        "--dim",
        "2",
        "--init",
        "random",
        "--epochs",
        "3",
        "--no-plot",
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=DEADLINE_S, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote ") == 1  # the table and file list printed once
    assert "Spearman" in done.stdout or "spearman" in done.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    assert (out / "points.npy").is_file() and (out / "metrics.json").is_file()


# ---------------------------------------------------------------------------- bad input
def test_rank_info_and_setup_errors(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.rank_info() == RankInfo(0, 1, 0)
    assert FitShard.current(seed=0) is None  # a single process: fit runs as before
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer"):
        distributed.rank_info()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 must be < WORLD_SIZE=2"):
        distributed.rank_info()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="MASTER_ADDR and MASTER_PORT not set"):
        with distributed.process_group():
            pass
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="HYPERLOSS_DIST_TIMEOUT must be a number"):
        with distributed.process_group():
            pass
    with pytest.raises(ValueError, match="timeout must be a finite number"):
        with distributed.process_group(timeout=-1.0):
            pass
    parameter = torch.zeros(3, 2, requires_grad=True)
    with pytest.raises(ValueError, match="method must be one of"):
        all_reduce_gradient(parameter, method="ring")
