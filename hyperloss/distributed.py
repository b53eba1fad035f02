"""Data-parallel :func:`hyperloss.fit` on ``torch.distributed``, under ``torchrun``.

Run the same command under ``torchrun`` (``python -m torch.distributed.run``) and
:func:`~hyperloss.training.fit` trains data-parallel: on one machine
(``--nproc-per-node 2``), across machines (``--nnodes 2 --rdzv-backend c10d --rdzv-endpoint
HOST:PORT``), on CPUs (gloo) or GPUs (NCCL for CUDA tensors). Nothing here is a home-made
engine: process groups, collectives and failure handling are ``torch.distributed``'s.

How a step is shared (``W`` processes, "ranks")
-----------------------------------------------
*Global batch, split.* ``batch_size`` is the global batch: a step of a ``W``-rank run scores the
same ``batch_size`` ranking lists and ``block_size`` block nodes in total as a step of one
process, and an epoch has the same ``ceil(N / batch_size)`` steps. Every rank draws the epoch's
anchor permutation from the same seeded stream (so all ranks agree on the global batch of each
step, whatever ``W``) and takes every ``W``-th anchor of it; it draws its anchors' positives and
negatives, and its own block of ``ceil(block_size / W)`` nodes, from a stream of its own
(seeded by ``seed``, epoch, ``W`` and rank). The list loss of a rank is weighted by its share
of the global batch, so the mean of the ranks' losses is the mean over all ``batch_size``
lists, as in one process; the block term is the mean over ``W`` independent blocks of
``block_size / W`` nodes (an estimate of the same expectation as one block of ``block_size``
nodes, with the same leading-order variance: the rank-order and global terms average over
pairs of the block, and ``W`` blocks of ``n / W`` nodes hold ``n^2 / W`` pairs; the quality
table of the README measures the difference).

*Gradients.* After the local backward pass, each rank's gradient is averaged over the ranks
(:func:`all_reduce_gradient`). Free points have a *sparse* gradient (the rows a step looked
up), which :class:`~hyperloss.optim.TangentRiemannianAdam` applies lazily (only those rows
move). The average keeps it sparse: its rows are the union of the ranks' rows, exactly the rows
one process touching all of them would move. Two exchanges, chosen per step by the same rule on
every rank (``method="auto"``):

``"dense"``
    Scatter the rows into an ``(N, dim + 1)`` buffer (last column: a touched-row count) and
    all-reduce it. Cost independent of the rows touched: ``O(N * dim)`` per step.
``"gather"``
    All-gather each rank's ``(rows, values)`` (rows carried as a float64 column, exact below
    2^53) padded to the largest count, then sum. ``O(W * rows * dim)`` per step.

``"auto"`` gathers when ``W * max_rows < N / 2`` and reduces densely otherwise. Measured with
``benchmarks/distributed.py`` (2 processes on the shared, loaded 2-core machine, dim 10, 893
rows per rank: what a rank touches in a NAICS step; median ms per exchange):

============  =======  ========  ==========
N             dense    gather    auto picks
============  =======  ========  ==========
2,126         6.5      6.3       dense
98,506        30.9     5.7       gather
1,000,000     309      2.7       gather
============  =======  ========  ==========

At NAICS size both are latency (a few ms of scheduling on a busy machine), so either is fine;
past ~10^5 nodes the dense buffer dominates and gathering the rows is the one that scales.

*Identical parameters.* All ranks start from rank 0's points (broadcast once) and apply the
same averaged gradient with the same optimizer state, so their parameters stay bitwise equal;
every evaluation checks it (a SHA-256 digest of the points, all-gathered) and raises
:class:`DistributedError` if a rank drifted.

*Rank 0.* Evaluation runs on rank 0 and its result (or its exception) is broadcast, so early
stopping and the best state are decided once for all ranks; a callback returning True on any
rank stops all of them. Only rank 0 writes the checkpoint, shows the progress bar, and (in the
command line tool) writes files and prints.

Failures end the run, they do not hang it: a rank that raises leaves the process group
(``torchrun`` also stops the others), and the others' next collective fails with
:class:`DistributedError` naming the operation; a rank that stops responding without exiting
is caught by the process group's timeout (``HYPERLOSS_DIST_TIMEOUT`` seconds, default 300).

Resuming
--------
A checkpoint is written by rank 0 at epoch ends and records the world size. Resuming under the
same world size is exact (the result equals an uninterrupted run): the streams of an epoch are
seeded from (seed, epoch, world size, rank), so nothing but the points, the optimizer moments
and the bookkeeping needs restoring. Resuming with another world size is supported and
deterministic: points, optimizer moments, epoch, history, early-stopping counters and best
state are restored exactly, the anchor order of every later epoch is the same, but the later
lists and blocks are drawn as the new world size draws them, so the result is not bitwise that
of an uninterrupted run at either size (a warning says so). A single-process checkpoint
resumes under ``torchrun`` and vice versa on the same terms.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "BACKEND_ENV",
    "DistributedError",
    "FitShard",
    "RankInfo",
    "TIMEOUT_ENV",
    "all_reduce_gradient",
    "is_rank_zero",
    "process_group",
    "rank_info",
]

#: Environment variable: seconds a collective may wait for the other ranks (default 300).
TIMEOUT_ENV = "HYPERLOSS_DIST_TIMEOUT"
#: Environment variable: the backend ``fit`` initialises (default: gloo, plus NCCL for CUDA
#: tensors when CUDA is available).
BACKEND_ENV = "HYPERLOSS_DIST_BACKEND"
DEFAULT_TIMEOUT_S = 300.0
GRADIENT_METHODS = ("auto", "dense", "gather")

T = TypeVar("T")
# torch 2.13 renamed all_gather_into_tensor (2.1+) to all_gather_single; same signature.
_ALL_GATHER_SINGLE = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class DistributedError(RuntimeError):
    """A collective of a data-parallel run failed: another rank failed, stopped or drifted."""


@dataclass(frozen=True)
class RankInfo:
    """Where this process stands in a data-parallel run.

    Attributes
    ----------
    rank : int
        0 .. world_size - 1; rank 0 writes files.
    world_size : int
        Number of processes (1: a plain single-process run).
    local_rank : int
        Rank on this machine (the GPU to use).
    """

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_zero(self) -> bool:
        """True on rank 0 (and in a single process)."""
        return self.rank == 0


def rank_info() -> RankInfo:
    """This process's rank, from the initialised process group or ``torchrun``'s variables.

    Returns
    -------
    RankInfo
        From ``torch.distributed`` if a process group is initialised, else from the
        ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` environment variables ``torchrun`` sets,
        else ``RankInfo(0, 1, 0)``.

    Raises
    ------
    ValueError
        If the environment variables are malformed (naming the variable).

    Examples
    --------
    >>> rank_info().world_size >= 1
    True
    """
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return RankInfo(rank, dist.get_world_size(), _env_int("LOCAL_RANK", rank, minimum=0))
    world_size = _env_int("WORLD_SIZE", 1, minimum=1)
    rank = _env_int("RANK", 0, minimum=0)
    if rank >= world_size:
        raise ValueError(f"environment variable RANK={rank} must be < WORLD_SIZE={world_size}")
    return RankInfo(rank, world_size, _env_int("LOCAL_RANK", rank, minimum=0))


def is_rank_zero() -> bool:
    """True unless this process is a rank other than 0 of a data-parallel run."""
    return rank_info().is_zero


@contextmanager
def process_group(timeout: float | None = None) -> Iterator[RankInfo]:
    """Join the ``torchrun`` process group for the duration of a ``with`` block.

    Does nothing in a single process (``WORLD_SIZE`` unset or 1) or when a process group is
    already initialised (it is used as it is). Otherwise initialises one from ``torchrun``'s
    environment (``env://``) and destroys it on leaving the block, so a rank that raises
    leaves the group and the others' collectives fail instead of waiting.

    Parameters
    ----------
    timeout : float, optional
        Seconds a collective waits for the other ranks before failing. Default: the
        ``HYPERLOSS_DIST_TIMEOUT`` environment variable, else 300.

    Yields
    ------
    RankInfo

    Raises
    ------
    ValueError
        If ``WORLD_SIZE > 1`` but ``MASTER_ADDR`` / ``MASTER_PORT`` are not set (not started
        by torchrun), or the timeout is not a positive number.
    """
    info = rank_info()
    created = False
    if info.world_size > 1 and not dist.is_initialized():
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise ValueError(
                f"WORLD_SIZE={info.world_size} but {' and '.join(missing)} not set: start the "
                "run with torchrun (python -m torch.distributed.run), which sets them"
            )
        seconds = _timeout_seconds(timeout)
        backend = os.environ.get(BACKEND_ENV) or _default_backend()
        if torch.cuda.is_available() and "nccl" in backend:
            torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=info.rank,
            world_size=info.world_size,
            timeout=datetime.timedelta(seconds=seconds),
        )
        created = True
    try:
        yield rank_info()
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_gradient(parameter: Tensor, *, method: str = "auto") -> str | None:
    """Average ``parameter.grad`` over the ranks, in place; a sparse gradient stays sparse.

    Every rank must call it at the same step, also a rank whose gradient is None (it counts as
    zero). A sparse (COO, one sparse dimension) gradient becomes the sparse average whose rows
    are the union of all ranks' rows; a dense gradient is all-reduced densely. See the module
    docstring for the two sparse exchanges.

    Parameters
    ----------
    parameter : Tensor (N, D)
        The same parameter on every rank.
    method : {"auto", "dense", "gather"}, default "auto"
        How a sparse gradient is exchanged.

    Returns
    -------
    str or None
        The exchange used (``"dense"``, ``"gather"``, ``"dense-gradient"``), or None when no
        rank had a gradient (``parameter.grad`` stays None) or there is one process.

    Raises
    ------
    ValueError
        If ``method`` is unknown.
    DistributedError
        If a collective fails (another rank failed or timed out).
    """
    if method not in GRADIENT_METHODS:
        raise ValueError(f"method must be one of {GRADIENT_METHODS}, got {method!r}")
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    world_size = dist.get_world_size()
    grad = parameter.grad
    sparse = grad is not None and grad.is_sparse
    if sparse:
        grad = grad.coalesce()
    rows = grad.indices()[0] if sparse else None
    header = torch.tensor(
        [[grad is not None, sparse, 0 if rows is None else rows.numel()]], dtype=torch.long
    )
    headers = _all_gather(header, "exchange gradient sizes")
    has_grad, is_sparse, counts = headers[:, 0].bool(), headers[:, 1].bool(), headers[:, 2]
    if not has_grad.any():
        return None
    if not is_sparse[has_grad].all():
        # Some rank has a dense gradient: all reduce densely (None counts as zero).
        dense = torch.zeros_like(parameter) if grad is None else grad
        dense = dense.to_dense() if dense.is_sparse else dense.clone()
        _all_reduce(dense, "all-reduce the gradient")
        parameter.grad = dense / world_size
        return "dense-gradient"
    values = grad.values() if grad is not None else parameter.new_zeros(0, parameter.shape[1])
    rows = rows if rows is not None else torch.zeros(0, dtype=torch.long)
    if method == "auto":
        method = "gather" if world_size * int(counts.max()) < parameter.shape[0] / 2 else "dense"
    if method == "dense":
        touched, total = _sum_rows_dense(parameter, rows, values)
    else:
        touched, total = _sum_rows_gathered(parameter, rows, values, counts)
    parameter.grad = torch.sparse_coo_tensor(
        touched[None],
        total / world_size,
        parameter.shape,
        is_coalesced=True,
        check_invariants=False,
    )
    return method


class FitShard:
    """This rank's share of the steps of a data-parallel :func:`~hyperloss.training.fit`.

    Built by ``fit`` (through :meth:`current`); see the module docstring for the rules.

    Parameters
    ----------
    seed : int
        The run's seed.
    info : RankInfo
        This rank (``world_size > 1``).
    gradient_method : {"auto", "dense", "gather"}, default "auto"
    """

    def __init__(self, seed: int, info: RankInfo, *, gradient_method: str = "auto") -> None:
        self.seed = seed
        self.rank = info.rank
        self.world_size = info.world_size
        self.gradient_method = gradient_method
        #: Weight of this rank's list loss in the current step: its share of the global batch
        #: times the world size, so that the mean over ranks is the mean over all lists.
        self.list_weight = 1.0

    @classmethod
    def current(cls, seed: int) -> FitShard | None:
        """The shard of this process in an initialised process group of 2+ ranks, else None."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return None
        return cls(seed, rank_info())

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ drawing
    def epoch(self, sampler: Any, batch_size: int, epoch: int) -> Iterator[Any]:
        """This rank's lists of every step of epoch ``epoch`` (0-based).

        The permutation of the anchors comes from ``(seed, epoch)`` alone, so every rank (and
        every world size) sees the same global batches; this rank takes anchors
        ``rank, rank + W, ...`` of each and samples their lists with ``sampler``, whose
        generator is reseeded from ``(seed, epoch, W, rank)`` (also used by
        :meth:`block_size`'s blocks).

        Yields
        ------
        ListBatch
            Possibly empty (a last global batch smaller than ``W``); :attr:`list_weight` is
            set for it.
        """
        order_stream = torch.Generator().manual_seed(_stream_seed(self.seed, epoch, "anchors"))
        order = torch.randperm(sampler.n_nodes, generator=order_stream)
        sampler.generator.manual_seed(
            _stream_seed(self.seed, epoch, self.world_size, self.rank, "lists")
        )
        for start in range(0, sampler.n_nodes, batch_size):
            step_anchors = order[start : start + batch_size]
            anchors = step_anchors[self.rank :: self.world_size]
            self.list_weight = anchors.numel() * self.world_size / step_anchors.numel()
            yield sampler.sample(anchors)

    def block_size(self, block_size: int) -> int:
        """This rank's block: ``ceil(block_size / W)`` nodes, at least 3 (a rank-order triple)."""
        return max(3, math.ceil(block_size / self.world_size))

    # ------------------------------------------------------------------- a step
    def global_loss(self, loss: Tensor) -> Tensor:
        """The mean of the ranks' losses as the value, this rank's graph for the gradient.

        ``loss - loss.detach() + mean`` has the value of the global mean (what is reported and
        checked for finiteness on every rank alike: a NaN on one rank stops all) and the
        gradient of this rank's loss (which :meth:`all_reduce_gradient` then averages).
        """
        losses = _all_gather(loss.detach().reshape(1).to(torch.float64), "exchange losses")
        mean = losses.mean().to(loss.dtype)
        return loss - loss.detach() + mean

    def all_reduce_gradient(self, parameter: Tensor) -> str | None:
        """:func:`all_reduce_gradient` with this shard's method."""
        return all_reduce_gradient(parameter, method=self.gradient_method)

    # -------------------------------------------------------------- agreement
    def broadcast_(self, tensor: Tensor) -> Tensor:
        """Overwrite ``tensor`` with rank 0's, in place (the starting points)."""
        with torch.no_grad():
            _guard(lambda: dist.broadcast(tensor.data, src=0), "broadcast the initial points")
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any rank (a callback's stop)."""
        flags = _all_gather(torch.tensor([bool(flag)], dtype=torch.long), "agree on stopping")
        return bool(flags.any())

    def on_rank_zero(self, function: Callable[..., T]) -> Callable[..., T]:
        """``function`` computed on rank 0 only, its result (or exception) given to all ranks."""

        def call(*args: Any, **kwargs: Any) -> T:
            return _rank_zero_call(function, *args, **kwargs)

        return call

    def check_identical(self, tensor: Tensor, what: str = "points") -> None:
        """Raise :class:`DistributedError` unless ``tensor`` is bitwise equal on all ranks."""
        digest = hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).digest()
        code = torch.tensor([int.from_bytes(digest[:7], "little")], dtype=torch.long)
        codes = _all_gather(code, f"compare the {what}")
        different = [rank for rank in range(len(codes)) if codes[rank] != codes[0]]
        if different:
            raise DistributedError(
                f"the {what} of rank(s) {different} differ from rank 0's: the ranks drifted apart "
                "(a rank-dependent step or non-deterministic collective)"
            )


# ---------------------------------------------------------------------------------------------
# helpers


def _sum_rows_dense(parameter: Tensor, rows: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Sum sparse rows over ranks through one dense (N, D + 1) all-reduce."""
    n_nodes, width = parameter.shape
    buffer = parameter.new_zeros(n_nodes, width + 1)
    buffer[rows, :width] = values
    buffer[rows, width] = 1.0  # touched: keeps rows whose summed gradient happens to be 0
    _all_reduce(buffer, "all-reduce the sparse gradient (dense)")
    touched = torch.nonzero(buffer[:, width] > 0).flatten()
    return touched, buffer[touched, :width]


def _sum_rows_gathered(
    parameter: Tensor, rows: Tensor, values: Tensor, counts: Tensor
) -> tuple[Tensor, Tensor]:
    """Sum sparse rows over ranks by all-gathering every rank's (row, values), padded."""
    width = parameter.shape[1]
    longest = int(counts.max())
    packed = parameter.new_zeros(longest, width + 1)
    # Row indices travel as float64 beside the values: exact up to 2^53 nodes.
    packed[: rows.numel(), 0] = rows.to(packed.dtype)
    packed[: rows.numel(), 1:] = values
    gathered = _all_gather(packed, "all-gather the sparse gradient")  # (W * longest, D + 1)
    keep = torch.cat(
        [torch.arange(int(count)) + rank * longest for rank, count in enumerate(counts.tolist())]
    )
    gathered = gathered[keep]
    summed = torch.sparse_coo_tensor(
        gathered[:, 0].long()[None], gathered[:, 1:], parameter.shape, check_invariants=False
    ).coalesce()
    return summed.indices()[0], summed.values()


def _all_gather(tensor: Tensor, what: str) -> Tensor:
    """All ranks' ``tensor`` (same shape everywhere) concatenated along dim 0, rank order."""
    world_size = dist.get_world_size()
    out = tensor.new_empty((world_size * tensor.shape[0], *tensor.shape[1:]))
    _guard(lambda: _ALL_GATHER_SINGLE(out, tensor.contiguous()), what)
    return out


def _all_reduce(tensor: Tensor, what: str) -> None:
    _guard(lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM), what)


def _guard(collective: Callable[[], Any], what: str) -> Any:
    try:
        return collective()
    except RuntimeError as error:  # DistBackendError and gloo's connection errors
        raise DistributedError(
            f"rank {dist.get_rank()} of {dist.get_world_size()} could not {what}: another rank "
            "failed, was stopped or timed out (its own error says why; the timeout is "
            f"{TIMEOUT_ENV} seconds). {type(error).__name__}: {error}"
        ) from error


def _rank_zero_call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    payload: list[Any] = [None]
    failure: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            payload = [("ok", function(*args, **kwargs))]
        except Exception as error:  # noqa: BLE001 - every rank must hear of any failure
            failure = error
            payload = [("error", _picklable(error))]
    _guard(
        lambda: dist.broadcast_object_list(payload, src=0, device=torch.device("cpu")),
        "receive rank 0's result",
    )
    status, value = payload[0]
    if status == "error":
        if failure is not None:
            raise failure
        raise value
    return value


def _picklable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any unpicklable exception becomes a plain message
        return DistributedError(f"rank 0 failed: {type(error).__name__}: {error}")


def _stream_seed(*parts: Any) -> int:
    """A 63-bit seed for a named random stream (hash of the parts: independent streams)."""
    text = "hyperloss.distributed:" + repr(parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


def _default_backend() -> str:
    # Points live on the CPU unless a model puts them on a GPU: gloo serves CPU tensors, NCCL
    # CUDA ones, one process group for both.
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def _timeout_seconds(timeout: float | None) -> float:
    source = "timeout"
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV)
        if not text:
            return DEFAULT_TIMEOUT_S
        source = f"environment variable {TIMEOUT_ENV}"
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"{source} must be a number of seconds, got {text!r}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"{source} must be a number of seconds, got {timeout!r}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"{source} must be a finite number of seconds > 0, got {timeout!r}")
    return float(timeout)


def _env_int(name: str, default: int, *, minimum: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value
