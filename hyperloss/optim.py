"""Riemannian optimisers that geoopt lacks.

:class:`TangentRiemannianAdam` steps points stored in tangent coordinates at the origin
(``x = expmap0(v)``), which stay well conditioned at any hyperbolic radius; it can be used
on its own with any loss (it is what :func:`hyperloss.fit` uses for free points).

Why tangent coordinates: a point is stored as ``v`` in ``R^dim``, the tangent vector at the
origin with ``x = expmap0(v)``: its hyperbolic radius is ``|v|`` and its direction ``v / |v|``.
Lorentz coordinates grow like ``e^r / 2``, so at radius 20 a tangent vector of length 1 has
ambient components of order 1e8 and its Minkowski norm cancels terms of order 1e16 -- the
reason geoopt's ``RiemannianAdam`` produces NaN there. In tangent coordinates every number
stays of order ``r``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from hyperloss.validation import check_curvature, check_nonnegative, check_positive

__all__ = ["TangentRiemannianAdam"]


class TangentRiemannianAdam(torch.optim.Optimizer):
    r"""Riemannian Adam for points in tangent coordinates at the origin.

    The parameter holds rows :math:`v \in \mathbb{R}^{dim}` (one point each, ``x = expmap0(v)``).
    In these coordinates the hyperbolic metric is
    :math:`G = \hat v \hat v^\top + \big(\tfrac{\sinh(s r)}{s r}\big)^2 (I - \hat v \hat v^\top)`
    (:math:`r = |v|`, :math:`s = \sqrt{c}`), so the Riemannian gradient of a Euclidean gradient
    :math:`g` is :math:`G^{-1} g` and its squared norm is
    :math:`(\hat v \cdot g)^2 + q^2 |g_\perp|^2` with :math:`q = s r / \sinh(s r)`.
    The update is geoopt's RiemannianAdam (Bécigneul & Ganea 2019) written in these
    coordinates: first moment of :math:`G^{-1} g` (carried between points by the chart, which
    is a valid vector transport), one second moment per point from the Riemannian norm, and
    the chart retraction :math:`v \leftarrow v - \mathrm{lr}\,\hat m / (\sqrt{\hat s} + \epsilon)`.
    Each step therefore moves a point about ``lr`` in hyperbolic distance at any radius.

    Why not ``geoopt.optim.RiemannianAdam`` on a ``ManifoldParameter``: on the Lorentz model
    the Riemannian gradient of a point at radius ``r`` has ambient components about
    ``cosh(r)`` times its norm; geoopt's second moment is their Minkowski square sum, which
    cancels terms of order ``cosh(r)^2 |g|^2``: at ``r`` near 18-20 (float64) it comes out
    negative or zero and the first step is NaN or overflows. Every quantity here is of order
    ``r`` (see ``tests/test_training.py::test_far_from_origin_step_stays_finite``).

    Parameters
    ----------
    params : iterable of Tensor
        Tensors of shape ``(N, dim)``, float64.
    lr : float, default 1e-2
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    curvature : float, default 1.0
    max_step : float, default 1.0
        Cap on the hyperbolic length of one step of one point (a guard; with Adam's
        normalisation a step is rarely longer than a few ``lr``).

    Notes
    -----
    Sparse gradients (e.g. from ``torch.nn.functional.embedding(..., sparse=True)``) take the
    lazy path of ``torch.optim.SparseAdam``: only the rows present in the gradient update
    their moments and move, so a step costs O(rows touched) rather than O(N), which is what
    makes a step on a 1,000,000-node table cheap. With a dense gradient every row's moments
    decay and every row moves with its momentum, as in ``torch.optim.Adam``. Param groups and
    ``state_dict()`` / ``load_state_dict()`` are torch's (and geoopt's) conventions; each
    parameter's state holds ``step`` (int), ``exp_avg`` ``(N, dim)`` and ``exp_avg_sq``
    ``(N, 1)``.

    Examples
    --------
    >>> import torch
    >>> from hyperloss.geometry import LorentzDistance, expmap0
    >>> tangent = torch.nn.Parameter(torch.tensor([[0.1, 0.0], [0.0, 0.2]], dtype=torch.float64))
    >>> optimizer = TangentRiemannianAdam([tangent], lr=0.01)
    >>> loss = LorentzDistance()(expmap0(tangent[0]), expmap0(tangent[1]))
    >>> loss.backward()
    >>> optimizer.step()
    >>> bool(LorentzDistance()(expmap0(tangent[0]), expmap0(tangent[1])) < loss)
    True
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        curvature: float = 1.0,
        max_step: float = 1.0,
    ) -> None:
        lr = check_positive(lr, "lr")
        if not (
            isinstance(betas, tuple | list)
            and len(betas) == 2
            and all(0.0 <= check_nonnegative(b, "betas") < 1.0 for b in betas)
        ):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        defaults = {
            "lr": lr,
            "betas": (float(betas[0]), float(betas[1])),
            "eps": check_nonnegative(eps, "eps"),
            "curvature": check_curvature(curvature),
            "max_step": check_positive(max_step, "max_step"),
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for point in group["params"]:
                if point.dim() != 2 or not point.is_floating_point():
                    raise ValueError(
                        "params must be floating-point tensors of shape (N, dim) (one tangent "
                        f"vector per row), got {point.dtype} of shape {tuple(point.shape)}"
                    )

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One update of every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for point in group["params"]:
                if point.grad is None:
                    continue
                state = self.state[point]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(point)
                    state["exp_avg_sq"] = torch.zeros_like(point[..., :1])
                state["step"] += 1
                grad = point.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows = grad.indices()[0]
                    exp_avg, exp_avg_sq = state["exp_avg"][rows], state["exp_avg_sq"][rows]
                    step = _adam_step(
                        point[rows], grad.values(), exp_avg, exp_avg_sq, state["step"], group
                    )
                    state["exp_avg"][rows] = exp_avg
                    state["exp_avg_sq"][rows] = exp_avg_sq
                    point.index_add_(0, rows, step, alpha=-1.0)
                else:
                    step = _adam_step(
                        point, grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group
                    )
                    point.sub_(step)
        return loss


def _adam_step(
    point: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step_count: int,
    group: dict[str, Any],
) -> Tensor:
    """The chart step of rows ``point``; updates the moments exp_avg, exp_avg_sq in place."""
    beta1, beta2 = group["betas"]
    s = math.sqrt(group["curvature"])
    radius, direction = _polar(point)
    radius = radius.unsqueeze(-1)
    q_sq = _x_over_sinh(s * radius).pow(2)
    radial = (grad * direction).sum(dim=-1, keepdim=True)
    perpendicular = grad - radial * direction
    riemannian_grad = radial * direction + q_sq * perpendicular
    norm_sq = radial.pow(2) + q_sq * perpendicular.pow(2).sum(dim=-1, keepdim=True)
    exp_avg.mul_(beta1).add_(riemannian_grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).add_(norm_sq, alpha=1 - beta2)
    bias1 = 1 - beta1**step_count
    bias2 = 1 - beta2**step_count
    direction_step = (exp_avg / bias1) / ((exp_avg_sq / bias2).sqrt() + group["eps"])
    step = group["lr"] * direction_step
    # Hyperbolic length of the step: |step|_G; cap it (a guard, rarely active).
    step_radial = (step * direction).sum(dim=-1, keepdim=True)
    step_perp_sq = (step - step_radial * direction).pow(2).sum(dim=-1, keepdim=True)
    length = torch.sqrt(step_radial.pow(2) + step_perp_sq / q_sq)
    return step * torch.clamp(group["max_step"] / length.clamp_min(1e-300), max=1.0)


def _polar(v: Tensor) -> tuple[Tensor, Tensor]:
    """Radius |v| (...,) and direction v / |v| (..., dim), both 0 at v = 0 with finite grads."""
    radius = _safe_sqrt(v.pow(2).sum(dim=-1))
    safe_radius = torch.where(radius > 0, radius, torch.ones_like(radius))
    return radius, v / safe_radius.unsqueeze(-1)


def _safe_sqrt(x: Tensor) -> Tensor:
    # sqrt with a zero (not infinite) gradient at 0: the double-where keeps NaN out of backward.
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def _x_over_sinh(x: Tensor) -> Tensor:
    """x / sinh(x), 1 at 0, smooth; underflows gracefully to 0 for x > ~700."""
    small = x.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(x), x)
    # Taylor: x / sinh x = 1 - x^2 / 6 + O(x^4) near 0.
    return torch.where(small, 1.0 - x * x / 6.0, safe / torch.sinh(safe))
