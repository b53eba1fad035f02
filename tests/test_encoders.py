"""Encoders: subset sampling (exact, against brute force), held-out metrics (against the dense
definitions), fit with an encoder (generalises, deterministic, exact resume), bad inputs."""

import collections
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import spearmanr
from sklearn.metrics import ndcg_score
from sklearn.metrics.pairwise import cosine_similarity

from hyperloss.datasets import balanced_tree, random_tree
from hyperloss.encoders import (
    HyperbolicEncoder,
    TextFeatures,
    _EncoderRows,
    _FeatureRows,
    holdout_split,
    neighbour_features,
    text_features,
)
from hyperloss.geometry import LorentzDistance, expmap0, pairwise_distances
from hyperloss.metrics import (
    anchor_scores,
    evaluate_anchors,
    ndcg_at_k,
    per_anchor_spearman,
    subset_monitor,
)
from hyperloss.relevance import tree_relevance
from hyperloss.sampling import ListSampler
from hyperloss.training import fit


class _Interrupt(Exception):
    pass


# ------------------------------------------------------------------------------ the sampler
@pytest.fixture(scope="module")
def subset_case():
    tree = random_tree(40, seed=4)
    generator = torch.Generator().manual_seed(1)
    members = torch.sort(torch.randperm(40, generator=generator)[:22]).values
    return tree, members


def _frequencies(values, support):
    counts = collections.Counter(values.tolist())
    return np.array([counts[j] for j in support], dtype=np.float64) / values.numel()


@pytest.mark.parametrize("negatives", ["tree", "uniform", "farther"])
def test_subset_draws_follow_the_restricted_distributions(subset_case, negatives):
    tree, members = subset_case
    distances = tree.distances()
    sampler = ListSampler(
        tree, k_negatives=4, max_positive_distance=2.0, negatives=negatives, seed=0, nodes=members
    )
    member_set = set(members.tolist())
    n_draws = 6000
    for anchor in members[:6].tolist():
        batch = sampler.sample(torch.full((n_draws,), anchor))
        others = [j for j in members.tolist() if j != anchor]
        row = distances[anchor, others]
        # Positive: uniform over members within 2, else over the nearest members.
        close = [j for j, t in zip(others, row.tolist(), strict=True) if t <= 2.0]
        if not close:
            nearest = float(row.min())
            close = [j for j, t in zip(others, row.tolist(), strict=True) if t == nearest]
        expected = np.array([1.0 / len(close) if j in close else 0.0 for j in others])
        assert np.abs(_frequencies(batch.positive, others) - expected).max() < 0.035
        assert set(batch.negatives.flatten().tolist()) <= member_set - {anchor}
        if negatives == "tree":
            weight = torch.exp(-row).numpy()
            expected = weight / weight.sum()
        elif negatives == "uniform":
            expected = np.full(len(others), 1.0 / len(others))
        else:
            continue  # farther depends on the positive; membership is checked above
        assert np.abs(_frequencies(batch.negatives.flatten(), others) - expected).max() < 0.02


def test_subset_epoch_blocks_and_random_anchors_stay_inside(subset_case):
    tree, members = subset_case
    sampler = ListSampler(tree, k_negatives=3, seed=2, nodes=members)
    anchors = torch.cat([batch.anchor for batch in sampler.epoch(5)])
    assert torch.equal(torch.sort(anchors).values, members)  # each member once
    block = sampler.nodes(10)
    assert set(block.tolist()) <= set(members.tolist()) and block.unique().numel() == 10
    assert torch.equal(block, torch.sort(block).values)
    assert torch.equal(sampler.nodes(100), members)  # capped at M
    assert set(sampler.sample_random(50).anchor.tolist()) <= set(members.tolist())
    assert sampler.n_members == members.numel() and "n_members=22" in repr(sampler)


def test_subset_sampler_errors(subset_case):
    tree, members = subset_case
    outside = next(i for i in range(40) if i not in set(members.tolist()))
    sampler = ListSampler(tree, nodes=members)
    with pytest.raises(ValueError, match="among the sampler's nodes"):
        sampler.sample(torch.tensor([outside]))
    with pytest.raises(ValueError, match="must not repeat"):
        ListSampler(tree, nodes=torch.tensor([1, 1, 2]))
    with pytest.raises(ValueError, match="at least 2"):
        ListSampler(tree, nodes=torch.tensor([3]))
    with pytest.raises(ValueError, match=r"in \[0, 40\)"):
        ListSampler(tree, nodes=torch.tensor([0, 40]))
    with pytest.raises(TypeError, match="nodes must be a LongTensor"):
        ListSampler(tree, nodes=[0, 1])


def test_no_subset_keeps_the_old_stream():
    tree = random_tree(30, seed=0)
    a = ListSampler(tree, seed=5).sample_random(20)
    b = ListSampler(tree, seed=5, nodes=None).sample_random(20)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------ the metrics
@pytest.fixture(scope="module")
def scored_case():
    tree = random_tree(50, seed=3)
    generator = torch.Generator().manual_seed(0)
    points = expmap0(torch.randn(50, 3, generator=generator, dtype=torch.float64))
    return tree, points, pairwise_distances(LorentzDistance(1.0), points)


def test_all_anchors_equal_the_dense_metrics(scored_case):
    tree, points, dense = scored_case
    scores = evaluate_anchors(points, tree, anchors=torch.arange(50), chunk_size=7)
    tree_distances = tree.distances()
    assert scores["ndcg@10"] == pytest.approx(ndcg_at_k(dense, tree_distances, 10), abs=1e-12)
    assert scores["spearman"] == pytest.approx(
        per_anchor_spearman(dense, tree_distances), abs=1e-12
    )


def test_anchor_and_candidate_subsets_against_sklearn_and_scipy(scored_case):
    tree, points, dense = scored_case
    anchors, candidates = np.array([2, 9, 30]), np.array([0, 2, 5, 9, 11, 17, 30, 31, 40, 44, 49])
    scores = evaluate_anchors(points, tree, anchors=anchors, candidates=candidates, k=4)
    tree_distances = tree.distances().numpy()
    ndcg, rho = [], []
    for anchor in anchors:
        others = candidates[candidates != anchor]
        t = tree_distances[anchor, others]
        relevance = tree_relevance(t[None, :])
        ndcg.append(ndcg_score(relevance, -dense[anchor, others].numpy()[None, :], k=4))
        rho.append(spearmanr(dense[anchor, others].numpy(), t).statistic)
    assert scores["ndcg@4"] == pytest.approx(np.mean(ndcg), abs=1e-12)
    assert scores["spearman"] == pytest.approx(np.mean(rho), abs=1e-12)
    rows = dense[anchors][:, candidates]
    per_anchor = anchor_scores(rows, tree, anchors, candidates=candidates, k=4)
    assert per_anchor["ndcg@4"] == pytest.approx(ndcg, abs=1e-12)


def test_subset_monitor_ignores_everything_outside(scored_case):
    tree, points, _ = scored_case
    nodes = torch.arange(0, 50, 2)
    moved = points.clone()
    moved[1::2] = expmap0(torch.full((25, 3), 7.0, dtype=torch.float64))  # only non-members
    assert subset_monitor(points, tree, None, nodes) == subset_monitor(moved, tree, None, nodes)
    assert subset_monitor(points, tree, None, torch.arange(50)) != subset_monitor(
        moved, tree, None, torch.arange(50)
    )


def test_metric_subset_errors(scored_case):
    tree, points, dense = scored_case
    with pytest.raises(ValueError, match="among the candidates"):
        evaluate_anchors(points, tree, anchors=[3], candidates=[0, 1, 2])
    with pytest.raises(ValueError, match="shape"):
        anchor_scores(dense[:2], tree, [0, 1, 2])
    with pytest.raises(ValueError, match="finite"):
        anchor_scores(torch.full((1, 50), math.nan), tree, [0])
    with pytest.raises(ValueError, match=r"in \[0, 50\)"):
        evaluate_anchors(points, tree, anchors=[50])


# ----------------------------------------------------------------------- encoders, features
def test_encoder_sparse_and_dense_input_agree_and_rows_match():
    features = sp.random(30, 40, density=0.2, format="csr", random_state=0)
    encoder = HyperbolicEncoder(40, 3, hidden=(16, 8), seed=1)
    dense = torch.from_numpy(features.toarray())
    rows = _FeatureRows(features, "features")
    sparse_out = encoder(rows.take(torch.arange(30)))
    assert torch.allclose(sparse_out, encoder(dense), atol=1e-12)
    assert torch.allclose(encoder(dense.to_sparse()), encoder(dense), atol=1e-12)
    table = _EncoderRows(encoder, rows, 3, 1.0)
    index = torch.tensor([[4, 2, 4], [0, 29, 2]])
    assert torch.allclose(table[index], expmap0(encoder(dense))[index], atol=1e-12)
    assert torch.allclose(table.all_points(), encoder.points(features), atol=1e-12)
    # The same seed builds the same encoder.
    again = HyperbolicEncoder(40, 3, hidden=(16, 8), seed=1)
    assert torch.equal(again(dense), encoder(dense))


def test_text_features_fit_on_the_training_texts_only():
    titles = ["Soybean Farming", "Wheat Farming", "Commercial Banking", "Zebra Quokka"]
    features = text_features(titles, fit_on=[0, 1, 2])
    assert features.shape[0] == 4
    norms = np.sqrt(np.asarray(features.multiply(features).sum(axis=1))).ravel()
    assert norms[:3] == pytest.approx(1.0)
    assert norms[3] < 1.0  # its n-grams mostly unseen (zero columns); any seen ones normalised
    full = TextFeatures().fit(titles)
    similarity = (full.transform(titles) @ full.transform(titles).T).toarray()
    assert similarity[0, 1] > similarity[0, 2]  # "Farming" shared
    assert full.n_features == full.transform(titles).shape[1]


def _neighbour_reference(features, reference, k, temperature):
    """The definition, row by row: cosine similarity (scikit-learn), the k most similar
    reference rows with similarity > 0 (nearest first, then lower reference position), a
    softmax of similarity / temperature over them."""
    similarity = cosine_similarity(features, features[reference])
    out = np.zeros((features.shape[0], len(reference)))
    for i in range(features.shape[0]):
        order = sorted(range(len(reference)), key=lambda j: (-similarity[i, j], j))
        chosen = [j for j in order[:k] if similarity[i, j] > 0]
        if chosen:
            logits = np.array([similarity[i, j] for j in chosen]) / temperature
            weights = np.exp(logits - logits.max())
            out[i, chosen] = weights / weights.sum()
    return out


@pytest.mark.parametrize(("k", "temperature"), [(1, 0.1), (3, 0.1), (5, 0.05), (50, 1.0)])
def test_neighbour_features_match_the_definition(k, temperature):
    generator = np.random.default_rng(0)
    dense = generator.normal(size=(25, 6))
    dense[4] = 0.0  # no similarity to anything: an empty row
    reference = np.array([0, 3, 5, 7, 8, 11, 12, 20, 21, 24])
    result = neighbour_features(dense, reference, k=k, temperature=temperature)
    expected = _neighbour_reference(dense, reference, k, temperature)
    assert sp.issparse(result) and result.shape == (25, 10)
    assert np.allclose(result.toarray(), expected, atol=1e-12)
    sums = np.asarray(result.sum(axis=1)).ravel()
    assert sums[4] == 0.0 and np.allclose(np.delete(sums, 4), 1.0)
    assert result.getnnz(axis=1).max() <= min(k, 10)
    # Tensor and scipy.sparse input give the same rows.
    from_tensor = neighbour_features(
        torch.from_numpy(dense), torch.from_numpy(reference), k=k, temperature=temperature
    )
    from_sparse = neighbour_features(sp.csr_matrix(dense), reference, k=k, temperature=temperature)
    assert np.allclose(from_tensor.toarray(), expected, atol=1e-12)
    assert np.allclose(from_sparse.toarray(), expected, atol=1e-12)


def test_neighbour_features_of_titles_vote_for_training_titles_only():
    titles = [
        "Soybean Farming",
        "Wheat Farming",
        "Commercial Banking",
        "Savings Banking",
        "Corn Farming",
        "Credit Unions",
    ]
    text = text_features(titles, fit_on=[0, 1, 2, 3])
    votes = neighbour_features(text, [0, 1, 2, 3], k=2).toarray()
    expected = _neighbour_reference(text.toarray(), [0, 1, 2, 3], 2, 0.1)
    assert np.allclose(votes, expected, atol=1e-12)
    # A reference row votes mostly for itself; "Corn Farming" for the farming titles.
    assert np.argmax(votes[:4], axis=1).tolist() == [0, 1, 2, 3]
    assert votes[4, 0] + votes[4, 1] == pytest.approx(1.0)
    # A row's votes depend on itself and the reference rows only.
    changed = text.tolil()
    changed[5] = text[3]
    changed = changed.tocsr()
    again = neighbour_features(changed, [0, 1, 2, 3], k=2).toarray()
    assert np.allclose(again[:5], votes[:5], atol=1e-15)
    # Reference rows given as a matrix: the votes of new rows for them.
    from_rows = neighbour_features(text[4:], text[:4], k=2).toarray()
    assert np.allclose(from_rows, votes[4:], atol=1e-12)
    dense_rows = neighbour_features(torch.from_numpy(text[4:].toarray()), text[:4].toarray(), k=2)
    assert np.allclose(dense_rows.toarray(), votes[4:], atol=1e-12)
    with pytest.raises(ValueError, match="columns of features"):
        neighbour_features(text, text[:2, :5])
    # Default reference: all rows (each its own nearest).
    assert np.argmax(neighbour_features(text, k=2).toarray(), axis=1).tolist() == list(range(6))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"reference": [0, 9]}, ValueError, r"reference must be row indices in \[0, 5\)"),
        ({"reference": [1, 1]}, ValueError, "must not repeat"),
        ({"reference": []}, ValueError, "at least one"),
        ({"reference": [[0, 1]]}, ValueError, "1-D"),
        ({"reference": [0.0, 1.0]}, TypeError, "integer row indices"),
        ({"reference": torch.tensor([True, False])}, TypeError, "integer row indices"),
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"k": 2.0}, TypeError, "k must be an int"),
        ({"temperature": 0.0}, ValueError, "temperature must be > 0"),
        ({"temperature": float("nan")}, ValueError, "temperature must be finite"),
    ],
)
def test_neighbour_features_errors(kwargs, error, message):
    features = np.eye(5)
    with pytest.raises(error, match=message):
        neighbour_features(features, **kwargs)


def test_neighbour_features_refuse_non_finite_features():
    features = np.eye(4)
    features[1, 1] = np.nan
    with pytest.raises(ValueError, match="features must be finite"):
        neighbour_features(features)


@pytest.mark.parametrize(
    ("fit_on", "error", "message"),
    [
        ([0, 3], ValueError, r"fit_on must be row indices in \[0, 3\)"),
        ([], ValueError, "fit_on must hold at least one row index"),
        (np.array([0.9, 1.2]), TypeError, "fit_on must hold integer row indices"),
        (torch.tensor([True, False]), TypeError, "fit_on must hold integer row indices"),
        ([[0, 1]], ValueError, "fit_on must be 1-D"),
    ],
)
def test_text_features_fit_on_errors(fit_on, error, message):
    with pytest.raises(error, match=message):
        text_features(["Soybean Farming", "Wheat Farming", "Banking"], fit_on=fit_on)


def test_holdout_split_is_seeded_and_never_holds_out_the_root():
    train, held = holdout_split(101, 0.1, seed=3)
    assert held.numel() == 10 and 0 not in held.tolist()
    assert sorted(train.tolist() + held.tolist()) == list(range(101))
    assert torch.equal(holdout_split(101, 0.1, seed=3)[1], held)
    assert not torch.equal(holdout_split(101, 0.1, seed=4)[1], held)
    for bad in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="holdout"):
            holdout_split(101, bad)
    with pytest.raises(ValueError, match="at least 1"):
        holdout_split(5, 0.01)


# ------------------------------------------------------------------------- fit with encoder
@pytest.fixture(scope="module")
def encoder_case():
    """A tree whose features encode the path (each ancestor's random code, plus noise): a
    held-out node's features say where it belongs, its own code was never trained on."""
    tree = balanced_tree(3, 3)  # 40 nodes
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(len(tree), 24, generator=generator, dtype=torch.float64)
    closure = tree.closure().to(torch.float64)  # closure[i, j]: j is an ancestor of i or i
    depth = tree.depth.to(torch.float64)[:, None] + 1
    features = closure @ codes / depth.sqrt()
    train, held = holdout_split(len(tree), 0.2, seed=0)
    return tree, features, train, held


def _encoder_fit(tree, features, train, *, seed=0, **kwargs):
    encoder = HyperbolicEncoder(features.shape[1], 3, hidden=(32,), seed=seed)
    options = {
        "epochs": 30,
        "lr": 1e-2,
        "batch_size": 16,
        "block_size": 16,
        "progress": False,
        "seed": seed,
        "eval_every": 10,
    }
    options.update(kwargs)
    return encoder, fit(tree, 3, encoder=encoder, features=features, train_nodes=train, **options)


def test_encoder_fit_improves_held_out_ndcg(encoder_case):
    tree, features, train, held = encoder_case
    untrained = HyperbolicEncoder(features.shape[1], 3, hidden=(32,), seed=0).points(features)
    before = evaluate_anchors(untrained, tree, anchors=held)["ndcg@10"]
    encoder, embedding = _encoder_fit(tree, features, train)
    after = evaluate_anchors(embedding, tree, anchors=held)["ndcg@10"]
    assert after > before + 0.1, (before, after)
    # The returned points are the encoder's (left in eval mode with the returned state).
    assert not encoder.training
    assert torch.allclose(encoder.points(features), embedding.points, atol=1e-10)


def test_encoder_fit_is_deterministic_per_seed(encoder_case):
    tree, features, train, _ = encoder_case
    _, first = _encoder_fit(tree, features, train, epochs=4)
    _, second = _encoder_fit(tree, features, train, epochs=4)
    _, other = _encoder_fit(tree, features, train, epochs=4, seed=1)
    assert torch.equal(first.points, second.points)
    assert not torch.allclose(first.points, other.points)


@pytest.mark.parametrize("stop_at", [3, 4])
def test_encoder_checkpoint_resume_equals_an_uninterrupted_run(encoder_case, tmp_path, stop_at):
    tree, features, train, _ = encoder_case
    kwargs = {"epochs": 6, "eval_every": 2, "restore_best": False}
    _, uninterrupted = _encoder_fit(tree, features, train, **kwargs)

    def interrupt(state):
        if state.epoch == stop_at:
            raise _Interrupt

    path = tmp_path / "run.pt"
    with pytest.raises(_Interrupt):
        _encoder_fit(tree, features, train, checkpoint=path, callbacks=[interrupt], **kwargs)
    # A fresh encoder (same construction): its weights come from the checkpoint.
    encoder, resumed = _encoder_fit(tree, features, train, checkpoint=path, **kwargs)
    assert torch.equal(resumed.points, uninterrupted.points)
    # Other features are other settings.
    with pytest.raises(ValueError, match="features"):
        _encoder_fit(tree, features * 2, train, checkpoint=path, **kwargs)


def test_encoder_with_dense_features_and_no_subset(encoder_case):
    tree, features, _, _ = encoder_case
    encoder = HyperbolicEncoder(features.shape[1], 2, hidden=(), seed=0)
    embedding = fit(tree, 2, encoder=encoder, features=features.numpy(), epochs=2, progress=False)
    assert embedding.points.shape == (40, 3) and torch.isfinite(embedding.points).all()


class _WrongWidth(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(24, 5, dtype=torch.float64)

    def forward(self, x):
        return self.linear(x)


def test_encoder_errors(encoder_case):
    tree, features, train, _ = encoder_case
    encoder = HyperbolicEncoder(24, 3, hidden=(8,))
    with pytest.raises(ValueError, match="one row per tree node"):
        fit(tree, 3, encoder=encoder, features=features[:-1], progress=False)
    with pytest.raises(ValueError, match=r"tangent vectors of shape \(\d+, 3\)"):
        fit(tree, 3, encoder=_WrongWidth(), features=features, epochs=1, progress=False)
    with pytest.raises(ValueError, match="init does not apply"):
        fit(tree, 3, encoder=encoder, features=features, init="random", progress=False)
    with pytest.raises(ValueError, match="encoder needs features"):
        fit(tree, 3, encoder=encoder, progress=False)
    with pytest.raises(ValueError, match="without an encoder"):
        fit(tree, 3, features=features, progress=False)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fit(tree, 3, encoder=lambda x: x, features=features, progress=False)
    with pytest.raises(ValueError, match="2-D float tensor"):
        fit(tree, 3, encoder=encoder, features=torch.ones(40, dtype=torch.float64))
    with pytest.raises(ValueError, match="finite"):
        bad = features.clone()
        bad[0, 0] = math.nan
        fit(tree, 3, encoder=encoder, features=bad, progress=False)
    with pytest.raises(ValueError, match="train_nodes must not repeat"):
        fit(tree, 3, encoder=encoder, features=features, train_nodes=torch.tensor([1, 1, 2]))
    with pytest.raises(ValueError, match=r"train_nodes must be tree indices in \[0, 40\)"):
        fit(tree, 3, encoder=encoder, features=features, train_nodes=torch.tensor([0, 40]))
    with pytest.raises(TypeError, match="train_nodes must be a LongTensor"):
        fit(tree, 3, encoder=encoder, features=features, train_nodes=[0, 1])
    with pytest.raises(ValueError, match="dropout"):
        HyperbolicEncoder(24, 3, dropout=1.0)
