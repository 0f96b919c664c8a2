"""Differentiable root finding: y* with ``g(y*, *args) = 0``.

Forward: any gridlearn solver (Newton by default). Backward (`ImplicitAdjoint`): the
implicit function theorem, one linear solve

    (∂g/∂y)ᵀ v = w,     ∂L/∂args = -vᵀ ∂g/∂args,    ∂L/∂θ = -vᵀ ∂g/∂θ

with θ any parameter g closes over (e.g. an nn.Module's weights). Never backprop through
the iterations (unless `UnrolledAdjoint` is asked for).

- `root_solve(...) -> Solution`: never raises on non-convergence; ``.value`` carries IFT
  gradients for converged elements (see ``on_failure`` for the others).
- `root_find(...) -> Tensor`: raises `SolverFailure` naming the failed elements.
- `implicit_root_grad(g, y_star, *args)`: IFT gradients for a root found by any external
  solver (e.g. a power-flow Newton–Raphson with its own analytic Jacobian).
"""

from __future__ import annotations

import math

from typing import Callable, Optional

import torch

from gridlearn.errors import ConfigError
from gridlearn.implicit.adjoint import (
    ImplicitAdjoint,
    PhantomAdjoint,
    UnrolledAdjoint,
    attach_implicit_grad,
    check_adjoint,
    check_on_failure,
    mask_failed_grad,
)
from gridlearn.implicit.solution import Solution
from gridlearn.implicit.solvers import Newton, SolverBase


def _check_state(name: str, y0: torch.Tensor) -> None:
    if not isinstance(y0, torch.Tensor) or y0.dim() < 1 or not y0.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor with a leading batch dimension")


def flat_problem(fn: Callable[..., torch.Tensor], shape: torch.Size, args, what: str) -> Callable[..., torch.Tensor]:
    """Wrap ``fn(y, *args)`` on ``shape`` as a map on flat ``(batch, d)`` tensors."""
    b = shape[0]

    def flat(yf: torch.Tensor, *a) -> torch.Tensor:
        out = fn(yf.reshape(shape), *a)
        if not isinstance(out, torch.Tensor) or out.shape != shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{what} must return a tensor shaped like the state {tuple(shape)}, got {got}")
        return out.reshape(b, math.prod(shape[1:]))

    return flat


def implicit_solve(
    residual: Callable[..., torch.Tensor],
    y0: torch.Tensor,
    args: tuple,
    *,
    solver: SolverBase,
    adjoint,
    on_failure: str,
    jacobian: Optional[Callable[..., torch.Tensor]] = None,
    fixed_point: Optional[Callable[..., torch.Tensor]] = None,
    what: str,
) -> Solution:
    """Shared driver for `root_solve` and `fixed_point_solve` (flat residual/fixed-point maps).

    ``residual(y, *args)``: flat g. ``fixed_point(z, *args)``: flat f when the problem is
    a fixed point (then solvers iterate f itself; g = z - f).
    """
    if not isinstance(solver, SolverBase):
        raise ConfigError(f"{what}: solver must be Picard, Anderson, Broyden or Newton, got {type(solver).__name__}")
    check_adjoint(adjoint)
    # "keep" (UnrolledAdjoint only): the caller asks for the derivative of the truncated
    # iteration itself (truncated backprop), converged or not.
    keep = on_failure == "keep" and isinstance(adjoint, UnrolledAdjoint)
    if not keep:
        check_on_failure(on_failure)
    shape = y0.shape
    b = shape[0]
    y0f = y0.detach().reshape(b, math.prod(shape[1:]))  # not -1: a batch of 0 is allowed
    jac_flat = None
    if jacobian is not None:
        if y0.dim() != 2:
            raise ValueError(f"{what}: a dense jacobian needs a (batch, n) state, got shape {tuple(shape)}")
        jac_flat = lambda y, *a: jacobian(y, *a)  # noqa: E731

    def run(a):
        if fixed_point is not None and not isinstance(solver, Newton):
            return solver.solve_fixed_point(lambda z: fixed_point(z, *a), y0f)
        jf = (lambda y: jac_flat(y, *a)) if jac_flat is not None else None
        return solver.solve_root(lambda y: residual(y, *a), y0f, jacobian=jf)

    if isinstance(adjoint, UnrolledAdjoint):
        sol = run(args)  # autograd records every iteration
        value = sol.value if keep else mask_failed_grad(sol.value, sol.converged, on_failure, what)
    else:
        with torch.no_grad():
            sol = run(args)
        value = attach_implicit_grad(
            residual, sol.value, args, adjoint=adjoint, converged=sol.converged, forward=solver,
            jacobian=jac_flat, on_failure=on_failure, what=what,
        )
    sol.value = value.reshape(shape)
    return sol


def root_solve(
    g: Callable[..., torch.Tensor],
    y0: torch.Tensor,
    *args,
    solver: SolverBase = Newton(),
    adjoint: ImplicitAdjoint | PhantomAdjoint | UnrolledAdjoint = ImplicitAdjoint(),
    jacobian: Optional[Callable[..., torch.Tensor]] = None,
    on_failure: str = "nan",
) -> Solution:
    """Solve ``g(y, *args) = 0`` from ``y0``; return the `Solution` without raising.

    Args:
        g: ``g(y, *args) -> residual`` shaped like y ``(batch, ...)``; batch elements independent.
        y0: initial guess ``(batch, ...)`` (no gradient flows to it).
        args: tensors (gradients flow to them) or anything else g needs.
        jacobian: optional dense ``∂g/∂y (y, *args) -> (batch, n, n)`` for a ``(batch, n)``
            state; Newton uses it instead of autograd and `ImplicitAdjoint` solves
            ``Jᵀv = w`` with it directly.
        on_failure: what a non-converged element's gradient is: "nan" (default), "zero",
            or "raise" (`SolverFailure` in backward if it receives a gradient); with
            `UnrolledAdjoint` also "keep": the derivative of the iterations performed.

    A root that does not exist is a status, not an exception (y² + 1 = 0 has none):

    >>> import torch
    >>> from gridlearn.implicit import Newton
    >>> g = lambda y, w: y**2 - w
    >>> sol = root_solve(g, torch.ones(2, 1, dtype=torch.float64), torch.tensor([[4.0], [-1.0]], dtype=torch.float64),
    ...                  solver=Newton())
    >>> sol.statuses[0].name, round(float(sol.value[0]), 6), sol.statuses[1] is not sol.statuses[0]
    ('CONVERGED', 2.0, True)
    """
    _check_state("y0", y0)
    return implicit_solve(
        flat_problem(g, y0.shape, args, "g"), y0, args, solver=solver, adjoint=adjoint, on_failure=on_failure,
        jacobian=jacobian, what="root_find",
    )


def root_find(g: Callable[..., torch.Tensor], y0: torch.Tensor, *args, on_failure: str = "raise",
              **options) -> torch.Tensor:
    """Differentiable root ``y*`` of ``g(y*, *args) = 0``; ``options``: `root_solve`'s
    keywords (solver, adjoint, jacobian), validated there.

    Raises `SolverFailure` naming the elements that did not converge, unless ``on_failure``
    is "nan"/"zero": then those elements are returned as they are and their gradient is
    NaN/zero.

    >>> import torch
    >>> w = torch.tensor([[4.0]], dtype=torch.float64, requires_grad=True)
    >>> y = root_find(lambda y, w: y**2 - w, torch.ones(1, 1, dtype=torch.float64), w, solver=Newton())
    >>> y.sum().backward(); round(float(y), 6), round(float(w.grad), 6)   # y = √w, dy/dw = 1/(2y)
    (2.0, 0.25)
    """
    sol = root_solve(g, y0, *args, on_failure=on_failure, **options)
    if on_failure == "raise":
        sol.raise_on_failure("root_find")
    return sol.value


def implicit_root_grad(
    g: Callable[..., torch.Tensor],
    y_star: torch.Tensor,
    *args,
    jacobian: Optional[Callable[..., torch.Tensor]] = None,
    adjoint: ImplicitAdjoint | PhantomAdjoint = ImplicitAdjoint(),
    converged: Optional[torch.Tensor] = None,
    on_failure: str = "raise",
) -> torch.Tensor:
    """A tensor equal to ``y_star`` whose gradient w.r.t. ``args`` (and parameters g closes
    over) is the IFT one, for a root found by any external solver.

    Backward solves ``(∂g/∂y)ᵀ v = w`` at y* (with ``jacobian(y*, *args)`` if given, else
    VJPs of g) and returns ``-vᵀ ∂g/∂args``. ``converged`` (bool, (batch,)) marks elements
    the external solver did converge; the others follow ``on_failure`` in backward.

    >>> import torch
    >>> w = torch.tensor([[9.0]], dtype=torch.float64, requires_grad=True)
    >>> y = implicit_root_grad(lambda y, w: y**2 - w, torch.sqrt(w.detach()), w)  # root from any solver
    >>> y.sum().backward(); round(float(w.grad), 6)                                # 1/(2·3)
    0.166667
    """
    _check_state("y_star", y_star)
    if isinstance(adjoint, UnrolledAdjoint):
        raise ConfigError("implicit_root_grad: UnrolledAdjoint has no iterations to unroll here")
    check_adjoint(adjoint)
    shape = y_star.shape
    b = shape[0]
    if jacobian is not None and y_star.dim() != 2:
        raise ValueError(f"implicit_root_grad: a dense jacobian needs a (batch, n) state, got shape {tuple(shape)}")
    if converged is None:
        converged = torch.ones(b, dtype=torch.bool, device=y_star.device)
    out = attach_implicit_grad(
        flat_problem(g, shape, args, "g"), y_star.detach().reshape(b, math.prod(shape[1:])), args, adjoint=adjoint,
        converged=converged, jacobian=jacobian, on_failure=on_failure, what="implicit_root_grad",
    )
    return out.reshape(shape)


__all__ = ["root_find", "root_solve", "implicit_root_grad", "implicit_solve", "flat_problem"]
