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
