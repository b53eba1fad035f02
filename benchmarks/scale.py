"""Scale benchmark: construct, evaluate, one fit epoch and a whole ``hyperloss embed`` run.

Usage::

    python benchmarks/scale.py            # NAICS, random 20k, ICD-10-CM, random 1M (about 40 min)
    python benchmarks/scale.py --quick    # NAICS and random 20k only (a few minutes)
    python benchmarks/scale.py --cases icd10cm

Each case runs in its own processes, so the peak resident memory of one case is not mixed with
another's:

1. a measuring process builds the tree, times ``construct(tree, dim)``, ``evaluate`` of the
   construction (exact or sampled: the report says which) and one ``fit`` epoch from it;
2. ``hyperloss embed`` runs as a command (``--no-progress``, and the options of the case), and
   its wall time, its peak RSS (``getrusage(RUSAGE_CHILDREN)`` of a launcher that runs only it)
   and its fidelity (``metrics.json``) fill the rest of the row.

Random trees are random recursive trees (``hyperloss.datasets.random_tree``) written to a TSV
file and embedded with ``--tree``, as a user with their own taxonomy would. The table is printed
in Markdown; ``--out FILE`` also writes it there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    # name: (tree source, dim, extra embed options)
    "naics": ("naics", 10, []),
    "random-20k": ("random:20000", 10, []),
    "icd10cm": ("icd10cm", 10, []),
    "random-1m": ("random:1000000", 10, ["--epochs", "1", "--no-plot"]),
}
QUICK = ("naics", "random-20k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="NAICS and random 20k only")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), help="cases to run")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measuring process
    parser.add_argument("--launch", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(args.measure)))
        return
    if args.launch:
        print(json.dumps(_launch(args.launch)))
        return
    cases = args.cases or (list(QUICK) if args.quick else list(CASES))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hyperloss-scale-") as scratch:
        for name in cases:
            print(f"[{name}] measuring ...", file=sys.stderr, flush=True)
            measured = _child(["--measure", name])
            print(f"[{name}] {measured}", file=sys.stderr, flush=True)
            embedded = _embed(name, Path(scratch))
            print(f"[{name}] {embedded}", file=sys.stderr, flush=True)
            rows.append({"case": name, **measured, **embedded})
    table = _table(rows)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------- measuring
def _load(name: str):
    import hyperloss

    source = CASES[name][0]
    if source == "naics":
        return hyperloss.naics()
    if source == "icd10cm":
        return hyperloss.icd10cm()
    return hyperloss.random_tree(int(source.split(":")[1]), seed=0)


def _measure(name: str) -> dict:
    import torch

    import hyperloss

    torch.set_num_threads(1)
    dim = CASES[name][1]
    start = time.perf_counter()
    tree = _load(name)
    tree_seconds = time.perf_counter() - start

    start = time.perf_counter()
    construction = hyperloss.construct(tree, dim)
    construct_seconds = time.perf_counter() - start

    start = time.perf_counter()
    report = construction.evaluate(tree)
    evaluate_seconds = time.perf_counter() - start

    start = time.perf_counter()
    hyperloss.fit(
        tree, dim, init=construction, epochs=1, eval_every=1, early_stopping=None, progress=False
    )
    epoch_seconds = time.perf_counter() - start
    return {
        "n_nodes": len(tree),
        "height": tree.height,
        "tree_s": tree_seconds,
        "construct_s": construct_seconds,
        "evaluate_s": evaluate_seconds,
        "evaluate_kind": "sampled" if report.sampled else "exact",
        "construct_ndcg10": report.ndcg[10],
        "epoch_s": epoch_seconds,
    }


def _embed(name: str, scratch: Path) -> dict:
    source, dim, extra = CASES[name]
    out = scratch / f"{name}-run"
    if source.startswith("random:"):
        tsv = scratch / f"{name}.tsv"
        if not tsv.exists():
            _write_random_tsv(name, tsv)
        target = ["--tree", str(tsv)]
    else:
        target = [source]
    command = [sys.executable, "-m", "hyperloss", "embed", *target, "--dim", str(dim)]
    command += ["--out", str(out), "--force", "--no-progress", *extra]
    launched = _child(["--launch", *command])
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return {"embed_s": launched["seconds"], "peak_rss_gib": launched["peak_rss_gib"], **metrics}


def _write_random_tsv(name: str, path: Path) -> None:
    code = (
        "import sys, hyperloss; "
        f"hyperloss.random_tree({int(CASES[name][0].split(':')[1])}, seed=0).write_tsv(sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


def _launch(command: list[str]) -> dict:
    start = time.perf_counter()
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    sys.stderr.write(completed.stdout)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {completed.returncode}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB
    return {"seconds": seconds, "peak_rss_gib": peak_kib / 2**20}


def _child(arguments: list[str]) -> dict:
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *arguments],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------- output
def _table(rows: list[dict]) -> str:
    header = (
        "| tree | nodes | height | construct | evaluate | one fit epoch | `hyperloss embed` "
        "| peak RSS | Spearman (ceiling) | NDCG@10 |"
    )
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; `python benchmarks/scale.py`.",
        "",
        header,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        spearman = _with_error(row, "spearman")
        ceiling = row.get("spearman_ceiling")
        ndcg = _with_error(row, "ndcg@10")
        lines.append(
            f"| {row['case']} | {row['n_nodes']:,} | {row['height']} | {row['construct_s']:.1f} s "
            f"| {row['evaluate_s']:.1f} s ({row['evaluate_kind']}) | {row['epoch_s']:.1f} s "
            f"| {row['embed_s']:.0f} s | {row['peak_rss_gib']:.2f} GiB "
            f"| {spearman} ({ceiling:.4f}) | {ndcg} |"
        )
    return "\n".join(lines)


def _with_error(row: dict, key: str) -> str:
    value = row.get(key)
    error = row.get(f"{key}_se")
    if value is None:
        return "-"
    return f"{value:.4f}" if not row.get("sampled") else f"{value:.4f} ± {error:.4f}"


if __name__ == "__main__":
    main()
