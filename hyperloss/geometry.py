"""Lorentz-model geometry on top of geoopt.

geoopt provides the manifold (:class:`geoopt.Lorentz`: projection, exponential map,
Riemannian optimizers). This module adds what it lacks:

* a geodesic distance that is accurate and has finite gradients for coincident points, for
  nearby points and for points far from the origin (:func:`lorentz_distance`,
  :class:`LorentzDistance`);
* pairwise distance matrices from any broadcasting distance callable, in row blocks
  (:func:`pairwise_distances`);
* conversions between the Lorentz model and a Poincaré ball of the *same* curvature
  (:func:`lorentz_to_poincare`, :func:`poincare_to_lorentz`), and the exponential and
  logarithmic maps at the origin on spatial tangent vectors (:func:`expmap0`, :func:`logmap0`);
* the distance to the origin (:func:`hyperbolic_radius`).

Curvature convention
--------------------
``curvature = c > 0`` means sectional curvature ``-c``. geoopt's Lorentz model uses
``k = 1 / c``: its points satisfy ``-x_0^2 + x_1^2 + ... + x_n^2 = -k``. Points are
``(..., dim + 1)`` tensors with the time coordinate first; the origin is
``(1 / sqrt(c), 0, ..., 0)``. The matching Poincaré ball is ``geoopt.PoincareBall(c=c)``, of
radius ``1 / sqrt(c)``. float64 is recommended for everything hyperbolic.

Which coordinates are read
--------------------------
The distance, the radius, ``logmap0`` and ``lorentz_to_poincare`` read only the spatial part
``x[..., 1:]`` of a point and take the time coordinate to be ``sqrt(1/c + |x_s|^2)``, i.e. they
act on ``geoopt.Lorentz.projx(x)``. Far from the origin the time coordinate carries no
information the spatial part does not, and reading it would only add cancellation. For a
Riemannian optimizer this changes nothing: any two extensions of a function off the
hyperboloid have the same Riemannian gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import geoopt
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from hyperloss.validation import (
    check_callable,
    check_curvature,
    check_float_tensor,
    check_int,
    check_tensor,
)

__all__ = [
    "lorentz",
    "lorentz_distance",
    "LorentzDistance",
    "pairwise_distances",
    "lorentz_to_poincare",
    "poincare_to_lorentz",
    "expmap0",
    "logmap0",
    "hyperbolic_radius",
]

# Below this argument sinh(z)/z and asinh(z)/z are evaluated by their Taylor series. The
# closed forms are 0/0 at z = 0 and their autograd derivatives, (z cosh z - sinh z) / z^2,
# cancel for small z. The first omitted terms are z^6/5040 and 5 z^6/112: < 1e-19 here.
_SERIES_BELOW = 1e-3


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def lorentz(curvature: float = 1.0) -> geoopt.Lorentz:
    """Return a float64 :class:`geoopt.Lorentz` manifold of sectional curvature ``-curvature``.

    Parameters
    ----------
    curvature : float, default 1.0
        ``c > 0``; geoopt's parameter is ``k = 1 / c``.

    Returns
    -------
    geoopt.Lorentz
        With ``manifold.k`` a float64 scalar equal to ``1 / curvature`` (not learnable).

    Examples
    --------
    >>> lorentz(4.0).k
    Parameter containing:
    tensor(0.2500, dtype=torch.float64)
    """
    c = check_curvature(curvature)
    return geoopt.Lorentz(k=torch.tensor(1.0 / c, dtype=torch.float64))


def lorentz_distance(
    x: Tensor, y: Tensor, *, curvature: float = 1.0, keepdim: bool = False
) -> Tensor:
    r"""Geodesic distance on the Lorentz model, accurate near and far from the origin.

    Mathematically equal to geoopt's ``Lorentz(k=1/c).dist``,
    :math:`d = \operatorname{arcosh}(-c \langle x, y\rangle_L) / \sqrt{c}`, but computed from
    the hyperbolic law of cosines split into two non-negative terms, so no step subtracts
    nearly equal numbers. In unit-curvature coordinates :math:`a = \sqrt{c} x_s`,
    :math:`b = \sqrt{c} y_s` with :math:`|a| = \sinh r_1`, :math:`|b| = \sinh r_2`:

    .. math::

        \sinh^2\frac{D}{2} = \sinh^2\frac{r_1 - r_2}{2} + |a|\,|b| \sin^2\frac{\theta}{2},
        \qquad d = \frac{D}{\sqrt{c}},

    where :math:`\theta` is the angle between :math:`a` and :math:`b`. Both terms are formed
    from :math:`a - b` (exact when the points are close) rather than from
    :math:`\langle x, y\rangle_L` (which loses all digits for close points and, at radius
    :math:`r`, carries an absolute error of about :math:`\epsilon e^{2r}`) or from the
    Minkowski norm of :math:`x - y` (which cancels for points far from the origin).

    Only the spatial coordinates ``x[..., 1:]`` are read (see the module notes).

    Parameters
    ----------
    x, y : Tensor, shape (..., dim + 1)
        Points on the hyperboloid, broadcastable against each other; floating point.
    curvature : float, default 1.0
        ``c > 0`` (sectional curvature ``-c``).
    keepdim : bool, default False
        Keep the last dimension (size 1), like ``geoopt.Manifold.dist``.

    Returns
    -------
    Tensor, shape (...) or (..., 1)
        Distances, in the promoted floating dtype of ``x`` and ``y``.

    Notes
    -----
    Accuracy (float64, against a high-precision mpmath reference in
    ``tests/test_geometry.py``): within a few units in the last place (measured <= 6e-16
    relative) for separated points at any radius and for nearly coincident points whose
    coordinates differ by relative amounts from 1e-3 down to 1e-13, at radius 0 to 50 (on the
    same pairs geoopt's ``dist`` is off by 4e-8 at 1e-3 and returns garbage, NaN or inf at
    1e-8 and below). The hard case is nearby
    points at radius ``r`` separated mostly *radially*: the angle between them is then only
    the rounding of the inputs and the relative error grows to about ``eps * cosh(r)``
    (measured 1e-8 at ``r = 20``, 2e-4 at ``r = 30``). That is still far below the resolution
    of the coordinates themselves, which cannot place a point at radius ``r`` better than about
    ``eps * sinh(r)`` in distance (5e-8 at ``r = 20``, 6e-4 at ``r = 30``). The spatial
    coordinates times ``sqrt(c)`` must lie within about 1e-150 and 1e150 in magnitude (radius up
    to about ``345 / sqrt(c)``), where their squares are representable.

    The gradient is analytic (a custom autograd function), finite everywhere, and ``0`` at
    coincident points, where the distance is not differentiable (0 is a subgradient). It is
    differentiable once (no double backward).

    Examples
    --------
    >>> x = expmap0(torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64))
    >>> lorentz_distance(x[0], x[1])
    tensor(5., dtype=torch.float64)
    """
    c = check_curvature(curvature)
    x = _check_lorentz_points(x, "x")
    y = _check_lorentz_points(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x and y must have the same last dimension (dim + 1), got {x.shape[-1]} and "
            f"{y.shape[-1]}"
        )
    for size_x, size_y in zip(reversed(x.shape), reversed(y.shape), strict=False):
        if size_x != size_y and size_x != 1 and size_y != 1:
            raise ValueError(
                f"x and y must broadcast against each other, got shapes {tuple(x.shape)} and "
                f"{tuple(y.shape)}"
            )
    x_spatial, y_spatial = x[..., 1:], y[..., 1:]
    if x.dtype != y.dtype:
        dtype = torch.promote_types(x.dtype, y.dtype)
        x_spatial, y_spatial = x_spatial.to(dtype), y_spatial.to(dtype)
    distance = _LorentzDistanceFunction.apply(x_spatial, y_spatial, math.sqrt(c))
    return distance.unsqueeze(-1) if keepdim else distance


class LorentzDistance:
    """Lorentz geodesic distance as a callable with the ``geoopt.Manifold.dist`` contract.

    ``LorentzDistance(c)(x, y)`` is ``lorentz_distance(x, y, curvature=c)``: two point tensors
    that broadcast over leading dimensions in, their distances out. Use it wherever a
    ``distance_fn`` is expected (e.g. :func:`pairwise_distances`).

    Parameters
    ----------
    curvature : float, default 1.0
        ``c > 0`` (sectional curvature ``-c``).

    Attributes
    ----------
    curvature : float
    manifold : geoopt.Lorentz
        The float64 manifold with ``k = 1 / curvature`` (see :func:`lorentz`).

    Examples
    --------
    >>> distance_fn = LorentzDistance(1.0)
    >>> distance_fn
    LorentzDistance(curvature=1.0)
    >>> x = expmap0(torch.tensor([[0.0, 0.0], [0.0, 2.0]], dtype=torch.float64))
    >>> distances = pairwise_distances(distance_fn, x)  # 2 = the length of the tangent vector
    >>> distances.round(decimals=12)  # exact up to the last bits of float64
    tensor([[0., 2.],
            [2., 0.]], dtype=torch.float64)
    """

    def __init__(self, curvature: float = 1.0) -> None:
        self.curvature = check_curvature(curvature)
        self.manifold = lorentz(self.curvature)

    def __call__(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Distances between ``x`` and ``y``, shapes ``(..., dim + 1)`` -> ``(...)``."""
        return lorentz_distance(x, y, curvature=self.curvature, keepdim=keepdim)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(curvature={self.curvature!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LorentzDistance):
            return NotImplemented
        return self.curvature == other.curvature

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.curvature))


def pairwise_distances(
    distance_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor | None = None,
    *,
    chunk_size: int = 1024,
) -> Tensor:
    """All distances between the rows of ``x`` and the rows of ``y``, in row blocks.

    Calls ``distance_fn(x[i:j, None, :], y[None, :, :])`` once per block of at most
    ``chunk_size`` rows, so the intermediates of ``distance_fn`` never exceed
    ``chunk_size * M`` pairs. Works with any callable with the ``geoopt.Manifold.dist``
    contract: ``geoopt.Lorentz(...).dist``, ``geoopt.PoincareBall(...).dist``,
    :class:`LorentzDistance`, or a lambda such as
    ``lambda a, b: (a - b).norm(dim=-1)``.

    Parameters
    ----------
    distance_fn : callable
        ``(Tensor (..., D), Tensor (..., D)) -> Tensor (...)``, broadcasting over the leading
        dimensions.
    x : Tensor, shape (N, D)
    y : Tensor, shape (M, D), optional
        Defaults to ``x``; the result is then exactly symmetric (``distance_fn(x_i, x_j)``
        with ``i < j`` fills both ``(i, j)`` and ``(j, i)``, only the upper triangle is
        computed) with an exactly zero diagonal.
    chunk_size : int, default 1024
        Maximum number of rows per call to ``distance_fn``. The result does not depend on it.

    Returns
    -------
    Tensor, shape (N, M)
        In the dtype ``distance_fn`` returns. Differentiable: when ``distance_fn``'s output
        requires grad, gradients flow back to ``x``, ``y`` and any parameters of
        ``distance_fn`` (the autograd graph then holds every block's intermediates). Without
        autograd the result is written into one preallocated ``(N, M)`` tensor.

    Raises
    ------
    ValueError
        If ``x`` or ``y`` is not 2-D, their last dimensions differ, ``chunk_size < 1``, or
        ``distance_fn`` does not broadcast (raises on the 3-D block inputs or returns
        something other than a ``(rows, M)`` tensor).
    TypeError
        If ``distance_fn`` is not callable, ``x``/``y`` are not tensors, or ``chunk_size`` is
        not an int.

    Notes
    -----
    A :class:`LorentzDistance` (exactly that class, not a subclass or a wrapper) is not
    called block by block: its kernel runs directly on tiles of the matrix (cache-sized on the
    CPU, large on an accelerator, and never more than ``chunk_size`` rows) and writes into one
    preallocated result, with the same bits as calling it. With autograd it
    saves only per-point data (``O(N + M)``, not the blocks' ``O(N M)`` intermediates) and
    the backward pass recomputes each tile. Forward+backward of the ``2126 x 2126`` NAICS
    matrix then peaks at about 50 MiB above the inputs (35 MiB of it the result) instead of
    about 400 MiB.

    Examples
    --------
    >>> points = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    >>> pairwise_distances(lambda a, b: (a - b).norm(dim=-1), points)
    tensor([[0., 5.],
            [5., 0.]])
    """
    check_callable(distance_fn, "distance_fn")
    x = check_tensor(x, "x", ndim=2)
    if y is not None:
        y = check_tensor(y, "y", ndim=2)
        if y.shape[1] != x.shape[1]:
            raise ValueError(
                f"x and y must have the same number of columns, got x {tuple(x.shape)} and "
                f"y {tuple(y.shape)}"
            )
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    if _is_lorentz_fast_path(distance_fn, x, y):
        return _pairwise_lorentz(distance_fn.curvature, x, y, chunk_size)
    if y is None:
        return _pairwise_symmetric(distance_fn, x, chunk_size)
    return _pairwise_rectangular(distance_fn, x, y, chunk_size)


def lorentz_to_poincare(x: Tensor, *, curvature: float = 1.0) -> Tensor:
    r"""Map Lorentz points to the Poincaré ball of the same curvature.

    .. math:: p = \frac{x_s}{1 + \sqrt{c}\, x_0}, \qquad x_0 = \sqrt{1/c + |x_s|^2},

    so that ``geoopt.PoincareBall(c).dist(p(x), p(y)) == lorentz_distance(x, y, curvature=c)``
    and ``|p| < 1 / sqrt(c)``. geoopt's ``lorentz.math.lorentz_to_poincare(x, k)`` maps to the
    *unit* ball whatever ``k`` is; this function equals it divided by ``sqrt(c)``.

    Parameters
    ----------
    x : Tensor, shape (..., dim + 1)
        Points on the hyperboloid (only ``x[..., 1:]`` is read).
    curvature : float, default 1.0

    Returns
    -------
    Tensor, shape (..., dim)

    Notes
    -----
    In float64 points beyond radius about ``37 / sqrt(c)`` land on the boundary sphere
    (``sqrt(c)|p|`` rounds to 1); keep such embeddings in the Lorentz model.
    """
    c = check_curvature(curvature)
    x = _check_lorentz_points(x, "x")
    sqrt_c = math.sqrt(c)
    spatial = x[..., 1:]
    scaled_norm = _norm(spatial, keepdim=True) * sqrt_c
    time = torch.hypot(torch.ones_like(scaled_norm), scaled_norm)  # sqrt(c) * x_0
    return spatial / (1.0 + time)


def poincare_to_lorentz(p: Tensor, *, curvature: float = 1.0) -> Tensor:
    r"""Map points of the Poincaré ball of curvature ``-c`` to the Lorentz model.

    .. math::

        x_s = \frac{2 p}{1 - c |p|^2}, \qquad
        x_0 = \frac{1 + c |p|^2}{\sqrt{c}\,(1 - c |p|^2)},

    the inverse of :func:`lorentz_to_poincare`. geoopt's ``poincare_to_lorentz`` assumes the
    unit ball and adds ``1e-6`` to the denominator; this one is exact.

    Parameters
    ----------
    p : Tensor, shape (..., dim)
        Points with ``|p| < 1 / sqrt(c)``.
    curvature : float, default 1.0

    Returns
    -------
    Tensor, shape (..., dim + 1)

    Raises
    ------
    ValueError
        If a point of ``p`` is not finite or not strictly inside the ball.
    """
    c = check_curvature(curvature)
    p = check_float_tensor(p, "p")
    if p.dim() < 1 or p.shape[-1] < 1:
        raise ValueError(f"p must have shape (..., dim) with dim >= 1, got {tuple(p.shape)}")
    scaled_sq_norm = (p * p).sum(dim=-1, keepdim=True) * c
    if not bool((scaled_sq_norm < 1.0).all()):
        raise ValueError(
            "p must lie strictly inside the Poincare ball of radius 1/sqrt(curvature) "
            f"= {1.0 / math.sqrt(c):.6g} and be finite"
        )
    denominator = 1.0 - scaled_sq_norm
    time = (1.0 + scaled_sq_norm) / (math.sqrt(c) * denominator)
    return torch.cat((time, 2.0 * p / denominator), dim=-1)


def expmap0(v: Tensor, *, curvature: float = 1.0) -> Tensor:
    r"""Exponential map at the origin, from spatial tangent vectors to Lorentz points.

    The tangent space at the origin is ``{(0, v)}``; ``v`` is given without the zero time
    component. With :math:`z = \sqrt{c}\,|v|`:

    .. math:: \exp_0(v) = \Bigl(\frac{\cosh z}{\sqrt{c}},\ \frac{\sinh z}{z}\, v\Bigr),

    so ``hyperbolic_radius(expmap0(v)) == |v|``. Equals
    ``lorentz(c).expmap0(torch.cat((zeros, v), -1))`` but needs no padding, is exact for
    small ``|v|`` (geoopt clamps the tangent norm at ``1e-4``) and has an exact Jacobian
    (the identity) at ``v = 0``.

    Parameters
    ----------
    v : Tensor, shape (..., dim)
    curvature : float, default 1.0

    Returns
    -------
    Tensor, shape (..., dim + 1)
        Finite in float64 for ``|v|`` up to about ``710 / sqrt(c)`` (where ``sinh``
        overflows).
    """
    c = check_curvature(curvature)
    v = check_float_tensor(v, "v")
    if v.dim() < 1 or v.shape[-1] < 1:
        raise ValueError(f"v must have shape (..., dim) with dim >= 1, got {tuple(v.shape)}")
    sqrt_c = math.sqrt(c)
    z = _norm(v, keepdim=True) * sqrt_c
    return torch.cat((torch.cosh(z) / sqrt_c, v * _sinhc(z)), dim=-1)


def logmap0(x: Tensor, *, curvature: float = 1.0) -> Tensor:
    r"""Logarithmic map at the origin, from Lorentz points to spatial tangent vectors.

    The inverse of :func:`expmap0`: with :math:`z = \sqrt{c}\,|x_s|`,
    :math:`\log_0(x) = \frac{\operatorname{asinh} z}{z}\, x_s`, a vector of length
    ``hyperbolic_radius(x)`` pointing along ``x_s``.

    Parameters
    ----------
    x : Tensor, shape (..., dim + 1)
        Points on the hyperboloid (only ``x[..., 1:]`` is read).
    curvature : float, default 1.0

    Returns
    -------
    Tensor, shape (..., dim)
    """
    c = check_curvature(curvature)
    x = _check_lorentz_points(x, "x")
    spatial = x[..., 1:]
    z = _norm(spatial, keepdim=True) * math.sqrt(c)
    return spatial * _asinhc(z)


def hyperbolic_radius(x: Tensor, *, curvature: float = 1.0) -> Tensor:
    r"""Geodesic distance from the origin, :math:`\operatorname{asinh}(\sqrt{c}|x_s|)/\sqrt{c}`.

    Accurate at every radius (geoopt's ``dist0`` uses ``arcosh(x_0)``, which loses half the
    digits near the origin).

    Parameters
    ----------
    x : Tensor, shape (..., dim + 1)
        Points on the hyperboloid (only ``x[..., 1:]`` is read).
    curvature : float, default 1.0

    Returns
    -------
    Tensor, shape (...)
    """
    c = check_curvature(curvature)
    x = _check_lorentz_points(x, "x")
    sqrt_c = math.sqrt(c)
    return torch.asinh(_norm(x[..., 1:]) * sqrt_c) / sqrt_c


# ----------------------------------------------------------------------------------------------
# The distance on the unit hyperboloid (curvature -1), from spatial coordinates
# ----------------------------------------------------------------------------------------------
#
# Layout. The kernels hold the spatial coordinates of points of leading shape S as one
# coordinate-first (n, *S) tensor, so that every step is an elementwise op on whole (*S) or
# (n, *S) blocks. torch is several times slower on a trailing dimension of size 2 or 3 (the
# usual embedding dims), and slower still reducing over one. Sums over the coordinates are
# written out as adds in a fixed order, and only operations whose vectorized and scalar loops
# round alike are used per pair (+ - * /, sqrt, addcmul, minimum, clamp, where, log1p; not
# torch.hypot, whose two loops differ in the last bit): a pair's result is then the same bits
# whatever the shape of the batch it is computed in, which makes pairwise_distances
# independent of the chunk size and lorentz_distance independent of how inputs broadcast.


class _PointParts(NamedTuple):
    """Per-point pieces of unit-hyperboloid points with spatial coordinates ``coords``."""

    coords: Tensor  # (n, *S): the spatial coordinates, coordinate first
    norm: Tensor  # (*S): |a| = sinh r, raised to `tiny` (see _point_parts)
    time: Tensor  # a_0 = sqrt(1 + |a|^2) = cosh r
    exp_half: Tensor  # sqrt(a_0 + |a|) = exp(r / 2)
    exp_minus_half: Tensor  # exp(-r / 2)
    sqrt_twice_norm: Tensor  # sqrt(2 |a|)

    def select(self, index: tuple) -> _PointParts:
        """The parts of the points at ``index`` (slices and None over the leading dims)."""
        if not index:
            return self
        return _PointParts(self.coords[(slice(None), *index)], *(t[index] for t in self[1:]))


def _point_parts(coords: Tensor) -> _PointParts:
    """:class:`_PointParts` of the coordinate-first spatial coordinates ``coords`` (n, *S)."""
    squared_norm = _sum_coordinates(coords * coords)
    # The floor keeps |a| + |b| and sqrt(2|a|) sqrt(2|b|) above 0. Where it acts the point is
    # the origin (or far below the supported scales), and the raised norm then only ever
    # divides an exact 0 or multiplies a zero vector.
    norm = squared_norm.sqrt().clamp_min_(torch.finfo(coords.dtype).tiny)
    time = squared_norm.add_(1.0).sqrt_()  # not torch.hypot (see the layout note)
    exp_half = (time + norm).sqrt_()
    return _PointParts(
        coords=coords,
        norm=norm,
        time=time,
        exp_half=exp_half,
        exp_minus_half=exp_half.reciprocal(),
        sqrt_twice_norm=(norm + norm).sqrt_(),
    )


def _pair_terms(pa: _PointParts, pb: _PointParts) -> tuple[Tensor, Tensor]:
    r"""``g = |a| - |b|`` and ``sinh^2(D / 2)`` for every pair, shape ``S``.

    .. math::

        \sinh^2\frac{D}{2} = \sinh^2\frac{r_1 - r_2}{2} + |a|\,|b|\,\sin^2\frac{\theta}{2}.

    Radial term. With :math:`e = a - b`, :math:`|a| - |b| = e \cdot (a + b) / (|a| + |b|)`
    (accurate when :math:`a \approx b`, where :math:`e` is exact), and
    :math:`\sinh\frac{r_1 - r_2}{2} = (|a| - |b|) / (2\cosh\frac{r_1 + r_2}{2})` with
    :math:`2\cosh\frac{r_1 + r_2}{2} = e^{r_1/2} e^{r_2/2} + e^{-r_1/2} e^{-r_2/2}`, a sum of
    positive per-point factors.

    Angular term. :math:`\sqrt{|a||b|}\sin\frac{\theta}{2} = |w| / (2\sqrt{|a||b|})` with
    :math:`w = |b| a - |a| b`, which vanishes as :math:`a \to b`. Expanded around the point
    of smaller norm (say :math:`b`), :math:`w = |b| e - (|a| - |b|) b`: every term is of the
    size of the result when one point is near the origin, and of size :math:`|b||e|` when the
    points are close. It is 0 when either point is the origin (the angle is undefined and the
    term vanishes).
    """
    e = pa.coords - pb.coords
    norm_gap = _sum_coordinates((pa.coords + pb.coords).mul_(e))
    norm_gap.div_(pa.norm + pb.norm)
    cosh_mean = torch.addcmul(pa.exp_minus_half * pb.exp_minus_half, pa.exp_half, pb.exp_half)
    half_chord_sq = norm_gap / cosh_mean  # sinh((r1 - r2) / 2)
    half_chord_sq.mul_(half_chord_sq)
    # w / (2 sqrt(|a||b|)) = ratio e - coefficient p with p the point of smaller norm. The
    # sign of |a| - |b| says which one that is; the coefficient is split by sign (exactly)
    # into the part that multiplies b and the part that multiplies a, so no per-coordinate
    # select is needed. Where the sign and the norms disagree the norms are equal to
    # rounding, and either expansion is accurate.
    twice_sqrt_norms = pa.sqrt_twice_norm * pb.sqrt_twice_norm  # 2 sqrt(|a||b|)
    ratio = torch.minimum(pa.norm, pb.norm).div_(twice_sqrt_norms)
    coefficient_b = norm_gap / twice_sqrt_norms
    coefficient_a = coefficient_b.clamp_max(0.0)
    coefficient_b.clamp_min_(0.0)
    angular = torch.addcmul(e.mul_(ratio), coefficient_b, pb.coords, value=-1.0)
    angular.addcmul_(coefficient_a, pa.coords, value=-1.0)
    for angular_k in angular.unbind(0):  # the squares are added in coordinate order
        half_chord_sq.addcmul_(angular_k, angular_k)
    return norm_gap, half_chord_sq


def _distance_from(
    half_chord_sq: Tensor, sqrt_c: float, *, out: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``D / sqrt(c)``, ``h = sinh(D / 2)`` and ``cosh(D / 2) + 1``, from ``h^2``."""
    sinh_half = half_chord_sq.sqrt()
    cosh_half_plus_one = (half_chord_sq + 1.0).sqrt_().add_(1.0)
    # D = 2 asinh(h) = 2 log1p(h + h^2 / (1 + sqrt(1 + h^2))): no cancellation for h >= 0,
    # within an ulp of torch.asinh, which is a much slower scalar loop on CPU.
    distance = torch.addcdiv(sinh_half, half_chord_sq, cosh_half_plus_one).log1p_()
    # Times 2 / sqrt(c) with one rounding: an exact doubling when c = 1.
    if out is None:
        distance = distance.mul_(2.0) if sqrt_c == 1.0 else distance.div_(0.5 * sqrt_c)
    elif sqrt_c == 1.0:
        distance = torch.mul(distance, 2.0, out=out)
    else:
        distance = torch.div(distance, 0.5 * sqrt_c, out=out)
    return distance, sinh_half, cosh_half_plus_one


def _sinh_distance(sinh_half: Tensor, cosh_half_plus_one: Tensor) -> Tensor:
    """``sinh D = 2 sinh(D / 2) cosh(D / 2)``."""
    return (cosh_half_plus_one - 1.0).mul_(sinh_half).mul_(2.0)


def _gradient_terms(
    pa: _PointParts, pb: _PointParts, norm_gap: Tensor, sinh_distance: Tensor, grad: Tensor
) -> Tensor:
    """``grad * (b_0 a - a_0 b) / sinh D`` for every pair, shape ``(n, *S)``.

    With ``cosh D = a_0 b_0 - a.b``: ``dD/da = (b_0 a - a_0 b) / (a_0 sinh D)`` and
    ``dD/db = -(b_0 a - a_0 b) / (b_0 sinh D)``. ``b_0 a - a_0 b`` vanishes as ``a -> b``;
    it is formed from ``e = a - b`` and ``a_0 - b_0 = (|a| - |b|)(|a| + |b|) / (a_0 + b_0)``,
    expanded around the point ``p`` of smaller norm (so no term is much larger than the
    result): ``b_0 a - a_0 b = p_0 e - (a_0 - b_0) p``.
    """
    time_gap_b = (pa.norm + pb.norm).mul_(norm_gap).div_(pa.time + pb.time)
    time_gap_a = time_gap_b.clamp_max(0.0)  # split by sign as in _pair_terms
    time_gap_b.clamp_min_(0.0)
    terms = (pa.coords - pb.coords).mul_(torch.minimum(pa.time, pb.time))
    terms.addcmul_(time_gap_b, pb.coords, value=-1.0).addcmul_(time_gap_a, pa.coords, value=-1.0)
    # At D = 0 the distance has no gradient: use the subgradient 0 (grad / inf gives 0 too
    # where sinh D overflows, two points both beyond radius ~355).
    scale = torch.where(sinh_distance > 0, grad / sinh_distance, 0.0)
    return terms.mul_(scale)


class _LorentzDistanceFunction(torch.autograd.Function):
    """Lorentz distance between broadcasting ``(..., n)`` spatial coordinates ``x``, ``y``.

    Returns ``D(sqrt(c) x, sqrt(c) y) / sqrt(c)``, ``D`` the unit-hyperboloid distance. A
    custom function because the accurate forward formula is built from pieces (norms, the
    angle between the points) that are not differentiable at the origin or at ``x = y`` even
    where the distance is; autograd through them would give NaN or wrong gradients there.
    The analytic gradient has a simple stable form instead. Large broadcasts are computed in
    blocks of about ``_tile_pairs`` pairs (the same bits). Saves the per-point parts and
    three per-pair tensors.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, sqrt_c: float) -> Tensor:
        rank = max(x.dim(), y.dim())
        pa = _point_parts(_coordinates_first(x, rank, sqrt_c))
        pb = _point_parts(_coordinates_first(y, rank, sqrt_c))
        shape = tuple(p if q == 1 else q for p, q in zip(pa.norm.shape, pb.norm.shape, strict=True))
        blocks = list(_blocks(shape, _tile_pairs(x)))
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        if len(blocks) == 1:
            norm_gap, half_chord_sq = _pair_terms(pa, pb)
            distance, sinh_half, cosh_half_plus_one = _distance_from(half_chord_sq, sqrt_c)
            pair_tensors = (norm_gap, sinh_half, cosh_half_plus_one)
        else:
            distance = pa.norm.new_empty(shape)
            pair_tensors = tuple(pa.norm.new_empty(shape) for _ in range(3 if needs_grad else 0))
            for block in blocks:
                block_a = pa.select(_block_of(pa.norm.shape, block))
                block_b = pb.select(_block_of(pb.norm.shape, block))
                norm_gap, half_chord_sq = _pair_terms(block_a, block_b)
                _, sinh_half, cosh_half_plus_one = _distance_from(
                    half_chord_sq, sqrt_c, out=distance[block]
                )
                for target, value in zip(
                    pair_tensors, (norm_gap, sinh_half, cosh_half_plus_one), strict=False
                ):
                    target[block] = value
        if needs_grad:
            ctx.save_for_backward(*pa, *pb, *pair_tensors)
            ctx.shapes = (x.shape, y.shape)
            ctx.blocks = blocks
        return distance

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        saved = ctx.saved_tensors
        pa, pb = _PointParts(*saved[:6]), _PointParts(*saved[6:12])
        norm_gap, sinh_half, cosh_half_plus_one = saved[12:]
        # d/dx of D(sqrt(c) x, .) / sqrt(c) is dD/da: the factors sqrt(c) cancel. Sums over
        # the broadcast dimensions come first, then the division by the per-point time.
        needs_a, needs_b = ctx.needs_input_grad[:2]
        single = len(ctx.blocks) == 1
        grad_a = None if single or not needs_a else torch.zeros_like(pa.coords)
        grad_b = None if single or not needs_b else torch.zeros_like(pb.coords)
        for block in ctx.blocks:
            index_a = _block_of(pa.norm.shape, block)
            index_b = _block_of(pb.norm.shape, block)
            block_a, block_b = pa.select(index_a), pb.select(index_b)
            sinh_distance = _sinh_distance(sinh_half[block], cosh_half_plus_one[block])
            terms = _gradient_terms(block_a, block_b, norm_gap[block], sinh_distance, grad[block])
            if needs_a:
                update_a = _sum_to_shape(terms, block_a.coords.shape) / block_a.time
                if single:
                    grad_a = update_a
                else:
                    grad_a[(slice(None), *index_a)] += update_a
            if needs_b:
                update_b = _sum_to_shape(terms, block_b.coords.shape) / block_b.time.neg()
                if single:
                    grad_b = update_b
                else:
                    grad_b[(slice(None), *index_b)] += update_b
        grad_x = grad_a.movedim(0, -1).reshape(ctx.shapes[0]) if needs_a else None
        grad_y = grad_b.movedim(0, -1).reshape(ctx.shapes[1]) if needs_b else None
        return grad_x, grad_y, None


def _blocks(shape: tuple[int, ...], tile_pairs: int):
    """Index tuples (slices over the leading dims) of blocks of about ``tile_pairs`` entries
    covering ``shape``; the single block ``()`` when it is small."""
    if len(shape) == 0 or math.prod(shape) <= 4 * tile_pairs:
        yield ()
        return
    inner = math.prod(shape[1:])
    step = max(1, tile_pairs // max(inner, 1))
    for start in range(0, shape[0], step):
        head = slice(start, min(start + step, shape[0]))
        if inner > 4 * tile_pairs:
            for rest in _blocks(shape[1:], tile_pairs):
                yield (head, *rest)
        else:
            yield (head,)


def _block_of(part_shape: torch.Size, block: tuple) -> tuple:
    """The index of ``block`` in a tensor of ``part_shape`` that broadcasts to the blocks'."""
    pairs = zip(part_shape, block, strict=False)  # block covers the leading dims only
    return tuple(slice(None) if size == 1 else part for size, part in pairs)


def _coordinates_first(x: Tensor, rank: int, sqrt_c: float) -> Tensor:
    """``sqrt(c) x`` (..., n) as an (n, 1, ..., 1, ...) tensor of ``rank`` dims."""
    if x.dim() < rank:
        x = x[(None,) * (rank - x.dim())]
    x = x.movedim(-1, 0)
    if x.numel() > 4096:  # layout does not change the bits, only the speed of large blocks
        x = x.contiguous()
    return x * sqrt_c if sqrt_c != 1.0 else x


def _sum_to_shape(terms: Tensor, shape: torch.Size) -> Tensor:
    """``terms`` summed over the dimensions along which ``shape`` broadcasts."""
    return terms if terms.shape == shape else terms.sum_to_size(shape)


def _sum_coordinates(terms: Tensor) -> Tensor:
    """``terms[0] + terms[1] + ...`` in that order, as a new tensor (see the layout note)."""
    first, *rest = terms.unbind(0)
    if not rest:
        return first.clone()
    total = first + rest[0]
    for term in rest[1:]:
        total += term
    return total


# Pairs per block or tile on the CPU: each temporary is then at most 512 KiB in float64, so a
# tile's working set stays in cache (and is reused by the allocator). On an accelerator each op
# is a kernel launch, so tiles are made much larger (about 128 MiB per float64 temporary).
_TILE_PAIRS = 1 << 16
_ACCELERATOR_TILE_PAIRS = 1 << 24


def _tile_pairs(tensor: Tensor) -> int:
    return _TILE_PAIRS if tensor.device.type == "cpu" else _ACCELERATOR_TILE_PAIRS


class _PairwiseLorentzDistances(torch.autograd.Function):
    """``(N, M)`` Lorentz distances between the rows of ``x`` and of ``y``, ``(N|M, n)``.

    Computed tile by tile with the kernels of :class:`_LorentzDistanceFunction` (the same
    bits). It saves only the per-point parts for the backward pass, which recomputes each
    tile's pair terms, so the autograd graph holds no ``(N, M)`` intermediates. ``y`` None:
    the symmetric matrix of ``x``, each entry computed once as ``(x_i, x_j)`` with ``i < j``
    and mirrored, the diagonal exactly 0.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor | None, sqrt_c: float, max_rows: int) -> Tensor:
        symmetric = y is None
        pa = _point_parts(_coordinates_first(x, 2, sqrt_c).contiguous())
        pb = pa if symmetric else _point_parts(_coordinates_first(y, 2, sqrt_c).contiguous())
        out = pa.norm.new_empty((pa.norm.shape[0], pb.norm.shape[0]))
        tile_pairs = _tile_pairs(x)
        for rows, cols, diagonal in _tiles(out.shape, symmetric, max_rows, tile_pairs):
            _, half_chord_sq = _pair_terms(pa.select((rows, None)), pb.select((None, cols)))
            if diagonal:  # keep i < j, mirror it, and leave the diagonal 0
                distance = _distance_from(half_chord_sq, sqrt_c)[0].triu_(1)
                torch.add(distance, distance.T, out=out[rows, cols])
            else:
                distance = _distance_from(half_chord_sq, sqrt_c, out=out[rows, cols])[0]
                if symmetric:
                    out[cols, rows] = distance.T
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ctx.save_for_backward(*pa, *(() if symmetric else pb))
            ctx.symmetric, ctx.max_rows, ctx.tile_pairs = symmetric, max_rows, tile_pairs
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        saved = ctx.saved_tensors
        pa = _PointParts(*saved[:6])
        pb = pa if ctx.symmetric else _PointParts(*saved[6:])
        needs_a, needs_b = ctx.needs_input_grad[:2]
        grad_a = torch.zeros_like(pa.coords)
        grad_b = grad_a if ctx.symmetric else torch.zeros_like(pb.coords)
        tiles = _tiles(grad.shape, ctx.symmetric, ctx.max_rows, ctx.tile_pairs)
        for rows, cols, diagonal in tiles:
            weight = grad[rows, cols]
            if ctx.symmetric:  # entry (i, j), i < j, is also entry (j, i)
                weight = weight + grad[cols, rows].T
                if diagonal:
                    weight.triu_(1)
            row_parts, col_parts = pa.select((rows, None)), pb.select((None, cols))
            norm_gap, half_chord_sq = _pair_terms(row_parts, col_parts)
            sinh_half = half_chord_sq.sqrt()
            sinh_distance = half_chord_sq.add_(1.0).sqrt_().mul_(sinh_half).mul_(2.0)
            terms = _gradient_terms(row_parts, col_parts, norm_gap, sinh_distance, weight)
            if needs_a or ctx.symmetric:
                grad_a[:, rows] += terms.sum(dim=2).div_(pa.time[rows])
            if needs_b or ctx.symmetric:
                grad_b[:, cols] -= terms.sum(dim=1).div_(pb.time[cols])
        grad_x = grad_a.T if needs_a else None
        grad_y = None if ctx.symmetric or not needs_b else grad_b.T
        return grad_x, grad_y, None, None


def _tiles(shape: tuple[int, int], symmetric: bool, max_rows: int, tile_pairs: int):
    """``(rows, cols, diagonal)`` slices of about ``tile_pairs`` pairs covering a matrix.

    Symmetric: the upper triangle, by row bands; each band starts with its diagonal square
    (``diagonal`` True) and goes on to the right edge.
    """
    n_rows, n_cols = shape
    if symmetric:
        band = max(1, min(max_rows, math.isqrt(tile_pairs)))
        for start in range(0, n_rows, band):
            stop = min(start + band, n_rows)
            yield slice(start, stop), slice(start, stop), True
            width = max(1, tile_pairs // (stop - start))
            for column in range(stop, n_cols, width):
                yield slice(start, stop), slice(column, min(column + width, n_cols)), False
        return
    width = max(1, min(n_cols, tile_pairs))
    band = max(1, min(max_rows, tile_pairs // width))
    for start in range(0, n_rows, band):
        for column in range(0, n_cols, width):
            rows = slice(start, min(start + band, n_rows))
            yield rows, slice(column, min(column + width, n_cols)), False


# ----------------------------------------------------------------------------------------------
# Pairwise matrices
# ----------------------------------------------------------------------------------------------


def _is_lorentz_fast_path(distance_fn, x: Tensor, y: Tensor | None) -> bool:
    """A plain LorentzDistance on valid points: computed without calling it (same bits)."""
    return (
        type(distance_fn) is LorentzDistance
        and x.is_floating_point()
        and x.shape[1] >= 2
        and (y is None or y.is_floating_point())
    )


def _pairwise_lorentz(curvature: float, x: Tensor, y: Tensor | None, chunk_size: int) -> Tensor:
    dtype = x.dtype if y is None else torch.promote_types(x.dtype, y.dtype)
    n, m = x.shape[0], x.shape[0] if y is None else y.shape[0]
    if n == 0 or m == 0:
        return x.new_zeros((n, m), dtype=dtype)
    return _PairwiseLorentzDistances.apply(
        x[:, 1:].to(dtype),
        None if y is None else y[:, 1:].to(dtype),
        math.sqrt(curvature),
        chunk_size,
    )


def _pairwise_rectangular(distance_fn, x: Tensor, y: Tensor, chunk_size: int) -> Tensor:
    n, m = x.shape[0], y.shape[0]
    if n == 0 or m == 0:
        return x.new_zeros((n, m))
    blocks: list[Tensor] = []
    out: Tensor | None = None
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block = _call_distance_fn(distance_fn, x[start:stop], y)
        if start == 0 and not block.requires_grad:
            out = block.new_empty((n, m))
        if out is None:
            blocks.append(block)
        else:
            out[start:stop] = block
    return out if out is not None else torch.cat(blocks, dim=0)


def _pairwise_symmetric(distance_fn, x: Tensor, chunk_size: int) -> Tensor:
    n = x.shape[0]
    if n == 0:
        return x.new_zeros((0, 0))
    # Row band [start, stop) computes only columns >= start. In the diagonal square the
    # strict upper triangle (i < j) is kept and mirrored, so every entry is
    # distance_fn(x_i, x_j) with i < j whatever the chunk size, and the diagonal is exactly 0.
    bands: list[tuple[int, int, Tensor]] = []
    out: Tensor | None = None
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = stop - start
        block = _call_distance_fn(distance_fn, x[start:stop], x[start:])
        upper = block[:, :rows].triu(1)
        block = torch.cat((upper + upper.T, block[:, rows:]), dim=1)
        if start == 0 and not block.requires_grad:
            out = block.new_empty((n, n))
        if out is None:
            bands.append((start, stop, block))
        else:
            out[start:stop, start:] = block
            out[stop:, start:stop] = block[:, rows:].T
    if out is not None:
        return out
    full_rows = []
    for start, stop, block in bands:
        left = [
            earlier[:, start - earlier_start : stop - earlier_start].T
            for earlier_start, _, earlier in bands
            if earlier_start < start
        ]
        full_rows.append(torch.cat((*left, block), dim=1))
    return torch.cat(full_rows, dim=0)


def _call_distance_fn(distance_fn, rows: Tensor, columns: Tensor) -> Tensor:
    first, second = rows[:, None, :], columns[None, :, :]
    contract = "distance_fn must broadcast like geoopt.Manifold.dist"
    try:
        block = distance_fn(first, second)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(
            f"{contract}: called on point tensors of shapes {tuple(first.shape)} and "
            f"{tuple(second.shape)} it raised {type(err).__name__}: {err}"
        ) from err
    expected = (rows.shape[0], columns.shape[0])
    if not isinstance(block, Tensor) or tuple(block.shape) != expected:
        got = f"shape {tuple(block.shape)}" if isinstance(block, Tensor) else type(block).__name__
        raise ValueError(
            f"{contract}: called on point tensors of shapes {tuple(first.shape)} and "
            f"{tuple(second.shape)} it returned {got}, expected a tensor of shape {expected}"
        )
    return block


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def _norm(v: Tensor, *, keepdim: bool = False) -> Tensor:
    """Euclidean norm over the last dimension without overflow or underflow.

    ``torch.linalg.vector_norm`` squares the entries, so it returns inf above about 1e154 and
    0 below about 1e-162; expmap0 reaches 1e304 at |v| = 700. Dividing by the largest entry
    first keeps every square in range; the gradient is the norm's (0 at v = 0).
    """
    scale = v.abs().amax(dim=-1, keepdim=True)
    safe_scale = torch.where(scale > 0, scale, 1.0)
    norm = torch.linalg.vector_norm(v / safe_scale, dim=-1, keepdim=True) * safe_scale
    return norm if keepdim else norm.squeeze(-1)


def _sinhc(z: Tensor) -> Tensor:
    """sinh(z) / z for z >= 0, with the value 1 and an exact derivative at 0."""
    small = z < _SERIES_BELOW
    safe_z = torch.where(small, 1.0, z)
    z2 = z * z
    return torch.where(small, 1.0 + z2 / 6.0 * (1.0 + z2 / 20.0), torch.sinh(safe_z) / safe_z)


def _asinhc(z: Tensor) -> Tensor:
    """asinh(z) / z for z >= 0, with the value 1 and an exact derivative at 0."""
    small = z < _SERIES_BELOW
    safe_z = torch.where(small, 1.0, z)
    z2 = z * z
    return torch.where(small, 1.0 - z2 / 6.0 * (1.0 - 0.45 * z2), torch.asinh(safe_z) / safe_z)


def _check_lorentz_points(x, name: str) -> Tensor:
    x = check_float_tensor(x, name)
    if x.dim() < 1 or x.shape[-1] < 2:
        raise ValueError(
            f"{name} must hold Lorentz points of shape (..., dim + 1) with dim + 1 >= 2, got "
            f"shape {tuple(x.shape)}"
        )
    return x
