"""Pictures of hyperbolic embeddings: the Poincaré disk, coloured by top-level branch.

Two views of the same points, side by side by default:

``"poincare"``
    The Poincaré disk. A dim-2 embedding is drawn exactly: its Lorentz points are mapped to the
    Poincaré disk and rescaled to the unit disk, whose boundary (the circle at infinity) is
    drawn. Hyperbolic edges are circular arcs. Good embeddings of deep trees put most nodes
    within ``1e-6`` of the boundary (a node at hyperbolic radius ``r`` sits at Euclidean radius
    ``tanh(r / 2)``), so this view shows the top of the hierarchy and the angular layout.
``"tangent"``
    The tangent space at the origin (the logarithmic map): every point keeps its direction and
    is drawn at a Euclidean radius equal to its hyperbolic distance from the origin, divided by
    the largest such distance so that the picture fits the unit disk. Depth levels become rings,
    and the deep levels that crowd the Poincaré boundary become visible. Not an isometry.

In both views each node is a dot coloured by its top-level branch (``tree.branch``), each node is
joined to its parent by the hyperbolic geodesic between them (sampled in the Lorentz model and
mapped like the points), and the root is a black star.

For dim > 2 each view is projected orthogonally onto the top-2 *uncentred* principal axes of its
``(N, dim)`` coordinates (the two leading right singular vectors). Uncentred so that the origin
stays at the centre of the picture, and orthogonal so that every point stays inside the unit
disk. A projection is not an isometry; the axis labels say so.

Figures are built on an Agg canvas (``matplotlib.backends.backend_agg``) without pyplot, so
plotting works headless and never changes the user's pyplot backend or state.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hyperloss.validation import check_int

if TYPE_CHECKING:  # pragma: no cover - imports for type hints only
    from matplotlib.axes import Axes

    from hyperloss.embedding import Embedding
    from hyperloss.trees import Tree

__all__ = ["plot_embedding", "draw_embedding", "disk_coordinates", "VIEWS"]

#: The views :func:`draw_embedding` can draw (see the module docstring).
VIEWS = ("poincare", "tangent")
# Points per geodesic edge: 12 segments make arcs look smooth at the usual figure sizes while
# keeping NAICS (2,125 edges) at ~27k line vertices.
_ARC_SAMPLES = 13
_ROOT_STYLE = {"marker": "*", "s": 220, "c": "black", "edgecolors": "white", "zorder": 5}
_VIEW_TITLES = {
    "poincare": "Poincaré disk",
    "tangent": "tangent space at the origin (radius = hyperbolic distance)",
}


def plot_embedding(
    embedding: Embedding,
    tree: Tree,
    path: str | os.PathLike[str],
    *,
    view: str = "both",
    title: str | None = None,
    geodesic_edges: bool = True,
    label_branches: bool = True,
    max_legend: int = 20,
    figsize: tuple[float, float] | None = None,
    dpi: int = 150,
) -> Path:
    """Draw an embedding on the Poincaré disk (and its tangent view) and save the figure.

    Parameters
    ----------
    embedding : Embedding
        Lorentz points ``embedding.points`` of shape ``(N, dim + 1)`` (time coordinate first) with
        ``embedding.names`` (length ``N``) and ``embedding.curvature`` (``c > 0``, sectional
        curvature ``-c``). Any object with these three attributes works.
    tree : Tree
        The tree the embedding represents. Every tree node must be among ``embedding.names``
        (extra embedding rows are ignored). Colours follow ``tree.branch``, edges follow
        ``tree.parent``.
    path : str or os.PathLike
        Output file; the format follows the suffix (``.png``, ``.pdf``, ``.svg``; a path without
        a suffix gets ``.png``). Missing parent directories are created.
    view : {"both", "poincare", "tangent"}, default "both"
        Which panels to draw (see the module docstring): the Poincaré disk, the tangent space at
        the origin, or both side by side.
    title : str, optional
        Figure title; default ``"<root title>: N nodes, dim d"``.
    geodesic_edges : bool, default True
        Draw each child-parent edge as the hyperbolic geodesic; ``False`` draws straight
        segments between the drawn points, which is faster for very large trees.
    label_branches : bool, default True
        Write each top-level node's name next to its point.
    max_legend : int, default 20
        At most this many top-level branches (the largest first) get a legend entry with their
        title; the rest are summarised in one final entry.
    figsize : tuple of float, optional
        Figure size in inches; default ``(19, 8)`` for two panels, ``(12, 8)`` for one. The
        legend sits on the right.
    dpi : int, default 150
        Resolution of raster output.

    Returns
    -------
    pathlib.Path
        The file written.

    Notes
    -----
    For ``dim > 2`` each panel shows the uncentred top-2 principal-axes projection of its
    coordinates (see the module docstring); the axis labels say so.

    Examples
    --------
    >>> from hyperloss.datasets import balanced_tree
    >>> from hyperloss.construction import construct
    >>> tree = balanced_tree(3, 3)
    >>> plot_embedding(construct(tree, dim=2), tree, "tree.png")  # doctest: +SKIP
    PosixPath('tree.png')
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if view not in ("both", *VIEWS):
        raise ValueError(f"view must be 'both', 'poincare' or 'tangent', got {view!r}")
    dpi = check_int(dpi, "dpi", minimum=1)
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"path {str(out)!r} is a directory; give a file name such as plot.png")
    if out.suffix == "":
        out = out.with_suffix(".png")

    # Imported here so that `import hyperloss` does not pay for matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    views = VIEWS if view == "both" else (view,)
    if figsize is None:
        figsize = (19.0, 8.0) if len(views) == 2 else (12.0, 8.0)
    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    # Panels are square (height 0.84 of the figure), laid out left to right; legend after them.
    panel_width = 0.84 * figsize[1] / figsize[0]
    for position, panel_view in enumerate(views):
        ax = figure.add_axes((0.01 + position * (panel_width + 0.01), 0.05, panel_width, 0.84))
        is_last = position == len(views) - 1
        draw_embedding(
            embedding,
            tree,
            ax,
            view=panel_view,
            geodesic_edges=geodesic_edges,
            label_branches=label_branches,
            max_legend=max_legend,
            legend_anchor=(1.02, 0.5) if is_last else None,
        )
    default_title = _default_title(embedding, tree)
    figure.suptitle(title if title is not None else default_title, x=0.02, ha="left")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=dpi)
    return out


def draw_embedding(
    embedding: Embedding,
    tree: Tree,
    ax: Axes,
    *,
    view: str = "poincare",
    geodesic_edges: bool = True,
    label_branches: bool = True,
    max_legend: int = 20,
    legend_anchor: tuple[float, float] | None = (1.02, 0.5),
) -> Axes:
    """Draw one view of an embedding into an existing matplotlib ``Axes``.

    For notebooks and subplots. Parameters are those of :func:`plot_embedding`; ``view`` is
    ``"poincare"`` or ``"tangent"``; ``legend_anchor`` is the legend's ``bbox_to_anchor`` in axes
    coordinates (its left-centre point), or ``None`` for no legend.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``, with the disk, edges, points, root marker and legend drawn.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    if view not in VIEWS:
        raise ValueError(f"view must be 'poincare' or 'tangent', got {view!r}")
    max_legend = check_int(max_legend, "max_legend", minimum=0)
    rows = _tree_rows(embedding, tree)
    unit_lorentz = _unit_lorentz(embedding)[rows]  # (N, dim+1), curvature -1, tree order
    coordinates = _view_coordinates(unit_lorentz, view)  # (N, dim)
    # The tangent view divides by the largest radius so the points fill the unit disk.
    scale = 1.0
    if view == "tangent":
        scale = float(np.linalg.norm(coordinates, axis=1).max()) or 1.0
    axes_2d = _principal_axes(coordinates)  # (dim, 2)
    xy = coordinates @ axes_2d / scale  # (N, 2)

    parent = _as_numpy(tree.parent).astype(np.int64)
    depth = _as_numpy(tree.depth).astype(np.int64)
    branch = _as_numpy(tree.branch).astype(np.int64)
    branch_ids = _branches_by_size(branch)
    colours = _branch_colours(len(branch_ids))
    colour_of = {b: colours[i] for i, b in enumerate(branch_ids)}
    node_colours = np.array([colour_of.get(int(b), (0.0, 0.0, 0.0, 1.0)) for b in branch])

    boundary_style = {"ls": "-"} if view == "poincare" else {"ls": (0, (4, 3))}
    ax.add_patch(Circle((0.0, 0.0), 1.0, fill=False, lw=1.2, ec="0.35", zorder=0, **boundary_style))

    child = np.flatnonzero(parent >= 0)
    if child.size:
        if geodesic_edges:
            arcs = _geodesic_samples(unit_lorentz[child], unit_lorentz[parent[child]])
            segments = _view_coordinates(arcs, view) @ axes_2d / scale  # (E, S, 2)
        else:
            segments = np.stack([xy[child], xy[parent[child]]], axis=1)  # (E, 2, 2)
        edge_colours = node_colours[child].copy()
        edge_colours[:, 3] = 0.35
        ax.add_collection(LineCollection(segments, colors=edge_colours, linewidths=0.4, zorder=1))

    # Shallow nodes drawn larger and on top, so the hierarchy's skeleton stays visible.
    height = max(int(depth.max()), 1)
    sizes = 2.0 + 40.0 * ((height - depth) / height) ** 2
    order = np.argsort(-depth, kind="stable")
    non_root = order[parent[order] >= 0]
    ax.scatter(
        xy[non_root, 0],
        xy[non_root, 1],
        s=sizes[non_root],
        c=node_colours[non_root],
        linewidths=0,
        zorder=2,
    )
    root_row = int(np.flatnonzero(parent < 0)[0])
    ax.scatter(xy[root_row, 0], xy[root_row, 1], **_ROOT_STYLE)

    if label_branches:
        for b in branch_ids:
            x, y = xy[b]
            norm = math.hypot(x, y)
            if norm < 0.1:  # a projection squeezed it onto the root: the legend names it
                continue
            # Push the label outwards along the ray from the centre so it clears the point.
            ax.annotate(
                tree.names[b],
                (x, y),
                xytext=(6 * x / norm, 6 * y / norm),
                textcoords="offset points",
                fontsize=7,
                ha="left" if x >= 0 else "right",
                va="bottom" if y >= 0 else "top",
                zorder=6,
            )

    if legend_anchor is not None:
        handles = [
            Line2D([], [], marker="*", ls="", color="black", ms=11, label=_label(tree, root_row))
        ]
        for b in branch_ids[:max_legend]:
            handles.append(
                Line2D([], [], marker="o", ls="", color=colour_of[b], ms=7, label=_label(tree, b))
            )
        if len(branch_ids) > max_legend:
            rest = len(branch_ids) - max_legend
            handles.append(Line2D([], [], ls="", label=f"... and {rest} more branches"))
        ax.legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=legend_anchor,
            fontsize=7,
            frameon=False,
            title="top-level branches",
            title_fontsize=8,
        )

    ax.set_xlim(-1.04, 1.04)
    ax.set_ylim(-1.04, 1.04)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    heading = _VIEW_TITLES[view]
    if view == "tangent":
        heading += f"\ndashed circle: radius {scale:.3g}"
    ax.set_title(heading, fontsize=9)
    if coordinates.shape[1] > 2:
        ax.set_xlabel("principal axis 1 (projection of the dim > 2 coordinates)", fontsize=8)
        ax.set_ylabel("principal axis 2", fontsize=8)
    return ax


def disk_coordinates(
    embedding: Embedding, tree: Tree | None = None, *, view: str = "poincare"
) -> np.ndarray:
    """The 2-D coordinates :func:`plot_embedding` draws for one view, in the unit disk.

    Parameters
    ----------
    embedding : Embedding
        As in :func:`plot_embedding`.
    tree : Tree, optional
        If given, rows follow ``tree.names``; otherwise they follow ``embedding.names``.
    view : {"poincare", "tangent"}, default "poincare"
        ``"poincare"``: Poincaré disk coordinates rescaled to the unit disk. ``"tangent"``: the
        logarithmic map at the origin divided by the largest hyperbolic radius.

    Returns
    -------
    numpy.ndarray, shape (N, 2), float64
        The coordinates (dim 2) or their uncentred top-2 principal-axes projection (dim > 2);
        every row has norm <= 1.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be 'poincare' or 'tangent', got {view!r}")
    unit_lorentz = _unit_lorentz(embedding)
    if tree is not None:
        unit_lorentz = unit_lorentz[_tree_rows(embedding, tree)]
    coordinates = _view_coordinates(unit_lorentz, view)
    scale = 1.0
    if view == "tangent":
        scale = float(np.linalg.norm(coordinates, axis=1).max()) or 1.0
    return coordinates @ _principal_axes(coordinates) / scale


# ----------------------------------------------------------------------------------------------
# helpers


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _tree_rows(embedding: Embedding, tree: Tree) -> np.ndarray:
    """Row of the embedding for each tree node, in tree order; ValueError for missing nodes."""
    names = list(embedding.names)
    if list(tree.names) == names:
        return np.arange(len(names))
    row_of = {name: i for i, name in enumerate(names)}
    missing = [name for name in tree.names if name not in row_of]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ValueError(
            f"embedding has no point for {len(missing)} node(s) of tree: {shown}{more}; "
            "was it trained on a different tree?"
        )
    return np.array([row_of[name] for name in tree.names], dtype=np.int64)


def _unit_lorentz(embedding: Embedding) -> np.ndarray:
    """Lorentz points rescaled to curvature -1 (``-x0^2 + |x|^2 = -1``), float64 numpy."""
    points = _as_numpy(embedding.points).astype(np.float64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(
            f"embedding.points must have shape (N, dim + 1) with dim >= 2, got {points.shape}"
        )
    curvature = float(embedding.curvature)
    if not curvature > 0:
        raise ValueError(f"embedding.curvature must be > 0, got {curvature}")
    if not np.isfinite(points).all():
        raise ValueError("embedding.points contains NaN or infinite values")
    # Points of curvature -c satisfy -x0^2 + |x|^2 = -1/c; scaling by sqrt(c) is an isometry
    # onto curvature -1 up to the global distance scale, which a picture does not show.
    return points * math.sqrt(curvature)


def _view_coordinates(points: np.ndarray, view: str) -> np.ndarray:
    """Curvature -1 Lorentz points (..., dim+1) -> (..., dim) coordinates of ``view``."""
    spatial = points[..., 1:]
    if view == "poincare":
        # p = x_spatial / (1 + x0); x0 >= 1 so the denominator never vanishes.
        return spatial / (1.0 + points[..., :1])
    # logmap0: direction of x_spatial, length = distance to the origin = asinh(|x_spatial|)
    # (asinh rather than acosh(x0): accurate near the origin too).
    norm = np.linalg.norm(spatial, axis=-1, keepdims=True)
    factor = np.divide(np.arcsinh(norm), norm, out=np.ones_like(norm), where=norm > 0)
    return spatial * factor


def _principal_axes(coordinates: np.ndarray) -> np.ndarray:
    """(dim, 2) orthonormal columns: identity for dim 2, else the top-2 uncentred axes."""
    dim = coordinates.shape[1]
    if dim == 2:
        return np.eye(2)
    _, _, vt = np.linalg.svd(coordinates, full_matrices=False)
    axes = vt[:2].T.copy()  # (dim, 2)
    # Fix the SVD's sign ambiguity so the same embedding always gives the same picture.
    for j in range(2):
        if axes[np.argmax(np.abs(axes[:, j])), j] < 0:
            axes[:, j] = -axes[:, j]
    return axes


def _geodesic_samples(x: np.ndarray, y: np.ndarray, samples: int = _ARC_SAMPLES) -> np.ndarray:
    """Points along the curvature -1 geodesics from x to y: (E, dim+1) -> (E, samples, dim+1).

    Uses gamma(t) = (sinh((1 - t) d) x + sinh(t d) y) / sinh(d) with d the distance; both weights
    are non-negative, so there is no cancellation even far from the origin.
    """
    minkowski = -x[:, 0] * y[:, 0] + np.einsum("ei,ei->e", x[:, 1:], y[:, 1:])
    # Rounding can push -<x, y> just below 1 for nearby points; arccosh needs >= 1.
    distance = np.arccosh(np.maximum(-minkowski, 1.0))  # (E,)
    t = np.linspace(0.0, 1.0, samples)  # (S,)
    d = distance[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        w_x = np.sinh((1.0 - t) * d) / np.sinh(d)
        w_y = np.sinh(t * d) / np.sinh(d)
    # Coincident (or numerically coincident) endpoints: the geodesic is a point; interpolate.
    tiny = distance < 1e-12
    w_x[tiny] = 1.0 - t
    w_y[tiny] = t
    return w_x[..., None] * x[:, None, :] + w_y[..., None] * y[:, None, :]


def _branches_by_size(branch: np.ndarray) -> list[int]:
    """Top-level node indices, largest branch first (ties by index, i.e. tree order)."""
    ids, counts = np.unique(branch[branch >= 0], return_counts=True)
    order = np.lexsort((ids, -counts))
    return [int(i) for i in ids[order]]


def _branch_colours(count: int) -> Sequence[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        # tab20 pairs a dark and a light shade; dark shades first keeps small trees contrasted.
        cmap = colormaps["tab20"]
        return [cmap(2 * i if i < 10 else 2 * (i - 10) + 1) for i in range(count)]
    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (count - 1)) for i in range(count)]


def _label(tree: Tree, index: int) -> str:
    name = tree.names[index]
    title = tree.title(name)
    text = name if title == name else f"{name}  {title}"
    return textwrap.shorten(text, width=48, placeholder="...")


def _default_title(embedding: Embedding, tree: Tree) -> str:
    dim = _as_numpy(embedding.points).shape[-1] - 1
    root_title = tree.title(tree.root)
    projected = "" if dim == 2 else ", projected to 2-D"
    return f"{root_title}: {len(tree.names)} nodes, dim {dim}{projected}"
