"""fixed_point / fixed_point_solve: the lecture example, gradcheck per solver, failures."""

from __future__ import annotations

import math

import pytest
import torch

from gridlearn.errors import SolverFailure
from gridlearn.implicit import (Anderson, Broyden, ImplicitAdjoint, Newton, PhantomAdjoint, Picard, Status,
                                UnrolledAdjoint, fixed_point)
from gridlearn.implicit.fixed_points import fixed_point_solve

from ._helpers import randn


def gradient_step(x, omega):
    """One gradient step on sin(xω) with step 0.1: x - 0.1 ω cos(xω)."""
    return x - 0.1 * omega * torch.cos(x * omega)


def test_lecture_example_implicit_gradient_is_pi_over_two_omega_squared():
    # minimiser of sin(xω) reached from x = 0 with ω = 2: x* = -π/(2ω), dx*/dω = π/(2ω²)
    omega = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    x = fixed_point(gradient_step, torch.zeros(1, 1, dtype=torch.float64), omega, solver=Picard(rtol=0, atol=1e-13, max_steps=500))
    (d,) = torch.autograd.grad(x.sum(), omega)
    assert float(x.detach()) == pytest.approx(-math.pi / 4, abs=1e-10)
    assert float(d) == pytest.approx(math.pi / 8, abs=1e-9)
    assert float(d) == pytest.approx(0.39270, abs=5e-6)


@pytest.mark.parametrize("steps, expected, tol", [(25, 0.3926, 5e-4), (5, 0.060, 1e-3)])
def test_lecture_example_unrolled_gradient(steps, expected, tol):
    omega = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    sol = fixed_point_solve(
        gradient_step, torch.zeros(1, 1, dtype=torch.float64), omega,
        solver=Picard(rtol=0, atol=0, max_steps=steps), adjoint=UnrolledAdjoint(), on_failure="keep",
    )
    assert int(sol.steps) == steps and sol.statuses == [Status.MAX_STEPS]
    (d,) = torch.autograd.grad(sol.value.sum(), omega)
    assert float(d) == pytest.approx(expected, abs=tol)
    if steps == 5:
        assert abs(float(d) - math.pi / 8) > 0.3  # far from the implicit gradient


def test_unrolled_gradient_of_a_failed_element_is_nan_unless_kept():
    omega = torch.tensor([[2.0], [2.0]], dtype=torch.float64, requires_grad=True)
    z0 = torch.tensor([[0.0], [-math.pi / 4]], dtype=torch.float64)  # the second starts at x*
    sol = fixed_point_solve(gradient_step, z0, omega, solver=Picard(rtol=0, atol=1e-12, max_steps=5),
                            adjoint=UnrolledAdjoint())
    assert sol.statuses == [Status.MAX_STEPS, Status.CONVERGED]
    (d,) = torch.autograd.grad(sol.value.sum(), omega)
    assert torch.isnan(d[0]).all() and torch.isfinite(d[1]).all()


SOLVERS = [
    Picard(rtol=0, atol=1e-12, max_steps=300),
    Anderson(rtol=0, atol=1e-12, max_steps=200),
    Broyden(rtol=0, atol=1e-12, max_steps=200),
    Newton(rtol=0, atol=1e-12, max_steps=30),
]


# (the iterative backward is gradchecked per solver in test_deq.py)
@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("direct", [True], ids=["dense"])
def test_fixed_point_gradcheck(solver, direct):
    B = randn(3, 3, seed=11) * 0.4

    def f(z, x, s):
        return s * torch.tanh(z @ B.T) + x

    x = randn(2, 3, seed=12, requires_grad=True)
    s = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    adjoint = ImplicitAdjoint(direct=direct, solver=Anderson(rtol=0, atol=1e-13, max_steps=200))
    fn = lambda x, s: fixed_point(f, torch.zeros_like(x), x, s, solver=solver, adjoint=adjoint)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, s), eps=1e-6, atol=1e-6)


def test_phantom_error_shrinks_with_steps():
    B = randn(6, 6, seed=13) * 0.3
    x = randn(3, 6, seed=14, requires_grad=True)
    f = lambda z, x: torch.tanh(z @ B.T + x)  # noqa: E731
    solver = Anderson(rtol=0, atol=1e-12)
    ref = torch.autograd.grad(fixed_point(f, torch.zeros_like(x), x, solver=solver).pow(2).sum(), x)[0]
    errs = []
    for k in (0, 2, 5, 15):
        z = fixed_point(f, torch.zeros_like(x), x, solver=solver, adjoint=PhantomAdjoint(steps=k))
        errs.append(float((torch.autograd.grad(z.pow(2).sum(), x)[0] - ref).norm() / ref.norm()))
    assert errs == sorted(errs, reverse=True) and errs[0] > 1e-1 and errs[-1] < 1e-3


def test_mixed_batch_easy_converges_divergent_is_named():
    # element 0: z = 0.5 z + 1 (converges); element 1: z = z + 1 + z² (no fixed point)
    a = torch.tensor([[0.5], [1.0]], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    f = lambda z, a: a * z + 1.0 + q * z**2  # noqa: E731
    z0 = torch.zeros(2, 1, dtype=torch.float64)
    sol = fixed_point_solve(f, z0, a, solver=Picard(max_steps=100))
    assert sol.statuses[0] is Status.CONVERGED
    assert sol.statuses[1] in (Status.DIVERGED, Status.MAX_STEPS, Status.NONFINITE)
    (da,) = torch.autograd.grad(sol.value.sum(), a)
    # z* = 1/(1-a) so dz*/da = 1/(1-a)² = 4 at a = 0.5
    assert float(da[0]) == pytest.approx(4.0, rel=1e-4)
    assert torch.isnan(da[1]).all()
    with pytest.raises(SolverFailure, match=r"1 of 2 batch elements: #1: (DIVERGED|MAX_STEPS|NONFINITE)") as err:
        fixed_point(f, z0, a, solver=Picard(max_steps=100))
    assert err.value.indices == [1] and len(err.value.residuals) == 1


def test_zero_policy_gives_zero_gradient_for_failed_elements():
    a = torch.tensor([[0.5], [1.0]], dtype=torch.float64, requires_grad=True)
    f = lambda z, a: a * z + 1.0  # element 1 drifts: z = z + 1  # noqa: E731
    z = fixed_point(f, torch.zeros(2, 1, dtype=torch.float64), a, solver=Picard(max_steps=50), on_failure="zero")
    (da,) = torch.autograd.grad(z.sum(), a)
    assert float(da[1]) == 0.0 and float(da[0]) == pytest.approx(4.0, rel=1e-4)


def test_nan_in_input_is_reported_not_propagated_silently():
    x = torch.tensor([[1.0, 0.0], [float("nan"), 0.0]], dtype=torch.float64)
    sol = fixed_point_solve(lambda z, x: 0.5 * torch.tanh(z) + x, torch.zeros_like(x), x)
    assert sol.statuses == [Status.CONVERGED, Status.NONFINITE]
    with pytest.raises(SolverFailure, match="NONFINITE"):
        fixed_point(lambda z, x: 0.5 * torch.tanh(z) + x, torch.zeros_like(x), x)


def test_no_grad_mode_returns_a_plain_tensor():
    x = randn(2, 3, seed=1, requires_grad=True)
    with torch.no_grad():
        z = fixed_point(lambda z, x: 0.5 * torch.tanh(z) + x, torch.zeros_like(x), x)
    assert not z.requires_grad


def test_multi_dimensional_state_and_float32():
    x = randn(2, 3, 4, seed=2, dtype=torch.float32, requires_grad=True)
    z = fixed_point(lambda z, x: 0.5 * torch.tanh(z) + x, torch.zeros_like(x), x, solver=Anderson(rtol=1e-6, atol=1e-7))
    assert z.shape == x.shape and z.dtype == torch.float32
    torch.testing.assert_close(z, 0.5 * torch.tanh(z) + x, atol=1e-5, rtol=0)
    (dx,) = torch.autograd.grad(z.sum(), x)
    # dz/dx = (I - 0.5 diag(sech² z))⁻¹, elementwise here
    torch.testing.assert_close(dx, 1 / (1 - 0.5 / torch.cosh(z.detach()) ** 2), atol=1e-4, rtol=0)
