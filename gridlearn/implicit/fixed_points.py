"""Differentiable fixed points: z* with ``z* = f(z*, *args)``.

Forward: Picard, Anderson or Broyden iterate f itself (Newton solves ``z - f(z) = 0``).
Backward (`ImplicitAdjoint`): the linear fixed point

    vᵀ = wᵀ + vᵀ ∂f/∂z   at z*,       ∂L/∂args = vᵀ ∂f/∂args,   ∂L/∂θ = vᵀ ∂f/∂θ

(θ: parameters f closes over), solved once; the forward iterations are not stored.
"""

from __future__ import annotations

from typing import Callable

import torch

from gridlearn.implicit.adjoint import ImplicitAdjoint, PhantomAdjoint, UnrolledAdjoint
from gridlearn.implicit.root import _check_state, flat_problem, implicit_solve
from gridlearn.implicit.solution import Solution
from gridlearn.implicit.solvers import Anderson, SolverBase


def fixed_point_solve(
    f: Callable[..., torch.Tensor],
    z0: torch.Tensor,
    *args,
    solver: SolverBase = Anderson(),
    adjoint: ImplicitAdjoint | PhantomAdjoint | UnrolledAdjoint = ImplicitAdjoint(),
    on_failure: str = "nan",
) -> Solution:
    """Solve ``z = f(z, *args)`` from ``z0 (batch, ...)``; return the `Solution` without raising.

    ``.value`` carries IFT gradients to ``args`` and to parameters f closes over, for
    converged elements; a non-converged element's gradient is NaN (``on_failure="nan"``),
    zero ("zero"), or a `SolverFailure` in backward ("raise").

    >>> import torch
    >>> x = torch.tensor([[1.0]], dtype=torch.float64, requires_grad=True)
    >>> sol = fixed_point_solve(lambda z, x: 0.5 * z + x, torch.zeros(1, 1, dtype=torch.float64), x)
    >>> sol.value.sum().backward()
    >>> sol.statuses[0].name, round(float(sol.value), 6), round(float(x.grad), 6)   # z* = 2x, dz*/dx = 2
    ('CONVERGED', 2.0, 2.0)
    """
    _check_state("z0", z0)
    ff = flat_problem(f, z0.shape, args, "f")

    def residual(z, *a):
        return z - ff(z, *a)

    return implicit_solve(
        residual, z0, args, solver=solver, adjoint=adjoint, on_failure=on_failure, fixed_point=ff, what="fixed_point",
    )


def fixed_point(f: Callable[..., torch.Tensor], z0: torch.Tensor, *args, on_failure: str = "raise",
                **options) -> torch.Tensor:
    """Differentiable fixed point ``z* = f(z*, *args)``; ``options``: `fixed_point_solve`'s
    keywords (solver, adjoint), validated there.

    Raises `SolverFailure` naming the elements that did not converge (with residuals and
    steps) unless ``on_failure`` is "nan"/"zero".

    >>> import torch
    >>> from gridlearn.implicit import Anderson
    >>> z = fixed_point(lambda z, x: 0.5 * z + x, torch.zeros(2, 1, dtype=torch.float64),
    ...                 torch.tensor([[1.0], [2.0]], dtype=torch.float64), solver=Anderson(rtol=1e-10))
    >>> z.flatten().tolist()    # z = 2x
    [2.0, 4.0]
    """
    sol = fixed_point_solve(f, z0, *args, on_failure=on_failure, **options)
    if on_failure == "raise":
        sol.raise_on_failure("fixed_point")
    return sol.value


__all__ = ["fixed_point", "fixed_point_solve"]

