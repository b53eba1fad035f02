"""hyperloss.plotting: the Poincaré disk picture and its coordinates."""

import math

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from hyperloss.datasets import balanced_tree
from hyperloss.embedding import Embedding
from hyperloss.geometry import (
    expmap0,
    hyperbolic_radius,
    lorentz_distance,
    lorentz_to_poincare,
)
from hyperloss.plotting import _geodesic_samples, disk_coordinates, plot_embedding
from hyperloss.trees import Tree

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sector_embedding(tree, dim=2, step=1.2, curvature=1.0):
    """Each node at hyperbolic radius depth * step in the middle of its parent's angular sector
    (a plain loop, independent of the library's construction)."""
    sector = {0: (0.0, 2 * math.pi)}
    angle = np.zeros(len(tree))
    for i in range(len(tree)):
        low, high = sector[i]
        angle[i] = (low + high) / 2
        kids = tree.children_index[i]
        width = (high - low) / max(len(kids), 1)
        for j, kid in enumerate(kids):
            sector[kid] = (low + j * width, low + (j + 1) * width)
    radius = step * tree.depth.double().numpy() / math.sqrt(curvature)
    tangent = np.zeros((len(tree), dim))
    tangent[:, 0] = radius * np.cos(angle)
    tangent[:, 1] = radius * np.sin(angle)
    points = expmap0(torch.from_numpy(tangent), curvature=curvature)
    return Embedding(points, list(tree.names), curvature=curvature)


@pytest.fixture(scope="module")
def tree():
    return balanced_tree(3, 3)


def read_png(path):
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    return imread(path)


@pytest.mark.parametrize("dim", [2, 3])
def test_plot_writes_a_png_with_branch_colours(tmp_path, tree, dim):
    embedding = sector_embedding(tree, dim=dim)
    out = plot_embedding(embedding, tree, tmp_path / "sub" / f"plot{dim}.png", dpi=60)
    assert out == tmp_path / "sub" / f"plot{dim}.png"
    image = read_png(out)
    assert image.shape[0] == 8 * 60 and image.shape[1] == 19 * 60  # two panels + legend
    rgb = (image[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(c) for c in rgb}
    # 3 top-level branches -> the first three tab10 colours appear (points are opaque).
    from matplotlib import colormaps

    for i in range(3):
        expected = tuple(int(round(255 * v)) for v in colormaps["tab10"](i)[:3])
        near = np.abs(rgb - np.array(expected)).max(axis=1) <= 2
        assert near.sum() > 5, f"branch colour {i} missing from the picture"
    assert len(colours) > 20  # not a blank canvas


def test_plot_without_suffix_gets_png_and_other_formats(tmp_path, tree):
    embedding = sector_embedding(tree)
    assert plot_embedding(embedding, tree, tmp_path / "picture", dpi=40).suffix == ".png"
    svg = plot_embedding(
        embedding,
        tree,
        tmp_path / "picture.svg",
        view="tangent",
        geodesic_edges=False,
        label_branches=False,
    )
    assert svg.read_text().lstrip().startswith("<?xml")


def test_embedding_plot_delegates(tmp_path, tree):
    out = sector_embedding(tree).plot(tmp_path / "p.png", tree, dpi=40)
    read_png(out)


def test_disk_coordinates_dim2_is_the_poincare_disk(tree):
    curvature = 2.5
    embedding = sector_embedding(tree, curvature=curvature)
    expected = lorentz_to_poincare(embedding.points, curvature=curvature).numpy()
    # the picture uses the unit disk: the ball of radius 1/sqrt(c) rescaled
    np.testing.assert_allclose(disk_coordinates(embedding), expected * math.sqrt(curvature))


def test_tangent_view_keeps_directions_and_hyperbolic_radius(tree):
    curvature = 0.5
    embedding = sector_embedding(tree, curvature=curvature)
    tangent = disk_coordinates(embedding, view="tangent")
    radius = hyperbolic_radius(embedding.points, curvature=curvature).numpy()
    np.testing.assert_allclose(np.linalg.norm(tangent, axis=1), radius / radius.max(), atol=1e-12)
    poincare = disk_coordinates(embedding)
    moved = radius > 0
    np.testing.assert_allclose(
        tangent[moved] / np.linalg.norm(tangent[moved], axis=1, keepdims=True),
        poincare[moved] / np.linalg.norm(poincare[moved], axis=1, keepdims=True),
        atol=1e-12,
    )


def test_disk_coordinates_follow_tree_order(tree):
    embedding = sector_embedding(tree)
    permutation = np.random.default_rng(0).permutation(len(tree))
    shuffled = Embedding(embedding.points[permutation], [tree.names[i] for i in permutation])
    np.testing.assert_allclose(
        disk_coordinates(shuffled, tree), disk_coordinates(embedding), atol=1e-12
    )


def test_projection_of_planar_ball_points_is_isometric(tree):
    """dim 3 points lying in a rotated 2-plane: the principal-axes projection recovers the
    2-D disk picture up to a rotation/reflection, i.e. all Euclidean distances."""
    flat = sector_embedding(tree, dim=3)
    rotation, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    spatial = flat.points[:, 1:].numpy() @ rotation.T
    rotated = Embedding(
        torch.cat([flat.points[:, :1], torch.from_numpy(spatial)], dim=1), list(tree.names)
    )
    projected = disk_coordinates(rotated)
    reference = disk_coordinates(sector_embedding(tree, dim=2))
    pairwise = np.linalg.norm(projected[:, None] - projected[None], axis=-1)
    expected = np.linalg.norm(reference[:, None] - reference[None], axis=-1)
    np.testing.assert_allclose(pairwise, expected, atol=1e-10)
    assert (np.linalg.norm(projected, axis=1) < 1).all()


def test_projection_stays_in_the_unit_disk_for_far_points():
    tree = balanced_tree(2, 4)
    generator = torch.Generator().manual_seed(0)
    tangent = torch.randn(len(tree), 6, dtype=torch.float64, generator=generator) * 6
    embedding = Embedding(expmap0(tangent), list(tree.names))
    norms = np.linalg.norm(disk_coordinates(embedding), axis=1)
    assert (norms < 1).all() and norms.max() > 0.9


def test_geodesic_samples_lie_on_the_geodesic():
    generator = torch.Generator().manual_seed(2)
    tangent = torch.randn(2, 20, 3, dtype=torch.float64, generator=generator) * 3
    x, y = expmap0(tangent[0]), expmap0(tangent[1])
    arcs = torch.from_numpy(_geodesic_samples(x.numpy(), y.numpy(), samples=5))  # (20, 5, 4)
    # on the hyperboloid
    minkowski = -(arcs[..., 0] ** 2) + (arcs[..., 1:] ** 2).sum(-1)
    # relative to x0^2, the size of the cancelling terms
    assert ((minkowski + 1).abs() / arcs[..., 0] ** 2).max() < 1e-12
    # endpoints exact, and sample t sits at distance t * d from x and (1 - t) * d from y
    np.testing.assert_allclose(arcs[:, 0].numpy(), x.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(arcs[:, -1].numpy(), y.numpy(), rtol=1e-12, atol=1e-12)
    total = lorentz_distance(x, y)
    for s, t in enumerate(np.linspace(0, 1, 5)):
        np.testing.assert_allclose(lorentz_distance(x, arcs[:, s]), t * total, atol=1e-8)
        np.testing.assert_allclose(lorentz_distance(arcs[:, s], y), (1 - t) * total, atol=1e-8)


def test_coincident_edge_endpoints_stay_finite():
    x = expmap0(torch.tensor([[0.3, -0.2]], dtype=torch.float64)).numpy()
    arcs = _geodesic_samples(x, x.copy())
    assert np.isfinite(arcs).all()
    np.testing.assert_allclose(arcs[0], np.repeat(x, arcs.shape[1], axis=0))


def test_missing_nodes_are_named(tmp_path, tree):
    embedding = sector_embedding(tree)
    bigger = Tree.from_parents({**tree.to_parents(), "extra": "0"})
    with pytest.raises(ValueError, match=r"no point for 1 node.*'extra'"):
        plot_embedding(embedding, bigger, tmp_path / "x.png")


def test_bad_arguments(tmp_path, tree):
    embedding = sector_embedding(tree)
    with pytest.raises(TypeError, match="path"):
        plot_embedding(embedding, tree, 3)
    with pytest.raises(ValueError, match="directory"):
        plot_embedding(embedding, tree, tmp_path)
    with pytest.raises(ValueError, match="dpi"):
        plot_embedding(embedding, tree, tmp_path / "a.png", dpi=0)
    with pytest.raises(ValueError, match="view"):
        plot_embedding(embedding, tree, tmp_path / "a.png", view="klein")
    with pytest.raises(ValueError, match="max_legend"):
        plot_embedding(embedding, tree, tmp_path / "a.png", max_legend=-1)
