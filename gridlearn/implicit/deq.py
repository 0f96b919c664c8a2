"""Deep equilibrium layer (Bai, Kolter & Koltun 2019, "Deep Equilibrium Models").

Output: the equilibrium ``z* = cell(z*, x)`` of a weight-tied cell. Backward
(`ImplicitAdjoint`): the linear fixed point ``vᵀ = wᵀ + vᵀ ∂cell/∂z`` at z*, then
``∂L/∂x = vᵀ ∂cell/∂x`` and ``∂L/∂θ = vᵀ ∂cell/∂θ``: memory does not grow with the number
of forward iterations.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from gridlearn.errors import ConfigError
from gridlearn.implicit.adjoint import ImplicitAdjoint, PhantomAdjoint, UnrolledAdjoint, check_adjoint, check_on_failure
from gridlearn.implicit.fixed_points import fixed_point_solve
from gridlearn.implicit.solution import Solution
from gridlearn.implicit.solvers import Anderson, SolverBase


class DEQ(nn.Module):
    """``z* = cell(z*, x)`` as a layer.

    Args:
        cell: nn.Module ``cell(z, x) -> z`` (state ``z: (batch, *state_shape)``).
        solver: Picard / Anderson / Broyden / Newton (frozen settings).
        adjoint: ImplicitAdjoint (exact), PhantomAdjoint (truncated), UnrolledAdjoint.
        on_failure: "raise" (forward raises `SolverFailure` naming failed elements),
            "nan" or "zero" (forward returns; those elements' gradients are NaN / zero).
        state_shape: per-element state shape when it differs from x's; default x's shape.

    ``solve(x)`` returns the `Solution` (never raises); ``forward(x, z0)`` returns z*.

    >>> import torch
    >>> from gridlearn.implicit import Anderson
    >>> class Half(torch.nn.Module):          # z = ½ z + x, so z* = 2x
    ...     def forward(self, z, x):
    ...         return 0.5 * z + x
    >>> layer = DEQ(Half(), solver=Anderson(rtol=1e-10))
    >>> layer(torch.tensor([[1.0, 3.0]], dtype=torch.float64)).tolist()
    [[2.0, 6.0]]
    """

    def __init__(
        self,
        cell: nn.Module,
        *,
        solver: SolverBase = Anderson(),
        adjoint: ImplicitAdjoint | PhantomAdjoint | UnrolledAdjoint = ImplicitAdjoint(),
        on_failure: str = "raise",
        state_shape: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        if not isinstance(solver, SolverBase):
            raise ConfigError(f"DEQ: solver must be Picard, Anderson, Broyden or Newton, got {type(solver).__name__}")
        check_adjoint(adjoint)
        check_on_failure(on_failure)
        self.cell = cell
        self.solver = solver
        self.adjoint = adjoint
        self.on_failure = on_failure
        self.state_shape = tuple(state_shape) if state_shape is not None else None

    def _z0(self, x: torch.Tensor, z0: Optional[torch.Tensor]) -> torch.Tensor:
        if z0 is not None:
            return z0.detach()  # warm start: no gradient flows to the initial guess
        shape = (x.shape[0], *self.state_shape) if self.state_shape is not None else x.shape
        return torch.zeros(shape, dtype=x.dtype, device=x.device)

    def _f(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.cell(z, x)

    def solve(self, x: torch.Tensor, z0: Optional[torch.Tensor] = None) -> Solution:
        """Equilibrium as a `Solution` (per-element status, residual, steps); never raises."""
        return fixed_point_solve(
            self._f, self._z0(x, z0), x, solver=self.solver, adjoint=self.adjoint, on_failure=self.on_failure
        )

    def forward(self, x: torch.Tensor, z0: Optional[torch.Tensor] = None) -> torch.Tensor:
        sol = self.solve(x, z0)
        if self.on_failure == "raise":
            sol.raise_on_failure("DEQ")
        return sol.value

    def jacobian_penalty(
        self, x: torch.Tensor, z: torch.Tensor, samples: int = 1, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Hutchinson estimate of ``‖∂cell/∂z‖²_F`` at z, per element ``(batch,)``, differentiable.

        ``E_ε ‖εᵀ ∂cell/∂z‖² = ‖∂cell/∂z‖²_F`` for ε ~ N(0, I) (Bai et al. 2021, "Stabilizing
        equilibrium models by Jacobian regularization"); add its mean to the training loss.
        """
        if samples < 1:
            raise ConfigError(f"jacobian_penalty: samples must be >= 1, got {samples}")
        with torch.enable_grad():
            zr = z if z.requires_grad else z.detach().requires_grad_(True)
            fz = self.cell(zr, x)
            total = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
            for _ in range(samples):
                eps = torch.randn(fz.shape, generator=generator, dtype=fz.dtype, device=fz.device)
                (vj,) = torch.autograd.grad(fz, zr, eps, create_graph=True, retain_graph=True)
                total = total + vj.reshape(z.shape[0], -1).pow(2).sum(-1)
        return total / samples

    def forward_with_penalty(
        self, x: torch.Tensor, z0: Optional[torch.Tensor] = None, samples: int = 1, generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z*, jacobian_penalty(x, z*))`` for a training loss ``L(z*) + γ · penalty.mean()``."""
        z = self.forward(x, z0)
        return z, self.jacobian_penalty(x, z.detach(), samples=samples, generator=generator)

    @torch.no_grad()
    def spectral_radius(
        self, x: torch.Tensor, z: Optional[torch.Tensor] = None, iters: int = 50, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Power-iteration estimate of ρ(∂cell/∂z) at z (default: the equilibrium), ``(batch,)``.

        Iterates ``u <- uᵀJ / ‖uᵀJ‖`` with VJPs (ρ(Jᵀ) = ρ(J)); monitoring only (ρ < 1 near
        z* means the fixed-point iteration is locally contractive). Exact for a dominant
        real eigenvalue; a dominant complex pair makes the estimate oscillate around ρ.
        """
        if z is None:
            z = self.solve(x).value
        z = z.detach()
        b = z.shape[0]
        with torch.enable_grad():
            zr = z.clone().requires_grad_(True)
            fz = self.cell(zr, x.detach())
        u = torch.randn(fz.shape, generator=generator, dtype=z.dtype, device=z.device)
        u = u / u.reshape(b, -1).norm(dim=-1).clamp_min(torch.finfo(z.dtype).tiny).view(-1, *[1] * (z.dim() - 1))
        rho = torch.zeros(b, dtype=z.dtype, device=z.device)
        for _ in range(iters):
            (uj,) = torch.autograd.grad(fz, zr, u, retain_graph=True)
            rho = uj.reshape(b, -1).norm(dim=-1)
            u = uj / rho.clamp_min(torch.finfo(z.dtype).tiny).view(-1, *[1] * (z.dim() - 1))
        return rho


__all__ = ["DEQ"]
