"""Forecasters and training modes: least-squares init, sigma, task training lowers the task loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.forecast.models import GaussianNet, HeteroscedasticNet
from gridlearn.forecast.scheduling import StochasticScheduler
from gridlearn.forecast.training import TrainSettings, train_rmse, train_task, train_weighted_rmse, val_task_cost


def _synthetic(n_days: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_days, 6))
    hours = np.arange(24)
    shape = 1.6 + 0.5 * np.sin((hours - 8) / 24 * 2 * np.pi)
    y = shape + 0.2 * x[:, :1] + 0.05 * np.tanh(x[:, 1:2]) * np.cos(hours / 4) + 0.08 * rng.standard_normal((n_days, 24))
    return x, y


def test_linear_part_is_the_least_squares_fit_and_shapes():
    x, y = _synthetic(80, 0)
    torch.manual_seed(0)
    net = GaussianNet(x, y, hidden=(16,)).double().eval()
    x1 = np.hstack([x, np.ones((80, 1))])
    theta, *_ = np.linalg.lstsq(x1, y, rcond=None)
    lin = net.lin(torch.as_tensor(x)).detach().numpy()
    np.testing.assert_allclose(lin, x1 @ theta, atol=1e-6)
    mu, sigma = net(torch.as_tensor(x))
    assert mu.shape == sigma.shape == (80, 24) and (sigma > 0).all()
    het = HeteroscedasticNet(x, y, hidden=(16,)).double().eval()
    _, s2 = het(torch.as_tensor(x))
    assert s2.shape == (80, 24) and (s2 > 0).all()


def test_rmse_training_sets_sigma_to_residual_rms():
    x, y = _synthetic(120, 1)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    torch.manual_seed(1)
    net = GaussianNet(x[:96], y[:96], hidden=(16,)).double()
    train_rmse(net, xt[:96], yt[:96], xt[96:], yt[96:], TrainSettings(rmse_epochs=30, eval_every=5))
    mu, sigma = net(xt[:96])
    torch.testing.assert_close(sigma[0], ((mu - yt[:96]) ** 2).mean(0).sqrt())


def test_nll_training_learns_input_dependent_sigma():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 3))
    noise = np.where(x[:, :1] > 0, 0.3, 0.03)
    y = 1.5 + noise * rng.standard_normal((300, 24))
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    torch.manual_seed(2)
    net = HeteroscedasticNet(x, y, hidden=(32,), dropout=0.0).double()
    train_rmse(net, xt[:240], yt[:240], xt[240:], yt[240:], TrainSettings(rmse_epochs=150, rmse_lr=1e-2, eval_every=10), nll=True)
    _, sigma = net(xt[240:])
    hi, lo = sigma[x[240:, 0] > 0].mean(), sigma[x[240:, 0] <= 0].mean()
    assert hi > 2 * lo  # true ratio 10; a shared sigma would give 1


@pytest.mark.slow
def test_task_training_lowers_the_task_loss_and_keeps_the_best_weights():
    x, y = _synthetic(48, 3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    torch.manual_seed(3)
    net = GaussianNet(x, y, hidden=(16,), dropout=0.0).double()
    train_rmse(net, xt, yt, xt, yt, TrainSettings(rmse_epochs=20, eval_every=5))
    sched = StochasticScheduler()
    # validation = training days: the check is that the optimiser lowers the loss it follows
    hist = train_task(net, sched, xt, yt, xt, yt, TrainSettings(task_epochs=8, task_lr=3e-3, eval_every=2, patience=10))
    before = hist.val[0][1]
    assert hist.best_val < 0.97 * before
    # the returned weights are the best ones seen (a shallow state_dict copy would give the last)
    assert val_task_cost(net, sched, xt, yt) == pytest.approx(hist.best_val, rel=1e-9)


def test_cost_weighted_rmse_runs_and_returns_its_best_round():
    x, y = _synthetic(48, 4)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    torch.manual_seed(4)
    net = GaussianNet(x, y, hidden=(16,)).double()
    sched = StochasticScheduler()
    hist = train_weighted_rmse(net, sched, xt[:36], yt[:36], xt[36:], yt[36:], TrainSettings(weighted_rounds=2, weighted_epochs=10))
    assert len(hist.val) == 2
    assert val_task_cost(net, sched, xt[36:], yt[36:]) == pytest.approx(hist.best_val, rel=1e-9)


def test_a_day_whose_sqp_failed_is_left_out_of_the_training_step(monkeypatch):
    from gridlearn.forecast import StochasticScheduler
    from gridlearn.implicit import Status

    sched = StochasticScheduler()
    gen = torch.Generator().manual_seed(0)
    mu = (2.0 + 0.3 * torch.rand(3, 24, generator=gen, dtype=torch.float64)).requires_grad_(True)
    sigma = torch.full((3, 24), 0.1, dtype=torch.float64, requires_grad=True)
    real_solve = sched.solve

    def solve_with_day_1_failing(mu, sigma, z0=None, warm=None):
        sol = real_solve(mu, sigma, z0, warm)
        sol.status_code = sol.status_code.clone()
        sol.status_code[1] = Status.NUMERICAL.code
        return sol

    monkeypatch.setattr(sched, "solve", solve_with_day_1_failing)
    z_ok, ok, z_all = sched.forward_converged(mu, sigma)
    assert ok.tolist() == [True, False, True] and z_ok.shape == (2, 24)
    torch.testing.assert_close(z_all[1], mu[1].detach())
    z_ok.sum().backward()
    assert float(mu.grad[1].abs().sum()) == 0.0 and float(mu.grad[0].abs().sum()) > 0.0
    # the plain forward still refuses to return a schedule for a failed day
    from gridlearn.errors import SolverFailure

    with pytest.raises(SolverFailure, match="#1"):
        sched(mu.detach(), sigma.detach())
