"""Neural ODE: closed forms, adjoint vs finite differences and backprop, per-element steps,
failure statuses, O(1) adjoint memory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.implicit import NeuralODE, Status, odeint
from gridlearn.implicit.ode import odeint_solve

from ._helpers import count_saved_tensors, randn


def linear_field(t, y, A):
    return y @ A.T


def lorenz(t, y, p):
    x, yy, z = y.unbind(-1)
    sigma, rho, beta = p.unbind(-1)
    return torch.stack([sigma * (yy - x), x * (rho - z) - yy, x * yy - beta * z], dim=-1)


def van_der_pol(t, y, mu):
    x, v = y.unbind(-1)
    return torch.stack([v, mu * (1 - x**2) * v - x], dim=-1)


class MLPField(nn.Module):
    def __init__(self, d=3, hidden=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.l1 = nn.Linear(d, hidden).double()
        self.l2 = nn.Linear(hidden, d).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))

    def forward(self, t, y):
        return self.l2(torch.tanh(self.l1(y)))


@pytest.mark.parametrize("method, kw, tol", [("dopri5", dict(rtol=1e-10, atol=1e-12), 1e-8), ("rk4", dict(step_size=0.01), 1e-8)])
def test_linear_ode_matches_matrix_exponential(method, kw, tol):
    A = randn(4, 4, seed=1) * 0.7
    y0 = randn(3, 4, seed=2)
    t = torch.tensor([0.0, 0.3, 1.0, 1.5], dtype=torch.float64)
    ys = odeint(linear_field, y0, t, A, method=method, **kw)
    ref = torch.stack([y0 @ torch.linalg.matrix_exp(A * ti).T for ti in t])
    torch.testing.assert_close(ys, ref, atol=tol, rtol=0)


def test_backwards_in_time_integration():
    A = randn(3, 3, seed=3) * 0.5
    y1 = randn(2, 3, seed=4)
    ys = odeint(linear_field, y1, torch.tensor([1.0, 0.0], dtype=torch.float64), A, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ys[-1], y1 @ torch.linalg.matrix_exp(-A).T, atol=1e-8, rtol=0)


def test_linear_ode_adjoint_gradients_match_matrix_exp_autograd():
    A = (randn(3, 3, seed=5) * 0.5).requires_grad_(True)
    y0 = randn(2, 3, seed=6, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    w = randn(3, 2, 3, seed=7)
    ys = odeint(linear_field, y0, t, A, rtol=1e-10, atol=1e-12)
    got = torch.autograd.grad((ys * w).sum(), (A, y0))
    ref_ys = torch.stack([y0 @ torch.linalg.matrix_exp(A * ti).T for ti in t])
    want = torch.autograd.grad((ref_ys * w).sum(), (A, y0))
    for g_, w_ in zip(got, want):
        torch.testing.assert_close(g_, w_, atol=1e-7, rtol=1e-7)


@pytest.mark.slow  # ~5 s: a subprocess or many tight-tolerance solves
def test_lorenz_adjoint_sensitivities_match_finite_differences():
    p = torch.tensor([10.0, 28.0, 8.0 / 3.0], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[1.0, 1.0, 1.0], [-2.0, 0.5, 20.0]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.5], dtype=torch.float64)
    kw = dict(rtol=1e-11, atol=1e-11)
    x1 = odeint(lorenz, y0, t, p, **kw)[-1, :, 0]  # x(t₁) per element
    jac = torch.stack([torch.autograd.grad(x1[i], p, retain_graph=True)[0] for i in range(2)])
    fd = torch.zeros(2, 3, dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        for j in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[j] = h
            fd[:, j] = (odeint(lorenz, y0, t, p + e, **kw)[-1, :, 0] - odeint(lorenz, y0, t, p - e, **kw)[-1, :, 0]) / (2 * h)
    torch.testing.assert_close(jac, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~5 s: a subprocess or many tight-tolerance solves
def test_neural_ode_adjoint_matches_direct_backprop_and_gradcheck():
    field = MLPField(seed=8)
    y0 = randn(3, 3, seed=9, requires_grad=True)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    grads = {}
    for gradient in ("adjoint", "backprop"):
        field.zero_grad()
        ode = NeuralODE(field, rtol=1e-10, atol=1e-10, gradient=gradient)
        ys = ode(y0, t)
        ys.pow(2).sum().backward()
        grads[gradient] = [y0.grad.clone()] + [p.grad.clone() for p in field.parameters()]
        y0.grad = None
    for a, b in zip(grads["adjoint"], grads["backprop"]):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)
    ode = NeuralODE(field, rtol=1e-10, atol=1e-10, gradient="adjoint")
    y_small = y0.detach()[:2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y: ode(y, t[:2]), (y_small,), eps=1e-6, atol=1e-5)
    # direct backprop through a fixed-step RK4 is the exact derivative of that computation
    rk4 = NeuralODE(field, method="rk4", step_size=0.1, gradient="backprop")
    assert torch.autograd.gradcheck(lambda y: rk4(y, t), (y_small,), eps=1e-6, atol=1e-7)


def test_each_element_chooses_its_own_steps():
    mu = torch.tensor([[0.1], [10.0]], dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([0.0, 5.0], dtype=torch.float64)
    f = lambda t, y, mu: van_der_pol(t, y, mu.squeeze(-1))  # noqa: E731
    both = odeint_solve(f, y0, t, mu, rtol=1e-6, atol=1e-8)
    alone = odeint_solve(f, y0[:1], t, mu[:1], rtol=1e-6, atol=1e-8)
    assert both.ok
    assert int(both.steps[0]) * 3 < int(both.steps[1])  # the mild element is not dragged along
    assert int(both.steps[0]) == int(alone.steps[0])
    torch.testing.assert_close(both.value[:, :1], alone.value)
    assert int(both.extras["nfev"][0]) < int(both.extras["nfev"][1])


def test_max_steps_and_min_step_give_statuses_not_assertions():
    mu = torch.tensor([[0.1], [1000.0]], dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    f = lambda t, y, mu: van_der_pol(t, y, mu.squeeze(-1))  # noqa: E731
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    sol = odeint_solve(f, y0, t, mu, max_steps=300)
    assert sol.statuses == [Status.CONVERGED, Status.MAX_STEPS]
    assert float(sol.residual[1]) > 0 and torch.isnan(sol.value[-1, 1]).all()
    with pytest.raises(SolverFailure, match=r"#1: MAX_STEPS"):
        odeint(f, y0, t, mu, max_steps=300)

    # y' = y² from y(0) = 1 blows up at t = 1: the step size collapses before t = 2
    blow = odeint_solve(lambda t, y: y**2, torch.ones(1, 1, dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64), min_step=1e-8)
    assert blow.statuses[0] in (Status.STEP_TOO_SMALL, Status.NONFINITE)
    assert float(blow.residual[0]) == pytest.approx(1.0, abs=1e-3)  # stuck at t ≈ 1


def test_failed_element_gets_no_gradient_the_others_do():
    mu = torch.tensor([[0.5], [1000.0]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64, requires_grad=True)
    f = lambda t, y, mu: van_der_pol(t, y, mu.squeeze(-1))  # noqa: E731
    sol = odeint_solve(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), mu, max_steps=100, on_failure="nan")
    assert sol.statuses == [Status.CONVERGED, Status.MAX_STEPS]
    (g0,) = torch.autograd.grad(sol.value[-1, 0].sum(), y0)  # only the good element's output
    assert torch.isfinite(g0[0]).all() and (g0[1] == 0).all()
    sol = odeint_solve(f, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), mu, max_steps=100, on_failure="raise")
    with pytest.raises(SolverFailure, match=r"elements \[1\]"):
        torch.nan_to_num(sol.value).sum().backward()


def test_adjoint_memory_does_not_grow_with_steps_backprop_does():
    field = MLPField(seed=10)
    y0 = randn(2, 3, seed=11, requires_grad=True)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)

    def saved(gradient, rtol):
        sol = []
        n = count_saved_tensors(lambda: sol.append(odeint_solve(field, y0, t, rtol=rtol, atol=rtol, gradient=gradient)))
        return n, int(sol[0].steps.sum())

    (a_lo, s_lo), (a_hi, s_hi) = saved("adjoint", 1e-4), saved("adjoint", 1e-9)
    (b_lo, _), (b_hi, _) = saved("backprop", 1e-4), saved("backprop", 1e-9)
    assert s_hi > 2 * s_lo
    assert a_lo == a_hi
    assert b_hi > 2 * b_lo


def test_float32_and_bad_settings():
    field = MLPField(seed=12).float()
    y0 = randn(2, 3, seed=13, dtype=torch.float32, requires_grad=True)
    ys = NeuralODE(field, rtol=1e-5, atol=1e-6)(y0, torch.tensor([0.0, 1.0]))
    ys.sum().backward()
    assert ys.dtype == torch.float32 and torch.isfinite(y0.grad).all()
    with pytest.raises(ConfigError):
        NeuralODE(field, method="euler")
    with pytest.raises(ConfigError):
        NeuralODE(field, method="rk4")  # needs step_size
    with pytest.raises(ConfigError):
        NeuralODE(field, gradient="magic")
    with pytest.raises(ValueError, match="strictly"):
        odeint(field, y0, torch.tensor([0.0, 1.0, 0.5]))
