"""SQP scheduling: closed forms, agreement with an independent solve, ramp limits, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.forecast.scheduling import (
    SQP,
    SchedulingParams,
    StochasticScheduler,
    expected_cost,
    expected_cost_derivatives,
    realised_cost,
    task_loss,
)
from tests.forecast._reference import scipy_schedule

P = SchedulingParams()


def _day_forecasts(n_days: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hours = torch.arange(24, dtype=dtype)
    base = 1.6 + 0.6 * torch.sin((hours - 8) / 24 * 2 * torch.pi)
    # steep morning ramps so that the ramp limit binds on some hours
    mu = base + 0.9 * torch.sigmoid(3 * (hours - 7)) + 0.1 * torch.randn(n_days, 24, generator=g, dtype=dtype)
    sigma = 0.05 + 0.1 * torch.rand(n_days, 24, generator=g, dtype=dtype)
    return mu, sigma


def test_expected_cost_matches_monte_carlo_and_derivatives_match_autograd():
    g = torch.Generator().manual_seed(0)
    z = torch.tensor([1.0, 1.5, 2.2], dtype=torch.float64, requires_grad=True)
    mu = torch.tensor([1.2, 1.5, 2.0], dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.3, 0.05], dtype=torch.float64)
    y = mu + sigma * torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    mc = realised_cost(z.detach(), y, P).mean(0)
    exact = expected_cost(z, mu, sigma, P)
    se = realised_cost(z.detach(), y, P).std(0) / 400_000**0.5
    assert torch.all((mc - exact.detach()).abs() < 5 * se)
    d1, d2 = expected_cost_derivatives(z.detach(), mu, sigma, P)
    (grad,) = torch.autograd.grad(exact.sum(), z, create_graph=True)
    torch.testing.assert_close(grad, d1)
    hess = torch.stack([torch.autograd.grad(grad[i], z, retain_graph=True)[0][i] for i in range(3)])
    torch.testing.assert_close(hess, d2)


def test_sqp_matches_scipy_and_respects_ramp_limits():
    mu, sigma = _day_forecasts(4, seed=1)
    sched = StochasticScheduler(P, SQP())
    sol = sched.solve(mu, sigma)
    assert sol.ok, sol.statuses
    z = sol.value
    ramps = (z[:, 1:] - z[:, :-1]).abs()
    assert ramps.max() <= P.c_ramp + 1e-7
    assert (ramps > P.c_ramp - 1e-6).any(), "test data should make some ramp limit bind"
    for d in range(4):
        ref = scipy_schedule(mu[d].numpy(), sigma[d].numpy(), P.gamma_under, P.gamma_over, P.c_ramp)
        np.testing.assert_allclose(z[d].numpy(), ref, atol=1e-5)
        # KKT certificate independent of both solvers: grad f + G'lam = 0 with lam >= 0 on active rows
        gmat, h = P.ramp_constraints(z)
        grad = expected_cost_derivatives(z[d], mu[d], sigma[d], P)[0].numpy()
        active = (gmat @ z[d] - h).numpy() > -1e-7
        lam, resid = nnls(gmat.numpy()[active].T, -grad) if active.any() else (None, np.linalg.norm(grad))
        assert resid < 1e-6


@pytest.mark.slow
def test_task_loss_gradient_matches_finite_differences():
    mu, sigma = _day_forecasts(2, seed=2)
    y = mu + sigma * torch.randn(2, 24, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sched = StochasticScheduler(P, SQP())
    mu.requires_grad_(True)
    sigma.requires_grad_(True)
    loss = task_loss(sched(mu, sigma), y, P)
    gmu, gsig = torch.autograd.grad(loss, (mu, sigma))

    def f(m, s):
        with torch.no_grad():
            return float(task_loss(sched(m, s), y, P))

    eps = 1e-4  # the schedule is accurate to ~1e-9, so smaller steps would measure solver noise
    g = torch.Generator().manual_seed(4)
    for _ in range(2):  # random directional derivatives (central differences)
        dm = torch.randn(2, 24, generator=g, dtype=torch.float64)
        ds = torch.randn(2, 24, generator=g, dtype=torch.float64) * 0.1
        fd = (f(mu.detach() + eps * dm, sigma.detach() + eps * ds) - f(mu.detach() - eps * dm, sigma.detach() - eps * ds)) / (2 * eps)
        an = float((gmu * dm).sum() + (gsig * ds).sum())
        assert an == pytest.approx(fd, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_schedule_gradcheck_with_qplayer():
    mu, sigma = _day_forecasts(2, seed=5)
    sched = StochasticScheduler(P, SQP())
    mu.requires_grad_(True)
    sigma.requires_grad_(True)
    # fast_mode checks random projections of the Jacobian (the full one costs ~200 SQP solves)
    assert torch.autograd.gradcheck(lambda m, s: sched(m, s), (mu, sigma), eps=1e-5, atol=1e-4, rtol=1e-3, fast_mode=True)


def test_nonfinite_forecast_is_reported_per_day_and_forward_names_it():
    mu, sigma = _day_forecasts(3, seed=6)
    mu[1, 5] = float("nan")
    sched = StochasticScheduler(P, SQP())
    sol = sched.solve(mu, sigma)
    assert sol.converged.tolist() == [True, False, True]
    with pytest.raises(SolverFailure, match="#1: NONFINITE"):
        sched(mu, sigma)


def test_too_few_sqp_steps_is_max_steps_not_a_silent_answer():
    mu, sigma = _day_forecasts(2, seed=7)
    sched = StochasticScheduler(P, SQP(max_steps=1))
    sol = sched.solve(mu, sigma)
    assert not sol.ok
    with pytest.raises(SolverFailure, match="MAX_STEPS"):
        sched(mu, sigma)


def test_bad_settings_raise_config_error():
    with pytest.raises(ConfigError):
        SchedulingParams(c_ramp=0)
    with pytest.raises(ConfigError):
        SQP(max_steps=0)


def test_unconstrained_start_is_the_per_hour_root_of_the_derivative():
    from gridlearn.forecast.scheduling import unconstrained_schedule

    mu, sigma = _day_forecasts(3, seed=8)
    z = unconstrained_schedule(mu, sigma, P)
    d1, _ = expected_cost_derivatives(z, mu, sigma, P)
    assert d1.abs().max() < 1e-9
    # with a ramp limit that never binds, SQP stops at that point after one certifying QP
    loose = SchedulingParams(c_ramp=100.0)
    sol = StochasticScheduler(loose, SQP()).solve(mu, sigma)
    assert sol.ok and int(sol.steps.max()) == 1
    torch.testing.assert_close(sol.value, z, atol=1e-7, rtol=0)
