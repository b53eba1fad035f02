"""Embedding: construction checks, distances and neighbours against geoopt, I/O round trip."""

from __future__ import annotations

import json
import math
import sys
import types

import geoopt
import numpy as np
import pytest
import torch

from hyperloss.datasets import random_tree
from hyperloss.embedding import FORMAT_VERSION, Embedding


def _points(n: int, dim: int, curvature: float = 1.0, scale: float = 1.0, seed: int = 0):
    """Random Lorentz points built with geoopt (independent of hyperloss.geometry)."""
    generator = torch.Generator().manual_seed(seed)
    tangent = torch.randn(n, dim + 1, generator=generator, dtype=torch.float64) * scale
    tangent[:, 0] = 0.0
    manifold = geoopt.Lorentz(k=torch.tensor(1.0 / curvature, dtype=torch.float64))
    return manifold.expmap0(tangent), manifold


@pytest.fixture
def embedding():
    points, _ = _points(12, 3, curvature=0.5)
    return Embedding(points, [f"n{i}" for i in range(12)], curvature=0.5)


def test_attributes(embedding):
    assert embedding.dim == 3 and len(embedding) == 12
    assert embedding.points.dtype == torch.float64 and embedding.points.shape == (12, 4)
    assert embedding.index["n5"] == 5 and "n5" in embedding and "zz" not in embedding
    assert isinstance(embedding.manifold, geoopt.Lorentz)
    assert float(embedding.manifold.k) == pytest.approx(2.0)  # k = 1 / curvature
    assert embedding.distance_fn.curvature == 0.5
    assert "n_points=12" in repr(embedding)


def test_distances_match_geoopt():
    points, manifold = _points(15, 4, curvature=2.0, scale=0.7)
    embedding = Embedding(points, [str(i) for i in range(15)], curvature=2.0)
    expected = manifold.dist(points[:, None, :], points[None, :, :])
    expected.fill_diagonal_(0.0)
    got = embedding.distances(chunk_size=4)
    assert got.shape == (15, 15)
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert torch.equal(got, got.T) and torch.all(got.diagonal() == 0)


def test_nearest_against_a_plain_loop(embedding):
    distances = embedding.distances()
    for name in ("n0", "n7"):
        row = embedding.index[name]
        reference = sorted(
            ((float(distances[row, j]), j) for j in range(len(embedding)) if j != row),
        )[:4]
        got = embedding.nearest(name, k=4)
        assert [n for n, _ in got] == [f"n{j}" for _, j in reference]
        assert [d for _, d in got] == pytest.approx([d for d, _ in reference], rel=1e-12)
    assert len(embedding.nearest("n0", k=100)) == len(embedding) - 1


def test_nearest_bad_inputs(embedding):
    with pytest.raises(ValueError, match="'nope'"):
        embedding.nearest("nope")
    with pytest.raises(ValueError, match="k must be >= 1"):
        embedding.nearest("n0", k=0)
    with pytest.raises(TypeError, match="k must be an int"):
        embedding.nearest("n0", k=2.5)
    with pytest.raises(TypeError, match="name"):
        embedding.nearest(3)


def test_to_poincare_matches_geoopt_and_stays_in_the_ball():
    points, manifold = _points(20, 2, curvature=3.0, scale=0.5)
    embedding = Embedding(points, [str(i) for i in range(20)], curvature=3.0)
    ball = embedding.to_poincare()
    assert ball.shape == (20, 2)
    # Independent formula: x_s / (1 + sqrt(c) x_0).
    expected = points[:, 1:] / (1.0 + math.sqrt(3.0) * points[:, :1])
    assert torch.allclose(ball, expected, rtol=1e-12)
    assert (ball.norm(dim=1) < 1 / math.sqrt(3.0)).all()
    # Distances agree with geoopt's Poincaré ball of the same curvature.
    poincare = geoopt.PoincareBall(c=3.0)
    assert torch.allclose(
        poincare.dist(ball[:, None], ball[None]).fill_diagonal_(0),
        embedding.distances(),
        rtol=1e-6,  # geoopt's Poincaré distance clamps its artanh argument: ~1e-7 accurate
        atol=1e-6,
    )


def test_save_load_round_trip(tmp_path, embedding):
    embedding.metrics = {"spearman": np.float64(0.5), "ndcg@10": torch.tensor(0.75)}
    out = embedding.save(tmp_path / "run" / "emb")
    assert sorted(p.name for p in out.iterdir()) == ["embedding.json", "points.npy"]
    meta = json.loads((out / "embedding.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["dim"] == 3
    assert meta["names"] == embedding.names and meta["curvature"] == 0.5
    assert meta["metrics"] == {"spearman": 0.5, "ndcg@10": 0.75}
    assert np.array_equal(np.load(out / "points.npy"), embedding.points.numpy())
    loaded = Embedding.load(out)
    assert torch.equal(loaded.points, embedding.points)
    assert loaded.names == embedding.names and loaded.curvature == 0.5
    assert loaded.metrics == meta["metrics"]


def test_load_errors(tmp_path, embedding):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Embedding.load(tmp_path / "missing")
    out = embedding.save(tmp_path / "e")
    (out / "points.npy").unlink()
    with pytest.raises(FileNotFoundError, match="points.npy"):
        Embedding.load(out)
    out = embedding.save(tmp_path / "e")
    (out / "embedding.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Embedding.load(out)
    out = embedding.save(tmp_path / "e")
    meta = json.loads((out / "embedding.json").read_text())
    meta["format_version"] = 99
    (out / "embedding.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version"):
        Embedding.load(out)
    out = embedding.save(tmp_path / "e")
    np.save(out / "points.npy", embedding.points.numpy()[:5])
    with pytest.raises(ValueError, match="5 rows"):
        Embedding.load(out)
    (out / "points.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable"):
        Embedding.load(out)


@pytest.mark.parametrize(
    ("points", "names", "kwargs", "error", "match"),
    [
        (torch.zeros(3, 1), ["a", "b", "c"], {}, ValueError, "shape"),
        (None, ["a", "b"], {}, ValueError, "names has 2"),
        (None, ["a", "a", "b", "c"], {}, ValueError, "unique"),
        (None, ["a", "b", "c", 4], {}, TypeError, "names"),
        (None, "abcd", {}, TypeError, "names"),
        (None, list("abcd"), {"curvature": 0.0}, ValueError, "curvature"),
        (None, list("abcd"), {"curvature": 2.0}, ValueError, "hyperboloid"),
        (None, list("abcd"), {"metrics": [1]}, TypeError, "metrics"),
    ],
)
def test_bad_construction(points, names, kwargs, error, match):
    if points is None:
        points, _ = _points(4, 2)
    with pytest.raises(error, match=match):
        Embedding(points, names, **kwargs)


def test_rejects_non_finite_and_lower_sheet():
    points, _ = _points(4, 2)
    bad = points.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        Embedding(bad, list("abcd"))
    with pytest.raises(ValueError, match="upper sheet"):
        Embedding(-points, list("abcd"))


def test_far_points_are_accepted():
    # Radius ~20: the hyperboloid constraint only holds to ~1e-16 relative to x0^2.
    points, _ = _points(5, 10, scale=20.0 / math.sqrt(10))
    embedding = Embedding(points, list("abcde"))
    assert torch.isfinite(embedding.distances()).all()


def test_evaluate_reorders_to_the_tree_and_rejects_other_names():
    tree = random_tree(30, seed=1)
    points, _ = _points(30, 3, seed=4)
    in_order = Embedding(points, list(tree.names))
    permutation = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    shuffled = Embedding(points[permutation], [tree.names[i] for i in permutation.tolist()])
    assert torch.equal(shuffled.points_for(tree), points)
    a, b = in_order.evaluate(tree).as_dict(), shuffled.evaluate(tree).as_dict()
    assert a == pytest.approx(b)
    other = Embedding(points, [f"x{i}" for i in range(30)])
    with pytest.raises(ValueError, match="tree names do not match"):
        other.evaluate(tree)


def test_plot_delegates_to_plotting(monkeypatch, embedding, tmp_path):
    calls = []
    fake = types.ModuleType("hyperloss.plotting")
    fake.plot_embedding = lambda emb, tree, path, **kw: calls.append((emb, tree, path, kw)) or path
    monkeypatch.setitem(sys.modules, "hyperloss.plotting", fake)
    result = embedding.plot(tmp_path / "x.png", "TREE", title="t")
    assert result == tmp_path / "x.png"
    assert calls == [(embedding, "TREE", tmp_path / "x.png", {"title": "t"})]
