"""Helpers shared by the network-aware task tests (DC and AC variants)."""

from __future__ import annotations

import numpy as np
import torch


def central_differences(f, x: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    """d f / d x by central differences, entry by entry (f: tensor -> scalar tensor)."""
    fd = torch.zeros_like(x)
    for i in range(x.numel()):
        e = torch.zeros(x.numel(), dtype=x.dtype)
        e[i] = h
        e = e.view_as(x)
        fd.view(-1)[i] = (f(x + e) - f(x - e)) / (2 * h)
    return fd


def toy_training_days(n: int = 24, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (n, k), y (n, 4, 3) MW, base (3,) MW): case9 loads whose 4-hour shape depends linearly on x."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k))
    base = np.array([90.0, 100.0, 125.0])
    shape = np.array([0.6, 0.9, 1.2, 1.1])
    w = rng.normal(scale=0.05, size=(k, 4, 3))
    y = base * shape[:, None] * (1 + np.einsum("nk,kth->nth", x, w) + 0.05 * rng.normal(size=(n, 4, 3)))
    return x, y, base


def toy_day_loads(n_days: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Forecast and realised case9 loads (n_days, 4, 3) MW: a steep rise to 1.3 x the case's loads."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([90.0, 100.0, 125.0], dtype=torch.float64)
    shape = torch.tensor([0.6, 0.9, 1.3, 1.2], dtype=torch.float64)
    mu = base * shape[:, None] * (1 + 0.05 * torch.randn(n_days, 4, 3, generator=g, dtype=torch.float64))
    y = mu * (1 + 0.08 * torch.randn(n_days, 4, 3, generator=g, dtype=torch.float64))
    return mu, y


def assert_task_gradient_matches_fd(scheduler, mu: torch.Tensor, y: torch.Tensor, params, rtol: float, atol: float) -> None:
    """d task_loss / d mu by autograd (the scheduler's implicit backward) against central differences."""
    from gridlearn.forecast.network_aware import task_loss

    m = mu.clone().requires_grad_()
    (grad,) = torch.autograd.grad(task_loss(scheduler, m, y, params), m)
    fd = central_differences(lambda m: task_loss(scheduler, m, y, params), mu)
    assert grad.abs().max() > 10  # not a vacuous comparison
    torch.testing.assert_close(grad, fd, rtol=rtol, atol=atol)


def rmse_then_task_training(scheduler, check_gradients: bool = False):
    """Seeded: an RMSE net on `toy_training_days` (18 train, 6 held-out days), then task training
    through ``scheduler``. Returns (model, history, task loss before, after, held-out x, y)."""
    from gridlearn.forecast.network_aware import (BusLoadForecaster, NetworkTaskParams, task_loss, train_rmse_bus,
                                                  train_task_network)
    from gridlearn.forecast.training import TrainSettings

    x, y, base = toy_training_days()
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    xtr, ytr = t(x[:18]), t(y[:18])
    params = NetworkTaskParams()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = BusLoadForecaster(x[:18], y[:18], base, hidden=(16,)).double()
        settings = TrainSettings(rmse_epochs=50, task_epochs=15, task_lr=2e-3, eval_every=5, patience=3)
        train_rmse_bus(model, xtr, ytr, t(x[18:]), t(y[18:]), settings)
        if check_gradients:  # the task loss's gradients reach the parameters, finite and not all zero
            model.train()
            loss = task_loss(scheduler, model.loads(xtr), ytr, params)
            grads = [g for g in torch.autograd.grad(loss, list(model.parameters()), allow_unused=True) if g is not None]
            assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().max() > 0 for g in grads)
        model.eval()
        with torch.no_grad():
            before = float(task_loss(scheduler, model.loads(xtr), ytr, params))
        hist = train_task_network(model, scheduler, params, xtr, ytr, xtr, ytr, settings)
        with torch.no_grad():
            after = float(task_loss(scheduler, model.loads(xtr), ytr, params))
    return model, hist, before, after, t(x[18:]), t(y[18:])
