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
import numbers
from collections.abc import Callable

import geoopt
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

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
    c = _check_curvature(curvature)
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
    c = _check_curvature(curvature)
    x = _check_lorentz_points(x, "x")
    y = _check_lorentz_points(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x and y must have the same last dimension (dim + 1), got {x.shape[-1]} and "
            f"{y.shape[-1]}"
        )
    try:
        torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError as err:
        raise ValueError(
            f"x and y must broadcast against each other, got shapes {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        ) from err
    dtype = torch.promote_types(x.dtype, y.dtype)
    sqrt_c = math.sqrt(c)
    a = x[..., 1:].to(dtype) * sqrt_c
    b = y[..., 1:].to(dtype) * sqrt_c
    distance = _UnitLorentzDistance.apply(a, b) / sqrt_c
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
    >>> pairwise_distances(distance_fn, x)
    tensor([[0., 2.],
            [2., 0.]], dtype=torch.float64)
    """

    def __init__(self, curvature: float = 1.0) -> None:
        self.curvature = _check_curvature(curvature)
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

    Examples
    --------
    >>> points = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    >>> pairwise_distances(lambda a, b: (a - b).norm(dim=-1), points)
    tensor([[0., 5.],
            [5., 0.]])
    """
    if not callable(distance_fn):
        raise TypeError(f"distance_fn must be callable, got {type(distance_fn).__name__}")
    x = _check_matrix(x, "x")
    if y is not None:
        y = _check_matrix(y, "y")
        if y.shape[1] != x.shape[1]:
            raise ValueError(
                f"x and y must have the same number of columns, got x {tuple(x.shape)} and "
                f"y {tuple(y.shape)}"
            )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = int(chunk_size)
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
    c = _check_curvature(curvature)
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
    c = _check_curvature(curvature)
    p = _check_float_tensor(p, "p")
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
    c = _check_curvature(curvature)
    v = _check_float_tensor(v, "v")
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
    c = _check_curvature(curvature)
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
    c = _check_curvature(curvature)
    x = _check_lorentz_points(x, "x")
    sqrt_c = math.sqrt(c)
    return torch.asinh(_norm(x[..., 1:]) * sqrt_c) / sqrt_c


# ----------------------------------------------------------------------------------------------
# The distance on the unit hyperboloid (curvature -1), from spatial coordinates
# ----------------------------------------------------------------------------------------------


class _UnitLorentzDistance(torch.autograd.Function):
    """Distance between unit-hyperboloid points given by their spatial parts ``a``, ``b``.

    ``a`` and ``b`` broadcast against each other (per-point quantities are computed before
    broadcasting). A custom function because the accurate forward formula is built from
    pieces (norms, the angle between ``a`` and ``b``) that are not differentiable at the
    origin or at ``a = b`` even where the distance is; autograd through them would give NaN
    or wrong gradients there. The analytic gradient has a simple stable form instead.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        distance, norm_gap = _unit_distance(a, b)
        ctx.save_for_backward(a, b, distance, norm_gap)
        return distance

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, Tensor]:
        a, b, distance, norm_gap = ctx.saved_tensors
        # With a_0 = sqrt(1 + |a|^2): cosh D = a_0 b_0 - a.b, so
        #   dD/da = (b_0 a - a_0 b) / (a_0 sinh D),   dD/db = -(b_0 a - a_0 b) / (b_0 sinh D).
        # b_0 a - a_0 b vanishes as a -> b; write it through e = a - b and
        # a_0 - b_0 = (|a|^2 - |b|^2) / (a_0 + b_0), and expand around the point of smaller
        # norm so that no term is much larger than the result:
        #   b_0 a - a_0 b = b_0 e - (a_0 - b_0) b = a_0 e - (a_0 - b_0) a.
        norm_a, time_a, _, _ = _point_parts(a)
        norm_b, time_b, _, _ = _point_parts(b)
        time_gap = (norm_gap * (norm_a + norm_b) / (time_a + time_b)).unsqueeze(-1)
        a_is_larger = norm_a >= norm_b
        e_coefficient = torch.where(a_is_larger, time_b, time_a).unsqueeze(-1)
        smaller_point = torch.where(a_is_larger.unsqueeze(-1), b, a)
        numerator = torch.addcmul(e_coefficient * (a - b), time_gap, smaller_point, value=-1.0)
        # At D = 0 the distance has no gradient; return the subgradient 0 (also where
        # sinh D overflows, for two points both beyond radius ~355).
        sinh_d = torch.sinh(distance)
        usable = (distance > 0) & torch.isfinite(sinh_d)
        scale = torch.where(usable, grad_output / torch.where(usable, sinh_d, 1.0), 0.0)
        grad_a = numerator * (scale / time_a).unsqueeze(-1)
        grad_b = numerator * (-scale / time_b).unsqueeze(-1)
        # a and b may broadcast against each other: sum over the broadcast dimensions.
        return grad_a.sum_to_size(a.shape), grad_b.sum_to_size(b.shape)


def _point_parts(a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-point pieces of a unit-hyperboloid point with spatial part ``a`` (..., n).

    Returns ``|a| = sinh r``, ``a_0 = sqrt(1 + |a|^2) = cosh r``, ``sqrt(a_0 + |a|) =
    exp(r / 2)`` and ``sqrt(|a|)`` raised to at least ``sqrt(tiny)`` so that products of two
    of them never underflow to 0 (it only multiplies a zero vector when it is raised).
    """
    norm = torch.linalg.vector_norm(a, dim=-1)
    time = torch.sqrt(1.0 + norm * norm)  # not torch.hypot: see _unit_distance
    sqrt_exp_r = (time + norm).sqrt()
    sqrt_norm = norm.sqrt().clamp_min(math.sqrt(torch.finfo(a.dtype).tiny))
    return norm, time, sqrt_exp_r, sqrt_norm


def _unit_distance(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    r"""Forward formula: ``D = 2 asinh(hypot(sinh((r1 - r2)/2), sqrt(|a||b|) sin(theta/2)))``.

    Returns ``D`` and ``|a| - |b|`` (reused by the backward pass).

    Radial term. With :math:`e = a - b` and :math:`s = a + b`,
    :math:`|a| - |b| = e\cdot s / (|a| + |b|)` (accurate when :math:`a pprox b`, where
    :math:`e` is exact), and :math:`e^{r} = a_0 + |a|` (a sum of positives):
    :math:`2\sinhrac{r_1 - r_2}{2} = (|a| - |b|)\,(e^{(r_1 - r_2)/2} + e^{(r_2 - r_1)/2})
    / (a_0 + b_0)`.

    Angular term. :math:`2\sqrt{|a||b|}\,\sinrac{	heta}{2} = |w| / \sqrt{|a||b|}` with
    :math:`w = |b| a - |a| b`, which vanishes as :math:`a 	o b`; expanded around the point
    of smaller norm (say :math:`b`), :math:`w = |b| e - (|a| - |b|) b`, every term is of the
    size of the result when one point is near the origin, and of size :math:`|b||e|` when
    the points are close. It is 0 when either point is the origin (the angle is undefined
    and the term vanishes).
    """
    norm_a, time_a, sqrt_exp_r_a, sqrt_norm_a = _point_parts(a)
    norm_b, time_b, sqrt_exp_r_b, sqrt_norm_b = _point_parts(b)
    e = a - b
    # |a| + |b| = 0 only when a = b = 0, where e.s = 0 too: the clamp then gives 0 / tiny = 0.
    norm_gap = torch.linalg.vecdot(e, a + b) / (norm_a + norm_b).clamp_min(
        torch.finfo(a.dtype).tiny
    )
    twice_radial = (
        norm_gap * (sqrt_exp_r_a / sqrt_exp_r_b + sqrt_exp_r_b / sqrt_exp_r_a) / (time_a + time_b)
    )
    a_is_larger = norm_a >= norm_b
    ratio = torch.where(a_is_larger, sqrt_norm_b / sqrt_norm_a, sqrt_norm_a / sqrt_norm_b)
    coefficient = (norm_gap / (sqrt_norm_a * sqrt_norm_b)).unsqueeze(-1)
    smaller_point = torch.where(a_is_larger.unsqueeze(-1), b, a)
    w_over_sqrt = torch.addcmul(ratio.unsqueeze(-1) * e, coefficient, smaller_point, value=-1.0)
    twice_angular = torch.linalg.vector_norm(w_over_sqrt, dim=-1)
    # sqrt(p^2 + q^2) rather than torch.hypot: hypot's vectorized and scalar loops differ in
    # the last bit, which would make pairwise_distances depend on the chunk size. The squares
    # stay in range for the supported coordinates (|x_s| sqrt(c) within 1e-150 .. 1e150).
    half_chord = 0.5 * torch.sqrt(twice_radial * twice_radial + twice_angular * twice_angular)
    distance = 2.0 * torch.asinh(half_chord)
    return distance, norm_gap


# ----------------------------------------------------------------------------------------------
# Pairwise matrices
# ----------------------------------------------------------------------------------------------


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


def _check_curvature(curvature) -> float:
    if isinstance(curvature, Tensor) and curvature.numel() == 1:
        curvature = curvature.item()
    if isinstance(curvature, bool) or not isinstance(curvature, numbers.Real):
        raise TypeError(f"curvature must be a real number, got {type(curvature).__name__}")
    value = float(curvature)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"curvature must be a finite number > 0, got {curvature!r}")
    return value


def _check_float_tensor(tensor, name: str) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    return tensor


def _check_lorentz_points(x, name: str) -> Tensor:
    x = _check_float_tensor(x, name)
    if x.dim() < 1 or x.shape[-1] < 2:
        raise ValueError(
            f"{name} must hold Lorentz points of shape (..., dim + 1) with dim + 1 >= 2, got "
            f"shape {tuple(x.shape)}"
        )
    return x


def _check_matrix(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor (rows, D), got shape {tuple(x.shape)}")
    return x
