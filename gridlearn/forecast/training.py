"""Training modes for the day-ahead forecasters: RMSE, Gaussian NLL, cost-weighted RMSE, task, hybrid.

All loops are full-batch Adam, as in the paper's code, with early stopping on a
chronological validation hold-out: every ``eval_every`` epochs the validation loss is
computed, and the weights with the best validation loss are kept as a *deep* copy
(``copy.deepcopy(model.state_dict())``). The original code stored
``model.state_dict().copy()``, a shallow dict copy whose tensors are the live parameters,
so "restoring the best model" restored the latest weights; the deep copy fixes that.

Modes (``train_*`` functions):
- rmse: minimise MSE of mu; then sigma_i = RMS training residual of hour i (paper).
- nll: minimise the Gaussian negative log-likelihood (for the input-dependent-sigma net).
- weighted_rmse: cost-weighted RMSE, the baseline of the paper's later version. Our
  definition: rounds r = 1..R; in each, minimise sum_h sqrt(mean_d w_dh (mu_dh - y_dh)^2),
  then set w_dh = realised task cost of hour h on day d under the current model's schedule,
  normalised to mean 1 (w = 1 in round 1). The net is trained on from round to round
  (the original restarts a fresh net each round).
- task: start from a trained RMSE net; minimise the realised cost of z*(mu, sigma) (the
  differentiable SQP schedule) against the true load.
- hybrid: task loss + ``mse_weight`` * MSE of mu.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from gridlearn.errors import ConfigError
from gridlearn.forecast.scheduling import StochasticScheduler, realised_cost, task_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Epoch counts, learning rates and early stopping (paper: lr 1e-3 for RMSE, 1e-4 for task).

    >>> TrainSettings(rmse_epochs=20).task_lr, TrainSettings().rmse_epochs
    (0.0001, 1000)
    >>> TrainSettings(patience=0)
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: patience must be >= 1, got 0
    """

    rmse_epochs: int = 1000
    rmse_lr: float = 1e-3
    task_epochs: int = 300
    task_lr: float = 1e-4
    eval_every: int = 10
    patience: int = 5  # evaluations without improvement before stopping (task, hybrid)
    rmse_patience: int = 20  # the same for rmse/nll, whose epochs are cheap
    mse_weight: float = 1.0  # hybrid: weight of the MSE term
    weighted_rounds: int = 5
    weighted_epochs: int = 100
    progress: bool = False

    def __post_init__(self):
        for name in ("rmse_epochs", "task_epochs", "eval_every", "patience", "rmse_patience", "weighted_rounds", "weighted_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.rmse_lr <= 0 or self.task_lr <= 0:
            raise ConfigError("learning rates must be > 0")
        if self.mse_weight < 0:
            raise ConfigError(f"mse_weight must be >= 0, got {self.mse_weight}")


@dataclass
class History:
    """Validation losses seen while training (epoch, value) and the epoch whose weights were kept."""

    val: list[tuple[int, float]]
    best_epoch: int
    best_val: float


def _fit(
    model: nn.Module,
    epochs: int,
    lr: float,
    train_loss: Callable[[], torch.Tensor],
    val_loss: Callable[[], float],
    settings: TrainSettings,
    desc: str,
    patience: int,
) -> History:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.eval()
    best_val = val_loss()
    best_state = copy.deepcopy(model.state_dict())  # deep: a shallow copy would track later steps
    best_epoch, bad, history = 0, 0, [(0, best_val)]
    for epoch in tqdm(range(1, epochs + 1), desc=desc, disable=not settings.progress, leave=False):
        model.train()
        opt.zero_grad()
        loss = train_loss()
        loss.backward()
        opt.step()
        if epoch % settings.eval_every and epoch != epochs:
            continue
        model.eval()
        v = val_loss()
        history.append((epoch, v))
        log.info("%s epoch %d: train %.5g  val %.5g", desc, epoch, loss.item(), v)
        if v < best_val:
            best_val, best_epoch, bad = v, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    return History(history, best_epoch, best_val)


def _nll(mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (torch.log(sigma) + 0.5 * ((y - mu) / sigma) ** 2).mean()


def train_rmse(model, x_tr, y_tr, x_val, y_val, settings: TrainSettings, nll: bool = False) -> History:
    """MSE (or Gaussian NLL when ``nll``) training; sigma then set from training residuals.

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.forecast import GaussianNet, StochasticScheduler
    >>> data = synthetic_days(); x, y, x_val, y_val = data.tensors()      # 8 + 4 days of 24 hours
    >>> _ = torch.manual_seed(0); model = GaussianNet(data.x_train, data.y_train, hidden=(8,)).double()
    >>> hist = train_rmse(model, x, y, x_val, y_val, TrainSettings(rmse_epochs=20, eval_every=5))
    >>> hist.best_epoch, round(hist.val[0][1], 4), round(hist.best_val, 4)   # validation MSE: start, best
    (20, 0.074, 0.068)
    >>> mu, sigma = model(x)                         # sigma_h: the RMS training residual of hour h
    >>> bool(torch.allclose(sigma[0], ((mu - y) ** 2).mean(0).sqrt()))
    True
    """

    def train_loss():
        mu, sigma = model(x_tr)
        return _nll(mu, sigma, y_tr) if nll else ((mu - y_tr) ** 2).mean()

    @torch.no_grad()
    def val_loss():
        mu, sigma = model(x_val)
        return float(_nll(mu, sigma, y_val) if nll else ((mu - y_val) ** 2).mean())

    hist = _fit(model, settings.rmse_epochs, settings.rmse_lr, train_loss, val_loss, settings, "nll" if nll else "rmse", settings.rmse_patience)
    model.set_sigma_from_residuals(x_tr, y_tr)
    return hist


def train_rmse_epochs(model, x, y, epochs: int, lr: float, nll: bool = False, progress: bool = False) -> None:
    """MSE (or Gaussian NLL) training for exactly ``epochs`` full-batch Adam steps, no early stopping;
    then sigma from residuals. Used to refit on every training day for the epoch count that
    early stopping chose on the validation split, and by the reference protocol.

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.forecast import GaussianNet, StochasticScheduler
    >>> data = synthetic_days(); x, y, x_val, y_val = data.tensors()      # 8 + 4 days of 24 hours
    >>> _ = torch.manual_seed(0); model = GaussianNet(data.x_train, data.y_train, hidden=(8,)).double()
    >>> rmse = lambda: round(float(((model(x)[0].detach() - y) ** 2).mean().sqrt()), 4)
    >>> _ = model.eval(); before = rmse()
    >>> train_rmse_epochs(model, x, y, epochs=20, lr=1e-2)
    >>> before, rmse(), model.training                   # training RMSE before and after; left in eval mode
    (0.2878, 0.1413, False)
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in tqdm(range(epochs), desc="nll refit" if nll else "rmse refit", disable=not progress, leave=False):
        model.train()
        opt.zero_grad()
        mu, sigma = model(x)
        loss = _nll(mu, sigma, y) if nll else ((mu - y) ** 2).mean()
        loss.backward()
        opt.step()
    model.eval()
    model.set_sigma_from_residuals(x, y)


class _WarmSchedules:
    """Last schedules per data set, so each epoch's SQP starts next to its answer."""

    def __init__(self):
        self.z: dict[str, torch.Tensor] = {}

    def __call__(self, scheduler: StochasticScheduler, key: str, mu, sigma, differentiable: bool):
        """``(z_ok, ok)``: schedules of the days whose SQP converged, and that mask."""
        z0 = self.z.get(key)
        with torch.set_grad_enabled(differentiable):
            z_ok, ok, z_all = scheduler.forward_converged(mu, sigma, z0)
        self.z[key] = z_all.detach()
        return z_ok, ok


def val_task_cost(model, scheduler: StochasticScheduler, x, y, warm: _WarmSchedules | None = None, key: str = "val") -> float:
    with torch.no_grad():
        mu, sigma = model(x)
        if warm is None:
            return float(task_loss(scheduler(mu, sigma), y, scheduler.params))
        z, ok = warm(scheduler, key, mu, sigma, False)
        return float(task_loss(z, y[ok], scheduler.params))


def train_task(model, scheduler: StochasticScheduler, x_tr, y_tr, x_val, y_val, settings: TrainSettings, mse_weight: float = 0.0) -> History:
    """Task (``mse_weight`` = 0) or hybrid training through the differentiable SQP schedule.

    An RMSE net, then 6 task epochs at lr 1e-2 (the paper: 1e-4 for up to 300): the hold-out
    task cost (mean daily cost of the schedules, `scheduling.task_loss`) falls:

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.forecast import GaussianNet, StochasticScheduler
    >>> data = synthetic_days(); x, y, x_val, y_val = data.tensors()      # 8 + 4 days of 24 hours
    >>> _ = torch.manual_seed(0); model = GaussianNet(data.x_train, data.y_train, hidden=(8,)).double()
    >>> settings = TrainSettings(rmse_epochs=20, eval_every=3, task_epochs=6, task_lr=1e-2)
    >>> _ = train_rmse(model, x, y, x_val, y_val, settings)
    >>> hist = train_task(model, StochasticScheduler(), x, y, x_val, y_val, settings)
    >>> [(epoch, round(cost, 2)) for epoch, cost in hist.val], hist.best_epoch
    ([(0, 13.68), (3, 12.4), (6, 12.24)], 6)
    """
    warm = _WarmSchedules()

    def train_loss():
        mu, sigma = model(x_tr)
        z, ok = warm(scheduler, "train", mu, sigma, True)
        loss = task_loss(z, y_tr[ok], scheduler.params)
        if mse_weight:
            loss = loss + mse_weight * ((mu - y_tr) ** 2).mean()
        return loss

    def val_loss():
        return val_task_cost(model, scheduler, x_val, y_val, warm)

    return _fit(model, settings.task_epochs, settings.task_lr, train_loss, val_loss, settings, "hybrid" if mse_weight else "task", settings.patience)


def train_task_epochs(model, scheduler: StochasticScheduler, x, y, epochs: int, settings: TrainSettings, mse_weight: float = 0.0) -> None:
    """Task (or hybrid) training for exactly ``epochs`` full-batch steps, no validation: the refit
    on every training day for the epoch count early stopping chose.

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.forecast import GaussianNet, StochasticScheduler
    >>> data = synthetic_days(); x, y, x_val, y_val = data.tensors()      # 8 + 4 days of 24 hours
    >>> _ = torch.manual_seed(0); model = GaussianNet(data.x_train, data.y_train, hidden=(8,)).double()
    >>> scheduler, settings = StochasticScheduler(), TrainSettings(task_lr=1e-2)
    >>> train_rmse_epochs(model, x, y, epochs=20, lr=1e-2)
    >>> cost = lambda: round(evaluate(model, scheduler, x, y)["task_cost"], 2)
    >>> before = cost(); train_task_epochs(model, scheduler, x, y, 3, settings)
    >>> before, cost()                                   # training task cost before and after
    (8.05, 6.39)
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    warm = _WarmSchedules()
    opt = torch.optim.Adam(model.parameters(), lr=settings.task_lr)
    for epoch in tqdm(range(1, epochs + 1), desc="task refit", disable=not settings.progress, leave=False):
        model.train()
        opt.zero_grad()
        mu, sigma = model(x)
        z, ok = warm(scheduler, "train", mu, sigma, True)
        loss = task_loss(z, y[ok], scheduler.params)
        if mse_weight:
            loss = loss + mse_weight * ((mu - y) ** 2).mean()
        loss.backward()
        opt.step()
        log.info("task refit epoch %d: train %.5g", epoch, loss.item())
    model.eval()


def train_weighted_rmse(model, scheduler: StochasticScheduler, x_tr, y_tr, x_val, y_val, settings: TrainSettings,
                        keep_round: int | None = None) -> History:
    """Cost-weighted RMSE (definition in the module docstring); best round by validation task cost.

    ``keep_round``: no validation (``x_val``, ``y_val`` unused); run rounds 0..keep_round and
    keep the last (a refit for the round that validation chose).

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.forecast import GaussianNet, StochasticScheduler
    >>> data = synthetic_days(); x, y, x_val, y_val = data.tensors()      # 8 + 4 days of 24 hours
    >>> _ = torch.manual_seed(0); model = GaussianNet(data.x_train, data.y_train, hidden=(8,)).double()
    >>> settings = TrainSettings(weighted_rounds=3, weighted_epochs=10, rmse_lr=1e-2)
    >>> hist = train_weighted_rmse(model, StochasticScheduler(), x, y, x_val, y_val, settings)
    >>> [(r, round(cost, 2)) for r, cost in hist.val], hist.best_epoch    # hold-out task cost per round
    ([(0, 6.1), (1, 4.97), (2, 3.12)], 2)
    """
    w = torch.ones_like(y_tr)
    opt = torch.optim.Adam(model.parameters(), lr=settings.rmse_lr)
    best_val, best_round, best_state, history = float("inf"), 0, None, []
    for r in range(settings.weighted_rounds if keep_round is None else keep_round + 1):
        # no early stopping inside a round: rounds are compared on validation task cost below
        for _ in tqdm(range(settings.weighted_epochs), desc=f"weighted round {r}", disable=not settings.progress, leave=False):
            model.train()
            opt.zero_grad()
            mu, _ = model(x_tr)
            loss = (w * (mu - y_tr) ** 2).mean(0).sqrt().sum()
            loss.backward()
            opt.step()
        model.eval()
        model.set_sigma_from_residuals(x_tr, y_tr)
        with torch.no_grad():
            mu, sigma = model(x_tr)
            cost = realised_cost(scheduler(mu, sigma), y_tr, scheduler.params)
            w = cost / cost.mean()
        if keep_round is not None:
            best_round, best_state = r, copy.deepcopy(model.state_dict())
            continue
        v = val_task_cost(model, scheduler, x_val, y_val)
        history.append((r, v))
        log.info("weighted_rmse round %d: val task cost %.5g", r, v)
        if v < best_val:
            best_val, best_round, best_state = v, r, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return History(history, best_round, best_val)  # best_val is inf for a refit (no validation)


@torch.no_grad()
def evaluate(model, scheduler: StochasticScheduler, x, y) -> dict[str, torch.Tensor | float]:
    """Test metrics: mu, sigma, schedule z ``(n_days, 24)``; rmse (over all day-hours); rmse_hourly
    (the mean over the 24 hours of each hour's RMSE over days: the number the reference code
    reports, ``rmse_loss`` in power_sched/nets.py, and never above rmse); task_cost (mean
    daily cost); per_hour_cost ``(24,)`` (mean over days of the cost in each hour).

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.forecast import GaussianNet, StochasticScheduler
    >>> data = synthetic_days(); x, y, x_val, y_val = data.tensors()      # 8 + 4 days of 24 hours
    >>> _ = torch.manual_seed(0); model = GaussianNet(data.x_train, data.y_train, hidden=(8,)).double()
    >>> train_rmse_epochs(model, x, y, epochs=20, lr=1e-3)
    >>> m = evaluate(model, StochasticScheduler(), x_val, y_val)
    >>> tuple(m["schedule"].shape), tuple(m["per_hour_cost"].shape), m["rmse_hourly"] <= m["rmse"]
    ((4, 24), (24,), True)
    >>> round(m["rmse"], 3), round(m["task_cost"], 2), round(float(m["per_hour_cost"].sum()), 2)
    (0.261, 13.68, 13.68)
    """
    model.eval()
    mu, sigma = model(x)
    z = scheduler(mu, sigma)
    cost = realised_cost(z, y, scheduler.params)
    return {
        "mu": mu,
        "sigma": sigma,
        "schedule": z,
        "rmse": float(((mu - y) ** 2).mean().sqrt()),
        "rmse_hourly": float(((mu - y) ** 2).mean(0).sqrt().mean()),
        "task_cost": float(cost.sum(-1).mean()),
        "per_hour_cost": cost.mean(0),
    }
