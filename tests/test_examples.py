"""The example scripts and the fidelity benchmark run end to end (at the HYPERLOSS_QUICK size)."""

import os
import subprocess
import sys
from pathlib import Path

from hyperloss.embedding import Embedding

ROOT = Path(__file__).parent.parent


def run_script(relative_path, *args, cwd):
    environment = {**os.environ, "HYPERLOSS_QUICK": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(ROOT / relative_path), *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_naics_quickstart(tmp_path):
    out = run_script("examples/naics_quickstart.py", "--out", "qs", cwd=tmp_path)
    assert "nearest to 541511 (Custom Computer Programming Services)" in out
    assert "ndcg@10" in out
    embedding = Embedding.load(tmp_path / "qs")
    assert "541511" in embedding and embedding.dim == 2
    assert (tmp_path / "qs" / "embedding.png").read_bytes()[:4] == b"\x89PNG"


def test_tree_from_tsv(tmp_path):
    out = run_script("examples/tree_from_tsv.py", "--dim", "3", "--out", "animals", cwd=tmp_path)
    assert "read " in out and "58 nodes" in out
    assert "construction alone" in out and "construction + fine-tuning" in out
    assert Embedding.load(tmp_path / "animals").dim == 3


def test_compare_losses(tmp_path):
    out = run_script("examples/compare_losses.py", "--dim", "3", cwd=tmp_path)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "s |" in line]
    assert [row.split("|")[1].strip() for row in rows] == [
        "rank-order only",
        "LambdaRank only",
        "both",
    ]
    for row in rows:
        spearman, ndcg = (float(cell) for cell in row.split("|")[2:4])
        assert -1 <= spearman <= 1 and 0 <= ndcg <= 1


def test_fidelity_benchmark_table(tmp_path):
    result_file = tmp_path / "results.md"
    out = run_script(
        "benchmarks/fidelity.py", "--dims", "2", "--out", str(result_file), cwd=tmp_path
    )
    table = [line for line in result_file.read_text().splitlines() if line.startswith("|")]
    assert table[0].startswith("| dim | method | Spearman | Spearman ceiling | NDCG@10 | MAP |")
    methods = [row.split("|")[2].strip() for row in table[2:]]
    assert methods == [
        "training alone (random init)",
        "construction alone",
        "construction + fine-tuning",
    ]
    for row in table[2:]:
        assert row in out  # printed to stdout as well
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        assert cells[0] == "2" and cells[-1].endswith(" s")
        assert float(cells[2]) <= float(cells[3]) + 1e-9  # Spearman <= its ceiling
