"""Small problems shared by the implicit-layer tests (seeded locally, float64 unless asked)."""

from __future__ import annotations

import torch
from torch import nn


class TanhCell(nn.Module):
    """``f(z, x) = tanh(W z + U x + c)`` with ‖W‖₂ = ``contraction``: a contraction, so the
    DEQ has a unique equilibrium and every fixed-point solver converges."""

    def __init__(self, d: int = 4, contraction: float = 0.5, seed: int = 0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(d, d, generator=g, dtype=dtype)
        W = W * (contraction / torch.linalg.matrix_norm(W, ord=2))
        self.W = nn.Parameter(W)
        self.U = nn.Parameter(torch.randn(d, d, generator=g, dtype=dtype) / d**0.5)
        self.c = nn.Parameter(0.1 * torch.randn(d, generator=g, dtype=dtype))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ self.W.T + x @ self.U.T + self.c)


class LinearCell(nn.Module):
    """``f(z, x) = A z + x`` (fixed point ``(I - A)⁻¹ x``)."""

    def __init__(self, A: torch.Tensor):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return z @ self.A.T + x


def randn(*shape, seed: int = 0, dtype=torch.float64, requires_grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(requires_grad)


def count_saved_tensors(fn) -> int:
    """Number of tensors autograd saves for backward while ``fn()`` runs."""
    n = 0

    def pack(t):
        nonlocal n
        n += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return n
