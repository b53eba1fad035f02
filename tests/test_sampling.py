"""Sampler: exact distributions against brute force on small trees, invariants, determinism,
errors, and a large tree without any N x N array."""

from __future__ import annotations

import pytest
import scipy.stats
import torch

from hyperloss.datasets import balanced_tree, naics, random_tree
from hyperloss.sampling import NEGATIVE_STRATEGIES, ListBatch, ListSampler
from hyperloss.trees import Tree

# Chi-square tests use fixed seeds; a p-value this small would mean the distribution is wrong.
P_VALUE_FLOOR = 1e-4


@pytest.fixture(scope="module")
def tree():
    return random_tree(60, seed=3)


def _plain_loop_positive_sets(tree_distances, bound):
    n = tree_distances.shape[0]
    return [
        {j for j in range(n) if j != i and float(tree_distances[i, j]) <= bound} for i in range(n)
    ]


def _walk_path_length(parent, depth, u, v):
    """Tree path lengths by walking both nodes up to their common ancestor (plain reference)."""
    u, v = u.clone(), v.clone()
    steps = torch.zeros_like(u)
    while True:
        deeper_u = depth[u] > depth[v]
        deeper_v = depth[v] > depth[u]
        same_level_apart = (depth[u] == depth[v]) & (u != v)
        move_u, move_v = deeper_u | same_level_apart, deeper_v | same_level_apart
        if not bool((move_u | move_v).any()):
            return steps
        steps += move_u.long() + move_v.long()
        u = torch.where(move_u, parent[u], u)
        v = torch.where(move_v, parent[v], v)


def _caterpillar(length):
    """A path of ``length`` nodes with one leaf hanging off each: deep, narrow levels."""
    parents = {"p0": None, "leaf0": "p0"}
    for i in range(1, length):
        parents.update({f"p{i}": f"p{i - 1}", f"leaf{i}": f"p{i}"})
    return Tree.from_parents(parents)


def _chi_square_p(counts, probabilities):
    """p-value of observed counts against exact probabilities (cells with p > 0)."""
    support = probabilities > 0
    assert counts[~support].sum() == 0, "drew a node of probability zero"
    expected = probabilities[support] / probabilities[support].sum() * counts.sum()
    observed = counts[support]
    # The chi-square approximation needs expected counts of about 5: pool the rare cells.
    rare = expected < 5
    if bool(rare.any()):
        expected = torch.cat([expected[~rare], expected[rare].sum()[None]])
        observed = torch.cat([observed[~rare], observed[rare].sum()[None]])
    if expected.numel() == 1:  # one possible outcome, and nothing was drawn outside it
        return 1.0
    return float(scipy.stats.chisquare(observed, expected).pvalue)


def _draws_for(sampler, anchor, repeats):
    return sampler.sample(torch.full((repeats,), anchor))


# ------------------------------------------------------------------ exact structure
@pytest.mark.parametrize("discount", [0.0, 0.5])
@pytest.mark.parametrize(
    "make_tree",
    [
        lambda: random_tree(150, seed=4),
        lambda: balanced_tree(3, 3),
        naics,
        lambda: _caterpillar(30),
    ],
)
def test_distance_classes_are_exact_and_enumerate_every_node_once(make_tree, discount):
    tree = make_tree()
    n = len(tree)
    anchors = torch.arange(n) if n <= 200 else torch.arange(0, n, 37)
    sampler = ListSampler(tree, lineal_discount=discount)
    depth, ancestors = sampler._ancestor_table(anchors)
    counts = sampler._class_counts(depth, ancestors, None)
    # Brute force from the dense definitions: path length and the ancestor relation.
    path_length = tree.distances(rows=anchors).long()
    lineal = tree.closure(rows=anchors)
    for klass in range(counts.shape[1]):
        in_class = (path_length == klass // 2) & (lineal == bool(klass % 2))
        if klass == 0:  # the anchor itself is filed as lineal at path length 0
            in_class = torch.zeros_like(in_class)
        if klass == 1:
            in_class = path_length == 0
        assert torch.equal(counts[:, klass], in_class.sum(dim=1))
    # Every (class, rank) pair resolves to a distinct node of that class: a bijection.
    klass, rank = [], []
    for c in range(counts.shape[1]):
        top = int(counts[:, c].max())
        klass.append(torch.full((len(anchors), top), c))
        rank.append(torch.arange(top).expand(len(anchors), top))
    klass, rank = torch.cat(klass, 1), torch.cat(rank, 1)
    real = rank < counts.gather(1, klass)
    nodes = sampler._resolve(depth, ancestors, klass, torch.minimum(rank, counts.gather(1, klass)))
    distances = tree.distances(rows=anchors, lineal_discount=discount)
    for row in range(len(anchors)):
        found = nodes[row][real[row]]
        assert torch.equal(torch.sort(found).values, torch.arange(n))
        assert torch.allclose(distances[row, found], sampler._class_distance[klass[row][real[row]]])


# ------------------------------------------------------------------ distributions
@pytest.mark.parametrize("discount", [0.0, 0.5])
@pytest.mark.parametrize("bound", [1.0, 2.0, 3.0])
def test_positives_are_uniform_within_the_bound(tree, discount, bound):
    t = tree.distances(lineal_discount=discount)
    sampler = ListSampler(
        tree, k_negatives=1, max_positive_distance=bound, lineal_discount=discount, seed=11
    )
    for anchor in (0, 5, 41):
        positives = _draws_for(sampler, anchor, 4000).positive
        allowed = (t[anchor] <= bound) & (torch.arange(len(tree)) != anchor)
        expected = allowed.double() / allowed.sum()
        counts = torch.bincount(positives, minlength=len(tree)).double()
        assert _chi_square_p(counts, expected) > P_VALUE_FLOOR


def test_uniform_negatives_are_uniform_over_other_nodes(tree):
    sampler = ListSampler(tree, k_negatives=50, negatives="uniform", seed=1)
    for anchor in (0, 17):
        negatives = _draws_for(sampler, anchor, 200).negatives.reshape(-1)
        expected = torch.full((len(tree),), 1.0 / (len(tree) - 1), dtype=torch.float64)
        expected[anchor] = 0
        counts = torch.bincount(negatives, minlength=len(tree)).double()
        assert _chi_square_p(counts, expected) > P_VALUE_FLOOR


@pytest.mark.parametrize(("discount", "temperature"), [(0.0, 1.5), (0.0, 0.4), (0.5, 1.0)])
def test_tree_negatives_follow_exponential_weights(tree, discount, temperature):
    t = tree.distances(lineal_discount=discount)
    sampler = ListSampler(
        tree, k_negatives=40, temperature=temperature, lineal_discount=discount, seed=2
    )
    for anchor in (0, 9, 55):
        negatives = _draws_for(sampler, anchor, 500).negatives.reshape(-1)
        expected = torch.exp(-t[anchor] / temperature)
        expected[anchor] = 0
        expected /= expected.sum()
        counts = torch.bincount(negatives, minlength=len(tree)).double()
        assert _chi_square_p(counts, expected) > P_VALUE_FLOOR


def test_tiny_temperature_draws_only_the_nearest_nodes(tree):
    # exp(-t / 1e-3) underflows for every t >= 1; the row-max shift keeps the draw defined.
    sampler = ListSampler(tree, k_negatives=30, temperature=1e-3, seed=0)
    batch = sampler.sample(torch.arange(len(tree)))
    t = tree.distances()
    assert (t.gather(1, batch.negatives) == 1.0).all()


@pytest.mark.parametrize("discount", [0.0, 0.5])
def test_farther_negatives_are_uniform_beyond_the_positive(tree, discount):
    t = tree.distances(lineal_discount=discount)
    sampler = ListSampler(
        tree, k_negatives=20, negatives="farther", max_positive_distance=3.0,
        lineal_discount=discount, seed=4,
    )  # fmt: skip
    n = len(tree)
    for anchor in (0, 23):
        batch = _draws_for(sampler, anchor, 3000)
        positive_distance = t[anchor, batch.positive]
        negative_distance = t[anchor, batch.negatives]
        assert (negative_distance > positive_distance[:, None]).all()
        # Exact marginal: average over the positive's law of uniform-beyond-the-positive.
        allowed = (t[anchor] <= 3.0) & (torch.arange(n) != anchor)
        expected = torch.zeros(n, dtype=torch.float64)
        for p in torch.nonzero(allowed)[:, 0].tolist():
            beyond = t[anchor] > t[anchor, p]
            expected += beyond.double() / beyond.sum() / allowed.sum()
        counts = torch.bincount(batch.negatives.reshape(-1), minlength=n).double()
        assert _chi_square_p(counts, expected) > P_VALUE_FLOOR


def test_farther_falls_back_to_uniform_when_the_positive_is_farthest():
    # A star: from a leaf, the other leaves (distance 2) are the farthest nodes.
    star = Tree.from_parents({"r": None, **{f"leaf{i}": "r" for i in range(6)}})
    sampler = ListSampler(star, k_negatives=10, negatives="farther", seed=3)
    batch = _draws_for(sampler, 1, 3000)
    at_root = batch.positive == 0
    assert at_root.any() and (~at_root).any()
    # Positive = root (distance 1): negatives are the other leaves, uniformly.
    beyond = batch.negatives[at_root].reshape(-1)
    expected = torch.tensor([0, 0, 1, 1, 1, 1, 1], dtype=torch.float64) / 5
    assert _chi_square_p(torch.bincount(beyond, minlength=7).double(), expected) > P_VALUE_FLOOR
    # Positive = a leaf (distance 2, the farthest): uniform over all nodes but the anchor.
    fallback = batch.negatives[~at_root].reshape(-1)
    expected = torch.tensor([1, 0, 1, 1, 1, 1, 1], dtype=torch.float64) / 6
    assert _chi_square_p(torch.bincount(fallback, minlength=7).double(), expected) > P_VALUE_FLOOR


# ------------------------------------------------------------------ invariants
@pytest.mark.parametrize("negatives", NEGATIVE_STRATEGIES)
@pytest.mark.parametrize("bound", [1.0, 2.0, 3.0])
def test_invariants_hold_for_every_strategy(tree, negatives, bound):
    t = tree.distances()
    sampler = ListSampler(tree, k_negatives=7, max_positive_distance=bound, negatives=negatives)
    allowed = _plain_loop_positive_sets(t, bound)
    for batch in sampler.epoch(16):
        assert isinstance(batch, ListBatch)
        b = batch.anchor.shape[0]
        assert batch.positive.shape == (b,) and batch.negatives.shape == (b, 7)
        assert batch.anchor.dtype == batch.positive.dtype == batch.negatives.dtype == torch.long
        assert batch.items.shape == (b, 8)
        for a, p in zip(batch.anchor.tolist(), batch.positive.tolist(), strict=True):
            assert p in allowed[a]
        assert (batch.negatives != batch.anchor[:, None]).all()
        assert ((batch.negatives >= 0) & (batch.negatives < len(tree))).all()
        if negatives == "farther":
            pos_t = t[batch.anchor, batch.positive]
            neg_t = t[batch.anchor[:, None], batch.negatives]
            has_farther = (t[batch.anchor] > pos_t[:, None]).any(dim=1)
            assert (neg_t[has_farther] > pos_t[has_farther, None]).all()


def test_epoch_visits_every_anchor_once(tree):
    sampler = ListSampler(tree, k_negatives=3)
    anchors = torch.cat([b.anchor for b in sampler.epoch(7)])
    assert sorted(anchors.tolist()) == list(range(len(tree)))


def test_from_tree_matches_the_constructor(tree):
    a = ListSampler.from_tree(tree, lineal_discount=0.5, negatives="farther", seed=8)
    b = ListSampler(tree, lineal_discount=0.5, negatives="farther", seed=8)
    x, y = a.sample_random(32), b.sample_random(32)
    assert all(torch.equal(u, v) for u, v in zip(x, y, strict=True))


@pytest.mark.parametrize("negatives", NEGATIVE_STRATEGIES)
def test_same_seed_same_batches_and_state_resumes(tree, negatives):
    def draw(sampler):
        return [torch.cat([b.positive[:, None], b.negatives], 1) for b in sampler.epoch(10)]

    a = ListSampler(tree, negatives=negatives, seed=5)
    b = ListSampler(tree, negatives=negatives, seed=5)
    c = ListSampler(tree, negatives=negatives, seed=6)
    first_a, first_b = draw(a), draw(b)
    assert all(torch.equal(x, y) for x, y in zip(first_a, first_b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first_a, draw(c), strict=True))
    # Saving the state and restoring it into a fresh sampler reproduces the continuation.
    state = a.state_dict()
    continuation = draw(a) + [a.nodes(5).reshape(1, -1)]
    d = ListSampler(tree, negatives=negatives, seed=5)
    d.load_state_dict(state)
    resumed = draw(d) + [d.nodes(5).reshape(1, -1)]
    assert all(torch.equal(x, y) for x, y in zip(continuation, resumed, strict=True))


def test_two_node_tree_never_returns_the_anchor():
    pair = Tree.from_parents({"a": None, "b": "a"})
    for negatives in NEGATIVE_STRATEGIES:
        batch = ListSampler(pair, k_negatives=4, negatives=negatives).sample(torch.tensor([0, 1]))
        assert torch.equal(batch.negatives, torch.tensor([[1] * 4, [0] * 4]))
        assert torch.equal(batch.positive, torch.tensor([1, 0]))


def test_empty_anchor_batch_gives_empty_lists(tree):
    batch = ListSampler(tree, k_negatives=3).sample(torch.empty(0, dtype=torch.long))
    assert batch.positive.shape == (0,) and batch.negatives.shape == (0, 3)


def test_lineal_discount_lets_half_distance_positives_be_parents_and_children(tree):
    sampler = ListSampler(tree, max_positive_distance=0.5, lineal_discount=0.5, seed=0)
    batch = sampler.sample(torch.arange(len(tree)))
    parent = tree.parent
    assert (
        (parent[batch.positive] == batch.anchor) | (parent[batch.anchor] == batch.positive)
    ).all()


# ------------------------------------------------------------------ node blocks
def test_nodes_block_is_distinct_sorted_and_capped(tree):
    sampler = ListSampler(tree, seed=0)
    block = sampler.nodes(25)
    assert block.shape == (25,) and len(set(block.tolist())) == 25
    assert torch.equal(block, torch.sort(block).values)
    assert torch.equal(sampler.nodes(10_000), torch.arange(len(tree)))


@pytest.mark.parametrize("size", [3, 40])  # rejection path (4 * size <= N) and permutation path
def test_nodes_block_is_a_uniform_subset(size):
    small = random_tree(100, seed=0)
    sampler = ListSampler(small, seed=9)
    blocks = torch.stack([sampler.nodes(size) for _ in range(3000)])
    assert all(len(set(row.tolist())) == size for row in blocks)
    counts = torch.bincount(blocks.reshape(-1), minlength=100).double()
    # Each node is in a uniform subset with probability size / N.
    assert _chi_square_p(counts, torch.full((100,), 0.01, dtype=torch.float64)) > P_VALUE_FLOOR


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k_negatives": 0}, "k_negatives"),
        ({"max_positive_distance": 0.0}, "max_positive_distance"),
        ({"max_positive_distance": 0.5}, "max_positive_distance=0.5 leaves every node"),
        ({"max_positive_distance": 0.4, "lineal_discount": 0.5}, "max_positive_distance"),
        ({"negatives": "hardest"}, "negatives"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"lineal_discount": 1.0}, "lineal_discount"),
    ],
)
def test_bad_settings_name_the_argument(tree, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ListSampler(tree, **kwargs)


def test_bad_inputs_name_the_argument(tree):
    with pytest.raises(TypeError, match="pass the tree itself instead of tree.distances"):
        ListSampler(tree.distances())
    with pytest.raises(TypeError, match="tree must be a hyperloss.trees.Tree"):
        ListSampler([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="tree must have at least 2 nodes"):
        ListSampler(Tree.from_parents({"only": None}))
    with pytest.raises(TypeError, match="k_negatives"):
        ListSampler(tree, k_negatives=2.0)
    sampler = ListSampler(tree)
    with pytest.raises(ValueError, match="anchors"):
        sampler.sample(torch.tensor([0, len(tree)]))
    with pytest.raises(ValueError, match="anchors"):
        sampler.sample(torch.tensor([-1]))
    with pytest.raises(ValueError, match="anchors"):
        sampler.sample(torch.tensor([0.0]))
    with pytest.raises(TypeError, match="anchors"):
        sampler.sample([0, 1])
    with pytest.raises(ValueError, match="batch_size"):
        next(sampler.epoch(0))
    with pytest.raises(ValueError, match="size"):
        sampler.nodes(0)


# ------------------------------------------------------------------ large tree
def test_large_tree_samples_without_dense_matrices():
    big = random_tree(200_000, seed=1)
    sampler = ListSampler(big, k_negatives=24, seed=0)
    parent, depth = big.parent, big.depth
    parent[0] = 0  # the walk stops at the root
    for batch in [sampler.sample_random(128) for _ in range(3)] + [next(sampler.epoch(128))]:
        positive_length = _walk_path_length(parent, depth, batch.anchor, batch.positive)
        assert ((positive_length >= 1) & (positive_length <= 2)).all()
        assert (batch.negatives != batch.anchor[:, None]).all()
        assert ((batch.negatives >= 0) & (batch.negatives < len(big))).all()
    # Tree negatives are mostly close: with temperature 1, P(t <= 4) is far above uniform's.
    anchors = batch.anchor[:, None].expand_as(batch.negatives)
    negative_length = _walk_path_length(
        parent, depth, anchors.reshape(-1), batch.negatives.reshape(-1)
    )
    assert (negative_length <= 4).double().mean() > 0.5
    block = sampler.nodes(256)
    assert block.shape == (256,) and (block[1:] > block[:-1]).all()
