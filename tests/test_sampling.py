"""Sampler invariants: bounds, anchors never among negatives, determinism, distributions."""

from __future__ import annotations

import pytest
import torch

from hyperloss.datasets import balanced_tree, random_tree
from hyperloss.sampling import NEGATIVE_STRATEGIES, ListBatch, ListSampler


@pytest.fixture(scope="module")
def tree():
    return random_tree(60, seed=3)


def _plain_loop_positive_sets(tree_distances, bound):
    n = tree_distances.shape[0]
    return [
        {j for j in range(n) if j != i and float(tree_distances[i, j]) <= bound} for i in range(n)
    ]


@pytest.mark.parametrize("negatives", NEGATIVE_STRATEGIES)
@pytest.mark.parametrize("bound", [1.0, 2.0, 3.0])
def test_invariants_hold_for_every_strategy(tree, negatives, bound):
    t = tree.distances()
    sampler = ListSampler(t, k_negatives=7, max_positive_distance=bound, negatives=negatives)
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
    sampler = ListSampler.from_tree(tree, k_negatives=3)
    anchors = torch.cat([b.anchor for b in sampler.epoch(7)])
    assert sorted(anchors.tolist()) == list(range(len(tree)))


@pytest.mark.parametrize("negatives", NEGATIVE_STRATEGIES)
def test_same_seed_same_batches_and_state_resumes(tree, negatives):
    def draw(sampler):
        return [torch.cat([b.positive[:, None], b.negatives], 1) for b in sampler.epoch(10)]

    a = ListSampler.from_tree(tree, negatives=negatives, seed=5)
    b = ListSampler.from_tree(tree, negatives=negatives, seed=5)
    c = ListSampler.from_tree(tree, negatives=negatives, seed=6)
    first_a, first_b = draw(a), draw(b)
    assert all(torch.equal(x, y) for x, y in zip(first_a, first_b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(first_a, draw(c), strict=True))
    # Saving the state and restoring it into a fresh sampler reproduces the continuation.
    state = a.state_dict()
    continuation = draw(a)
    d = ListSampler.from_tree(tree, negatives=negatives, seed=5)
    d.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(continuation, draw(d), strict=True))


def test_uniform_negatives_are_uniform_over_other_nodes():
    tree = balanced_tree(2, 2)  # 7 nodes
    sampler = ListSampler.from_tree(tree, k_negatives=2000, negatives="uniform", seed=1)
    batch = sampler.sample(torch.tensor([0, 3]))
    for row, anchor in enumerate(batch.anchor.tolist()):
        counts = torch.bincount(batch.negatives[row], minlength=7).double()
        assert counts[anchor] == 0
        others = torch.cat([counts[:anchor], counts[anchor + 1 :]])
        # 6 cells, expected 333 each; a chi-square statistic this large has p < 1e-6.
        chi2 = float(((others - 2000 / 6) ** 2 / (2000 / 6)).sum())
        assert chi2 < 36.0


def test_tree_negatives_follow_exponential_weights():
    tree = balanced_tree(2, 3)
    t = tree.distances()
    sampler = ListSampler(t, k_negatives=20000, negatives="tree", temperature=1.5, seed=2)
    anchor = 7
    negatives = sampler.sample(torch.tensor([anchor])).negatives[0]
    observed = torch.bincount(negatives, minlength=len(tree)).double() / negatives.numel()
    expected = torch.exp(-t[anchor] / 1.5)
    expected[anchor] = 0
    expected = expected / expected.sum()
    assert torch.allclose(observed, expected, atol=0.012)
    # Closer in the tree = drawn more often (harder negatives).
    assert observed[tree.parent[anchor]] > observed[len(tree) - 1]


def test_positives_cover_all_candidates():
    tree = balanced_tree(3, 2)
    t = tree.distances()
    sampler = ListSampler(t, k_negatives=1, max_positive_distance=2.0, seed=0)
    anchors = torch.full((3000,), 1)
    seen = set(sampler.sample(anchors).positive.tolist())
    assert seen == _plain_loop_positive_sets(t, 2.0)[1]


def test_two_node_tree_never_returns_the_anchor():
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    for negatives in NEGATIVE_STRATEGIES:
        batch = ListSampler(t, k_negatives=4, negatives=negatives).sample(torch.tensor([0, 1]))
        assert torch.equal(batch.negatives, torch.tensor([[1] * 4, [0] * 4]))
        assert torch.equal(batch.positive, torch.tensor([1, 0]))


def test_nodes_block_is_distinct_sorted_and_capped(tree):
    sampler = ListSampler.from_tree(tree, seed=0)
    block = sampler.nodes(25)
    assert block.shape == (25,) and len(set(block.tolist())) == 25
    assert torch.equal(block, torch.sort(block).values)
    assert torch.equal(sampler.nodes(10_000), torch.arange(len(tree)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k_negatives": 0}, "k_negatives"),
        ({"max_positive_distance": 0.0}, "max_positive_distance"),
        ({"max_positive_distance": 0.5}, "max_positive_distance"),
        ({"negatives": "hardest"}, "negatives"),
        ({"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_settings_name_the_argument(tree, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ListSampler(tree.distances(), **kwargs)


def test_bad_inputs_name_the_argument(tree):
    with pytest.raises(ValueError, match="tree_distances"):
        ListSampler(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="tree_distances"):
        ListSampler(torch.zeros(1, 1))
    with pytest.raises(TypeError, match="tree_distances"):
        ListSampler([[0.0, 1.0], [1.0, 0.0]])
    sampler = ListSampler.from_tree(tree)
    with pytest.raises(ValueError, match="anchors"):
        sampler.sample(torch.tensor([0, len(tree)]))
    with pytest.raises(ValueError, match="anchors"):
        sampler.sample(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="batch_size"):
        next(sampler.epoch(0))
