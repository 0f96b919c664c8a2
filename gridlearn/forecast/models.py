"""Probabilistic next-day load forecasters: 24 hourly Gaussians N(mu_i, sigma_i^2).

`GaussianNet` is the paper's model (Donti, Amos & Kolter 2017, power_sched): a linear map
initialised by least squares plus a residual MLP (n_features -> 200 -> 200 -> 24, each
hidden layer Linear -> BatchNorm -> ReLU -> Dropout(0.2)), and one learned sigma per hour
shared by all days. `HeteroscedasticNet` adds an input-dependent sigma head.

Both return ``(mu, sigma)``, each ``(batch, 24)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gridlearn.errors import ConfigError


def least_squares_init(linear: nn.Linear, x: np.ndarray, y: np.ndarray, ridge: float = 1e-8) -> None:
    """Set ``linear`` to the (lightly ridged) least-squares fit of y on [x, 1]."""
    x1 = np.hstack([x, np.ones((x.shape[0], 1))])
    gram = x1.T @ x1
    # A tiny ridge keeps the normal equations solvable when a feature is constant (short spans).
    theta = np.linalg.solve(gram + ridge * np.trace(gram) / len(gram) * np.eye(len(gram)), x1.T @ y)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(theta[:-1].T, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(theta[-1], dtype=linear.bias.dtype))


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, dropout: float) -> tuple[nn.Sequential, nn.Linear]:
    layers: list[nn.Module] = []
    sizes = (n_in, *hidden)
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers), nn.Linear(sizes[-1], n_out)


class GaussianNet(nn.Module):
    """mu = W x + b + MLP(x); sigma: one learned value per hour (``log_sigma`` is the parameter).

    Args:
        x_train, y_train: ``(n, n_features)``, ``(n, 24)`` arrays for the least-squares init.
        hidden: hidden widths of the residual MLP (paper: (200, 200)).
        dropout: dropout probability after each hidden layer (paper: 0.2).

    The linear part starts at the least-squares fit, so loads linear in the features are
    matched before any training; sigma starts at 1 in every hour:

    >>> import numpy as np, torch
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 3)); y = x @ rng.normal(size=(3, 24)) + 5.0
    >>> net = GaussianNet(x, y, hidden=(8,)).double().eval()
    >>> with torch.no_grad():
    ...     mu, sigma = net(torch.as_tensor(x))
    >>> tuple(mu.shape), float(sigma[0, 0]), bool((net.lin(torch.as_tensor(x)) - torch.as_tensor(y)).abs().max() < 1e-5)
    ((50, 24), 1.0, True)
    """

    def __init__(self, x_train: np.ndarray, y_train: np.ndarray, hidden: tuple[int, ...] = (200, 200), dropout: float = 0.2):
        super().__init__()
        if not hidden:
            raise ConfigError("hidden must list at least one layer width")
        n_in, n_out = x_train.shape[1], y_train.shape[1]
        self.lin = nn.Linear(n_in, n_out)
        least_squares_init(self.lin, x_train, y_train)
        self.body, self.head = _mlp(n_in, tuple(hidden), n_out, dropout)
        # log-parametrised so that task training can never drive sigma negative
        self.log_sigma = nn.Parameter(torch.zeros(1, n_out))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def mean(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.head(hidden)

    def sigma(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.log_sigma.exp().expand(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.features(x)
        return self.mean(x, hidden), self.sigma(x, hidden)

    @torch.no_grad()
    def set_sigma_from_residuals(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """sigma_i = RMS residual of hour i on (x, y), in eval mode (the paper's set_sig)."""
        was_training = self.training
        self.eval()
        mu, _ = self(x)
        rms = ((mu - y) ** 2).mean(0).sqrt().clamp_min(1e-6)
        self.log_sigma.copy_(rms.log().unsqueeze(0))
        self.train(was_training)


class HeteroscedasticNet(GaussianNet):
    """As `GaussianNet`, but sigma(x) = softplus(V h(x) + c) + min_sigma from the shared hidden layer.

    sigma starts near the least-squares residual scale, differs from day to day, and stays
    above ``min_sigma``; `set_sigma_from_residuals` leaves it alone (it is learned by NLL):

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> data = synthetic_days()
    >>> x = torch.as_tensor(data.x_train)
    >>> _ = torch.manual_seed(0)
    >>> net = HeteroscedasticNet(data.x_train, data.y_train, hidden=(8,)).double().eval()
    >>> with torch.no_grad():
    ...     mu, sigma = net(x)
    >>> tuple(sigma.shape), bool(sigma.min() > net.min_sigma), bool(sigma.std(0).max() > 0)
    ((8, 24), True, True)
    >>> round(float(sigma.mean()), 3)
    0.036
    >>> net.set_sigma_from_residuals(x, torch.as_tensor(data.y_train)); bool(torch.equal(net(x)[1], sigma))
    True
    """

    def __init__(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        hidden: tuple[int, ...] = (200, 200),
        dropout: float = 0.2,
        min_sigma: float = 1e-3,
    ):
        super().__init__(x_train, y_train, hidden, dropout)
        if min_sigma <= 0:
            raise ConfigError(f"min_sigma must be > 0, got {min_sigma}")
        self.min_sigma = min_sigma
        self.sigma_head = nn.Linear(hidden[-1], y_train.shape[1])
        # Start near the least-squares residual scale rather than softplus(0) = 0.69.
        resid = y_train - np.hstack([x_train, np.ones((len(x_train), 1))]) @ np.vstack(
            [self.lin.weight.detach().numpy().T, self.lin.bias.detach().numpy()]
        )
        s0 = float(np.sqrt(np.mean(resid**2)))
        with torch.no_grad():
            self.sigma_head.weight.mul_(0.01)
            self.sigma_head.bias.fill_(float(np.log(np.expm1(max(s0 - min_sigma, 1e-3)))))

    def sigma(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.sigma_head(hidden)) + self.min_sigma

    @torch.no_grad()
    def set_sigma_from_residuals(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """No-op: sigma is a function of the input, learned by the Gaussian likelihood."""
