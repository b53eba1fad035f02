"""Tests for hyperloss.geometry.

Oracles: geoopt (Lorentz.dist, PoincareBall.dist, expmap0, lorentz.math conversions) where it is
accurate, an mpmath reference with enough digits to survive the cancellation in
arcosh(-<x, y>), plain double loops, scipy.spatial.distance.cdist, and gradcheck in float64.
"""

from __future__ import annotations

import math

import geoopt
import mpmath
import numpy as np
import pytest
import torch
from geoopt.manifolds.lorentz import math as lorentz_math
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from hyperloss import geometry
from hyperloss.geometry import (
    LorentzDistance,
    expmap0,
    hyperbolic_radius,
    logmap0,
    lorentz,
    lorentz_distance,
    lorentz_to_poincare,
    pairwise_distances,
    poincare_to_lorentz,
)

F64 = torch.float64
EPS64 = float(torch.finfo(F64).eps)  # 2.2e-16


# ----------------------------------------------------------------------------------------------
# References and point factories
# ----------------------------------------------------------------------------------------------


def mp_distance(x, y, curvature=1.0, digits=50):
    """High-precision reference distance between two float64 points.

    The spatial coordinates are taken as exact and the time coordinates as
    sqrt(1/c + |x_s|^2) (the functions under test read only x[..., 1:]). Two formulas are
    evaluated, arcosh(-c <x, y>) / sqrt(c) and the chord form
    2 / sqrt(c) * asinh(sqrt(c) / 2 * ||x - y||_L) with x_0 - y_0 = (|x_s|^2 - |y_s|^2) /
    (x_0 + y_0). They lose digits in different places (the first for close points, by about
    2 * radius / ln(10) + |log10(D^2)| digits; the second for far, radially separated points),
    so the working precision is doubled, starting at 2 * `digits`, until they agree to
    `digits` significant digits."""
    xs = [v if isinstance(v, mpmath.mpf) else float(v) for v in x[1:]]
    ys = [v if isinstance(v, mpmath.mpf) else float(v) for v in y[1:]]
    if xs == ys:
        return mpmath.mpf(0)
    dps = 2 * digits
    while True:
        with mpmath.workdps(dps):
            c = mpmath.mpf(curvature)
            a = [mpmath.mpf(v) for v in xs]
            b = [mpmath.mpf(v) for v in ys]
            norm_a2 = mpmath.fsum(v * v for v in a)
            norm_b2 = mpmath.fsum(v * v for v in b)
            x0 = mpmath.sqrt(1 / c + norm_a2)
            y0 = mpmath.sqrt(1 / c + norm_b2)
            cosh_d = c * (x0 * y0 - mpmath.fsum(p * q for p, q in zip(a, b, strict=True)))
            by_arcosh = mpmath.acosh(cosh_d) / mpmath.sqrt(c) if cosh_d > 1 else mpmath.mpf(0)
            time_gap = (norm_a2 - norm_b2) / (x0 + y0)
            chord2 = mpmath.fsum((p - q) ** 2 for p, q in zip(a, b, strict=True)) - time_gap**2
            by_chord = (
                2 * mpmath.asinh(mpmath.sqrt(c * chord2) / 2) / mpmath.sqrt(c)
                if chord2 > 0
                else mpmath.mpf(0)
            )
            if by_arcosh > 0 and abs(by_arcosh - by_chord) <= mpmath.mpf(10) ** -digits * by_arcosh:
                return by_arcosh
        dps *= 2
        assert dps < 10000, "mpmath reference did not converge"


def relative_errors(computed, x, y, curvature=1.0):
    errors = []
    for value, xi, yi in zip(computed.tolist(), x, y, strict=True):
        reference = mp_distance(xi, yi, curvature)
        errors.append(float(abs(mpmath.mpf(value) - reference) / reference))
    return np.array(errors)


def random_directions(n, dim, generator):
    u = torch.randn(n, dim, dtype=F64, generator=generator)
    return u / u.norm(dim=-1, keepdim=True)


def points_at_radius(radius, n, dim, generator, curvature=1.0, jitter=1.0):
    """Lorentz points at hyperbolic radius in [radius, radius + jitter), random directions."""
    r = radius + jitter * torch.rand(n, dtype=F64, generator=generator)
    return expmap0(r[:, None] * random_directions(n, dim, generator), curvature=curvature)


def with_time(spatial, curvature=1.0):
    """Put spatial coordinates on the hyperboloid (x_0 = sqrt(1/c + |x_s|^2))."""
    time = torch.sqrt(1.0 / curvature + (spatial * spatial).sum(-1, keepdim=True))
    return torch.cat((time, spatial), dim=-1)


# ----------------------------------------------------------------------------------------------
# lorentz() and LorentzDistance
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curvature", [1.0, 0.25, 4.0])
def test_lorentz_manifold_is_float64_with_k_one_over_c(curvature):
    manifold = lorentz(curvature)
    assert isinstance(manifold, geoopt.Lorentz)
    assert manifold.k.dtype == F64
    assert manifold.k.item() == pytest.approx(1.0 / curvature, rel=1e-15)
    assert not manifold.k.requires_grad
    point = manifold.random_normal(5, 3)
    assert point.dtype == F64
    inner = -(point[:, 0] ** 2) + (point[:, 1:] ** 2).sum(-1)
    torch.testing.assert_close(inner, torch.full((5,), -1.0 / curvature, dtype=F64))


def test_lorentz_distance_class_wraps_function():
    generator = torch.Generator().manual_seed(1)
    x = points_at_radius(1.0, 6, 3, generator, curvature=2.0)
    y = points_at_radius(2.0, 6, 3, generator, curvature=2.0)
    distance_fn = LorentzDistance(2.0)
    assert distance_fn.curvature == 2.0
    assert isinstance(distance_fn.manifold, geoopt.Lorentz)
    assert distance_fn.manifold.k.item() == 0.5
    assert repr(distance_fn) == "LorentzDistance(curvature=2.0)"
    assert distance_fn == LorentzDistance(2) and distance_fn != LorentzDistance(1.0)
    assert torch.equal(distance_fn(x, y), lorentz_distance(x, y, curvature=2.0))
    assert distance_fn(x, y, keepdim=True).shape == (6, 1)
    torch.testing.assert_close(distance_fn(x, y), distance_fn.manifold.dist(x, y))


# ----------------------------------------------------------------------------------------------
# lorentz_distance: values
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curvature", [1.0, 0.25, 4.0])
def test_distance_matches_geoopt_where_geoopt_is_accurate(curvature):
    # Moderate radius and separated points: geoopt's arcosh(-<x, y>/k) is accurate there.
    generator = torch.Generator().manual_seed(2)
    x = points_at_radius(0.0, 200, 4, generator, curvature, jitter=3.0)
    y = points_at_radius(0.0, 200, 4, generator, curvature, jitter=3.0)
    expected = lorentz(curvature).dist(x, y)
    keep = expected * math.sqrt(curvature) > 0.1
    assert keep.sum() > 150
    computed = lorentz_distance(x, y, curvature=curvature)
    torch.testing.assert_close(computed[keep], expected[keep], rtol=1e-10, atol=0.0)


@pytest.mark.parametrize("radius", [0.0, 5.0, 20.0, 30.0, 50.0])
def test_distance_matches_mpmath_for_separated_points(radius):
    generator = torch.Generator().manual_seed(3)
    x = points_at_radius(radius, 25, 3, generator)
    y = points_at_radius(radius, 25, 3, generator)
    errors = relative_errors(lorentz_distance(x, y), x, y)
    assert errors.max() <= 8 * EPS64, errors.max()  # measured: <= 2 ulp


@pytest.mark.parametrize("radius", [0.0, 1.0, 20.0, 30.0, 50.0])
@pytest.mark.parametrize("perturbation", [1e-3, 1e-8, 1e-13])
def test_distance_matches_mpmath_for_nearly_coincident_points(radius, perturbation):
    # y = x with every spatial coordinate scaled by (1 + perturbation * N(0, 1)).
    generator = torch.Generator().manual_seed(4)
    x = points_at_radius(radius, 12, 4, generator)
    noise = torch.randn(12, 4, dtype=F64, generator=generator)
    y = with_time(x[:, 1:] * (1 + perturbation * noise))
    errors = relative_errors(lorentz_distance(x, y), x, y)
    assert errors.max() <= 16 * EPS64, errors.max()  # measured: <= 4 ulp


@pytest.mark.parametrize("radius", [0.5, 20.0, 40.0])
@pytest.mark.parametrize("angle", [1e-3, 1e-8, 1e-13])
def test_distance_matches_mpmath_for_points_of_equal_norm(radius, angle):
    # y = x rotated by `angle` in one coordinate plane: |x_s| = |y_s| up to rounding, so the
    # sign of |x_s| - |y_s| (which picks the expansion point of the angular term) is noise.
    # Swapping two coordinates gives exactly equal norms.
    generator = torch.Generator().manual_seed(17)
    x = points_at_radius(radius, 12, 3, generator)
    cos, sin = math.cos(angle), math.sin(angle)
    rotated = x[:, 1:].clone()
    rotated[:, 0] = cos * x[:, 1] - sin * x[:, 2]
    rotated[:, 1] = sin * x[:, 1] + cos * x[:, 2]
    swapped = x[:, [0, 2, 1, 3]]
    for y in (with_time(rotated), swapped):
        errors = relative_errors(lorentz_distance(x, y), x, y)
        assert errors.max() <= 16 * EPS64, errors.max()  # measured: <= 3 ulp


@pytest.mark.parametrize("radius", [1.0, 20.0, 30.0])
@pytest.mark.parametrize("step", [1e-3, 1e-8])
def test_distance_for_radially_separated_nearby_points_far_out(radius, step):
    # The hard case: two points on one ray, `step` apart, at radius r. Their spatial difference
    # is ~cosh(r) * step while the angle between them is only the rounding of the inputs, so
    # the angular term is obtained by cancellation: relative error ~ eps * cosh(r) (2.7e-8 at
    # r = 20, 6e-4 at r = 30). The coordinates themselves cannot place a point at radius r
    # better than eps * sinh(r) in distance, so the absolute error must stay far below that.
    generator = torch.Generator().manual_seed(5)
    direction = random_directions(10, 3, generator)
    r = radius + torch.rand(10, dtype=F64, generator=generator)
    x = expmap0(r[:, None] * direction)
    y = expmap0((r + step)[:, None] * direction)
    computed = lorentz_distance(x, y)
    errors = relative_errors(computed, x, y)
    assert errors.max() <= 16 * EPS64 + 4 * EPS64 * math.cosh(radius + 1), errors.max()
    absolute = errors * computed.numpy()
    assert absolute.max() <= 1e-3 * EPS64 * math.sinh(radius + 1) + 16 * EPS64 * step


def test_distance_with_a_point_at_the_origin_and_tiny_or_huge_norms():
    generator = torch.Generator().manual_seed(6)
    origin = with_time(torch.zeros(4, 3, dtype=F64))
    tiny = with_time(1e-100 * torch.randn(4, 3, dtype=F64, generator=generator))
    huge = with_time(1e100 * random_directions(4, 3, generator))  # radius ~ 231
    for x, y in [(origin, huge), (huge, origin), (tiny, huge), (origin, tiny)]:
        errors = relative_errors(lorentz_distance(x, y), x, y)
        assert errors.max() <= 8 * EPS64, errors.max()
    assert torch.equal(lorentz_distance(origin, origin), torch.zeros(4, dtype=F64))


@pytest.mark.parametrize("curvature", [0.25, 4.0])
def test_distance_with_curvature_matches_mpmath(curvature):
    generator = torch.Generator().manual_seed(7)
    x = points_at_radius(10.0, 10, 3, generator, curvature)
    y = with_time(x[:, 1:] * (1 + 1e-9 * torch.randn(10, 3, dtype=F64, generator=generator)))
    z = points_at_radius(10.0, 10, 3, generator, curvature)
    for first, second in [(x, y), (x, z)]:
        computed = lorentz_distance(first, second, curvature=curvature)
        errors = relative_errors(computed, first, second, curvature)
        assert errors.max() <= 16 * EPS64, errors.max()


def test_distance_reads_only_spatial_coordinates():
    generator = torch.Generator().manual_seed(8)
    x = points_at_radius(2.0, 5, 3, generator)
    y = points_at_radius(2.0, 5, 3, generator)
    drifted = x.clone()
    drifted[:, 0] *= 1.5  # off the hyperboloid: same result as geoopt's projx(x)
    assert torch.equal(lorentz_distance(drifted, y), lorentz_distance(x, y))


def test_distance_broadcasts_and_keepdim():
    generator = torch.Generator().manual_seed(9)
    x = points_at_radius(1.0, 3, 2, generator)
    y = points_at_radius(1.0, 5, 2, generator)
    table = lorentz_distance(x[:, None, :], y[None, :, :])
    assert table.shape == (3, 5)
    loop = torch.stack([torch.stack([lorentz_distance(xi, yj) for yj in y]) for xi in x])
    torch.testing.assert_close(table, loop, rtol=0.0, atol=0.0)
    assert lorentz_distance(x[:, None, :], y, keepdim=True).shape == (3, 5, 1)
    assert lorentz_distance(x[0], x[0]).shape == ()


@pytest.mark.parametrize(
    "shapes", [((7, 1), (1, 9)), ((3, 5, 1), (1, 4)), ((6, 4), (6, 4)), ((2, 3, 1, 5), (3, 7, 1))]
)
def test_distance_in_blocks_has_the_same_bits_and_gradients(shapes, monkeypatch):
    # Large broadcasts are computed block by block; shrinking the block size makes these small
    # ones take that path. Values must not change at all, gradients only by summation order.
    generator = torch.Generator().manual_seed(18)
    x = expmap0(2.0 * torch.randn(*shapes[0], 3, dtype=F64, generator=generator))
    y = expmap0(2.0 * torch.randn(*shapes[1], 3, dtype=F64, generator=generator))
    y[..., :2, :] = with_time(torch.zeros(3, dtype=F64))  # some points at the origin
    reference, reference_grads = _value_and_grads(lambda a, b: lorentz_distance(a, b), x, y)
    for tile_pairs in (1, 2, 5):
        monkeypatch.setattr(geometry, "_TILE_PAIRS", tile_pairs)
        value, grads = _value_and_grads(lambda a, b: lorentz_distance(a, b), x, y)
        assert torch.equal(value, reference)
        for grad, reference_grad in zip(grads, reference_grads, strict=True):
            torch.testing.assert_close(grad, reference_grad, rtol=1e-13, atol=1e-13)


def _value_and_grads(fn, *inputs):
    leaves = [t.clone().requires_grad_() for t in inputs]
    value = fn(*leaves)
    weights = torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype).reshape(value.shape)
    grads = torch.autograd.grad((value * weights).sum(), leaves)
    return value.detach(), grads


def test_distance_float32_inputs():
    generator = torch.Generator().manual_seed(10)
    x = points_at_radius(0.0, 50, 3, generator, jitter=4.0)
    y = points_at_radius(0.0, 50, 3, generator, jitter=4.0)
    reference = lorentz_distance(x, y)
    x32 = x.float().requires_grad_()
    y32 = y.float().requires_grad_()
    computed = lorentz_distance(x32, y32)
    assert computed.dtype == torch.float32
    torch.testing.assert_close(computed.double(), reference, rtol=1e-5, atol=1e-6)
    computed.sum().backward()
    assert torch.isfinite(x32.grad).all() and x32.grad.dtype == torch.float32
    # Mixed precision promotes, as torch arithmetic does.
    assert lorentz_distance(x32.detach(), y).dtype == F64
    # Coincident float32 points: exact zero, finite zero gradient.
    same = x32.detach().clone().requires_grad_()
    value = lorentz_distance(same, x32.detach())
    assert torch.equal(value, torch.zeros(50))
    value.sum().backward()
    assert torch.equal(same.grad, torch.zeros_like(same))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    radius=st.floats(0.0, 12.0),
    curvature=st.sampled_from([0.3, 1.0, 3.0]),
)
def test_distance_is_a_rotation_invariant_metric(seed, radius, curvature):
    generator = torch.Generator().manual_seed(seed)
    x, y, z = (points_at_radius(radius, 8, 3, generator, curvature) for _ in range(3))
    d = lambda a, b: lorentz_distance(a, b, curvature=curvature)  # noqa: E731
    torch.testing.assert_close(d(x, y), d(y, x), rtol=4 * EPS64, atol=0.0)
    assert (d(x, z) <= (d(x, y) + d(y, z)) * (1 + 1e-12)).all()
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, dtype=F64, generator=generator))
    rotate = lambda p: torch.cat((p[:, :1], p[:, 1:] @ rotation.T), dim=-1)  # noqa: E731
    torch.testing.assert_close(d(rotate(x), rotate(y)), d(x, y), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# lorentz_distance: gradients
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curvature", [1.0, 0.5, 3.0])
def test_distance_gradcheck_generic_points(curvature):
    generator = torch.Generator().manual_seed(11)
    x = points_at_radius(0.0, 4, 3, generator, curvature, jitter=3.0).requires_grad_()
    y = points_at_radius(0.0, 4, 3, generator, curvature, jitter=3.0).requires_grad_()
    fn = lambda a, b: lorentz_distance(a, b, curvature=curvature)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y))
    # Broadcasting (3, 1, d+1) against (4, d+1): autograd sums over the broadcast dims.
    xb = x.detach()[:3, None, :].clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (xb, y))


def test_distance_gradcheck_with_a_point_at_the_origin():
    # The distance is smooth at the origin (away from the other point); the forward formula
    # is not (the angle is undefined there), which the analytic gradient sidesteps.
    origin = with_time(torch.zeros(2, 3, dtype=F64)).requires_grad_()
    generator = torch.Generator().manual_seed(12)
    other = points_at_radius(0.5, 2, 3, generator).requires_grad_()
    assert torch.autograd.gradcheck(lorentz_distance, (origin, other))
    assert torch.autograd.gradcheck(lorentz_distance, (other, origin))


@pytest.mark.parametrize("radius", [0.0, 0.5, 20.0, 30.0, 50.0])
def test_distance_gradient_is_zero_and_finite_at_coincident_points(radius):
    generator = torch.Generator().manual_seed(13)
    x = points_at_radius(radius, 5, 3, generator, jitter=0.0 if radius == 0 else 1.0)
    first = x.clone().requires_grad_()
    second = x.clone().requires_grad_()
    value = lorentz_distance(first, second)
    assert torch.equal(value, torch.zeros(5, dtype=F64))
    value.sum().backward()
    assert torch.equal(first.grad, torch.zeros_like(x))
    assert torch.equal(second.grad, torch.zeros_like(x))
    # The same with y None in pairwise_distances (diagonal pairs inside one block).
    points = x.clone().requires_grad_()
    pairwise_distances(LorentzDistance(), points).sum().backward()
    assert torch.isfinite(points.grad).all()


@pytest.mark.parametrize("radius", [20.0, 30.0, 50.0])
def test_distance_gradient_is_finite_far_from_the_origin(radius):
    generator = torch.Generator().manual_seed(14)
    x = points_at_radius(radius, 6, 3, generator)
    near = with_time(x[:, 1:] * (1 + 1e-10 * torch.randn(6, 3, dtype=F64, generator=generator)))
    far = points_at_radius(radius, 6, 3, generator)
    for other in (near, far):
        first = x.clone().requires_grad_()
        second = other.clone().requires_grad_()
        lorentz_distance(first, second).sum().backward()
        for grad in (first.grad, second.grad):
            assert torch.isfinite(grad).all()
            assert (grad[:, 1:].norm(dim=-1) > 0).all()


def test_distance_gradient_matches_mpmath_at_radius_20():
    # d D / d x_s with x_0 = sqrt(1 + |x_s|^2), against mpmath's numerical derivative of the
    # high-precision reference.
    generator = torch.Generator().manual_seed(15)
    x = points_at_radius(20.0, 3, 3, generator)
    y = torch.cat(
        (
            points_at_radius(20.0, 1, 3, generator),  # far apart
            with_time(x[1:2, 1:] * (1 + 1e-6 * torch.randn(1, 3, dtype=F64, generator=generator))),
            expmap0(torch.tensor([[0.3, -0.2, 0.1]], dtype=F64)),  # near the origin
        )
    )
    first = x.clone().requires_grad_()
    lorentz_distance(first, y).sum().backward()
    for i in range(3):
        spatial = [mpmath.mpf(float(v)) for v in x[i, 1:]]
        expected = []
        for j in range(3):

            def along(t, j=j, i=i, spatial=spatial):
                moved = list(spatial)
                moved[j] = moved[j] + t
                return mp_distance([0.0, *moved], y[i], digits=40)

            with mpmath.workdps(80):
                # Central difference with an explicit step: 1e-20 is far above the 80-digit
                # resolution of coordinates ~1e8 and its O(h^2) error is ~1e-40.
                expected.append(float(mpmath.diff(along, 0, h=mpmath.mpf("1e-20"))))
        expected = torch.tensor(expected, dtype=F64)
        torch.testing.assert_close(
            first.grad[i, 1:], expected, rtol=1e-12, atol=1e-12 * expected.norm()
        )


def test_riemannian_gradient_matches_geoopt():
    # Reading only x_s is another extension of the distance off the hyperboloid than geoopt's;
    # the Riemannian gradients (what RiemannianAdam uses) must agree.
    generator = torch.Generator().manual_seed(16)
    manifold = lorentz(0.7)
    x = points_at_radius(0.0, 20, 3, generator, 0.7, jitter=3.0)
    y = points_at_radius(0.0, 20, 3, generator, 0.7, jitter=3.0)
    ours = x.clone().requires_grad_()
    theirs = x.clone().requires_grad_()
    lorentz_distance(ours, y, curvature=0.7).sum().backward()
    manifold.dist(theirs, y).sum().backward()
    torch.testing.assert_close(
        manifold.egrad2rgrad(x, ours.grad.clone()),
        manifold.egrad2rgrad(x, theirs.grad.clone()),
        rtol=1e-8,
        atol=1e-10,
    )


def test_distance_is_differentiable_once_only():
    x = with_time(torch.tensor([[0.1, 0.2]], dtype=F64)).requires_grad_()
    y = with_time(torch.tensor([[0.5, -0.3]], dtype=F64))
    (grad,) = torch.autograd.grad(lorentz_distance(x, y).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_bad_curvature_raises_value_error_naming_it(bad):
    x = with_time(torch.zeros(1, 2, dtype=F64))
    p = torch.zeros(1, 2, dtype=F64)
    calls = [
        lambda: lorentz(bad),
        lambda: LorentzDistance(bad),
        lambda: lorentz_distance(x, x, curvature=bad),
        lambda: lorentz_to_poincare(x, curvature=bad),
        lambda: poincare_to_lorentz(p, curvature=bad),
        lambda: expmap0(p, curvature=bad),
        lambda: logmap0(x, curvature=bad),
        lambda: hyperbolic_radius(x, curvature=bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="curvature"):
            call()


@pytest.mark.parametrize("bad", [True, "1.0", None, [1.0]])
def test_curvature_of_wrong_type_raises_type_error(bad):
    with pytest.raises(TypeError, match="curvature"):
        lorentz(bad)


def test_lorentz_points_need_at_least_two_coordinates():
    one = torch.ones(3, 1, dtype=F64)
    for call in (
        lambda: lorentz_distance(one, one),
        lambda: lorentz_to_poincare(one),
        lambda: logmap0(one),
        lambda: hyperbolic_radius(one),
        lambda: lorentz_distance(torch.tensor(1.0, dtype=F64), one),
    ):
        with pytest.raises(ValueError, match=r"dim \+ 1 >= 2"):
            call()


def test_distance_shape_and_type_errors():
    x = with_time(torch.zeros(3, 2, dtype=F64))
    with pytest.raises(ValueError, match="same last dimension"):
        lorentz_distance(x, with_time(torch.zeros(3, 3, dtype=F64)))
    with pytest.raises(ValueError, match="broadcast"):
        lorentz_distance(x, with_time(torch.zeros(4, 2, dtype=F64)))
    with pytest.raises(TypeError, match="y must be a floating-point"):
        lorentz_distance(x, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        lorentz_distance(np.zeros((3, 3)), x)
    with pytest.raises(ValueError, match="v must have shape"):
        expmap0(torch.tensor(1.0, dtype=F64))


# ----------------------------------------------------------------------------------------------
# pairwise_distances
# ----------------------------------------------------------------------------------------------


def naive_pairwise(distance_fn, x, y):
    return torch.stack([torch.stack([distance_fn(xi, yj) for yj in y]) for xi in x])


def euclidean(a, b):
    return (a - b).norm(dim=-1)


def _distance_fns():
    poincare = geoopt.PoincareBall(c=torch.tensor(1.0, dtype=F64))
    return {
        "geoopt-lorentz": (lorentz(1.0).dist, "lorentz"),
        "geoopt-poincare": (poincare.dist, "poincare"),
        "euclidean": (euclidean, "euclidean"),
        "LorentzDistance": (LorentzDistance(1.0), "lorentz"),
    }


def _points_for(kind, n, generator):
    if kind == "lorentz":
        return points_at_radius(0.0, n, 3, generator, jitter=3.0)
    if kind == "poincare":
        return lorentz_to_poincare(points_at_radius(0.0, n, 3, generator, jitter=3.0))
    return torch.randn(n, 3, dtype=F64, generator=generator)


@pytest.mark.parametrize("name", list(_distance_fns()))
def test_pairwise_matches_naive_double_loop(name):
    distance_fn, kind = _distance_fns()[name]
    generator = torch.Generator().manual_seed(20)
    x = _points_for(kind, 11, generator)
    y = _points_for(kind, 7, generator)
    for chunk_size in (1, 4, 1024):
        rectangular = pairwise_distances(distance_fn, x, y, chunk_size=chunk_size)
        assert rectangular.shape == (11, 7)
        torch.testing.assert_close(
            rectangular, naive_pairwise(distance_fn, x, y), rtol=1e-12, atol=1e-12
        )
        square = pairwise_distances(distance_fn, x, chunk_size=chunk_size)
        expected = naive_pairwise(distance_fn, x, x)
        off_diagonal = ~torch.eye(11, dtype=torch.bool)
        torch.testing.assert_close(
            square[off_diagonal], expected[off_diagonal], rtol=1e-12, atol=1e-12
        )
        assert torch.equal(square, square.T)
        assert torch.equal(square.diagonal(), torch.zeros(11, dtype=F64))


def test_pairwise_euclidean_matches_scipy_cdist():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(37, 5))
    y = rng.normal(size=(23, 5))
    computed = pairwise_distances(euclidean, torch.from_numpy(x), torch.from_numpy(y), chunk_size=8)
    np.testing.assert_allclose(computed.numpy(), cdist(x, y), rtol=1e-12, atol=1e-12)
    square = pairwise_distances(euclidean, torch.from_numpy(x), chunk_size=5)
    np.testing.assert_allclose(square.numpy(), cdist(x, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(_distance_fns()))
def test_pairwise_does_not_depend_on_chunk_size(name):
    distance_fn, kind = _distance_fns()[name]
    generator = torch.Generator().manual_seed(22)
    x = _points_for(kind, 23, generator)
    y = _points_for(kind, 9, generator)
    reference_square = pairwise_distances(distance_fn, x, chunk_size=1024)
    reference_rect = pairwise_distances(distance_fn, x, y, chunk_size=1024)
    for chunk_size in (1, 2, 5, 22, 23, 24):
        square = pairwise_distances(distance_fn, x, chunk_size=chunk_size)
        rect = pairwise_distances(distance_fn, x, y, chunk_size=chunk_size)
        if name.startswith("geoopt"):
            # geoopt's kernels (e.g. torch.hypot, clamps) may round differently on blocks of
            # different shapes; pairwise_distances itself adds no chunk dependence.
            torch.testing.assert_close(square, reference_square, rtol=1e-14, atol=1e-15)
            torch.testing.assert_close(rect, reference_rect, rtol=1e-14, atol=1e-15)
        else:
            # Bitwise: the same pairs, each computed by the same elementwise operations.
            assert torch.equal(square, reference_square)
            assert torch.equal(rect, reference_rect)


@pytest.mark.parametrize("symmetric", [True, False])
def test_pairwise_autograd_matches_double_loop(symmetric):
    generator = torch.Generator().manual_seed(23)
    x = points_at_radius(0.0, 9, 2, generator, jitter=2.0)
    y = x if symmetric else points_at_radius(0.0, 5, 2, generator, jitter=2.0)
    weights = torch.rand(9, y.shape[0], dtype=F64, generator=generator)
    distance_fn = LorentzDistance(1.0)

    x_chunked = x.clone().requires_grad_()
    y_chunked = None if symmetric else y.clone().requires_grad_()
    result = pairwise_distances(distance_fn, x_chunked, y_chunked, chunk_size=4)
    assert result.requires_grad
    (result * weights).sum().backward()

    x_loop = x.clone().requires_grad_()
    y_loop = x_loop if symmetric else y.clone().requires_grad_()
    loop = naive_pairwise(distance_fn, x_loop, y_loop)
    (loop * weights).sum().backward()

    torch.testing.assert_close(x_chunked.grad, x_loop.grad, rtol=1e-12, atol=1e-12)
    if not symmetric:
        torch.testing.assert_close(y_chunked.grad, y_loop.grad, rtol=1e-12, atol=1e-12)


def test_pairwise_gradient_reaches_parameters_of_the_distance_fn():
    scale = torch.tensor(2.0, dtype=F64, requires_grad=True)
    x = torch.randn(6, 3, dtype=F64)
    result = pairwise_distances(lambda a, b: scale * euclidean(a, b), x, chunk_size=4)
    result.sum().backward()
    expected = torch.tensor(cdist(x.numpy(), x.numpy()).sum(), dtype=F64)
    torch.testing.assert_close(scale.grad, expected)


@pytest.mark.parametrize("curvature", [1.0, 0.7])
@pytest.mark.parametrize("symmetric", [True, False])
def test_pairwise_lorentz_fast_path_has_the_bits_of_calling_it(curvature, symmetric, monkeypatch):
    # pairwise_distances runs LorentzDistance's kernel on tiles instead of calling it per row
    # block; a wrapper lambda takes the generic path. Same values bit for bit, for any tile
    # size and chunk size; gradients equal up to summation order.
    generator = torch.Generator().manual_seed(24)
    x = points_at_radius(0.0, 23, 3, generator, curvature, jitter=4.0)
    x[5] = x[11]  # coincident points off the diagonal
    y = None if symmetric else points_at_radius(0.0, 17, 3, generator, curvature, jitter=4.0)
    distance_fn = LorentzDistance(curvature)
    inputs = (x,) if symmetric else (x, y)

    def generic(*points, chunk_size=4):
        return pairwise_distances(lambda a, b: distance_fn(a, b), *points, chunk_size=chunk_size)

    reference, reference_grads = _value_and_grads(generic, *inputs)
    for tile_pairs, chunk_size in ((1 << 16, 1024), (7, 1024), (7, 3), (1, 1)):
        monkeypatch.setattr(geometry, "_TILE_PAIRS", tile_pairs)

        def fast(*points, chunk_size=chunk_size):
            return pairwise_distances(distance_fn, *points, chunk_size=chunk_size)

        value, grads = _value_and_grads(fast, *inputs)
        assert torch.equal(value, reference)
        for grad, reference_grad in zip(grads, reference_grads, strict=True):
            assert torch.isfinite(grad).all()
            torch.testing.assert_close(grad, reference_grad, rtol=1e-12, atol=1e-12)


def test_pairwise_lorentz_dtypes_and_empty_inputs():
    generator = torch.Generator().manual_seed(25)
    x = points_at_radius(0.0, 6, 2, generator, jitter=2.0)
    distance_fn = LorentzDistance()
    float32 = pairwise_distances(distance_fn, x.float())
    assert float32.dtype == torch.float32
    torch.testing.assert_close(
        float32.double(), pairwise_distances(distance_fn, x), rtol=1e-5, atol=1e-6
    )
    assert pairwise_distances(distance_fn, x.float(), x).dtype == F64  # promoted
    assert pairwise_distances(distance_fn, x[:0]).shape == (0, 0)
    assert pairwise_distances(distance_fn, x, x[:0]).shape == (6, 0)


def test_pairwise_lorentz_autograd_saves_no_pair_sized_tensors():
    # The graph of pairwise_distances(LorentzDistance) holds per-point data only; a wrapper
    # (generic path) holds every block's (rows, N) intermediates.
    generator = torch.Generator().manual_seed(26)
    n = 200
    x = points_at_radius(0.0, n, 2, generator, jitter=3.0).requires_grad_()
    distance_fn = LorentzDistance()

    def saved_numel(fn):
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            fn().sum().backward()
        return sum(sizes)

    assert saved_numel(lambda: pairwise_distances(distance_fn, x)) <= 20 * n
    assert saved_numel(lambda: pairwise_distances(lambda a, b: distance_fn(a, b), x)) >= n * n


def test_pairwise_without_autograd_returns_a_plain_tensor():
    x = torch.randn(10, 3, dtype=F64, requires_grad=True)
    with torch.no_grad():
        result = pairwise_distances(euclidean, x, chunk_size=3)
    assert not result.requires_grad
    np.testing.assert_allclose(result.numpy(), cdist(x.detach().numpy(), x.detach().numpy()))


def test_pairwise_empty_inputs():
    x = torch.zeros(0, 3, dtype=F64)
    assert pairwise_distances(euclidean, x).shape == (0, 0)
    assert pairwise_distances(euclidean, x, torch.zeros(4, 3, dtype=F64)).shape == (0, 4)
    assert pairwise_distances(euclidean, torch.zeros(4, 3, dtype=F64), x).shape == (4, 0)


@pytest.mark.parametrize(
    "bad_fn",
    [
        lambda a, b: (a - b).norm(),  # a scalar
        lambda a, b: (a - b).norm(dim=-1, keepdim=True),  # (rows, M, 1)
        lambda a, b: (a - b).norm(dim=0),  # reduces the wrong axis
        lambda a, b: torch.mm(a, b.mT),  # torch.mm raises on the 3-D blocks
        lambda a, b: float((a - b).abs().sum()),  # not a tensor
    ],
)
def test_pairwise_rejects_a_distance_fn_that_does_not_broadcast(bad_fn):
    x = torch.randn(5, 3, dtype=F64)
    for y in (None, torch.randn(4, 3, dtype=F64)):
        with pytest.raises(ValueError, match=r"distance_fn must broadcast like geoopt\.Manifold"):
            pairwise_distances(bad_fn, x, y, chunk_size=2)


def test_pairwise_argument_errors():
    x = torch.randn(5, 3, dtype=F64)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="chunk_size"):
            pairwise_distances(euclidean, x, chunk_size=bad)
    for bad in (1.5, True, "8"):
        with pytest.raises(TypeError, match="chunk_size"):
            pairwise_distances(euclidean, x, chunk_size=bad)
    with pytest.raises(ValueError, match="same number of columns"):
        pairwise_distances(euclidean, x, torch.randn(4, 2, dtype=F64))
    with pytest.raises(ValueError, match="x must be a 2-D"):
        pairwise_distances(euclidean, x[0])
    with pytest.raises(ValueError, match="y must be a 2-D"):
        pairwise_distances(euclidean, x, x[None])
    with pytest.raises(TypeError, match="distance_fn must be callable"):
        pairwise_distances("euclidean", x)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        pairwise_distances(euclidean, x.numpy())


# ----------------------------------------------------------------------------------------------
# Lorentz <-> Poincaré
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curvature", [1.0, 0.3, 5.0])
def test_lorentz_to_poincare_preserves_distances(curvature):
    generator = torch.Generator().manual_seed(30)
    # sqrt(c) * radius <= 3: geoopt's PoincareBall.dist clamps artanh at 1 - 1e-7 beyond ~8.
    x = points_at_radius(0.0, 40, 3, generator, curvature, jitter=3.0 / math.sqrt(curvature))
    y = points_at_radius(0.0, 40, 3, generator, curvature, jitter=3.0 / math.sqrt(curvature))
    p, q = lorentz_to_poincare(x, curvature=curvature), lorentz_to_poincare(y, curvature=curvature)
    assert p.shape == (40, 3)
    assert ((p * p).sum(-1) * curvature < 1).all()
    ball = geoopt.PoincareBall(c=torch.tensor(curvature, dtype=F64))
    torch.testing.assert_close(
        ball.dist(p, q), lorentz_distance(x, y, curvature=curvature), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize("curvature", [1.0, 0.3, 5.0])
def test_conversions_match_geoopt_lorentz_math(curvature):
    # geoopt's conversions use the unit ball whatever k is; ours use the ball of radius
    # 1/sqrt(c): they differ by the factor sqrt(c) (and geoopt adds 1e-6 to a denominator).
    generator = torch.Generator().manual_seed(31)
    x = points_at_radius(0.0, 30, 4, generator, curvature, jitter=4.0)
    k = torch.tensor(1.0 / curvature, dtype=F64)
    sqrt_c = math.sqrt(curvature)
    torch.testing.assert_close(
        lorentz_to_poincare(x, curvature=curvature),
        lorentz_math.lorentz_to_poincare(x, k) / sqrt_c,
        rtol=1e-13,
        atol=1e-15,
    )
    p = lorentz_to_poincare(x, curvature=curvature)
    torch.testing.assert_close(
        poincare_to_lorentz(p, curvature=curvature),
        lorentz_math.poincare_to_lorentz(p * sqrt_c, k, eps=0.0),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("curvature", [1.0, 0.3, 5.0])
def test_conversion_round_trips(curvature):
    generator = torch.Generator().manual_seed(32)
    x = points_at_radius(0.0, 30, 3, generator, curvature, jitter=5.0 / math.sqrt(curvature))
    back = poincare_to_lorentz(lorentz_to_poincare(x, curvature=curvature), curvature=curvature)
    torch.testing.assert_close(back, x, rtol=1e-10, atol=1e-12)
    assert lorentz(curvature).check_point_on_manifold(back)
    radius = 1.0 / math.sqrt(curvature)
    p = 0.9 * radius * torch.rand(30, 1, dtype=F64, generator=generator)
    p = p * random_directions(30, 3, generator)
    again = lorentz_to_poincare(poincare_to_lorentz(p, curvature=curvature), curvature=curvature)
    torch.testing.assert_close(again, p, rtol=1e-13, atol=1e-15)


def test_poincare_to_lorentz_rejects_points_outside_the_ball():
    for bad in ([0.6, 0.8], [2.0, 0.0], [float("nan"), 0.0]):
        with pytest.raises(ValueError, match="p must lie strictly inside"):
            poincare_to_lorentz(torch.tensor([bad], dtype=F64))
    with pytest.raises(ValueError, match="p must lie"):
        poincare_to_lorentz(torch.tensor([[0.3, 0.0]], dtype=F64), curvature=16.0)
    with pytest.raises(ValueError, match="p must have shape"):
        poincare_to_lorentz(torch.zeros(3, 0, dtype=F64))


# ----------------------------------------------------------------------------------------------
# expmap0 / logmap0 / hyperbolic_radius
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("curvature", [1.0, 0.25, 4.0])
def test_expmap0_matches_geoopt_and_round_trips(curvature):
    generator = torch.Generator().manual_seed(40)
    v = 2.0 * torch.randn(25, 3, dtype=F64, generator=generator)
    x = expmap0(v, curvature=curvature)
    manifold = lorentz(curvature)
    padded = torch.cat((torch.zeros(25, 1, dtype=F64), v), dim=-1)
    torch.testing.assert_close(x, manifold.expmap0(padded), rtol=1e-12, atol=1e-12)
    # On the hyperboloid up to rounding of x_0^2 (geoopt's check uses an absolute 1e-5).
    quadratic_form = -(x[:, 0] ** 2) + (x[:, 1:] ** 2).sum(-1)
    torch.testing.assert_close(
        (quadratic_form + 1.0 / curvature) / x[:, 0] ** 2,
        torch.zeros(25, dtype=F64),
        rtol=0.0,
        atol=8 * EPS64,
    )
    torch.testing.assert_close(logmap0(x, curvature=curvature), v, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(
        logmap0(x, curvature=curvature), manifold.logmap0(x)[:, 1:], rtol=1e-8, atol=1e-8
    )
    torch.testing.assert_close(hyperbolic_radius(x, curvature=curvature), v.norm(dim=-1))


def test_expmap0_and_logmap0_near_zero_and_far_out():
    tiny = torch.tensor([[1e-12, -2e-12], [0.0, 0.0], [1e-4, 3e-4]], dtype=F64)
    x = expmap0(tiny, curvature=2.0)
    with mpmath.workdps(40):
        expected = []
        for row in tiny.tolist():
            z = mpmath.sqrt(2) * mpmath.norm([mpmath.mpf(t) for t in row])
            factor = mpmath.sinh(z) / z if z else mpmath.mpf(1)
            expected.append([float(factor * t) for t in row])
    torch.testing.assert_close(x[:, 1:], torch.tensor(expected, dtype=F64), rtol=1e-15, atol=0.0)
    assert torch.equal(logmap0(x, curvature=2.0)[1], torch.zeros(2, dtype=F64))
    torch.testing.assert_close(logmap0(x, curvature=2.0), tiny, rtol=1e-15, atol=0.0)
    # Jacobian of expmap0 at v = 0 is the identity on the spatial part (and 0 in time).
    jacobian = torch.autograd.functional.jacobian(lambda v: expmap0(v), torch.zeros(3, dtype=F64))
    torch.testing.assert_close(jacobian[1:], torch.eye(3, dtype=F64), rtol=0.0, atol=0.0)
    assert torch.equal(jacobian[0], torch.zeros(3, dtype=F64))
    # Far out: |v| = 700 is representable; compare with mpmath.
    v = torch.tensor([[420.0, 560.0]], dtype=F64)
    x = expmap0(v)
    assert torch.isfinite(x).all()
    with mpmath.workdps(30):
        expected_spatial = [float(mpmath.sinh(700) * t / 700) for t in (420, 560)]
        expected_time = float(mpmath.cosh(700))
    torch.testing.assert_close(
        x[0, 1:], torch.tensor(expected_spatial, dtype=F64), rtol=1e-13, atol=0.0
    )
    assert x[0, 0].item() == pytest.approx(expected_time, rel=1e-13)
    torch.testing.assert_close(logmap0(x), v, rtol=1e-14, atol=0.0)


def test_expmap0_logmap0_gradcheck():
    generator = torch.Generator().manual_seed(41)
    v = torch.cat(
        (
            torch.randn(3, 2, dtype=F64, generator=generator),
            torch.tensor([[2e-4, -1e-4]], dtype=F64),
        )
    ).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: expmap0(t, curvature=0.5), (v,))
    x = expmap0(v.detach(), curvature=0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: logmap0(t, curvature=0.5), (x,))
    assert torch.autograd.gradcheck(lambda t: hyperbolic_radius(t, curvature=0.5), (x[:3],))


@pytest.mark.parametrize("radius", [1e-9, 0.3, 20.0, 50.0, 300.0])
def test_hyperbolic_radius_matches_mpmath_and_the_distance_to_the_origin(radius):
    generator = torch.Generator().manual_seed(42)
    x = expmap0(radius * random_directions(4, 3, generator), curvature=0.5)
    computed = hyperbolic_radius(x, curvature=0.5)
    origin = torch.zeros(1, 4, dtype=F64)
    origin[0, 0] = 2**0.5
    for value, point in zip(computed.tolist(), x, strict=True):
        assert value == pytest.approx(float(mp_distance(origin[0], point, 0.5)), rel=4 * EPS64)
    torch.testing.assert_close(
        computed, lorentz_distance(x, origin, curvature=0.5), rtol=4 * EPS64, atol=0.0
    )
    if radius < 1.0:
        assert computed.tolist() == pytest.approx([radius] * 4, rel=1e-14)


def test_hyperbolic_radius_matches_geoopt_dist0_and_has_finite_gradient_at_origin():
    generator = torch.Generator().manual_seed(43)
    x = points_at_radius(0.5, 10, 3, generator, curvature=2.0, jitter=3.0)
    torch.testing.assert_close(
        hyperbolic_radius(x, curvature=2.0), lorentz(2.0).dist0(x), rtol=1e-10, atol=0.0
    )
    origin = with_time(torch.zeros(1, 3, dtype=F64)).requires_grad_()
    hyperbolic_radius(origin).sum().backward()
    assert torch.isfinite(origin.grad).all()
