"""Tests for hyperloss.trees.Tree against plain-Python and scipy oracles."""

from __future__ import annotations

import copy
import pickle
import random

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperloss import trees
from hyperloss.datasets import balanced_tree, random_tree
from hyperloss.trees import Tree, UnknownNodeError


# ---------------------------------------------------------------------- plain-Python oracles
def reference_ancestors_or_self(parent: list[int], node: int) -> list[int]:
    chain = [node]
    while parent[chain[-1]] >= 0:
        chain.append(parent[chain[-1]])
    return chain


def reference_distances(parent: list[int], lineal_discount: float = 0.0) -> np.ndarray:
    """Path length by walking both ancestor chains up to the first common node."""
    n = len(parent)
    chains = [reference_ancestors_or_self(parent, v) for v in range(n)]
    result = np.zeros((n, n))
    for i in range(n):
        position_in_i = {node: step for step, node in enumerate(chains[i])}
        for j in range(n):
            for step_j, node in enumerate(chains[j]):
                if node in position_in_i:
                    result[i, j] = position_in_i[node] + step_j
                    lineal = i != j and node in (i, j)
                    result[i, j] -= lineal_discount if lineal else 0.0
                    break
    return result


def reference_closure(parent: list[int]) -> np.ndarray:
    n = len(parent)
    result = np.zeros((n, n), dtype=bool)
    for v in range(n):
        for ancestor in reference_ancestors_or_self(parent, v)[1:]:
            result[v, ancestor] = result[ancestor, v] = True
    return result


def scipy_distances(tree: Tree) -> np.ndarray:
    parent = tree.parent.numpy()
    child = np.arange(len(tree))[parent >= 0]
    graph = scipy.sparse.coo_matrix(
        (np.ones(child.size), (child, parent[child])), shape=(len(tree), len(tree))
    )
    return scipy.sparse.csgraph.shortest_path(graph, directed=False, unweighted=True)


def shuffled_tree_map(n: int, seed: int) -> dict[str, str | None]:
    """A random tree with opaque names, given to from_parents in shuffled order."""
    rng = random.Random(seed)
    labels = [f"n{rng.randrange(10**9)}_{k}" for k in range(n)]
    mapping: dict[str, str | None] = {labels[0]: None}
    for k in range(1, n):
        mapping[labels[k]] = labels[rng.randrange(k)]
    items = list(mapping.items())
    rng.shuffle(items)
    return dict(items)


# ---------------------------------------------------------------------- construction & order
def test_small_tree_attributes():
    tree = Tree.from_parents({"a": "root", "b": "root", "a1": "a", "b1": "b", "a2": "a"})
    assert tree.names == ["root", "a", "b", "a1", "a2", "b1"]
    assert tree.index == {name: i for i, name in enumerate(tree.names)}
    assert tree.parent.tolist() == [-1, 0, 0, 1, 1, 2]
    assert tree.depth.tolist() == [0, 1, 1, 2, 2, 2]
    assert tree.branch.tolist() == [-1, 1, 2, 1, 1, 2]
    assert [level.tolist() for level in tree.levels] == [[0], [1, 2], [3, 4, 5]]
    assert tree.children_index == [[1, 2], [3, 4], [5], [], [], []]
    assert tree.root == "root" and tree.height == 2 and len(tree) == 6
    assert tree.ancestors("a2") == ["a", "root"] and tree.ancestors("root") == []
    assert tree.children("a") == ["a1", "a2"] and tree.children("a1") == []
    assert "a1" in tree and "zz" not in tree and None not in tree
    assert list(tree) == tree.names
    assert repr(tree) == "Tree(n_nodes=6, height=2, root='root')"
    assert tree.lca("a1", "a2") == "a" and tree.lca("a1", "b1") == "root"
    assert tree.lca("a", "a2") == "a"
    assert tree.parent.dtype == tree.depth.dtype == tree.branch.dtype == torch.long


@pytest.mark.parametrize("seed", range(4))
def test_order_invariants_and_attributes_match_reference(seed):
    mapping = shuffled_tree_map(80, seed)
    tree = Tree.from_parents(mapping)
    parent = tree.parent.tolist()
    depth = tree.depth.tolist()
    # names/parents are the input's
    for name, parent_name in mapping.items():
        expected = -1 if parent_name is None else tree.index[parent_name]
        assert parent[tree.index[name]] == expected
    # topological BFS order: root first, parents precede children, depth non-decreasing
    assert parent[0] == -1 and all(0 <= parent[i] < i for i in range(1, len(tree)))
    assert depth == sorted(depth)
    for i in range(len(tree)):
        chain = reference_ancestors_or_self(parent, i)
        assert depth[i] == len(chain) - 1
        assert tree.ancestors(tree.names[i]) == [tree.names[a] for a in chain[1:]]
        expected_branch = -1 if depth[i] == 0 else chain[-2]
        assert tree.branch[i].item() == expected_branch
        children = [c for c in range(len(tree)) if parent[c] == i]
        assert tree.children_index[i] == children
        # siblings are contiguous and keep the input's first-appearance order
        assert not children or children == list(range(children[0], children[0] + len(children)))
        input_order = [tree.index[n] for n, p in mapping.items() if p == tree.names[i]]
        assert children == input_order
    levels = tree.levels
    assert len(levels) == tree.height + 1 == max(depth) + 1
    assert torch.equal(torch.cat(levels), torch.arange(len(tree)))
    for d, level in enumerate(levels):
        assert all(depth[i] == d for i in level.tolist())


def test_from_edges_and_tsv_match_from_parents(tmp_path):
    mapping = shuffled_tree_map(50, 7)
    reference = Tree.from_parents(mapping)
    edges = [(child, parent) for child, parent in mapping.items() if parent is not None]
    by_edges = Tree.from_edges(edges)
    path = tmp_path / "tree.tsv"
    path.write_text("# a comment\n\n" + "".join(f"{c}\t{p}\n" for c, p in edges))
    by_tsv = Tree.read_tsv(path)
    for other in (by_edges, by_tsv):
        assert other.names == reference.names
        assert torch.equal(other.parent, reference.parent)
    # repeated identical pairs and an explicit (root, None) pair are accepted
    again = Tree.from_edges(edges + edges[:3] + [(reference.root, None)])
    assert again.names == reference.names


def test_int_names_are_converted_to_str():
    tree = Tree.from_parents({1: 0, 2: 0, 3: 1})
    assert tree.names == ["0", "1", "2", "3"]
    assert tree.index["3"] == 3 and 3 in tree and tree.ancestors(3) == ["1", "0"]
    assert Tree.from_edges([(np.int64(5), 4)]).names == ["4", "5"]


def test_single_node_tree():
    tree = Tree.from_parents({"only": None})
    assert len(tree) == 1 and tree.height == 0 and tree.branch.tolist() == [-1]
    assert tree.distances().tolist() == [[0.0]]
    assert tree.closure().tolist() == [[False]]


def test_titles_tsv_roundtrip(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text(
        "# child\tparent\ttitle\n"
        "root\t\tEverything\n"
        "  a \t root\tFirst letter\n"
        "b\troot\n"
        "\n"
        "c\ta\tThe c\n"
    )
    tree = Tree.read_tsv(path)
    assert tree.names == ["root", "a", "b", "c"]
    assert tree.title("root") == "Everything" and tree.title("a") == "First letter"
    assert tree.title("b") == "b"  # falls back to the name
    assert Tree.read_tsv(path, titles={"b": "Bee"}).title("b") == "Bee"
    out = tmp_path / "out.tsv"
    tree.write_tsv(out)
    again = Tree.read_tsv(out)
    assert again.names == tree.names and torch.equal(again.parent, tree.parent)
    assert again.titles == tree.titles == {"root": "Everything", "a": "First letter", "c": "The c"}


def test_titles_for_unknown_names_are_ignored():
    tree = Tree.from_parents({"a": "r"}, titles={"a": "A", "zzz": "nobody", "r": None})
    assert tree.titles == {"a": "A"} and tree.title("r") == "r"


def test_subtree():
    tree = Tree.from_parents(shuffled_tree_map(60, 3))
    top = tree.names[1]
    sub = tree.subtree(top)
    descendants = {n for n in tree.names if top in tree.ancestors(n)}
    assert set(sub.names) == descendants | {top} and sub.root == top
    for name in sub.names[1:]:
        assert sub.ancestors(name) == tree.ancestors(name)[: sub.depth[sub.index[name]]]


# ---------------------------------------------------------------------- distances & closure
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lineal_discount", [0.0, 0.5, 0.25])
def test_distances_match_python_reference(seed, lineal_discount):
    tree = Tree.from_parents(shuffled_tree_map(40 + 10 * seed, seed))
    expected = reference_distances(tree.parent.tolist(), lineal_discount)
    actual = tree.distances(lineal_discount=lineal_discount)
    assert actual.dtype == torch.float64 and actual.shape == (len(tree), len(tree))
    np.testing.assert_array_equal(actual.numpy(), expected)


@pytest.mark.parametrize(
    "tree",
    [random_tree(1500, seed=1), balanced_tree(3, 5), Tree.from_parents(shuffled_tree_map(400, 9))],
    ids=["random1500", "balanced3x5", "shuffled400"],
)
def test_distances_match_scipy_shortest_path(tree):
    distances = tree.distances()
    np.testing.assert_array_equal(distances.numpy(), scipy_distances(tree))
    assert torch.equal(distances, distances.T)
    assert torch.all(distances.diagonal() == 0)


def test_lineal_discount_only_touches_ancestor_pairs():
    tree = random_tree(300, seed=5)
    plain = tree.distances()
    discounted = tree.distances(lineal_discount=0.5)
    closure = tree.closure()
    np.testing.assert_array_equal((plain - discounted).numpy(), 0.5 * closure.double().numpy())
    off_diagonal = ~torch.eye(len(tree), dtype=torch.bool)
    assert discounted[off_diagonal].min() >= 0.5 and torch.all(discounted.diagonal() == 0)


@pytest.mark.parametrize("seed", range(4))
def test_closure_matches_reference(seed):
    tree = Tree.from_parents(shuffled_tree_map(70, seed + 20))
    closure = tree.closure()
    assert closure.dtype == torch.bool
    np.testing.assert_array_equal(closure.numpy(), reference_closure(tree.parent.tolist()))


def test_rows_argument_and_small_blocks_match_full(monkeypatch):
    tree = random_tree(500, seed=3)
    full = tree.distances(lineal_discount=0.5)
    full_closure = tree.closure()
    rows = torch.tensor([499, 0, 17, 17, 250])
    assert torch.equal(tree.distances(rows=rows, lineal_discount=0.5), full[rows])
    assert torch.equal(tree.distances(rows=[3, 1]), tree.distances()[[3, 1]])
    assert torch.equal(tree.closure(rows=rows), full_closure[rows])
    assert tree.distances(rows=[]).shape == (0, 500)
    # many blocks with a ragged last one exercise the reused buffers
    monkeypatch.setattr(trees, "_BLOCK_ELEMENTS", 500 * 7)
    assert torch.equal(tree.distances(lineal_discount=0.5), full)
    assert torch.equal(tree.closure(), full_closure)


def test_int32_counting_path_matches(monkeypatch):
    # trees taller than ~16k levels count in int32; force that path on a small deep tree
    path_tree = Tree.from_parents({str(i): str(i - 1) for i in range(1, 300)})
    monkeypatch.setattr(Tree, "_count_dtype", lambda self: torch.int32)
    index = torch.arange(300)
    expected = (index[:, None] - index[None, :]).abs().double()
    assert torch.equal(path_tree.distances(), expected)
    assert torch.equal(path_tree.closure(), index[:, None] != index[None, :])


def test_rows_validation():
    tree = balanced_tree(2, 3)
    with pytest.raises(ValueError, match="rows"):
        tree.distances(rows=[0, 15])
    with pytest.raises(ValueError, match="rows"):
        tree.distances(rows=[-1])
    with pytest.raises(ValueError, match="rows"):
        tree.closure(rows=[[0, 1]])
    # One rule for node indices (hyperloss.validation.check_index): a wrong dtype is a TypeError.
    with pytest.raises(TypeError, match="rows must hold integer node indices"):
        tree.distances(rows=[0.5])
    with pytest.raises(TypeError, match="rows must hold integer node indices"):
        tree.distances(rows=[True, False])
    assert tree.distances(rows=[]).shape == (0, 15)
    assert torch.equal(tree.distances(rows=np.array([3])), tree.distances()[3:4])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf")])
def test_lineal_discount_validation(bad):
    with pytest.raises(ValueError, match=r"0 <= lineal_discount < 1"):
        balanced_tree(2, 2).distances(lineal_discount=bad)


def test_lineal_discount_type():
    with pytest.raises(TypeError, match="lineal_discount"):
        balanced_tree(2, 2).distances(lineal_discount="0.5")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=30), st.data())
def test_distances_property(raw_parents, data):
    # node k + 1 attaches to raw_parents[k] mod (k + 1): every parent array of a rooted tree
    parent_of = {"0": None}
    for k, raw in enumerate(raw_parents):
        parent_of[str(k + 1)] = str(raw % (k + 1))
    items = list(parent_of.items())
    order = data.draw(st.permutations(range(len(items))))
    tree = Tree.from_parents(dict(items[i] for i in order))
    discount = data.draw(st.sampled_from([0.0, 0.5]))
    np.testing.assert_array_equal(
        tree.distances(lineal_discount=discount).numpy(),
        reference_distances(tree.parent.tolist(), discount),
    )
    # permuting the input changes indices, never the distance between two names
    canonical = Tree.from_parents(parent_of)
    mapping = tree.indices(canonical.names)
    assert torch.equal(
        tree.distances(lineal_discount=discount)[mapping][:, mapping],
        canonical.distances(lineal_discount=discount),
    )


# ---------------------------------------------------------------------- on-demand distances
def path_tree(n: int) -> Tree:
    return Tree.from_parents({"0": None, **{str(i): str(i - 1) for i in range(1, n)}})


def star_tree(n: int) -> Tree:
    return Tree.from_parents({"0": None, **{str(i): "0" for i in range(1, n)}})


ON_DEMAND_TREES = {
    **{f"random{seed}": random_tree(300 + 50 * seed, seed=seed) for seed in range(4)},
    "path600": path_tree(600),  # height 599: ten lifting levels, long lifts
    "star300": star_tree(300),  # height 1: a single level
    "shuffled250": Tree.from_parents(shuffled_tree_map(250, 11)),
    "balanced3x4": balanced_tree(3, 4),
    "single": Tree.from_parents({"only": None}),
}


@pytest.mark.parametrize("name", list(ON_DEMAND_TREES))
@pytest.mark.parametrize("lineal_discount", [0.0, 0.5])
def test_distance_all_pairs_equal_dense_distances(name, lineal_discount):
    tree = ON_DEMAND_TREES[name]
    n = len(tree)
    u, v = torch.arange(n)[:, None], torch.arange(n)[None, :]
    actual = tree.distance(u, v, lineal_discount=lineal_discount)
    assert actual.dtype == torch.float64 and actual.shape == (n, n)
    assert torch.equal(actual, tree.distances(lineal_discount=lineal_discount))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lineal_discount", [0.0, 0.25])
def test_distance_matches_python_reference(seed, lineal_discount):
    tree = Tree.from_parents(shuffled_tree_map(60, seed + 40))
    expected = reference_distances(tree.parent.tolist(), lineal_discount)
    n = len(tree)
    actual = tree.distance(
        torch.arange(n)[:, None], torch.arange(n), lineal_discount=lineal_discount
    )
    np.testing.assert_array_equal(actual.numpy(), expected)


@pytest.mark.parametrize("name", ["random1", "path600", "star300", "shuffled250", "balanced3x4"])
def test_lca_index_matches_string_lca(name):
    tree = ON_DEMAND_TREES[name]
    generator = torch.Generator().manual_seed(7)
    u = torch.randint(len(tree), (300,), generator=generator)
    v = torch.randint(len(tree), (300,), generator=generator)
    v[:20] = u[:20]  # equal pairs
    v[20:40] = tree.parent[u[20:40]].clamp(min=0)  # parent pairs
    lca = tree.lca_index(u, v)
    assert lca.dtype == torch.long and lca.shape == (300,)
    expected = [
        tree.index[tree.lca(tree.names[a], tree.names[b])]
        for a, b in zip(u.tolist(), v.tolist(), strict=True)
    ]
    assert lca.tolist() == expected
    assert torch.equal(tree.lca_index(v, u), lca)


def test_distance_on_naics_samples():
    from hyperloss.datasets import naics

    tree = naics()
    dense = tree.distances(lineal_discount=0.5)
    generator = torch.Generator().manual_seed(3)
    u = torch.randint(len(tree), (400, 1), generator=generator)
    v = torch.randint(len(tree), (400, 25), generator=generator)
    assert torch.equal(tree.distance(u, v, lineal_discount=0.5), dense[u, v])
    assert tree.distance(tree.index["111110"], tree.index["111"]).item() == 3.0
    assert tree.distance(tree.index["111110"], tree.index["52"]).item() == 6.0
    assert tree.lca_index(tree.index["111110"], tree.index["1122"]).item() == tree.index["11"]


def test_distance_broadcasting_and_input_kinds():
    tree = random_tree(200, seed=2)
    dense = tree.distances()
    anchors = torch.tensor([[5], [17], [199]])
    items = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [199, 0, 17, 5]])
    assert tree.distance(anchors, items).shape == (3, 4)
    assert torch.equal(tree.distance(anchors, items), dense[anchors, items])
    assert torch.equal(tree.distance(items, anchors), dense[items, anchors])
    # (B, 1) against (L,) broadcasts to (B, L); scalars give 0-d tensors
    assert torch.equal(tree.distance(anchors, torch.arange(10)), dense[anchors, torch.arange(10)])
    scalar = tree.distance(5, 17)
    assert scalar.shape == () and scalar.item() == dense[5, 17].item()
    assert tree.lca_index(5, 5).shape == () and tree.lca_index(5, 5).item() == 5
    # sequences, numpy arrays, narrow integer dtypes and 0-d tensors
    assert tree.distance([5, 17], [17, 5]).tolist() == [dense[5, 17].item()] * 2
    assert torch.equal(tree.distance(np.array([[1, 2]]), np.array([3])), dense[[1, 2], 3][None])
    narrow = tree.distance(anchors.to(torch.int32), items.to(torch.uint8))
    assert torch.equal(narrow, dense[anchors, items])
    assert tree.distance(torch.tensor(3), torch.tensor([4, 5])).shape == (2,)
    # empty selections are valid and keep their shape
    assert tree.distance([], []).shape == (0,)
    assert tree.distance(torch.zeros(4, 0, dtype=torch.long), 3).shape == (4, 0)
    assert tree.lca_index(
        torch.zeros(0, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long)
    ).shape == (0, 3)
    # the inputs are not modified
    before = items.clone()
    tree.distance(anchors, items, lineal_discount=0.5)
    assert torch.equal(items, before)


def test_distance_chunks_match(monkeypatch):
    tree = random_tree(400, seed=6)
    u, v = torch.arange(400)[:, None], torch.arange(400)[None, :]
    expected = tree.distance(u, v, lineal_discount=0.5)
    expected_lca = tree.lca_index(u, v)
    monkeypatch.setattr(trees, "_PAIR_CHUNK", 997)  # many chunks, a ragged last one
    assert torch.equal(tree.distance(u, v, lineal_discount=0.5), expected)
    assert torch.equal(tree.lca_index(u, v), expected_lca)


def test_ancestor_table_rows_are_power_of_two_ancestors():
    tree = random_tree(500, seed=4)
    parent = tree.parent.tolist()
    table = tree._ancestor_table
    assert table.shape == (max(1, tree.height.bit_length()), 500)
    for level in range(table.shape[0]):
        for node in range(0, 500, 7):
            expected = node
            for _ in range(2**level):
                expected = max(parent[expected], 0)
            assert table[level, node].item() == expected
    copied = pickle.loads(pickle.dumps(tree))
    assert torch.equal(copied._ancestor_table, table)
    assert torch.equal(copied.distance(torch.arange(500), 0), tree.distance(torch.arange(500), 0))


def test_distance_errors():
    tree = balanced_tree(2, 3)  # 15 nodes
    with pytest.raises(ValueError, match=r"u must hold node indices in \[0, 15\), got 15"):
        tree.distance(torch.tensor([0, 15]), 0)
    with pytest.raises(ValueError, match=r"v must hold node indices in \[0, 15\), got -1"):
        tree.distance(0, [-1, 3])
    with pytest.raises(ValueError, match="v must hold node indices"):
        tree.lca_index(0, 99)
    with pytest.raises(TypeError, match="u must hold integer node indices, got dtype torch.float"):
        tree.distance(torch.tensor([0.0, 1.0]), 0)
    with pytest.raises(TypeError, match="v must hold integer node indices, got dtype torch.bool"):
        tree.distance(0, [True, False])
    with pytest.raises(TypeError, match="v must hold integer node indices"):
        tree.lca_index(0, np.array([0.5]))
    with pytest.raises(TypeError, match="u must hold integer node indices, got the str"):
        tree.distance("0", 1)
    with pytest.raises(TypeError, match="u must be an int, a sequence of ints"):
        tree.distance([[0, 1], [2]], 1)
    with pytest.raises(TypeError, match="v must be an int"):
        tree.lca_index(0, object())
    with pytest.raises(ValueError, match=r"u with shape \(3,\) and v with shape \(4,\)"):
        tree.distance(torch.arange(3), torch.arange(4))
    with pytest.raises(ValueError, match=r"0 <= lineal_discount < 1"):
        tree.distance(0, 1, lineal_discount=1.0)
    with pytest.raises(TypeError, match="lineal_discount"):
        tree.distance(0, 1, lineal_discount="0.5")


@pytest.mark.parametrize("name", list(ON_DEMAND_TREES))
def test_build_orders_by_level_and_by_node_agree(name):
    # _build picks one of two implementations by the tree's shape; both must give the same
    # branch / preorder / subtree sizes (their correctness is checked by the distance tests).
    tree = ON_DEMAND_TREES[name]
    parent = tree.parent
    child_count = torch.bincount(parent[1:], minlength=len(tree))
    first_child = torch.cumsum(child_count, 0) - child_count + 1
    by_level = trees._orders_by_level(parent, tree._level_bounds, first_child)
    by_node = trees._orders_by_node(parent, tree._level_bounds, first_child)
    for level_result, node_result in zip(by_level, by_node, strict=True):
        assert torch.equal(level_result, node_result)
    assert torch.equal(by_level[0], tree.branch)
    assert torch.equal(by_level[1], tree._pre_start)


def test_deep_and_wide_trees_take_both_build_paths(monkeypatch):
    # force each path on the same trees and compare the distances with the dense reference
    for width in (0, 10**9):
        monkeypatch.setattr(trees, "_LEVEL_WIDTH", width)
        for tree in (random_tree(120, seed=8), path_tree(90), star_tree(40)):
            rebuilt = pickle.loads(pickle.dumps(tree))
            expected = reference_distances(tree.parent.tolist())
            np.testing.assert_array_equal(rebuilt.distances().numpy(), expected)
            assert torch.equal(rebuilt.branch, tree.branch)


def test_dense_matrices_refused_past_dense_limit():
    assert Tree.DENSE_LIMIT == 20_000
    tree = random_tree(20_001, seed=1)
    dense_bytes = f"{8 * 20_001**2:,} bytes"
    with pytest.raises(ValueError, match=dense_bytes) as refused:
        tree.distances()
    message = str(refused.value)
    assert "tree.distance(u, v)" in message and "tree.distances(rows=...)" in message
    assert "DENSE_LIMIT = 20,000" in message
    with pytest.raises(ValueError, match=f"{20_001**2:,} bytes.*tree.closure\\(rows=...\\)"):
        tree.closure()
    # rows keep working at any size and agree with the pairwise distances
    anchors = torch.tensor([0, 5, 20_000])
    rows = tree.distances(rows=anchors, lineal_discount=0.5)
    assert rows.shape == (3, 20_001)
    everything = torch.arange(20_001)
    assert torch.equal(rows, tree.distance(anchors[:, None], everything, lineal_discount=0.5))
    closure_rows = tree.closure(rows=anchors)
    lineal = tree.distance(anchors[:, None], everything) != tree.distance(
        anchors[:, None], everything, lineal_discount=0.5
    )
    assert torch.equal(closure_rows, lineal)


def test_dense_limit_boundary(monkeypatch):
    tree = random_tree(50, seed=2)
    monkeypatch.setattr(Tree, "DENSE_LIMIT", 50)
    assert tree.distances().shape == tree.closure().shape == (50, 50)
    monkeypatch.setattr(Tree, "DENSE_LIMIT", 49)
    with pytest.raises(ValueError, match="more than Tree.DENSE_LIMIT = 49 nodes"):
        tree.distances()
    with pytest.raises(ValueError, match="more than Tree.DENSE_LIMIT = 49 nodes"):
        tree.closure()
    assert tree.distances(rows=[1, 2]).shape == (2, 50)


# ---------------------------------------------------------------------- lookups
def test_indices_and_unknown_names():
    tree = balanced_tree(2, 2)
    assert tree.indices(["3", "0", 6]).tolist() == [3, 0, 6]
    assert tree.indices([]).dtype == torch.long
    with pytest.raises(ValueError, match=r"unknown node name\(s\): 'x', 99"):
        tree.indices(["1", "x", 99])
    with pytest.raises(KeyError):
        tree.indices(["x"])
    with pytest.raises(TypeError, match="single str"):
        tree.indices("12")
    for method in (tree.ancestors, tree.children, tree.title, tree.subtree):
        with pytest.raises(UnknownNodeError, match="unknown node name: 'nope'"):
            method("nope")


# ---------------------------------------------------------------------- immutability
def test_tree_cannot_be_corrupted_through_attributes():
    tree = Tree.from_parents({"a": "r", "b": "r", "c": "a"})
    with pytest.raises(TypeError):
        tree.names.append("x")
    with pytest.raises(TypeError):
        tree.names[0] = "x"
    with pytest.raises(TypeError):
        tree.index["x"] = 9
    with pytest.raises(TypeError):
        tree.index.update(x=9)
    with pytest.raises(TypeError):
        tree.children_index[0].append(3)
    with pytest.raises(AttributeError):
        tree.parent = torch.zeros(4)
    tree.parent[0] = 3
    tree.depth.zero_()
    tree.levels[0][0] = 2
    tree.branch.fill_(7)
    tree.titles["a"] = "changed"
    assert tree.parent.tolist() == [-1, 0, 0, 1] and tree.depth.tolist() == [0, 1, 1, 2]
    assert tree.levels[0].tolist() == [0] and tree.branch.tolist() == [-1, 1, 2, 1]
    assert tree.title("a") == "a"
    assert list(tree.names) == ["r", "a", "b", "c"] and tree.names == ["r", "a", "b", "c"]


def test_pickle_and_copy():
    tree = Tree.from_parents(shuffled_tree_map(30, 1), titles=None)
    for other in (pickle.loads(pickle.dumps(tree)), copy.deepcopy(tree), copy.copy(tree)):
        assert other.names == tree.names and torch.equal(other.parent, tree.parent)
        assert torch.equal(other.distances(), tree.distances())
    names = pickle.loads(pickle.dumps(tree.names))
    with pytest.raises(TypeError):
        names.append("x")


def test_tree_constructor_is_from_parents():
    mapping = {"a": "r", "b": "a"}
    assert Tree(mapping).names == Tree.from_parents(mapping).names == ["r", "a", "b"]


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("mapping", "pattern"),
    [
        ({}, "empty tree"),
        ({"a": "a", "b": None}, "'a' is its own parent"),
        ({"a": "b", "b": "a"}, r"cycle \('a' -> 'b' -> 'a'\)"),
        ({"r": None, "a": "b", "b": "c", "c": "a"}, r"cycle \('a' -> 'b' -> 'c' -> 'a'\)"),
        ({"a": None, "b": None}, r"2 roots \('a', 'b'\)"),
        ({"r": None, "a": "r", "b": "x"}, r"undefined parent\(s\) 'x' \(parent of 'b'\)"),
        ({"a": "x", "b": "y"}, r"undefined parent\(s\) 'x' \(parent of 'a'\), 'y'.*2 roots"),
        ({1: "r", "1": "r"}, "name '1' twice"),
        ({"": "r"}, "non-empty"),
        ({"a": ""}, "non-empty"),
    ],
)
def test_from_parents_errors(mapping, pattern):
    with pytest.raises(ValueError, match=pattern):
        Tree.from_parents(mapping)


@pytest.mark.parametrize(
    ("pairs", "pattern"),
    [
        ([], "empty tree"),
        ([("a", "a")], r"pairs\[0\]: node 'a' is its own parent"),
        ([("a", "r"), ("a", "s")], r"pairs\[1\]: child 'a' has two parents, 'r' and 's'"),
        ([("a", "b"), ("b", "a")], "cycle"),
        ([("a", "r"), ("b", "r"), ("c", "d"), ("d", "c")], r"cycle \('c' -> 'd' -> 'c'\)"),
        ([("a", "r1"), ("b", "r2")], r"2 roots \('r1', 'r2'\)"),
        ([("a", None), ("b", "r")], r"2 roots \('a', 'r'\)"),
        ([("a", "r", "extra")], r"pairs\[0\] must be a \(child, parent\) pair"),
        (["ab"], r"pairs\[0\] must be a \(child, parent\) pair"),
    ],
)
def test_from_edges_errors(pairs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Tree.from_edges(pairs)


@pytest.mark.parametrize(
    ("value", "exception"),
    [
        ({None: "r"}, TypeError),
        ({"a": 1.5}, TypeError),
        ({True: "r"}, TypeError),
        ([("a", "r")], TypeError),
    ],
)
def test_from_parents_type_errors(value, exception):
    with pytest.raises(exception):
        Tree.from_parents(value)


def test_from_edges_type_errors():
    with pytest.raises(TypeError, match="child of pairs"):
        Tree.from_edges([(None, "r")])
    with pytest.raises(TypeError, match="pairs must be an iterable"):
        Tree.from_edges("ab")
    with pytest.raises(TypeError, match="titles"):
        Tree.from_edges([("a", "r")], titles=["a"])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("a\tr\nb r\n", r":2: malformed line 'b r'"),
        ("# c\n\na\tr\tA\tmore\n", r":3: malformed line"),
        ("a\tr\n\tr\n", r":2: malformed line"),
        ("a\tr\nb\ts\na\tt\n", r":3: child 'a' has two parents, 'r' and 't'"),
        ("a\ta\n", r":1: node 'a' is its own parent"),
        ("# only a comment\n\n", "empty tree"),
        ("a\tb\nb\ta\n", "cycle"),
        ("a\tr\nb\ts\n", "2 roots"),
    ],
)
def test_read_tsv_errors(tmp_path, text, pattern):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern) as caught:
        Tree.read_tsv(path)
    if "line" in pattern or pattern.startswith(":"):
        assert str(path) in str(caught.value)


def test_cycle_reachable_only_from_nonroot_does_not_hang():
    # a long cycle hanging off nothing: detection must be linear, the message abbreviated
    mapping = {"r": None, **{f"n{i}": f"n{(i + 1) % 5000}" for i in range(5000)}}
    with pytest.raises(ValueError, match=r"cycle \('n0' -> 'n1' -> .* \.\.\. .*'n0'\)"):
        Tree.from_parents(mapping)
