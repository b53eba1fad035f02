"""The README results table: how faithfully hyperloss embeds NAICS 2022 in 2, 5 and 10 dimensions.

Usage::

    .venv/bin/python benchmarks/fidelity.py                      # all rows, ~tens of minutes
    .venv/bin/python benchmarks/fidelity.py --dims 2 --methods construct
    HYPERLOSS_QUICK=1 .venv/bin/python benchmarks/fidelity.py    # NAICS sector 54, 2 epochs

For each dimension it runs three methods through the library's public functions with the
defaults the ``hyperloss`` command uses (the CLI passes no training option it was not given):

``training alone``
    ``fit(tree, dim, init="random")``: the ranking losses from random points near the origin.
``construction alone``
    ``construct(tree, dim)``: the combinatorial construction, no training.
``construction + fine-tuning``
    ``fit(tree, dim, init="construct")``: what ``hyperloss embed naics --dim D`` runs.

Each row is scored with ``Embedding.evaluate(tree)`` (:func:`hyperloss.metrics.evaluate`):
Spearman over all pairs and its ceiling under the tree's distance ties, NDCG@10, MAP and mean
rank of graph reconstruction, worst-case distortion (the ``distortion["worst"]`` entry of the
report), and the wall time of building the embedding (evaluation excluded). The Markdown table
is printed row by row and written to ``--out`` (default ``benchmarks/results.md``) together
with the command, the machine and the library versions.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hyperloss.construction import construct
from hyperloss.datasets import naics
from hyperloss.training import fit

QUICK = os.environ.get("HYPERLOSS_QUICK", "") not in ("", "0")
METHODS: dict[str, tuple[str, Callable[..., Any]]] = {
    "random": ("training alone (random init)", lambda tree, dim: fit(tree, dim, init="random")),
    "construct": ("construction alone", lambda tree, dim: construct(tree, dim)),
    "finetune": (
        "construction + fine-tuning",
        lambda tree, dim: fit(tree, dim, init="construct"),
    ),
}
COLUMNS = (
    "dim",
    "method",
    "Spearman",
    "Spearman ceiling",
    "NDCG@10",
    "MAP",
    "mean rank",
    "worst distortion",
    "wall time",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=["random", "construct", "finetune"]
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.md"))
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (default 2: the reference machine)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    tree = naics()
    tree_label = "NAICS 2022"
    if QUICK:
        tree, tree_label = tree.subtree("54"), "NAICS 2022 sector 54 (HYPERLOSS_QUICK)"
    lines = [_row(COLUMNS), _row(["---"] * len(COLUMNS))]
    print(f"{tree_label}: {len(tree)} nodes, height {tree.height}\n", flush=True)
    print("\n".join(lines), flush=True)

    for dim in args.dims:
        for method in args.methods:
            label, build = METHODS[method]
            start = time.perf_counter()
            if QUICK and method != "construct":
                init = "random" if method == "random" else "construct"
                embedding = fit(tree, dim, init=init, epochs=2, progress=False)
            else:
                embedding = build(tree, dim)
            seconds = time.perf_counter() - start
            report = embedding.evaluate(tree)
            cells = [
                str(dim),
                label,
                f"{report.spearman:.4f}",
                f"{report.spearman_ceiling:.4f}",
                f"{report.ndcg[10]:.4f}",
                f"{report.map:.4f}",
                f"{report.mean_rank:.2f}",
                f"{report.distortion['worst']:.3g}",
                f"{seconds:.1f} s",
            ]
            lines.append(_row(cells))
            print(lines[-1], flush=True)

    arguments = " ".join(argv if argv is not None else sys.argv[1:])
    command = f"{'HYPERLOSS_QUICK=1 ' if QUICK else ''}python benchmarks/fidelity.py {arguments}"
    header = [
        f"Fidelity on {tree_label} ({len(tree)} nodes), produced by `{command.strip()}`",
        f"on {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + lines) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


def _row(cells: list[str] | tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    sys.exit(main())
