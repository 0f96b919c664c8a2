"""How the backward pass through an implicit layer is taken.

A layer's output y* is defined by ``g(y*, θ) = 0`` (a fixed point z* = f(z*, θ) is the
root of ``g(z, θ) = z - f(z, θ)``). The implicit function theorem gives

    ∂y*/∂θ = -(∂g/∂y)⁻¹ ∂g/∂θ,

so for an incoming cotangent w = ∂L/∂y* the backward pass solves ONE linear system

    (∂g/∂y)ᵀ v = w                          (fixed point: v = w + (∂f/∂z)ᵀ v)

and returns ``∂L/∂θ = -vᵀ ∂g/∂θ`` (fixed point: ``vᵀ ∂f/∂θ``) by a single VJP. Only
vector–Jacobian products ``v ↦ vᵀ ∂g/∂y`` are needed, never the iterations of the forward
solve (Bai, Kolter & Koltun 2019, "Deep Equilibrium Models", §3.1; Blondel et al. 2022,
"Efficient and modular implicit differentiation").

- `ImplicitAdjoint`: solves that system exactly: by a dense batched solve for small
  systems (or when the caller supplies ∂g/∂y), otherwise by a fixed-point solver.
- `PhantomAdjoint(steps)`: the k-step truncated Neumann series of the same system
  (Geng et al. 2021, "On training implicit models"), an approximation.
- `UnrolledAdjoint`: backpropagates through the forward iterations (for comparison; its
  memory grows with the number of iterations).

Double backward (``create_graph=True`` through the implicit gradient) is not supported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.implicit.solvers import Anderson, SolverBase

logger = logging.getLogger(__name__)

ON_FAILURE = ("raise", "nan", "zero")

Vjp = Callable[[torch.Tensor], torch.Tensor]


def check_on_failure(on_failure: str) -> str:
    if on_failure not in ON_FAILURE:
        raise ConfigError(f"on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
    return on_failure


@dataclass(frozen=True, kw_only=True)
class ImplicitAdjoint:
    """Exact IFT backward: solve ``(∂g/∂y)ᵀ v = w`` then ``∂L/∂θ = -vᵀ ∂g/∂θ``.

    Args:
        solver: fixed-point solver for the iterative form ``v = w + v - (∂g/∂y)ᵀ v``; None
            means Anderson with the forward solver's tolerances and twice its max_steps.
        direct: True: dense batched ``linalg.solve`` on ``(∂g/∂y)ᵀ`` (built from the
            caller's ``jacobian`` or from d VJPs); False: iterative; None (default): direct
            when a dense jacobian is supplied or ``d <= direct_max_dim``.
        direct_max_dim: size up to which the automatic choice solves densely.

    >>> import torch
    >>> from gridlearn.implicit import Picard, fixed_point
    >>> x = torch.tensor([[1.0]], dtype=torch.float64, requires_grad=True)
    >>> z = fixed_point(lambda z, x: 0.5 * z + x, torch.zeros(1, 1, dtype=torch.float64), x,
    ...                 solver=Picard(rtol=1e-12, max_steps=200), adjoint=ImplicitAdjoint())
    >>> z.sum().backward(); round(float(x.grad), 8)   # z* = 2x, so dz*/dx = 2
    2.0
    """

    solver: Optional[SolverBase] = None
    direct: Optional[bool] = None
    direct_max_dim: int = 32

    def __post_init__(self):
        if self.solver is not None and not isinstance(self.solver, SolverBase):
            raise ConfigError(f"ImplicitAdjoint: solver must be a gridlearn solver, got {type(self.solver).__name__}")
        if self.direct_max_dim < 0:
            raise ConfigError(f"ImplicitAdjoint: direct_max_dim must be >= 0, got {self.direct_max_dim}")

    def backward_solver(self, forward: Optional[SolverBase]) -> SolverBase:
        if self.solver is not None:
            return self.solver
        if forward is None:
            return Anderson(rtol=1e-8, atol=1e-10, max_steps=200)
        return Anderson(rtol=forward.rtol, atol=forward.atol, max_steps=2 * int(forward.max_steps), divergence_patience=forward.divergence_patience)

    def solve_linear(
        self, vjp: Vjp, w: torch.Tensor, dense: Callable[[], torch.Tensor], forward: Optional[SolverBase], has_jacobian: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(v, ok)``: v solves ``Jᵀ v = w`` per element, ok (batch,) where it did.

        ``vjp(v) = vᵀ J`` and ``dense() -> J (batch, d, d)``, both for ``J = ∂g/∂y``.
        """
        d = w.shape[-1]
        direct = self.direct if self.direct is not None else (has_jacobian or d <= self.direct_max_dim)
        if direct:
            J = dense()
            v, info = torch.linalg.solve_ex(J.transpose(-1, -2), w.unsqueeze(-1))
            v = v.squeeze(-1)
            ok = (info == 0) & torch.isfinite(v).all(dim=-1)
            # A Jacobian singular to working precision has no meaningful inverse even when
            # LU happens to succeed on its rounding noise: no gradient rather than a huge one.
            sv = torch.linalg.svdvals(torch.where(torch.isfinite(J), J, torch.zeros_like(J)))
            if sv.shape[-1]:
                ok = ok & (sv[..., -1] > d * torch.finfo(J.dtype).eps * sv[..., 0])
            return v, ok
        sol = self.backward_solver(forward).solve_fixed_point(lambda v: w + v - vjp(v), w)
        return sol.value, sol.converged


@dataclass(frozen=True, kw_only=True)
class PhantomAdjoint:
    """Phantom gradient: k damped Richardson steps on ``(∂g/∂y)ᵀ v = w`` from ``v₀ = w``,

        v_{j+1} = v_j + λ (w - (∂g/∂y)ᵀ v_j),

    which for a fixed point with λ = 1 is the truncated Neumann series
    ``v ≈ Σ_{i=0..k} ((∂f/∂z)ᵀ)^i w``. Cheap (k VJPs), biased; no convergence check.

    >>> import torch
    >>> from gridlearn.implicit import Picard, fixed_point
    >>> x = torch.tensor([[1.0]], dtype=torch.float64, requires_grad=True)
    >>> z = fixed_point(lambda z, x: 0.5 * z + x, torch.zeros(1, 1, dtype=torch.float64), x,
    ...                 solver=Picard(rtol=1e-12, max_steps=200), adjoint=PhantomAdjoint(steps=3))
    >>> z.sum().backward(); float(x.grad)   # 1 + ½ + ¼ + ⅛: the exact 2, truncated after 3 terms
    1.875
    """

    steps: int = 5
    damping: float = 1.0

    def __post_init__(self):
        if self.steps < 0:
            raise ConfigError(f"PhantomAdjoint: steps must be >= 0, got {self.steps}")
        if not 0 < self.damping <= 1:
            raise ConfigError(f"PhantomAdjoint: damping must be in (0, 1], got {self.damping}")

    def solve_linear(self, vjp, w, dense, forward, has_jacobian):
        v = w
        for _ in range(self.steps):
            v = v + self.damping * (w - vjp(v))
        return v, torch.isfinite(v).all(dim=-1)


@dataclass(frozen=True, kw_only=True)
class UnrolledAdjoint:
    """Backpropagate through every forward iteration (the solver runs with autograd on).

    The gradient is that of the computation actually performed; elements that did not
    converge follow ``on_failure`` like every other path (NaN by default), since the
    derivative of an unfinished iteration is not the derivative of the solution; pass
    ``on_failure="keep"`` to ask for that derivative anyway (truncated backprop). Memory
    grows with the iteration count.

    >>> import torch
    >>> from gridlearn.implicit import Picard, fixed_point
    >>> x = torch.tensor([[1.0]], dtype=torch.float64, requires_grad=True)
    >>> z = fixed_point(lambda z, x: 0.5 * z + x, torch.zeros(1, 1, dtype=torch.float64), x,
    ...                 solver=Picard(rtol=1e-12, max_steps=200), adjoint=UnrolledAdjoint())
    >>> z.sum().backward(); round(float(x.grad), 6)  # through every iteration: close to the exact 2
    2.0
    """


Adjoint = ImplicitAdjoint | PhantomAdjoint | UnrolledAdjoint


class _FailedGrad(torch.autograd.Function):
    """Identity whose backward applies ``on_failure`` to the cotangents of failed elements."""

    @staticmethod
    def forward(ctx, value, failed, dim, on_failure, what):
        ctx.failed, ctx.dim, ctx.on_failure, ctx.what = failed, dim, on_failure, what
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad):
        shape = [1] * grad.dim()
        shape[ctx.dim] = -1
        bad = ctx.failed.view(shape)
        others = [d for d in range(grad.dim()) if d != ctx.dim]
        needed = (grad != 0).any(dim=others) if others else grad != 0
        hit = ctx.failed & needed
        if bool(hit.any()):
            if ctx.on_failure == "raise":
                idx = torch.nonzero(hit).flatten().tolist()
                raise SolverFailure(f"{ctx.what}: no gradient: the forward solve did not converge for elements {idx}",
                                    indices=idx)
            fill = float("nan") if ctx.on_failure == "nan" else 0.0
            grad = torch.where(bad, torch.full_like(grad, fill), grad)
        return grad, None, None, None, None


def mask_failed_grad(value: torch.Tensor, converged: torch.Tensor, on_failure: str, what: str,
                     dim: int = 0) -> torch.Tensor:
    """``value`` unchanged; in backward, the batch elements (along ``dim``) that did not
    converge get ``on_failure`` applied to their cotangent ("nan": NaN, which backprop then
    carries into every input and parameter they touch; "zero"; "raise": `SolverFailure`).
    """
    check_on_failure(on_failure)
    if not (torch.is_grad_enabled() and value.requires_grad) or bool(converged.all()):
        return value
    return _FailedGrad.apply(value, (~converged.detach().bool()).clone(), dim, on_failure, what)


def check_adjoint(adjoint) -> None:
    if not isinstance(adjoint, (ImplicitAdjoint, PhantomAdjoint, UnrolledAdjoint)):
        raise ConfigError(f"adjoint must be ImplicitAdjoint, PhantomAdjoint or UnrolledAdjoint, got {type(adjoint).__name__}")


def _dense_from_vjp(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``J[b, i, :] = e_iᵀ ∂h_b/∂y_b`` from d VJPs of an existing graph (batch, d, d)."""
    d = h.shape[-1]
    basis = torch.eye(d, dtype=h.dtype, device=h.device).unsqueeze(1).expand(d, *h.shape)
    try:
        (rows,) = torch.autograd.grad(h, y, basis, retain_graph=True, is_grads_batched=True)
    except RuntimeError:  # an op without a batching rule: loop
        rows = torch.stack([torch.autograd.grad(h, y, basis[i], retain_graph=True)[0] for i in range(d)])
    return rows.transpose(0, 1)


class _ImplicitLink(torch.autograd.Function):
    """Returns y* unchanged; its backward maps the cotangent w of y* to ``-v`` for the
    residual h = g(y*, θ), where ``(∂g/∂y)ᵀ v = w``, so autograd continues into θ."""

    @staticmethod
    def forward(ctx, h, y_star, backward_fn):
        ctx.backward_fn = backward_fn
        return y_star.clone()

    @staticmethod
    def backward(ctx, w):
        return -ctx.backward_fn(w), None, None


def attach_implicit_grad(
    g: Callable[..., torch.Tensor],
    y_star: torch.Tensor,
    args: Sequence,
    *,
    adjoint: ImplicitAdjoint | PhantomAdjoint,
    converged: torch.Tensor,
    forward: Optional[SolverBase] = None,
    jacobian: Optional[Callable[..., torch.Tensor]] = None,
    on_failure: str = "raise",
    what: str = "implicit layer",
) -> torch.Tensor:
    """Return a tensor equal to ``y_star`` whose backward is the IFT gradient.

    ``g(y, *args) -> (batch, d)`` is the flat residual, ``y_star (batch, d)`` a (detached)
    root. Gradients reach tensors in ``args`` and any parameters g closes over: g is
    re-evaluated once at y* with autograd on (its graph then holds only θ, never the
    forward iterations), and a link node returns y* while sending ``-v`` back into that
    graph, v solving ``(∂g/∂y)ᵀ v = w``: so ``∂L/∂θ = -vᵀ ∂g/∂θ``.

    Elements not ``converged`` get no implicit gradient: ``on_failure`` "raise" raises
    `SolverFailure` in backward if such an element receives a non-zero cotangent, "nan"/"zero"
    fill its v with NaN/0. The same applies where the backward linear solve fails.
    """
    check_on_failure(on_failure)
    y_star = y_star.detach()
    if not torch.is_grad_enabled():
        return y_star
    with torch.enable_grad():
        h = g(y_star, *args)
    if not h.requires_grad:
        return y_star
    if h.shape != y_star.shape:
        raise ValueError(f"{what}: residual has shape {tuple(h.shape)}, expected {tuple(y_star.shape)}")
    detached_args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    converged = converged.detach().clone()

    def backward_fn(w: torch.Tensor) -> torch.Tensor:
        needed = (w != 0).any(dim=-1)
        usable = needed & converged & torch.isfinite(y_star).all(dim=-1)
        # Elements that failed forward take a zero right-hand side at a finite point, so they
        # cannot poison the batched linear solve; their v is set below.
        w_s = torch.where(usable.unsqueeze(-1), w, torch.zeros_like(w))
        y_s = torch.where(torch.isfinite(y_star), y_star, torch.zeros_like(y_star))
        with torch.enable_grad():
            y_r = y_s.clone().requires_grad_(True)
            h_y = g(y_r, *detached_args)

        def vjp(v: torch.Tensor) -> torch.Tensor:
            (out,) = torch.autograd.grad(h_y, y_r, v, retain_graph=True, allow_unused=True)
            return torch.zeros_like(v) if out is None else out

        def dense() -> torch.Tensor:
            if jacobian is not None:
                return jacobian(y_s, *detached_args).detach()
            return _dense_from_vjp(h_y, y_r)

        with torch.no_grad():
            v, ok = adjoint.solve_linear(vjp, w_s, dense, forward, jacobian is not None)
            v = torch.where(usable.unsqueeze(-1), v.detach(), torch.zeros_like(w))
            bad = needed & ~(ok & usable)
            if bool(bad.any()):
                idx = torch.nonzero(bad).flatten().tolist()
                unconv = [i for i in idx if not bool(converged[i])]
                if on_failure == "raise":
                    why = (
                        f"the forward solve did not converge for elements {unconv}"
                        if unconv
                        else f"the backward linear system (∂g/∂y)ᵀv = w was not solved for elements {idx} "
                        "(∂g/∂y singular, or the backward solver needs more steps)"
                    )
                    raise SolverFailure(f"{what}: no implicit gradient: {why}", indices=idx)
                fill = float("nan") if on_failure == "nan" else 0.0
                v = torch.where(bad.unsqueeze(-1), torch.full_like(v, fill), v)
        return v

    return _ImplicitLink.apply(h, y_star, backward_fn)


__all__ = ["ImplicitAdjoint", "PhantomAdjoint", "UnrolledAdjoint", "attach_implicit_grad", "mask_failed_grad", "check_adjoint", "check_on_failure"]
