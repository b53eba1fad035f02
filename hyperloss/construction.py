"""Combinatorial tree embeddings in the Lorentz model (Sarkar's construction).

:func:`construct` places a tree in hyperbolic space without any optimisation: the root at the
origin, every child at hyperbolic distance ``tau`` from its parent, the children of a node
spread over the directions that point away from the parent. Sarkar (2011) shows that in the
hyperbolic plane such an embedding has distortion close to 1 once ``tau`` is large compared with
the logarithm of the largest degree; Sala et al. (2018) use it as the combinatorial baseline that
gradient methods have to beat. Here it is the default starting point of
``fit(..., init='construct')`` and a strong embedding on its own.

Geometry
--------
Every node ``v`` carries an isometry ``M_v`` of the hyperboloid (a ``(dim + 1, dim + 1)``
Lorentz matrix) that maps the origin to the node and the tangent direction ``e_1`` at the origin
to the direction that continues the edge from the parent (so the parent lies in direction
``-e_1`` of the node's frame). A child in frame direction ``u`` (a unit vector of ``R^dim``) gets

``M_child = M_v @ T(u)``, with ``T(u) = H(u) B(tau)``,

where ``B(tau)`` is the Lorentz boost by ``tau`` along ``e_1`` (it maps the origin to the point at
distance ``tau`` in direction ``e_1`` and carries the frame along the geodesic: parallel
transport) and ``H(u)`` is the Householder reflection of the spatial coordinates that swaps
``e_1`` and ``u``. ``T(u)`` maps the origin to ``expmap0(tau * u)`` and ``e_1`` to the
direction of that geodesic at its end point, so ``M_child`` is the geoopt exponential map at
``v`` followed by parallel transport of the frame, as one matrix product. All nodes of one
depth are done in one batched product; no Python loop runs over nodes. Points are the first
columns of the ``M_v``; their time coordinates are finally recomputed as
``sqrt(1 + |x_s|^2)`` so that they lie on the hyperboloid to the last bit. Curvature ``-c`` is
handled by building the unit-curvature embedding with ``tau * sqrt(c)`` and scaling the
coordinates by ``1 / sqrt(c)``.

Directions (the spherical code)
-------------------------------
A node with ``m`` children needs ``m`` unit vectors that are far from each other and from the
parent direction ``-e_1`` (the root has no parent direction). With ``t = m + 1`` points in all
(``t = m`` at the root):

* ``dim = 2``: the circle, evenly: ``deg = m + 1`` directions ``2 pi j / deg`` apart starting at
  the parent direction (Sarkar 2011). Optimal.
* ``t <= dim + 1``: the vertices of a regular simplex (one of them at ``-e_1``): the minimum
  angle is ``arccos(-1 / (t - 1))`` (at least 90 degrees), optimal.
* ``t <= 2 dim``: vertices of the cross-polytope ``{±e_i}`` (``-e_1`` for the parent, ``e_1``
  continuing straight on): 90 degrees, optimal for ``dim + 2 <= t <= 2 dim`` (Rankin's bound).
* more points: a deterministic, well spread start -- the spherical Fibonacci lattice in 3-D,
  elsewhere the Kronecker sequence of Roberts' generalised golden ratio in ``[0, 1)^dim``
  mapped to the sphere by the normal quantile function -- refined by Riesz-energy repulsion
  whose exponent rises from ``dim + 1`` to ``4 dim`` (towards the max-min problem), the parent
  pole held fixed; the iterate with the largest minimum angle is kept. Why: no closed-form
  optimal codes exist there, and a few hundred ``O(t^2 dim)`` steps (at most 300, at most
  ``10^7 / t^2``; none above 4,096 points) come within a degree or two of the best known codes,
  in milliseconds, deterministically, and each code is computed once per ``(t, dim)``.
  Measured minimum angles: 3-D, 12 points 63.42 degrees (icosahedron: 63.43), 100 points 20.4;
  NAICS's largest sibling group (21 children plus the parent, 22 points): 44.1 degrees in 3-D,
  83.9 in 10-D; 1,000 points: 6.1 degrees in 3-D, 33 in 10-D.

The minimum angle over all nodes, ``theta``, is ``Embedding.metrics["min_angle"]``; for NAICS
it is 16.4 degrees in 2-D (``2 pi / 22``), 44.1 in 3-D and 83.9 in 10-D.

Precision budget
----------------
float64 stores the spatial coordinates of a point (of size ``sinh r``) to a relative ``eps``
(``2^-53``), so the direction of a point seen from the origin is known to about ``eps`` radians,
at any radius. Two points whose geodesics from the origin part at about radius ``G`` -- the
Gromov product ``G = (r_x + r_y - d) / 2`` -- subtend an angle of about ``2 e^{-G}`` at the
origin, so an angular error ``delta`` changes their distance by about ``delta e^G``. That, not
``e^r``, is what limits the distances of nearby points far out (a common shift of two nearby
points cancels; :func:`hyperloss.geometry.lorentz_distance` reads only the spatial
coordinates, so it sees exactly this). The construction multiplies ``height`` Lorentz matrices
of ``(dim + 2)``-term sums, so, to first order and in the worst case, each direction carries an
error of at most ``(height + 1)(dim + 2) eps``, and with the few ulps of the distance itself

``|d_computed - d| <= eps * (2 (height + 1)(dim + 2) e^G + 8 d)``.

Bounding every radius by ``depth * tau`` gives, for a node at depth ``k`` whose edges meet at
angles of at least ``theta_k``:

* parent and child (depth ``k + 1``): ``d = tau``, ``G <= k tau``;
* two children (or a child and its grandparent): ``d = 2 a`` with
  ``a = asinh(sinh(tau) sin(theta_k / 2))``, ``G <= (k + 1) tau - a``;
* when the distortion bound below holds (``tau > nu``), every pair: ``d >= tau`` and
  ``G <= (height - 1) tau + nu / 2``.

The largest of these relative errors is ``err(tau)`` (:func:`relative_error_bound`). It is a
first-order worst case (every rounding error aligned, every radius at its maximum), and the
measurement shows how pessimistic it is: on a 200,000-node random tree (height 28) the
largest ``tau`` it allows, 0.59, gives parent-child distances that err by at most ``1e-12``,
a million times inside the budget. The automatic ``tau`` (:func:`default_tau`) is therefore

* the smallest ``tau >= 1`` whose distortion bound is ``1 + 0.1`` (:data:`DISTORTION_EPSILON`),
  Sarkar's requirement (longer edges gain little and only push points outwards), when
  ``err(tau) <= 1e-6`` (:data:`RELATIVE_PRECISION`) allows it;
* otherwise the largest ``tau`` up to it whose *measured* errors fit the budget: the tree is
  constructed and its parent-child distances, known exactly (``tau``), are compared with
  ``tau``; the worst relative error times 100 must stay within ``1e-6`` (log-space bisection
  between the analytic ``tau`` and Sarkar's, 12 constructions at most). The factor 100 covers
  the other pairs: against a 50-digit mpmath construction of NAICS (``tests/
  test_construction.py``) the worst pair, always among the deepest siblings, errs at most
  1.2 times the worst edge.

NAICS (height 5) gets ``tau`` 5.13, 5.18 and 6.90 in dims 2, 3 and 10 (the analytic bound
alone: 4.98, 4.80, 4.78), and the mpmath test measures its errors at about ``1e-8``; pushed to
``tau = 8`` in 2-D they exceed ``1e-6``. Deep trees gain most: the 200,000-node random tree
gets 1.05 instead of 0.59 in 10-D (sampled NDCG@10 0.846 -> 0.983, Spearman 0.837 -> 0.953),
and a 5,000-node one (height 18) in 2-D 1.85 instead of 1.06 (NDCG@10 0.69 -> 0.93). The
measurement costs the constructions (about 15 s for 200,000 nodes, 1 thread). A tree so deep
that not even the analytic bound admits a ``tau`` (a path of more than about 20,000 edges)
raises ``ValueError``; an explicit ``tau`` whose measured edge errors break the budget warns.
(Software that evaluates ``arcosh(-<x, y>_L)`` directly loses much more: that formula's
absolute error is about ``eps e^{r_x + r_y} / sinh d``.)

Distortion bound
----------------
Let ``theta`` be the smallest angle between two edges at any node (the minimum angle of the
codes used, the parent direction included). For a triangle with two sides ``a``, ``b`` and
included angle ``g``, the third side is at least ``a + b - 2 ln(1 / sin(g / 2))`` (exactly, for
all ``a, b``). Walking a tree path of ``m`` edges and applying this at every turn, with the
angle lost to the drift of the direction back to the start of the path bounded by ``beta``
(law of sines: ``sin beta <= exp(-(tau - nu))``), gives for every pair at tree distance ``m``

``tau * m - (m - 1) * nu <= d(x, y) <= tau * m``,  ``nu = 2 ln(1 / sin((theta - beta) / 2))``,

whenever the fixed point ``beta < theta`` exists. Hence the multiplicative distortion
``max(d / d_T) / min(d / d_T)`` (``FidelityReport.distortion["worst"]``) is at most
``tau / (tau - nu)`` (:func:`distortion_bound`), and pairs are ordered exactly as in the tree
(every anchor's ranking is perfect) when ``tau > (2 height - 1) nu``. When the precision budget
forces ``tau <= nu`` (NAICS in 2-D, whose largest node has 21 children, ``theta`` = 16.4
degrees) there is no guarantee; the ranking metrics stay high in practice (NDCG@10 0.999).

References
----------
R. Sarkar, "Low distortion Delaunay embedding of trees in hyperbolic plane", Graph Drawing 2011.
F. Sala, C. De Sa, A. Gu, C. Ré, "Representation tradeoffs for hyperbolic embeddings",
ICML 2018.
M. Roberts, "The unreasonable effectiveness of quasirandom sequences", 2018.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import torch
from scipy.special import ndtri
from torch import Tensor

from hyperloss.embedding import Embedding
from hyperloss.geometry import lorentz_distance
from hyperloss.trees import Tree
from hyperloss.validation import (
    check_curvature,
    check_int,
    check_positive,
    check_real,
    check_tree,
)

__all__ = [
    "construct",
    "default_tau",
    "distortion_bound",
    "relative_error_bound",
    "spherical_code",
    "RELATIVE_PRECISION",
    "DISTORTION_EPSILON",
]

#: Relative accuracy of distances that the automatic ``tau`` guarantees (see the module notes).
RELATIVE_PRECISION = 1e-6
#: The automatic ``tau`` stops growing once the distortion bound is ``1 + DISTORTION_EPSILON``.
DISTORTION_EPSILON = 0.1

# float64 unit roundoff.
_EPS = 2.0**-53
# Worst-case relative error of lorentz_distance itself, in ulps (a few; see geometry.py).
_DISTANCE_ULPS = 8.0
# Largest radius (unit curvature) we build: coordinates ~e^r / 2 must stay below ~1e154 for
# hyperloss.geometry's distance (it squares them).
_MAX_RADIUS = 300.0
# Measured edge errors times this must stay within RELATIVE_PRECISION (module notes): on NAICS
# the worst pair checked against 50-digit mpmath (the deepest siblings) errs at most 1.2x the
# worst parent-child edge, so 100 leaves a wide margin for the other pairs.
_MEASURED_SAFETY = 100.0
# Log-space bisection steps between the analytic and Sarkar's tau (relative width ~1e-3).
_MEASURED_STEPS = 12
# Repulsion refinement of one spherical code of t points: at most this many steps, at most
# _REPULSION_WORK / t^2 of them (each step is a few (t, t) array operations), none above
# _REPULSION_MAX_POINTS points (the low-discrepancy start is used as it is).
_REPULSION_STEPS = 300
_REPULSION_WORK = 1e7
_REPULSION_MAX_POINTS = 4096


def construct(
    tree: Tree, dim: int = 2, *, tau: float | None = None, curvature: float = 1.0
) -> Embedding:
    """Embed a tree combinatorially: root at the origin, children at distance ``tau``.

    Sarkar's construction generalised to ``dim`` dimensions (see the module notes for the
    geometry, the spherical codes and the bounds).

    Parameters
    ----------
    tree : hyperloss.trees.Tree
        The tree to embed (``N`` nodes).
    dim : int, default 2
        Dimension of the hyperbolic space, ``>= 2``; points have ``dim + 1`` coordinates.
    tau : float, optional
        Hyperbolic length of every edge, ``> 0``. Default: :func:`default_tau`: the largest
        edge length whose measured distance errors keep a relative float64 accuracy of
        :data:`RELATIVE_PRECISION` (with a factor 100 to spare), but no longer than needed for
        a distortion bound of ``1 + DISTORTION_EPSILON``. An explicit ``tau`` beyond the
        precision budget gives a ``RuntimeWarning`` that names the largest safe value.
    curvature : float, default 1.0
        ``c > 0``; the space has sectional curvature ``-c``. Distances (and ``tau``) are
        measured in that space.

    Returns
    -------
    Embedding
        Points ``(N, dim + 1)`` float64 in the tree's index order, ``names = tree.names``.
        ``metrics`` records the construction: ``"tau"``, ``"max_radius"`` (``tau * height``),
        ``"min_angle"`` (radians, the smallest angle between two edges at a node),
        ``"relative_error_bound"`` (the analytic worst case), ``"measured_edge_error"`` (the
        worst relative error of the parent-child distances, which are exactly ``tau``) and,
        where the bound applies, ``"distortion_bound"``.

    Raises
    ------
    TypeError
        If ``tree`` is not a :class:`~hyperloss.trees.Tree` or ``dim`` is not an int.
    ValueError
        If ``dim < 2``, ``tau <= 0`` or not finite, ``curvature <= 0``, ``tau * height`` beyond
        the float64 range (radius 300 in unit curvature), or the tree is too deep for float64
        (no ``tau`` meets the precision budget; the message says what to change).

    Examples
    --------
    >>> from hyperloss.datasets import balanced_tree
    >>> emb = construct(balanced_tree(2, 3), dim=2, tau=3.0)
    >>> emb.points.shape
    torch.Size([15, 3])
    >>> round(float(emb.distance_fn(emb.points[0], emb.points[1])), 12)
    3.0
    """
    check_tree(tree)
    dim = _check_dim(dim)
    c = check_curvature(curvature)
    sqrt_c = math.sqrt(c)
    directions, level_angles = _child_directions(tree, dim)
    if tau is None:
        tau_unit = _automatic_tau_unit(tree, directions, level_angles, dim)
    else:
        tau_unit = check_positive(tau, "tau") * sqrt_c
        _check_explicit_tau(tree, directions, tau_unit, level_angles, dim, sqrt_c)
    unit_points = _place(tree, directions, tau_unit)
    points = unit_points / sqrt_c
    min_angle = min(level_angles, default=math.pi)
    metrics = {
        "tau": tau_unit / sqrt_c,
        "max_radius": tau_unit * tree.height / sqrt_c,
        "min_angle": min_angle,
        "relative_error_bound": _relative_error(tau_unit, level_angles, dim),
        "measured_edge_error": _edge_error(tree, unit_points, tau_unit),
    }
    bound = _distortion(tau_unit, min_angle)
    if math.isfinite(bound) and tree.height > 0:
        metrics["distortion_bound"] = bound
    return Embedding(points, list(tree.names), curvature=c, metrics=metrics)


def default_tau(tree: Tree, dim: int = 2, *, curvature: float = 1.0) -> float:
    """The edge length :func:`construct` uses when ``tau`` is not given.

    The smallest ``tau >= 1`` whose :func:`distortion_bound` is at most
    ``1 + DISTORTION_EPSILON`` (Sarkar's requirement; longer edges gain little) when the
    analytic precision bound :func:`relative_error_bound` allows it (shallow trees); otherwise
    the largest ``tau`` up to it whose measured parent-child distance errors, times 100, stay
    within :data:`RELATIVE_PRECISION` (``1e-6``), found by constructing the tree (module notes,
    "Precision budget"). NAICS: 5.13, 5.18 and 6.90 in dims 2, 3 and 10.

    Parameters
    ----------
    tree : hyperloss.trees.Tree
    dim : int, default 2
    curvature : float, default 1.0

    Returns
    -------
    float
        ``tau`` in the units of the space of curvature ``-curvature``.

    Raises
    ------
    ValueError
        If no ``tau`` meets the budget (the tree is too deep for float64 coordinates).
    """
    check_tree(tree)
    dim = _check_dim(dim)
    c = check_curvature(curvature)
    directions, level_angles = _child_directions(tree, dim)
    return _automatic_tau_unit(tree, directions, level_angles, dim) / math.sqrt(c)


def relative_error_bound(tree: Tree, tau: float, dim: int = 2, *, curvature: float = 1.0) -> float:
    """Predicted worst relative float64 error of the distances of ``construct(tree, dim, tau)``.

    First-order worst case (module notes, "Precision budget"): the largest over parent-child
    pairs, sibling pairs and -- when the distortion bound holds -- all pairs of
    ``eps * (2 (height + 1)(dim + 2) e^G / d + 8)``, with ``G`` the pair's Gromov product at the
    origin bounded through ``radius <= depth * tau``, and ``d`` its distance. Computed with the
    tree's smallest edge angle at each depth.

    Parameters
    ----------
    tree : hyperloss.trees.Tree
    tau : float
        Edge length, ``> 0``, in the units of curvature ``-curvature``.
    dim : int, default 2
    curvature : float, default 1.0

    Returns
    -------
    float
    """
    check_tree(tree)
    dim = _check_dim(dim)
    c = check_curvature(curvature)
    tau_unit = check_positive(tau, "tau") * math.sqrt(c)
    _, level_angles = _child_directions(tree, dim)
    return _relative_error(tau_unit, level_angles, dim)


def distortion_bound(tau: float, min_angle: float) -> tuple[float, float]:
    """Sarkar-type distortion bound for edge length ``tau`` and minimum edge angle ``min_angle``.

    For every pair at tree distance ``m``:
    ``tau * m - (m - 1) * nu <= d(x, y) <= tau * m``, so the multiplicative distortion
    ``max(d / d_T) / min(d / d_T)`` is at most ``tau / (tau - nu)``. Here
    ``nu = 2 ln(1 / sin((theta - beta) / 2))`` and ``beta`` is the smallest fixed point of
    ``beta = asin(exp(-(tau - nu(beta))))``, the largest angle by which the direction back to
    the start of a path can drift from the last edge (module notes). Unit curvature; the bound
    is scale-free, so for curvature ``-c`` pass ``tau * sqrt(c)``.

    Parameters
    ----------
    tau : float
        Edge length (unit curvature), ``> 0``.
    min_angle : float
        Smallest angle between two edges at a node, radians, in ``(0, pi]``.

    Returns
    -------
    (distortion, nu) : tuple of float
        ``(inf, inf)`` when no fixed point exists (``tau`` too small for ``min_angle``).

    Examples
    --------
    >>> d, nu = distortion_bound(6.0, 2 * math.pi / 3)  # a binary tree in the plane
    >>> round(nu, 4), round(d, 4)
    (0.2896, 1.0507)
    """
    tau = check_positive(tau, "tau")
    min_angle = check_real(min_angle, "min_angle")
    if not 0 < min_angle <= math.pi:
        raise ValueError(f"min_angle must be in (0, pi], got {min_angle!r}")
    distortion = _distortion(tau, min_angle)
    if not math.isfinite(distortion):
        return math.inf, math.inf
    return distortion, tau - tau / distortion


def spherical_code(n: int, dim: int, *, avoid_pole: bool = True) -> Tensor:
    """``n`` well separated unit vectors in ``R^dim``, optionally avoiding the pole ``-e_1``.

    With ``avoid_pole`` the ``n + 1`` points ``{-e_1} + code`` are spread as a whole (the pole is
    a node's parent direction). See the module notes for the codes: the circle (``dim = 2``),
    the regular simplex, the cross-polytope, or a refined low-discrepancy set.

    Parameters
    ----------
    n : int
        Number of directions, ``>= 1``.
    dim : int
        ``>= 2``.
    avoid_pole : bool, default True

    Returns
    -------
    Tensor (n, dim), float64
        Unit rows; deterministic.

    Examples
    --------
    >>> spherical_code(3, 3)  # with the pole: a regular tetrahedron
    tensor([[ 0.3333, -0.9428,  0.0000],
            [ 0.3333,  0.4714, -0.8165],
            [ 0.3333,  0.4714,  0.8165]], dtype=torch.float64)
    """
    n = check_int(n, "n", minimum=1)
    dim = _check_dim(dim)
    return _code(n, dim, bool(avoid_pole)).clone()


# ----------------------------------------------------------------------------------------------
# Construction
# ----------------------------------------------------------------------------------------------


def _place(tree: Tree, directions: Tensor, tau: float) -> Tensor:
    """Unit-curvature points (N, dim + 1) from the per-node frame directions, level by level."""
    n_nodes, dim = directions.shape
    parent = tree.parent
    has_children = torch.bincount(parent[parent >= 0], minlength=n_nodes) > 0
    points = torch.zeros(n_nodes, dim + 1, dtype=torch.float64)
    points[0, 0] = 1.0
    # Frames are kept only for the previous level's inner nodes: row frame_row[v] of `frames`.
    frames = torch.eye(dim + 1, dtype=torch.float64)[None]
    frame_row = torch.full((n_nodes,), -1, dtype=torch.long)
    frame_row[0] = 0
    for level in tree.levels[1:]:
        parent_frames = frames[frame_row[parent[level]]]
        local = _local_transforms(directions[level], tau)
        inner = has_children[level]
        # Leaves need only the image of the origin: one matrix-vector product each.
        points[level] = torch.einsum("nij,nj->ni", parent_frames, local[:, :, 0])
        inner_nodes = level[inner]
        frames = torch.bmm(parent_frames[inner], local[inner])
        frame_row[inner_nodes] = torch.arange(len(inner_nodes))
    # Put every point exactly on the hyperboloid: the distance reads only the spatial part, and
    # x0 = sqrt(1 + |x_s|^2) is then correct to the last bit.
    spatial = points[:, 1:]
    points[:, 0] = torch.sqrt(1.0 + (spatial * spatial).sum(dim=1))
    return points


def _local_transforms(directions: Tensor, tau: float) -> Tensor:
    """Lorentz matrices T(u) = H(u) B(tau), shape (n, dim + 1, dim + 1), for unit rows u."""
    n, dim = directions.shape
    ch, sh = math.cosh(tau), math.sinh(tau)
    householder = _householder_e1(directions)
    transforms = torch.zeros(n, dim + 1, dim + 1, dtype=torch.float64)
    transforms[:, 0, 0] = ch
    transforms[:, 0, 1] = sh
    transforms[:, 1:, 0] = sh * directions
    transforms[:, 1:, 1:] = householder
    transforms[:, 1:, 1] += (ch - 1.0) * directions
    return transforms


def _householder_e1(directions: Tensor) -> Tensor:
    """Reflections H (n, dim, dim) with H e_1 = u and H u = e_1 (H = I when u = e_1)."""
    n, dim = directions.shape
    first = directions[:, 0]
    rest_sq = (directions[:, 1:] ** 2).sum(dim=1)
    # w = e_1 - u. Its first entry 1 - u_1 cancels when u is close to e_1; use the identity
    # 1 - u_1 = |u_rest|^2 / (1 + u_1) for unit u there.
    w = -directions.clone()
    w[:, 0] = torch.where(first > 0, rest_sq / (1.0 + first), 1.0 - first)
    w_sq = (w * w).sum(dim=1)
    scale = torch.where(w_sq > 0, 2.0 / torch.where(w_sq > 0, w_sq, 1.0), 0.0)
    eye = torch.eye(dim, dtype=torch.float64).expand(n, dim, dim)
    return eye - scale[:, None, None] * w[:, :, None] * w[:, None, :]


def _child_directions(tree: Tree, dim: int) -> tuple[Tensor, list[float]]:
    """Frame direction of every node in its parent's frame (row 0 unused), and per depth ``k``
    the smallest angle between two edges at a node of depth ``k`` that has children."""
    n_nodes = len(tree)
    parent = tree.parent
    depth = tree.depth
    directions = torch.zeros(n_nodes, dim, dtype=torch.float64)
    level_angles = [math.pi] * tree.height
    if n_nodes == 1:
        return directions, level_angles
    children = torch.arange(1, n_nodes)
    child_parent = parent[children]
    n_children = torch.bincount(child_parent, minlength=n_nodes)
    # Rank of each child among its siblings, in index order (siblings are contiguous, but the
    # argsort makes no assumption).
    order = torch.argsort(child_parent * n_nodes + children)
    sorted_parent = child_parent[order]
    starts = torch.cumsum(n_children, 0) - n_children
    rank = torch.empty(n_nodes - 1, dtype=torch.long)
    rank[order] = torch.arange(n_nodes - 1) - starts[sorted_parent]
    group = n_children[child_parent]
    at_root = child_parent == 0
    # One code per (number of children, root or not): a loop over distinct group sizes only.
    for avoid_pole, mask in ((False, at_root), (True, ~at_root)):
        if not bool(mask.any()):
            continue
        for m in torch.unique(group[mask]).tolist():
            selected = mask & (group == m)
            code = _code(m, dim, avoid_pole)
            directions[children[selected]] = code[rank[selected]]
            angle = _code_min_angle(m, dim, avoid_pole)
            for k in torch.unique(depth[child_parent[selected]]).tolist():
                level_angles[k] = min(level_angles[k], angle)
    return directions, level_angles


# ----------------------------------------------------------------------------------------------
# Spherical codes
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _code(n: int, dim: int, avoid_pole: bool) -> Tensor:
    total = n + 1 if avoid_pole else n
    if dim == 2:
        if avoid_pole:  # Sarkar: deg = n + 1 directions, the first at the parent (angle pi)
            angles = math.pi + 2.0 * math.pi * torch.arange(1, n + 1, dtype=torch.float64) / total
        else:
            angles = 2.0 * math.pi * torch.arange(n, dtype=torch.float64) / n
        code = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    elif total <= dim + 1:
        code = _simplex(total, dim)
    elif total <= 2 * dim:
        code = _cross_polytope(total, dim)
    else:
        code = _repelled(total, dim, avoid_pole)
    if avoid_pole and dim > 2:
        code = code[1:]  # row 0 is the pole -e_1
    return code / code.norm(dim=1, keepdim=True)


@lru_cache(maxsize=512)
def _code_min_angle(n: int, dim: int, avoid_pole: bool) -> float:
    code = _code(n, dim, avoid_pole)
    if avoid_pole:
        pole = torch.zeros(1, dim, dtype=torch.float64)
        pole[0, 0] = -1.0
        code = torch.cat([pole, code])
    if code.shape[0] < 2:
        return math.pi
    return _min_angle(code)


def _min_angle(points: Tensor) -> float:
    """Smallest angle between two rows (unit vectors), in row blocks of bounded memory."""
    largest_cosine = -1.0
    for start in range(0, points.shape[0], 1024):
        gram = points[start : start + 1024] @ points.T
        rows = torch.arange(gram.shape[0])
        gram[rows, rows + start] = -1.0
        largest_cosine = max(largest_cosine, float(gram.max()))
    return math.acos(min(1.0, largest_cosine))


def _simplex(total: int, dim: int) -> Tensor:
    """Regular simplex with ``total <= dim + 1`` unit vertices, the first at -e_1."""
    vertices = torch.zeros(total, dim, dtype=torch.float64)
    vertices[0, 0] = -1.0
    if total > 1:
        # The other vertices: height 1/(total-1) above the origin along e_1, on a regular
        # simplex of total-1 vertices in the orthogonal complement.
        vertices[1:, 0] = 1.0 / (total - 1)
        if total > 2:
            radius = math.sqrt(1.0 - 1.0 / (total - 1) ** 2)
            vertices[1:, 1:] = radius * _simplex(total - 1, dim - 1)
    return vertices


def _cross_polytope(total: int, dim: int) -> Tensor:
    """``total <= 2 dim`` vertices of {±e_i}: -e_1, e_1, e_2, -e_2, e_3, -e_3, ..."""
    vertices = torch.zeros(total, dim, dtype=torch.float64)
    for row in range(total):
        axis = row // 2
        # First pair: -e_1 (the pole), +e_1; later pairs: +e_i, -e_i.
        sign = (-1.0 if row % 2 == 0 else 1.0) if axis == 0 else (1.0 if row % 2 == 0 else -1.0)
        vertices[row, axis] = sign
    return vertices


def _repelled(total: int, dim: int, fix_pole: bool) -> Tensor:
    """Kronecker-sequence start refined by Riesz-energy repulsion; row 0 is -e_1 if fix_pole."""
    points = _fibonacci_sphere(total) if dim == 3 else _kronecker_sphere(total, dim)
    if fix_pole:
        points[0] = 0.0
        points[0, 0] = -1.0
    if total > _REPULSION_MAX_POINTS:
        return points  # the (total, total) matrices below would not fit comfortably
    steps = int(min(_REPULSION_STEPS, _REPULSION_WORK // (total * total)))
    best, best_sq = points, -1.0
    low, high = float(dim + 1), 4.0 * dim  # Riesz exponent: energy first, then max-min
    for step in range(steps + 1):
        gram = points @ points.T
        sq_dist = (2.0 - 2.0 * gram).clamp_min(1e-300)
        sq_dist.fill_diagonal_(math.inf)
        nearest_sq = float(sq_dist.min())
        if nearest_sq > best_sq:
            best, best_sq = points, nearest_sq
        if step == steps:
            break
        progress = step / max(1, steps - 1)
        exponent = low + (high - low) * progress
        # Weights |x_i - x_j|^-(s + 2), scaled by the closest pair so that large s cannot
        # overflow; the force on x_i is sum_j w_ij (x_i - x_j), projected on the sphere.
        weights = (sq_dist / nearest_sq) ** (-(exponent + 2.0) / 2.0)
        force = points * weights.sum(dim=1, keepdim=True) - weights @ points
        force -= (force * points).sum(dim=1, keepdim=True) * points
        largest = float(force.norm(dim=1).max())
        if largest == 0.0:
            break
        step_size = 0.1 * math.sqrt(nearest_sq) * (1.0 - 0.9 * progress) / largest
        moved = points + step_size * force
        moved = moved / moved.norm(dim=1, keepdim=True)
        if fix_pole:
            moved[0] = points[0]
        points = moved
    return best


def _fibonacci_sphere(total: int) -> Tensor:
    """The spherical Fibonacci lattice about the e_1 axis, starting next to -e_1 (3-D)."""
    index = torch.arange(total, dtype=torch.float64)
    height = -1.0 + (2.0 * index + 1.0) / total
    ring = torch.sqrt(1.0 - height * height)
    longitude = index * math.pi * (3.0 - math.sqrt(5.0))  # the golden angle
    return torch.stack([height, ring * torch.cos(longitude), ring * torch.sin(longitude)], dim=1)


def _kronecker_sphere(total: int, dim: int) -> Tensor:
    """Roberts' R_dim sequence mapped to the unit sphere by the normal quantile function."""
    phi = 2.0
    for _ in range(100):  # phi_d: the positive root of x^(d+1) = x + 1
        phi = (1.0 + phi) ** (1.0 / (dim + 1))
    alpha = torch.tensor([phi ** -(j + 1) for j in range(dim)], dtype=torch.float64) % 1.0
    k = torch.arange(1, total + 1, dtype=torch.float64)[:, None]
    uniform = (0.5 + k * alpha) % 1.0
    gaussian = torch.from_numpy(ndtri(uniform.numpy()))
    return gaussian / gaussian.norm(dim=1, keepdim=True)


# ----------------------------------------------------------------------------------------------
# Bounds (unit curvature)
# ----------------------------------------------------------------------------------------------


def _relative_error(tau: float, level_angles: list[float], dim: int) -> float:
    """Bound on the relative float64 error of the constructed distances (module notes)."""
    height = len(level_angles)
    if height == 0:
        return 0.0  # a single node: no distances
    if tau * height > _MAX_RADIUS:
        return math.inf
    growth = _error_growth(height, dim)
    # Parent and child at depth k + 1: Gromov product at most the parent's radius k tau,
    # distance tau; the worst is the deepest pair.
    worst = growth * math.exp((height - 1) * tau) / tau
    # Two children of a node at depth k (or a child and its grandparent): legs tau at an angle
    # of at least level_angles[k]: distance 2 * half, Gromov product <= (k + 1) tau - half.
    depth = np.arange(height, dtype=np.float64)
    half = np.arcsinh(math.sinh(tau) * np.sin(np.asarray(level_angles, dtype=np.float64) / 2.0))
    if not (half > 0.0).all():
        return math.inf
    worst = max(worst, float(np.max(growth * np.exp((depth + 1.0) * tau - half) / (2.0 * half))))
    distortion = _distortion(tau, min(level_angles))
    if math.isfinite(distortion):
        # Every pair: Gromov product <= (height - 1) tau + nu / 2 and distance >= tau.
        nu = tau - tau / distortion
        worst = max(worst, growth * math.exp((height - 1) * tau + nu / 2.0) / tau)
    return (worst + _DISTANCE_ULPS) * _EPS


def _error_growth(height: int, dim: int) -> float:
    """Worst-case rounding growth: (height + 1) products of (dim + 2)-term sums, two points."""
    return 2.0 * (height + 1) * (dim + 2)


def _default_tau_unit(level_angles: list[float], dim: int) -> float:
    """min(largest tau within the precision budget, smallest tau with distortion <= 1.1)."""
    if not level_angles:
        return 1.0  # a single node: tau is irrelevant
    budget = RELATIVE_PRECISION
    min_angle = min(level_angles)
    # The precision bound falls (distances grow) and then rises (e^G): scan a log grid for the
    # largest feasible tau, then bisect against the next grid point.
    grid = 10.0 ** (np.arange(-140, 60) / 20.0)  # 1e-7 .. ~1e3
    feasible = [tau for tau in grid.tolist() if _relative_error(tau, level_angles, dim) <= budget]
    if not feasible:
        height = len(level_angles)
        best = min(grid.tolist(), key=lambda tau: _relative_error(tau, level_angles, dim))
        raise ValueError(
            f"tree is too deep for float64 Lorentz coordinates: with height {height} and a "
            f"smallest edge angle of {math.degrees(min_angle):.3g} degrees no tau keeps the "
            f"relative distance error below {budget:g} (best: "
            f"{_relative_error(best, level_angles, dim):.2g} at tau={best:.3g}); embed "
            "shallower subtrees separately, or reduce the height or the largest degree"
        )
    precise, _ = _bisect(
        lambda tau: _relative_error(tau, level_angles, dim) <= budget,
        max(feasible),
        max(feasible) * 10.0 ** (1.0 / 20.0),
    )
    return float(min(precise, _sufficient_tau(min_angle)))


def _automatic_tau_unit(
    tree: Tree, directions: Tensor, level_angles: list[float], dim: int
) -> float:
    """The automatic tau: the analytic rule, raised by measurement where precision decides.

    Where the analytic bound (a first-order worst case) is what stops ``tau`` short of Sarkar's
    sufficient ``tau``, the construction is built and its parent-child distances, known exactly
    (``tau``), are measured: ``tau`` grows (log-space bisection, at most Sarkar's ``tau``) while
    the worst measured relative edge error times :data:`_MEASURED_SAFETY` stays within
    :data:`RELATIVE_PRECISION` (module notes, "Precision budget").
    """
    analytic = _default_tau_unit(level_angles, dim)
    if not level_angles:
        return analytic
    ceiling = min(_sufficient_tau(min(level_angles)), _MAX_RADIUS / len(level_angles))
    if analytic >= ceiling:
        return analytic  # the distortion requirement decides, not the precision

    def within_budget(tau: float) -> bool:
        error = _edge_error(tree, _place(tree, directions, tau), tau)
        return error * _MEASURED_SAFETY <= RELATIVE_PRECISION

    if within_budget(ceiling):
        return ceiling
    low, high = analytic, ceiling
    for _ in range(_MEASURED_STEPS):
        middle = math.sqrt(low * high)
        if within_budget(middle):
            low = middle
        else:
            high = middle
    return low


def _edge_error(tree: Tree, unit_points: Tensor, tau: float) -> float:
    """Worst relative error of the parent-child distances (exactly ``tau``) of a construction."""
    if len(tree) < 2:
        return 0.0
    parent = tree.parent
    child = torch.arange(1, len(tree))
    edges = lorentz_distance(unit_points[child], unit_points[parent[child]])
    return float((edges - tau).abs().max()) / tau


def _sufficient_tau(min_angle: float) -> float:
    """Smallest tau >= 1 whose distortion bound is at most 1 + DISTORTION_EPSILON (or inf).

    Sarkar's requirement: beyond it a longer edge buys little and only moves points outwards.
    The floor of 1 keeps edges of trees without branching (whose bound is 1 for every tau)
    from shrinking towards 0.
    """
    target = 1.0 + DISTORTION_EPSILON
    grid = (10.0 ** (np.arange(0, 60) / 20.0)).tolist()  # 1 .. ~1e3
    for index, tau in enumerate(grid):
        if _distortion(tau, min_angle) <= target:
            if index == 0:
                return tau
            # _distortion decreases with tau: bisect for where it reaches the target.
            _, high = _bisect(
                lambda value: _distortion(value, min_angle) > target, grid[index - 1], tau
            )
            return high
    return math.inf


def _bisect(predicate, low: float, high: float) -> tuple[float, float]:
    """Narrow ``predicate(low)`` true, ``predicate(high)`` false to a relative width ~1e-15."""
    for _ in range(60):
        middle = 0.5 * (low + high)
        if predicate(middle):
            low = middle
        else:
            high = middle
    return low, high


def _distortion(tau: float, min_angle: float) -> float:
    """tau / (tau - nu) at the smallest fixed point beta (see distortion_bound), or inf."""
    beta = 0.0
    for _ in range(1000):
        turn = min_angle - beta
        if turn <= 0.0:
            return math.inf
        nu = -2.0 * math.log(math.sin(turn / 2.0))
        if tau <= nu:
            return math.inf
        new_beta = math.asin(min(1.0, math.exp(-(tau - nu))))
        if new_beta <= beta + 1e-15:
            return tau / (tau - nu)
        beta = new_beta
    return math.inf


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _check_explicit_tau(
    tree: Tree,
    directions: Tensor,
    tau_unit: float,
    level_angles: list[float],
    dim: int,
    sqrt_c: float,
) -> None:
    height = len(level_angles)
    radius = tau_unit * height
    if radius > _MAX_RADIUS:
        raise ValueError(
            f"tau={tau_unit / sqrt_c:g} is too large for a tree of height {height}: the deepest "
            f"nodes would sit at hyperbolic radius {radius / sqrt_c:.4g}, beyond float64 range "
            f"(keep tau * height * sqrt(curvature) below {_MAX_RADIUS:g}); leave tau=None for "
            "the precision-safe default"
        )
    if _relative_error(tau_unit, level_angles, dim) <= RELATIVE_PRECISION:
        return  # within the analytic worst case: nothing to measure
    error = _edge_error(tree, _place(tree, directions, tau_unit), tau_unit)
    if error * _MEASURED_SAFETY > RELATIVE_PRECISION:
        try:
            automatic = _automatic_tau_unit(tree, directions, level_angles, dim)
            safe = f"tau <= {automatic / sqrt_c:.4g}"
        except ValueError:
            safe = "a shallower tree"
        warnings.warn(
            f"tau={tau_unit / sqrt_c:g} breaks the float64 precision budget for a tree of "
            f"height {height} in dim {dim}: parent-child distances already carry relative "
            f"errors of {error:.2g}, other pairs up to about {_MEASURED_SAFETY:g} times more "
            f"(budget {RELATIVE_PRECISION:g}); use {safe} (tau=None picks it)",
            RuntimeWarning,
            stacklevel=3,
        )


def _check_dim(dim: object) -> int:
    return check_int(dim, "dim", minimum=2)
