"""The reference protocol of Donti, Amos & Kolter (2017): locuslab/e2e-model-learning, ``power_sched/``.

What `--protocol reference` of the task-forecasting study runs, step by step as the
original ``main.py``/``nets.py`` do it, with gridlearn's differentiable SQP schedule
(`StochasticScheduler`, on `QPLayer`) where the original calls its qpth-based solver:

1. Features standardised over the *whole* data set, every day of both files, test days
   included (`whole_data_standardised`; ``main.py`` standardises the concatenated ``X``).
2. RMSE net: full batch, Adam at lr 1e-3, 1,000 steps on all training days, no early
   stopping; then sigma_i = RMS training residual of hour i (`train_rmse_fixed`).
3. Cost-weighted RMSE: 10 rounds, each a *fresh* net trained 100 epochs in minibatches of
   100 days (in order, not shuffled) on sum_h sqrt(mean_d w_dh (mu_dh - y_dh)^2), with
   w = 1 in the first round and afterwards the previous round's realised per-hour task
   cost on the training days (not normalised); the last round's net is the result
   (`train_weighted_rmse_reference`).
4. Task net: a random 80% of the training days (`random_holdout`) pre-train a fresh net
   as in step 2; it is then trained on the task loss, full batch, Adam at lr 1e-4, for at
   most 1,000 steps; the hold-out (the other 20%) task cost is computed at every step, and
   every 20 steps training stops if the window brought no new minimum
   (`train_task_reference`).

Differences from the original, on purpose and small: float64 instead of float32; the
weights kept at early stopping are a deep copy of the best step's (the original stored
``state_dict().copy()``, whose tensors are the live parameters, so it returned the last
step's weights); the original draws its permutation from NumPy's global generator, here it
comes from a generator seeded by the run's seed. A day whose SQP does not converge is
left out of that step's loss (no gradient), as in gridlearn's own protocol.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from gridlearn.data.features import DayAheadData
from gridlearn.errors import ConfigError
from gridlearn.forecast.scheduling import StochasticScheduler, realised_cost, task_loss
from gridlearn.forecast.training import History, _WarmSchedules, train_rmse_epochs, val_task_cost

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReferenceSettings:
    """The reference's constants (``nets.py``); change them only to make tests small.

    >>> s = ReferenceSettings()
    >>> s.rmse_steps, s.weighted_rounds, s.task_lr, s.stop_window, s.holdout_fraction
    (1000, 10, 0.0001, 20, 0.2)
    >>> ReferenceSettings(holdout_fraction=1.0)
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: holdout_fraction must be in (0, 1), got 1.0
    """

    rmse_steps: int = 1000
    rmse_lr: float = 1e-3
    weighted_rounds: int = 10
    weighted_epochs: int = 100
    weighted_batch: int = 100
    task_steps: int = 1000
    task_lr: float = 1e-4
    stop_window: int = 20  # early stopping: checked every this many steps
    holdout_fraction: float = 0.2
    progress: bool = False

    def __post_init__(self):
        for name in ("rmse_steps", "weighted_rounds", "weighted_epochs", "weighted_batch", "task_steps", "stop_window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.holdout_fraction < 1:
            raise ConfigError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.rmse_lr <= 0 or self.task_lr <= 0:
            raise ConfigError("learning rates must be > 0")


def whole_data_standardised(data: DayAheadData) -> DayAheadData:
    """The same split with every feature standardised by its mean and std over *all* days.

    ``data``'s features are an affine map of the raw ones (train statistics), and
    standardisation is invariant to an affine map of a column, so standardising them again
    over train + test gives exactly the raw features standardised over all days. A column
    constant over all days stays 0.

    `synthetic_days` standardises on its 8 training days; over all 12 days the means move:

    >>> import numpy as np
    >>> from gridlearn.data import synthetic_days
    >>> data = synthetic_days()
    >>> both = lambda d: np.concatenate([d.x_train, d.x_test])
    >>> round(float(np.abs(both(data).mean(0)).max()), 3), round(float(np.abs(data.x_train.mean(0)).max()), 12)
    (0.025, 0.0)
    >>> ref = whole_data_standardised(data)
    >>> bool(np.abs(both(ref).mean(0)).max() < 1e-12), np.allclose(both(ref).std(0), 1.0), ref.y_test is data.y_test
    (True, True, True)
    """
    x = np.concatenate([data.x_train, data.x_test])
    std = x.std(axis=0)
    xs = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    n = len(data.x_train)
    return replace(data, x_train=xs[:n], x_test=xs[n:])


def random_holdout(n_days: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, hold-out) day indices: a seeded random permutation, the first ``int(n (1 - f))`` fit.

    >>> fit, hold = random_holdout(10, 0.2, seed=0)
    >>> fit.tolist(), hold.tolist()
    ([4, 6, 2, 7, 3, 5, 9, 0], [8, 1])
    >>> random_holdout(2, 0.6, seed=0)
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: holdout_fraction 0.6 leaves no fit or no hold-out day of 2
    """
    if n_days < 2:
        raise ConfigError(f"need at least 2 days for a hold-out split, got {n_days}")
    perm = np.random.default_rng(seed).permutation(n_days)
    n_fit = int(n_days * (1 - holdout_fraction))
    if not 0 < n_fit < n_days:
        raise ConfigError(f"holdout_fraction {holdout_fraction} leaves no fit or no hold-out day of {n_days}")
    return perm[:n_fit], perm[n_fit:]


def train_rmse_fixed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: ReferenceSettings) -> None:
    """Full-batch MSE, ``rmse_steps`` Adam steps at ``rmse_lr``, no early stopping; then sigma from residuals.

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.forecast import GaussianNet, StochasticScheduler
    >>> data = synthetic_days(); x, y = data.tensors()[:2]; _ = torch.manual_seed(0)    # 8 training days
    >>> model = GaussianNet(data.x_train, data.y_train, hidden=(8,)).double()
    >>> train_rmse_fixed(model, x, y, ReferenceSettings(rmse_steps=20, rmse_lr=1e-2))
    >>> with torch.no_grad():
    ...     mu, sigma = model(x)
    >>> round(float(((mu - y) ** 2).mean().sqrt()), 4), bool(torch.allclose(sigma[0], ((mu - y) ** 2).mean(0).sqrt()))
    (0.14, True)
    """
    train_rmse_epochs(model, x, y, settings.rmse_steps, settings.rmse_lr, progress=settings.progress)


def train_weighted_rmse_reference(
    make_model: Callable[[], nn.Module], scheduler: StochasticScheduler, x: torch.Tensor, y: torch.Tensor, settings: ReferenceSettings
) -> nn.Module:
    """Cost-weighted RMSE as in the reference (module docstring, step 3); returns the last round's net.

    Each round starts a fresh net from ``make_model``; two rounds of 10 epochs in minibatches of 4 days:

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.forecast import GaussianNet, StochasticScheduler
    >>> data = synthetic_days(); x, y = data.tensors()[:2]; _ = torch.manual_seed(0)    # 8 training days
    >>> make_model = lambda: GaussianNet(data.x_train, data.y_train, hidden=(8,)).double()
    >>> settings = ReferenceSettings(rmse_lr=1e-2, weighted_rounds=2, weighted_epochs=10, weighted_batch=4)
    >>> model = train_weighted_rmse_reference(make_model, StochasticScheduler(), x, y, settings)
    >>> with torch.no_grad():
    ...     mu, sigma = model(x)
    >>> model.training, round(float(((mu - y) ** 2).mean().sqrt()), 4), round(float(sigma.mean()), 4)
    (False, 0.1, 0.1)
    """
    w = torch.ones_like(y)
    model = None
    for r in range(settings.weighted_rounds):
        model = make_model()
        opt = torch.optim.Adam(model.parameters(), lr=settings.rmse_lr)
        for _ in tqdm(range(settings.weighted_epochs), desc=f"weighted round {r} (reference)", disable=not settings.progress, leave=False):
            model.train()
            for i in range(0, len(x), settings.weighted_batch):
                sl = slice(i, i + settings.weighted_batch)
                opt.zero_grad()
                mu, _ = model(x[sl])
                (w[sl] * (mu - y[sl]) ** 2).mean(0).sqrt().sum().backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            # As the original: the schedule that sets the next weights uses the net's sigma
            # before `set_sigma_from_residuals` (its initial value, 1: only mu is trained).
            mu, sigma = model(x)
            w = realised_cost(scheduler(mu, sigma), y, scheduler.params)
        model.set_sigma_from_residuals(x, y)
        log.info("weighted_rmse (reference) round %d: train task cost %.5g", r, float(w.sum(-1).mean()))
    return model


def train_task_reference(
    model: nn.Module,
    scheduler: StochasticScheduler,
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_hold: torch.Tensor,
    y_hold: torch.Tensor,
    settings: ReferenceSettings,
) -> History:
    """Task-loss training with the reference's windowed early stopping (module docstring, step 4).

    At each step the hold-out cost of the current weights is recorded, then the step is
    taken; every ``stop_window`` steps, if the smallest hold-out cost seen in the window
    is the previous window's minimum, training stops and the best weights are restored.

    A random hold-out of 2 of the 8 days, an RMSE net, then task steps at lr 1e-2 (100x the
    reference's) with a window of 3: the hold-out cost, recorded before each step, only
    rises, so the check at step 6 finds no new minimum since the check at step 3, training stops after
    7 of 9 steps, and step 0's weights are restored:

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.forecast import GaussianNet, StochasticScheduler
    >>> data = synthetic_days(); x, y = data.tensors()[:2]; _ = torch.manual_seed(0)    # 8 training days
    >>> fit, hold = random_holdout(len(x), 0.2, seed=0)
    >>> model = GaussianNet(data.x_train[fit], data.y_train[fit], hidden=(8,)).double()
    >>> settings = ReferenceSettings(rmse_steps=20, rmse_lr=1e-2, task_steps=9, task_lr=1e-2, stop_window=3)
    >>> train_rmse_fixed(model, x[fit], y[fit], settings)
    >>> hist = train_task_reference(model, StochasticScheduler(), x[fit], y[fit], x[hold], y[hold], settings)
    >>> [round(cost, 2) for _, cost in hist.val], hist.best_epoch
    ([4.89, 6.24, 10.49, 16.18, 24.53, 26.82, 23.91], 0)
    """
    opt = torch.optim.Adam(model.parameters(), lr=settings.task_lr)
    warm = _WarmSchedules()
    history: list[tuple[int, float]] = []
    best_val, best_step, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    prev_min = None
    for i in tqdm(range(settings.task_steps), desc="task (reference)", disable=not settings.progress, leave=False):
        model.train()
        opt.zero_grad()
        mu, sigma = model(x_fit)
        z, ok = warm(scheduler, "train", mu, sigma, True)
        loss = task_loss(z, y_fit[ok], scheduler.params)
        loss.backward()
        model.eval()
        v = val_task_cost(model, scheduler, x_hold, y_hold, warm, key="hold")
        history.append((i, v))
        if v < best_val:
            best_val, best_step, best_state = v, i, copy.deepcopy(model.state_dict())
        opt.step()
        log.info("task (reference) step %d: train %.5g  hold-out %.5g", i, loss.item(), v)
        if i > 0 and i % settings.stop_window == 0:
            if prev_min is not None and best_val >= prev_min:
                break
            prev_min = best_val
    model.load_state_dict(best_state)
    model.eval()
    return History(history, best_step, best_val)
