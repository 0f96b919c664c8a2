"""The silent wrong answers of issue #16, each pinned to its new behaviour."""

from __future__ import annotations

import cvxpy as cp
import pytest
import torch

from gridlearn.errors import SolverFailure
from gridlearn.implicit import DEQ, Newton, QPLayer, odeint_solve, root_find, root_solve, solve_qp
from gridlearn.implicit.qp_scaling import objective_scale, psd_mask
from gridlearn.implicit.solution import Status

F64 = torch.float64


def _box(n):
    return torch.cat([torch.eye(n, dtype=F64), -torch.eye(n, dtype=F64)]), torch.ones(2 * n, dtype=F64)


def test_nonconvex_box_qp_is_nonconvex_not_converged():
    Q = torch.diag(torch.tensor([-1.0, 1.0], dtype=F64)).requires_grad_(True)
    p = torch.zeros(2, dtype=F64)
    G, h = _box(2)
    sol = solve_qp(Q, p, G, h)
    assert sol.statuses == [Status.NONCONVEX]
    assert torch.isnan(sol.value).all()
    sol.value.sum().backward()
    assert torch.isnan(Q.grad).all()
    with pytest.raises(SolverFailure, match="NONCONVEX"):
        QPLayer()(Q, p, G, h)


def test_unconstrained_indefinite_qp_is_nonconvex():
    Q = torch.diag(torch.tensor([-1.0, 2.0, 3.0], dtype=F64))
    sol = solve_qp(Q, torch.ones(3, dtype=F64), None, None)
    assert sol.statuses == [Status.NONCONVEX]


def test_only_the_nonconvex_element_of_a_batch_fails():
    Q = torch.stack([torch.diag(torch.tensor([-1.0, 1.0], dtype=F64)), torch.eye(2, dtype=F64)])
    p = torch.tensor([[0.0, 0.0], [0.5, -3.0]], dtype=F64, requires_grad=True)
    G, h = _box(2)
    sol = solve_qp(Q, p, G, h)
    assert sol.statuses == [Status.NONCONVEX, Status.CONVERGED]
    torch.testing.assert_close(sol.value[1], torch.tensor([-0.5, 1.0], dtype=F64), atol=1e-8, rtol=0)
    sol.value.sum().backward()
    assert torch.isnan(p.grad[0]).all() and torch.isfinite(p.grad[1]).all()


def test_psd_test_accepts_rounding_noise_and_zero_and_rejects_small_negative_eigenvalues():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 2, generator=g, dtype=F64)
    low_rank = M @ M.T  # PSD, rank 2: eigenvalues of ±1e-16 from rounding
    U, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=F64))
    slightly_neg = U @ torch.diag(torch.tensor([1.0, 0.5, 0.1, -1e-9], dtype=F64)) @ U.T
    Q = torch.stack([low_rank[:4, :4], torch.zeros(4, 4, dtype=F64), slightly_neg, -1e-300 * torch.eye(4, dtype=F64)])
    assert psd_mask(Q).tolist() == [True, True, False, False]


@pytest.mark.parametrize("s", [1e-10, 1e-8, 1e-4, 1.0, 1e4, 1e10])
def test_stopping_tests_are_invariant_under_objective_scaling(s):
    g = torch.Generator().manual_seed(3)
    n, m = 6, 8
    L = torch.randn(n, n, generator=g, dtype=F64)
    Q = L @ L.T + 0.1 * torch.eye(n, dtype=F64)
    p = torch.randn(n, generator=g, dtype=F64)
    G = torch.randn(m, n, generator=g, dtype=F64)
    h = torch.rand(m, generator=g, dtype=F64)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q.numpy()) + p.numpy() @ x), [G.numpy() @ x <= h.numpy()])
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    ref = solve_qp(Q, p, G, h)
    sol = solve_qp(s * Q, s * p, G, h)
    assert sol.ok
    # Same iterations as the unscaled problem (the rounding of s·Q moves only the last digits).
    assert int(sol.steps) == int(ref.steps)
    assert float(sol.residual) <= 1e-9
    assert float((sol.value - torch.as_tensor(x.value)).abs().max()) < 1e-7  # was 0.70 at s = 1e-10
    lam_ref = s * ref.extras["lam"]
    torch.testing.assert_close(sol.extras["lam"], lam_ref, rtol=0, atol=1e-6 * float(lam_ref.abs().max()))


def test_power_of_two_scaling_gives_bitwise_identical_iterates():
    g = torch.Generator().manual_seed(5)
    L = torch.randn(5, 5, generator=g, dtype=F64)
    Q, p = L @ L.T + 0.1 * torch.eye(5, dtype=F64), torch.randn(5, generator=g, dtype=F64)
    G, h = _box(5)
    a, b = solve_qp(Q, p, G, 0.3 * h), solve_qp(2.0**-37 * Q, 2.0**-37 * p, G, 0.3 * h)
    assert torch.equal(a.value, b.value) and torch.equal(a.residual, b.residual)
    assert torch.equal(a.extras["lam"] * 2.0**-37, b.extras["lam"])


def test_objective_scale_is_a_power_of_two_and_shared_with_a_shared_q():
    Q = torch.eye(3, dtype=F64).unsqueeze(0)
    p = torch.tensor([[3.0, 0, 0], [0, 0.1, 0]], dtype=F64)
    sigma = objective_scale(Q, p)
    assert sigma.shape == (1,) and float(sigma) == 1.0  # ‖p‖∞ = 3 is in [2, 4)
    sigma = objective_scale(7e-9 * torch.eye(2, dtype=F64).expand(2, 2, 2), torch.zeros(2, 2, dtype=F64))
    mant, _ = torch.frexp(sigma)
    assert (mant == 0.5).all() and torch.isfinite(sigma).all()


def test_newton_on_a_double_root_is_singular_with_no_gradient():
    w = torch.tensor([[0.0]], dtype=F64, requires_grad=True)
    sol = root_solve(lambda y, w: y**2 - w, torch.ones(1, 1, dtype=F64), w, solver=Newton())
    assert sol.statuses == [Status.SINGULAR]  # was CONVERGED with dy/dw = 512
    (g,) = torch.autograd.grad(sol.value.sum(), w)
    assert torch.isnan(g).all()
    with pytest.raises(SolverFailure, match="SINGULAR"):
        root_find(lambda y, w: y**2 - w, torch.ones(1, 1, dtype=F64), w.detach(), solver=Newton())


def test_newton_on_a_simple_root_is_still_converged_with_the_ift_gradient():
    w = torch.tensor([[4.0], [9.0]], dtype=F64, requires_grad=True)
    sol = root_solve(lambda y, w: y**2 - w, torch.ones(2, 1, dtype=F64), w, solver=Newton(rtol=0, atol=1e-12))
    assert sol.ok
    (g,) = torch.autograd.grad(sol.value.sum(), w)
    torch.testing.assert_close(g, 1 / (2 * w.detach().sqrt()))


def test_rk4_outside_its_stability_region_is_unstable_not_converged():
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = odeint_solve(lambda t, y: -100 * y, torch.ones(1, 1, dtype=F64), t, method="rk4", step_size=0.1)
    assert sol.statuses == [Status.UNSTABLE]  # was CONVERGED at 4.4e24 (exact 3.7e-44)
    fine = odeint_solve(lambda t, y: -100 * y, torch.ones(1, 1, dtype=F64), t, method="rk4", step_size=1e-3)
    assert fine.ok and abs(float(fine.value[-1])) < 1e-8


def test_ode_backprop_gives_a_failed_element_nan_gradients():
    def f(t, y):
        return torch.cat([-y[:1], -1e4 * y[1:] * torch.sin(1e3 * t[1:, None])])

    y0 = torch.ones(2, 1, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 5.0], dtype=F64)
    sol = odeint_solve(f, y0, t, max_steps=50, gradient="backprop")
    assert sol.statuses == [Status.CONVERGED, Status.MAX_STEPS]
    sol.value.nansum().backward()  # every output, including the failed element's reached ones
    assert torch.isfinite(y0.grad[0]).all() and torch.isnan(y0.grad[1]).all()  # was 0.0


class _Cell(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3).double()

    def forward(self, z, x):
        return 0.5 * torch.tanh(self.lin(z)) + x


def test_a_batch_of_size_zero_gives_empty_results():
    empty = torch.zeros(0, 3, dtype=F64, requires_grad=True)
    assert DEQ(_Cell())(empty).shape == (0, 3)
    assert root_solve(lambda y, w: y**2 - w, torch.ones(0, 1, dtype=F64), torch.ones(0, 1, dtype=F64)).value.shape == (0, 1)
    assert odeint_solve(lambda t, y: -y, torch.ones(0, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)).value.shape == (2, 0, 2)
    Q = torch.eye(3, dtype=F64)
    sol = solve_qp(Q, empty, *_box(3))
    assert sol.value.shape == (0, 3) and sol.extras["lam"].shape == (0, 6) and sol.statuses == []
    sol.value.sum().backward()
    assert empty.grad.shape == (0, 3)
