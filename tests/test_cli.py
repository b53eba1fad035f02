"""The hyperloss command: embed -> evaluate -> nearest on a tiny TSV, and every bad input."""

import errno
import json
import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest

from hyperloss.cli import CLIError, main
from hyperloss.embedding import Embedding

TINY_TSV = """\
# a tiny taxonomy: child<TAB>parent<TAB>title
root\t\tEverything
a\troot\tAlpha
b\troot\tBeta
a1\ta\tAlpha one
a2\ta\tAlpha two
a3\ta\tAlpha three
b1\tb\tBeta one
b2\tb\tBeta two
a1x\ta1\tAlpha one x
a1y\ta1\tAlpha one y
b2x\tb2

b2y\tb2\tBeta two y
"""
FAST = ["--epochs", "2", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_tsv(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.tsv"
    path.write_text(TINY_TSV, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run_dir(tiny_tsv, tmp_path_factory):
    """One embed run shared by the read-only tests (evaluate, nearest)."""
    out = tmp_path_factory.mktemp("runs") / "tiny-2d"
    assert main(["embed", "--tree", str(tiny_tsv), "--out", str(out), "--seed", "3", *FAST]) == 0
    return out


def mpmath_distance(x, y, curvature):
    """acosh(-c <x, y>) / sqrt(c) in 50 digits, the time coordinates recomputed from the spatial
    ones (the stored float64 x0 of a far point is off the hyperboloid by ~x0^2 * 1e-16)."""
    with mpmath.workdps(50):
        x, y = [[mpmath.mpf(float(v)) for v in p[1:]] for p in (x, y)]
        x = [mpmath.sqrt(1 / mpmath.mpf(curvature) + mpmath.fsum(v * v for v in x)), *x]
        y = [mpmath.sqrt(1 / mpmath.mpf(curvature) + mpmath.fsum(v * v for v in y)), *y]
        inner = -x[0] * y[0] + mpmath.fsum(a * b for a, b in zip(x[1:], y[1:], strict=True))
        return float(mpmath.acosh(max(-curvature * inner, mpmath.mpf(1))) / mpmath.sqrt(curvature))


def one_line_error(capsys, code, result):
    captured = capsys.readouterr()
    assert result == code
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("hyperloss: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def test_embed_writes_the_run_directory(run_dir, tiny_tsv):
    names = {p.name for p in run_dir.iterdir()}
    assert {"points.npy", "embedding.json", "metrics.json", "run.json", "tree.tsv"} <= names
    assert "embedding.png" in names
    assert (run_dir / "embedding.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["tree"] == "tree.tsv" and run["dim"] == 2 and run["n_nodes"] == 12
    assert (run_dir / "tree.tsv").read_text() == tiny_tsv.read_text()
    embedding = Embedding.load(run_dir)
    assert embedding.dim == 2 and len(embedding) == 12
    # on the hyperboloid: x0 = sqrt(1/c + |x_spatial|^2), relative to x0 (far from the origin
    # the absolute error of the Minkowski norm grows like x0^2 * 1e-16)
    spatial = embedding.points[:, 1:].numpy()
    time = np.sqrt(1 / embedding.curvature + (spatial**2).sum(axis=1))
    np.testing.assert_allclose(embedding.points[:, 0].numpy(), time, rtol=1e-9)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["ndcg@10"] <= 1.0 and metrics["wall_time_s"] > 0


def test_embed_prints_the_table(tiny_tsv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["embed", "--tree", str(tiny_tsv), "--out", str(out), "--no-plot", *FAST]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert "spearman" in printed and "ndcg@10" in printed
    assert f"{metrics['spearman']:.4f}" in printed
    assert not (out / "embedding.png").exists()


def test_evaluate_reproduces_the_saved_metrics(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("spearman", "ndcg@10", "map", "mean_rank"):
        assert evaluated[key] == pytest.approx(saved[key], rel=1e-12)
    assert main(["evaluate", str(run_dir)]) == 0
    assert f"{saved['map']:.4f}" in capsys.readouterr().out


def test_nearest_lists_names_titles_and_distances(run_dir, capsys):
    assert main(["nearest", str(run_dir), "a1", "-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "nearest to a1  Alpha one"
    rows = [line.split(None, 3) for line in lines[2:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    # oracle: the Lorentz distance in 50-digit arithmetic (float64 formulas such as geoopt's
    # cancel catastrophically at the radii the construction reaches)
    meta = json.loads((run_dir / "embedding.json").read_text())
    points = np.load(run_dir / "points.npy")
    anchor = meta["names"].index("a1")
    distances = [
        mpmath_distance(points[anchor], points[row], meta["curvature"])
        for row in range(len(points))
        if row != anchor
    ]
    expected = np.sort(distances)[:4]
    np.testing.assert_allclose([float(r[2]) for r in rows], expected, atol=1e-4)
    titles = {"a": "Alpha", "root": "Everything", "a2": "Alpha two", "a3": "Alpha three"}
    titles.update({"a1x": "Alpha one x", "a1y": "Alpha one y"})
    for row in rows:
        assert row[3] == titles[row[1]]


def test_force_overwrites_and_checkpoint_is_written(run_dir, tiny_tsv, tmp_path, capsys):
    out = tmp_path / "again"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    checkpoint = tmp_path / "state.pt"
    args = ["embed", "--tree", str(tiny_tsv), "--out", str(out), "--dim", "3", "--no-plot"]
    result = main([*args, "--checkpoint", str(checkpoint), "--force", *FAST])
    assert result == 0, capsys.readouterr().err
    assert checkpoint.is_file()
    assert Embedding.load(out).dim == 3
    assert (out / "keep.txt").read_text() == "mine"


def test_python_dash_m(run_dir):
    done = subprocess.run(
        [sys.executable, "-m", "hyperloss", "nearest", str(run_dir), "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"hyperloss: error: unknown name 'nope': not in the embedding in {run_dir}"
    )


# ------------------------------------------------------------------------------ bad inputs


def test_missing_tree_file(tmp_path, capsys):
    line = one_line_error(
        capsys, 1, main(["embed", "--tree", str(tmp_path / "no.tsv"), "--out", str(tmp_path / "o")])
    )
    assert "no.tsv" in line and "does not exist" in line
    assert not (tmp_path / "o").exists()


def test_malformed_tsv_line_names_its_line_number(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("# header\nb\ta\nc b\n", encoding="utf-8")  # line 3 has a space, not a tab
    line = one_line_error(
        capsys, 1, main(["embed", "--tree", str(bad), "--out", str(tmp_path / "o")])
    )
    assert f"{bad}:3" in line and "malformed" in line


def test_tsv_that_is_not_a_tree(tmp_path, capsys):
    cycle = tmp_path / "cycle.tsv"
    cycle.write_text("a\tb\nb\ta\n", encoding="utf-8")
    line = one_line_error(
        capsys, 1, main(["embed", "--tree", str(cycle), "--out", str(tmp_path / "o")])
    )
    assert "cycle" in line


def test_unknown_name(run_dir, capsys):
    line = one_line_error(capsys, 1, main(["nearest", str(run_dir), "a9"]))
    assert "unknown name 'a9'" in line and "did you mean" in line


def test_existing_output_directory_needs_force(run_dir, tiny_tsv, capsys):
    before = (run_dir / "points.npy").read_bytes()
    line = one_line_error(
        capsys, 1, main(["embed", "--tree", str(tiny_tsv), "--out", str(run_dir), *FAST])
    )
    assert "already exists" in line and "--force" in line
    assert (run_dir / "points.npy").read_bytes() == before


def test_output_path_that_is_a_file(tiny_tsv, capsys):
    line = one_line_error(
        capsys, 1, main(["embed", "--tree", str(tiny_tsv), "--out", str(tiny_tsv)])
    )
    assert "not a directory" in line


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--dim", "1", "argument --dim: must be >= 2, got 1"),
        ("--dim", "two", "argument --dim: expected an integer, got 'two'"),
        ("--epochs", "-1", "argument --epochs: must be >= 0"),
        ("--lr", "0", "argument --lr: must be a finite number > 0"),
        ("--lr", "nan", "argument --lr: must be a finite number > 0"),
        ("--batch-size", "0", "argument --batch-size: must be >= 1"),
        ("--curvature", "-2", "argument --curvature: must be a finite number > 0"),
        ("--seed", "-5", "argument --seed: must be >= 0"),
        ("--init", "zeros", "argument --init: invalid choice: 'zeros'"),
    ],
)
def test_bad_flag_values(tiny_tsv, tmp_path, capsys, flag, value, message):
    argv = ["embed", "--tree", str(tiny_tsv), "--out", str(tmp_path / "o"), flag, value]
    line = one_line_error(capsys, 2, main(argv))
    assert message in line
    assert not (tmp_path / "o").exists()


def test_tree_source_must_be_given_once(tiny_tsv, tmp_path, capsys):
    line = one_line_error(capsys, 2, main(["embed", "--out", str(tmp_path / "o")]))
    assert "either a built-in tree" in line
    line = one_line_error(capsys, 2, main(["embed", "naics", "--tree", str(tiny_tsv)]))
    assert "not both" in line
    line = one_line_error(capsys, 2, main(["embed", "wordnet"]))
    assert "invalid choice: 'wordnet'" in line


def test_missing_or_unusable_run_directory(tmp_path, capsys):
    line = one_line_error(capsys, 1, main(["evaluate", str(tmp_path / "none")]))
    assert "does not exist" in line
    line = one_line_error(capsys, 1, main(["nearest", str(tmp_path), "x"]))
    assert "missing" in line and "embedding" in line


def test_evaluate_without_a_tree_record(run_dir, tmp_path, capsys):
    Embedding.load(run_dir).save(tmp_path / "bare")  # no run.json
    line = one_line_error(capsys, 1, main(["evaluate", str(tmp_path / "bare")]))
    assert "--tree" in line
    result = main(["evaluate", str(tmp_path / "bare"), "--tree", str(run_dir / "tree.tsv")])
    assert result == 0


def test_no_command_and_help(capsys):
    line = one_line_error(capsys, 2, main([]))
    assert "COMMAND" in line
    assert main(["--help"]) == 0
    assert "embed" in capsys.readouterr().out


def test_checkpoint_of_other_settings_is_an_input_error(tiny_tsv, tmp_path, capsys):
    checkpoint = tmp_path / "state.pt"
    base = ["embed", "--tree", str(tiny_tsv), "--no-plot", "--checkpoint", str(checkpoint)]
    assert main([*base, "--out", str(tmp_path / "first"), *FAST]) == 0
    capsys.readouterr()
    line = one_line_error(
        capsys, 1, main([*base, "--out", str(tmp_path / "second"), "--dim", "3", *FAST])
    )
    assert str(checkpoint) in line and "other settings" in line
    checkpoint.write_bytes(b"not a checkpoint")
    line = one_line_error(capsys, 1, main([*base, "--out", str(tmp_path / "third"), *FAST]))
    assert str(checkpoint) in line and "not a readable checkpoint" in line


def test_evaluate_against_another_tree(run_dir, tmp_path, capsys):
    other = tmp_path / "other.tsv"
    other.write_text("a\troot\nb\troot\n", encoding="utf-8")
    line = one_line_error(capsys, 1, main(["evaluate", str(run_dir), "--tree", str(other)]))
    assert str(run_dir) in line and "do not match" in line


def test_run_record_naming_no_tree(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    Embedding.load(run_dir).save(copy)
    (copy / "run.json").write_text(json.dumps({"tree": 5}), encoding="utf-8")
    line = one_line_error(capsys, 1, main(["evaluate", str(copy)]))
    assert "run.json" in line and "'tree' must be" in line


def test_output_below_a_file_fails_before_training(tiny_tsv, tmp_path, capsys, monkeypatch):
    import hyperloss.training

    def no_fit(*args, **kwargs):
        raise AssertionError("fit must not run")

    monkeypatch.setattr(hyperloss.training, "fit", no_fit)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["embed", "--tree", str(tiny_tsv), "--out", str(blocker / "sub" / "run")]
    line = one_line_error(capsys, 1, main(argv))
    assert "cannot create output directory" in line and "a-file' is a file" in line


def test_environment_errors_are_one_line(tiny_tsv, tmp_path, capsys, monkeypatch):
    """An OSError (here a full disk while saving) is the environment's, not a bug."""

    def full_disk(self, directory):
        path = os.path.join(directory, "points.npy")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(Embedding, "save", full_disk)
    argv = ["embed", "--tree", str(tiny_tsv), "--out", str(tmp_path / "o"), *FAST]
    line = one_line_error(capsys, 1, main(argv))
    assert line == f"hyperloss: error: no space left on device: '{tmp_path / 'o' / 'points.npy'}'"


# ------------------------------------------------------------------------- internal errors


def internal_error(capsys, result):
    """Exit 70, the traceback, then one line that says where to report it."""
    captured = capsys.readouterr()
    assert result == 70
    lines = captured.err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", captured.err
    assert lines[-1] == (
        "hyperloss: internal error, please report it at the hyperloss issue tracker "
        "with the traceback above"
    )
    return lines


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("boom"),
        IndexError("index 7 is out of bounds"),
        FloatingPointError("non-finite loss"),
        # a ValueError from inside the training is a bug too, not bad input
        ValueError("operands could not be broadcast together"),
    ],
)
def test_internal_errors_in_fit_show_the_traceback(tiny_tsv, tmp_path, capsys, monkeypatch, error):
    import hyperloss.training

    def broken_fit(*args, **kwargs):
        raise error

    monkeypatch.setattr(hyperloss.training, "fit", broken_fit)
    argv = ["embed", "--tree", str(tiny_tsv), "--out", str(tmp_path / "o"), *FAST]
    lines = internal_error(capsys, main(argv))
    assert f"{type(error).__name__}: {error}" in lines
    assert any("broken_fit" in line for line in lines)
    assert not (tmp_path / "o").exists()


def test_internal_key_error_in_evaluate_is_not_an_unknown_name(run_dir, capsys, monkeypatch):
    def broken_evaluate(self, tree, **kwargs):
        raise KeyError("spearman")

    monkeypatch.setattr(Embedding, "evaluate", broken_evaluate)
    lines = internal_error(capsys, main(["evaluate", str(run_dir)]))
    assert "KeyError: 'spearman'" in lines


def test_debug_raises_internal_and_input_errors(run_dir, tiny_tsv, tmp_path, monkeypatch):
    import hyperloss.training

    def broken_fit(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setenv("HYPERLOSS_DEBUG", "1")
    monkeypatch.setattr(hyperloss.training, "fit", broken_fit)
    with pytest.raises(RuntimeError, match="boom"):
        main(["embed", "--tree", str(tiny_tsv), "--out", str(tmp_path / "o"), *FAST])
    with pytest.raises(CLIError, match="unknown name 'a9'"):
        main(["nearest", str(run_dir), "a9"])


def test_python_dash_m_internal_error(tmp_path):
    """The installed command path: traceback and report line on stderr, exit status 70."""
    script = (
        "import sys, hyperloss.training\n"
        "def broken_fit(*args, **kwargs):\n"
        "    raise RuntimeError('boom')\n"
        "hyperloss.training.fit = broken_fit\n"
        "from hyperloss.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\troot\nb\troot\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", script, "embed", "--tree", str(tsv), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 70
    assert "Traceback" in done.stderr and "RuntimeError: boom" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("hyperloss: internal error")


@pytest.mark.parametrize("encoder", ["text", "text-mlp"])
def test_embed_encoder_holdout_writes_holdout_json_and_prints_held_out_metrics(
    tiny_tsv, tmp_path, capsys, encoder
):
    import torch

    from hyperloss.encoders import holdout_split
    from hyperloss.metrics import evaluate_anchors
    from hyperloss.trees import Tree

    out = tmp_path / "held"
    argv = ["embed", "--tree", str(tiny_tsv), "--out", str(out), "--encoder", encoder]
    argv += ["--holdout", "0.25", "--seed", "1", "--dim", "3", "--no-plot", *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    tree = Tree.read_tsv(tiny_tsv)
    train, held = holdout_split(len(tree.names), 0.25, seed=1)
    names = json.loads((out / "holdout.json").read_text())
    assert names == [tree.names[i] for i in held.tolist()] and len(names) == 3
    assert "root" not in names
    embedding = Embedding.load(out)
    assert len(embedding) == 12  # every node, the held-out ones from their titles
    metrics = json.loads((out / "metrics.json").read_text())["holdout"]
    expected = evaluate_anchors(embedding, tree, anchors=held)
    assert metrics["held-out"]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-12)
    assert metrics["held-out"]["n_nodes"] == 3 and metrics["training"]["n_nodes"] == 9
    assert "held-out nodes" in printed and "TF-IDF" in printed
    assert f"{metrics['held-out']['ndcg@10']:.4f}" in printed
    assert f"{metrics['held-out']['tfidf_ndcg@10']:.4f}" in printed
    run = json.loads((out / "run.json").read_text())
    assert run["options"]["encoder"] == encoder and run["options"]["holdout"] == 0.25
    assert torch.isfinite(embedding.points).all()


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--holdout", "0.1"], 2, "--holdout needs --encoder"),
        (["--encoder", "text", "--holdout", "1.5"], 2, "argument --holdout: must be in (0, 1)"),
        (["--encoder", "text", "--holdout", "0"], 2, "argument --holdout: must be in (0, 1)"),
        (["--encoder", "text", "--holdout", "0.01"], 1, "--holdout: holdout=0.01"),
        (["--encoder", "text", "--init", "random"], 1, "--init does not apply with --encoder"),
        (["--encoder", "bert"], 2, "argument --encoder: invalid choice: 'bert'"),
    ],
)
def test_encoder_flag_errors(tiny_tsv, tmp_path, capsys, extra, code, message):
    argv = ["embed", "--tree", str(tiny_tsv), "--out", str(tmp_path / "o"), *FAST, *extra]
    line = one_line_error(capsys, code, main(argv))
    assert message in line
