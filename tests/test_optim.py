"""TangentRiemannianAdam: step length at any radius, geoopt's Riemannian gradient, the lazy
sparse path, param groups and state dicts, bad arguments."""

from __future__ import annotations

import copy

import geoopt
import pytest
import torch

from hyperloss.geometry import expmap0, lorentz_distance
from hyperloss.optim import TangentRiemannianAdam


def test_tangent_adam_step_length_is_lr_at_any_radius():
    dim = 10
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(50, dim, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=1, keepdim=True)
    radii = torch.linspace(0.0, 20.0, 50, dtype=torch.float64)[:, None]
    tangent = torch.nn.Parameter(directions * radii)
    before = expmap0(tangent.detach())
    optimizer = TangentRiemannianAdam([tangent], lr=0.01)
    target = expmap0(torch.randn(50, dim, generator=generator, dtype=torch.float64))
    lorentz_distance(expmap0(tangent), target).sum().backward()
    optimizer.step()
    after = expmap0(tangent.detach())
    moved = lorentz_distance(before, after)
    # Adam's first step has unit normalised length: every point moves lr (1e-3 relative).
    assert torch.allclose(moved, torch.full_like(moved, 0.01), rtol=1e-3)
    # And it moved towards the target.
    assert (lorentz_distance(after, target) < lorentz_distance(before, target)).all()


def test_tangent_riemannian_gradient_matches_geoopt():
    """G^{-1} g pushed through d expmap0 equals geoopt's Lorentz Riemannian gradient."""
    generator = torch.Generator().manual_seed(1)
    v = torch.randn(3, generator=generator, dtype=torch.float64) * 1.5
    anchor = expmap0(torch.randn(3, generator=generator, dtype=torch.float64))

    def objective(x):
        return lorentz_distance(x, anchor) ** 2

    tangent = v.clone().requires_grad_(True)
    objective(expmap0(tangent)).backward()
    # One optimizer step with beta1 = 0 and a tiny lr moves v by -lr * rgrad / |rgrad|_G.
    parameter = torch.nn.Parameter(v.clone()[None])
    parameter.grad = tangent.grad.clone()[None]
    TangentRiemannianAdam([parameter], lr=1e-7, betas=(0.0, 0.0), eps=0.0).step()
    chart_step = (parameter.detach()[0] - v) / -1e-7
    pushed = torch.autograd.functional.jvp(lambda u: expmap0(u), v, chart_step)[1]

    manifold = geoopt.Lorentz()
    x = expmap0(v).requires_grad_(True)
    # geoopt's own (ambient) gradient of the same objective, made Riemannian by geoopt.
    (euclidean,) = torch.autograd.grad(objective(x), x)
    riemannian = manifold.egrad2rgrad(x.detach(), euclidean)
    riemannian = riemannian / manifold.norm(riemannian)
    assert torch.allclose(pushed, riemannian, rtol=1e-5, atol=1e-6)


def _problem(seed: int = 0, n: int = 12, dim: int = 3):
    generator = torch.Generator().manual_seed(seed)
    tangent = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    target = expmap0(torch.randn(n, dim, generator=generator, dtype=torch.float64))
    return tangent, target


def test_sparse_gradient_moves_only_its_rows_like_the_dense_step():
    tangent, target = _problem()
    rows = torch.tensor([1, 4, 4, 7])  # a repeated row: its gradients add up, as in the dense case

    dense = torch.nn.Parameter(tangent.clone())
    lorentz_distance(expmap0(dense[rows]), target[rows]).sum().backward()
    dense_optimizer = TangentRiemannianAdam([dense], lr=0.05)
    dense_optimizer.step()

    sparse = torch.nn.Parameter(tangent.clone())
    looked_up = torch.nn.functional.embedding(rows, sparse, sparse=True)
    lorentz_distance(expmap0(looked_up), target[rows]).sum().backward()
    assert sparse.grad.is_sparse
    sparse_optimizer = TangentRiemannianAdam([sparse], lr=0.05)
    sparse_optimizer.step()

    # First step: rows without a gradient have zero moments in both, so both paths agree.
    assert torch.allclose(sparse.detach(), dense.detach(), rtol=0, atol=1e-15)
    untouched = torch.ones(len(tangent), dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(sparse.detach()[untouched], tangent[untouched])

    # Second step on other rows: the dense path moves the first rows again (momentum), the lazy
    # sparse path leaves them alone (torch.optim.SparseAdam's semantics).
    other = torch.tensor([0, 2])
    for parameter, optimizer, sparse_lookup in (
        (dense, dense_optimizer, False),
        (sparse, sparse_optimizer, True),
    ):
        optimizer.zero_grad()
        looked_up = torch.nn.functional.embedding(other, parameter, sparse=sparse_lookup)
        lorentz_distance(expmap0(looked_up), target[other]).sum().backward()
        optimizer.step()
    first = torch.tensor([1, 4, 7])
    after_first_step = sparse.detach()[first].clone()
    assert not torch.allclose(dense.detach()[first], after_first_step)
    assert sparse_optimizer.state[sparse]["step"] == 2


def test_param_groups_and_state_dict_round_trip():
    tangent, target = _problem(seed=3)
    slow = torch.nn.Parameter(tangent[:6].clone())
    fast = torch.nn.Parameter(tangent[6:].clone())
    optimizer = TangentRiemannianAdam([{"params": [slow], "lr": 1e-3}, {"params": [fast]}], lr=0.1)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 0.1]

    def step(opt, a, b):
        opt.zero_grad()
        points = expmap0(torch.cat([a, b]))
        lorentz_distance(points, target).sum().backward()
        opt.step()

    step(optimizer, slow, fast)
    saved = copy.deepcopy(optimizer.state_dict())
    saved_points = (slow.detach().clone(), fast.detach().clone())
    step(optimizer, slow, fast)
    expected = (slow.detach().clone(), fast.detach().clone())

    slow2 = torch.nn.Parameter(saved_points[0].clone())
    fast2 = torch.nn.Parameter(saved_points[1].clone())
    resumed = TangentRiemannianAdam([{"params": [slow2], "lr": 1e-3}, {"params": [fast2]}], lr=0.1)
    resumed.load_state_dict(saved)
    step(resumed, slow2, fast2)
    assert torch.equal(slow2.detach(), expected[0]) and torch.equal(fast2.detach(), expected[1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"lr": "0.1"}, TypeError, "lr"),
        ({"betas": (0.9, 1.0)}, ValueError, "betas"),
        ({"betas": (0.9,)}, ValueError, "betas"),
        ({"eps": -1.0}, ValueError, "eps"),
        ({"curvature": 0.0}, ValueError, "curvature"),
        ({"max_step": 0.0}, ValueError, "max_step"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    parameter = torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(error, match=match):
        TangentRiemannianAdam([parameter], **kwargs)


def test_parameters_must_be_point_matrices():
    with pytest.raises(ValueError, match=r"shape \(N, dim\)"):
        TangentRiemannianAdam([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))])
    with pytest.raises(ValueError, match="floating-point"):
        TangentRiemannianAdam([torch.zeros(3, 2, dtype=torch.long)])


def test_numpy_integers_and_scalars_are_accepted():
    import numpy as np

    parameter = torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    optimizer = TangentRiemannianAdam([parameter], lr=np.float64(0.1), curvature=np.int64(2))
    assert optimizer.defaults["lr"] == 0.1 and optimizer.defaults["curvature"] == 2.0
