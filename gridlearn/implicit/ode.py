"""Neural ODEs: ``y(t)`` with ``dy/dt = f(t, y, *args; θ)``, ``y(t₀) = y₀``, as a layer.

Forward: adaptive Dormand–Prince 5(4) with a step size per batch element, or fixed-step
RK4 (`ode_solvers.integrate`). Backward, ``gradient="adjoint"`` (Pontryagin; Chen et al.
2018, "Neural Ordinary Differential Equations", Alg. 1): from ``a(t₁) = ∂L/∂y(t₁)``
integrate backwards in time

    dy/dt = f,    da/dt = -aᵀ ∂f/∂y,    dθ̄/dt = -aᵀ ∂f/∂θ,      θ̄(t₁) = 0,

giving ``∂L/∂y₀ = a(t₀)`` and ``∂L/∂θ = θ̄(t₀)`` (cotangents of intermediate output
times are added to a when the backward pass crosses them, and y is reset to the stored
forward value there). Memory is O(1) in the number of steps: only the outputs are kept.
θ̄ does not enter the error norm (a seminorm); it is accumulated per element with that
element's own step (``Σ_j h_i b_j a_ijᵀ ∂f/∂θ`` as one VJP per accepted step).
``gradient="backprop"`` differentiates through the solver's operations instead (memory
grows with steps; for comparison).

``f`` is called as ``f(t, y, *args)`` with ``t`` of shape ``(batch,)``: each element has
its own time. No gradient is returned for ``t``.
"""

from __future__ import annotations

import math

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.implicit.adjoint import check_on_failure, mask_failed_grad
from gridlearn.implicit.ode_solvers import TABLEAUS, integrate
from gridlearn.implicit.solution import Solution, Status

_GRADIENTS = ("adjoint", "backprop")


class _Settings:
    """Per-call settings shared between the autograd Function's forward and backward."""

    def __init__(self, func, shape, args, tensor_pos, params, kw, on_failure):
        self.func, self.shape, self.args, self.tensor_pos = func, shape, args, tensor_pos
        self.params, self.kw, self.on_failure = params, kw, on_failure
        self.result = None

    def flat(self, t, y, args):
        out = self.func(t, y.reshape(y.shape[0], *self.shape[1:]), *args)
        if not isinstance(out, torch.Tensor) or out.shape[1:] != self.shape[1:] or out.shape[0] != y.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"vector field must return a tensor shaped like the state {tuple(self.shape)}, got {got}")
        return out.reshape(y.shape[0], math.prod(self.shape[1:]))

    def with_tensors(self, tensors):
        args = list(self.args)
        for pos, ten in zip(self.tensor_pos, tensors):
            args[pos] = ten
        return args


class _AdjointODE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cfg: _Settings, y0f, t, *tensors):
        n_args = len(cfg.tensor_pos)
        args = cfg.with_tensors(tensors[:n_args])
        with torch.no_grad():
            res = integrate(lambda tv, y: (cfg.flat(tv, y, args), None), y0f, t, **cfg.kw)
        cfg.result = res
        ys = torch.stack(res.ys)
        ctx.cfg = cfg
        ctx.save_for_backward(t, ys, *tensors)
        return ys

    @staticmethod
    def backward(ctx, grad_ys):
        cfg = ctx.cfg
        t, ys, *tensors = ctx.saved_tensors
        n_args = len(cfg.tensor_pos)
        res = cfg.result
        T, b, D = ys.shape
        arg_leaves = [x.detach().requires_grad_(x.requires_grad) for x in tensors[:n_args]]
        call_args = cfg.with_tensors(arg_leaves)
        thetas = [x for x in arg_leaves if x.requires_grad] + [p for p in tensors[n_args:] if p.requires_grad]
        theta_bar = [torch.zeros_like(p) for p in thetas]

        need = (grad_ys != 0).flatten(2).any(-1).any(0)  # (batch,)
        bad = need & (res.status != Status.CONVERGED.code)
        if cfg.on_failure == "raise" and bool(bad.any()):
            idx = torch.nonzero(bad).flatten().tolist()
            raise SolverFailure(f"odeint: no adjoint gradient: the forward solve failed for elements {idx}", indices=idx)
        keep = (res.status == Status.CONVERGED.code)[None, :, None]
        ys_s = torch.where(keep, ys, torch.zeros_like(ys))
        gs = torch.where(keep, grad_ys, torch.zeros_like(grad_ys))

        def rhs(tv, s):
            yv, av = s[:, :D], s[:, D:]
            with torch.enable_grad():
                yr = yv.detach().requires_grad_(True)
                fy = cfg.flat(tv, yr, call_args)
                (ga,) = torch.autograd.grad(fy, yr, av, retain_graph=bool(thetas), allow_unused=True)
            if ga is None:
                ga = torch.zeros_like(yv)
            return torch.cat([fy.detach(), -ga], dim=-1), (fy, av.detach())

        def on_accept(stages, weights):
            total = None
            for j, pieces in enumerate(stages):
                for aux, mask in pieces:
                    if aux is None:
                        continue
                    wj = weights[j] * mask.to(weights.dtype)
                    if not bool((wj != 0).any()):
                        continue
                    fy, av = aux
                    with torch.enable_grad():
                        term = (fy * (wj[:, None] * av)).sum()
                        total = term if total is None else total + term
            if total is None:
                return
            grads = torch.autograd.grad(total, thetas, retain_graph=True, allow_unused=True)
            for i, gr in enumerate(grads):
                if gr is not None:
                    theta_bar[i] = theta_bar[i] - gr  # dθ̄/dt = -aᵀ∂f/∂θ; the weights carry the signed h

        failed_bwd = torch.zeros(b, dtype=torch.bool, device=ys.device)
        y, a = ys_s[-1], gs[-1]
        for k in range(T - 1, 0, -1):
            seg = torch.stack([t[k], t[k - 1]])
            r = integrate(rhs, torch.cat([y, a], dim=-1), seg, on_accept=on_accept if thetas else None, **cfg.kw)
            failed_bwd |= r.status != Status.CONVERGED.code
            a = r.ys[-1][:, D:] + gs[k - 1]
            y = ys_s[k - 1]
        grad_y0 = a
        bad_all = bad | (need & failed_bwd)
        if bool(bad_all.any()):
            if cfg.on_failure == "raise":
                idx = torch.nonzero(bad_all).flatten().tolist()
                raise SolverFailure(f"odeint: the adjoint (backward) integration failed for elements {idx}", indices=idx)
            fill = float("nan") if cfg.on_failure == "nan" else 0.0
            grad_y0 = torch.where(bad_all[:, None], torch.full_like(grad_y0, fill), grad_y0)
            if cfg.on_failure == "nan":
                theta_bar = [torch.full_like(p, fill) for p in theta_bar]
        out, it = [], iter(theta_bar)
        for x in tensors:
            out.append(next(it) if x.requires_grad else None)
        return (None, grad_y0, None, *out)


def _settings_kw(method, rtol, atol, step_size, max_steps, min_step, h0) -> dict:
    if method not in TABLEAUS:
        raise ConfigError(f"odeint: method must be one of {sorted(TABLEAUS)}, got {method!r}")
    if not (rtol >= 0 and atol >= 0) or (rtol == 0 and atol == 0):
        raise ConfigError(f"odeint: need rtol, atol >= 0 and not both 0, got rtol={rtol}, atol={atol}")
    if TABLEAUS[method].e is None and (step_size is None or step_size <= 0):
        raise ConfigError(f"odeint: method={method!r} is fixed-step and needs step_size > 0")
    if int(max_steps) != max_steps or max_steps < 1:
        raise ConfigError(f"odeint: max_steps must be a positive integer, got {max_steps}")
    if min_step is not None and min_step < 0:
        raise ConfigError(f"odeint: min_step must be >= 0, got {min_step}")
    return dict(method=method, rtol=rtol, atol=atol, step_size=step_size, max_steps=int(max_steps), min_step=min_step, h0=h0)


def odeint_solve(
    func: Callable[..., torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor,
    *args,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    step_size: Optional[float] = None,
    max_steps: int = 10_000,
    min_step: Optional[float] = None,
    h0: Optional[float] = None,
    gradient: str = "adjoint",
    params: Optional[Sequence[torch.Tensor]] = None,
    on_failure: str = "nan",
) -> Solution:
    """Integrate ``dy/dt = func(t, y, *args)`` from ``y0 (batch, ...)`` to each time in ``t (T,)``.

    Returns a `Solution` (never raises on solver failure): ``value (T, batch, ...)``
    (NaN at times an element never reached), per-element status (CONVERGED, MAX_STEPS,
    STEP_TOO_SMALL, NONFINITE; UNSTABLE for rk4 steps that fail the step-doubling check), ``residual`` = time left to ``t[-1]``, ``steps`` accepted,
    and ``extras``: ``nfev`` (per element), ``attempts``, ``calls`` (batched evaluations).

    ``gradient="adjoint"``: gradients to y0, tensor args and ``params`` (default: the
    parameters of func when it is an nn.Module) by the adjoint method; ``"backprop"``:
    through the solver's operations. On both paths non-converged elements' gradients
    follow ``on_failure`` ("nan", "zero" or "raise" in backward).

    >>> import torch
    >>> k = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    >>> sol = odeint_solve(lambda t, y, k: -k * y, torch.ones(1, 1, dtype=torch.float64),
    ...                    torch.tensor([0.0, 1.0], dtype=torch.float64), k, rtol=1e-10, atol=1e-12)
    >>> sol.value[-1].sum().backward()
    >>> sol.statuses[0].name, round(float(sol.value[-1]), 6), round(float(k.grad), 6)   # e^-1, d/dk e^-k = -e^-1
    ('CONVERGED', 0.367879, -0.367879)
    """
    check_on_failure(on_failure)
    if gradient not in _GRADIENTS:
        raise ConfigError(f"odeint: gradient must be one of {_GRADIENTS}, got {gradient!r}")
    kw = _settings_kw(method, rtol, atol, step_size, max_steps, min_step, h0)
    if not isinstance(y0, torch.Tensor) or y0.dim() < 1 or not y0.is_floating_point():
        raise ValueError("y0 must be a floating-point tensor with a leading batch dimension")
    t = torch.as_tensor(t, dtype=y0.dtype, device=y0.device)
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"t must be a 1-D tensor of output times, got shape {tuple(t.shape)}")
    dts = t[1:] - t[:-1]
    if t.numel() > 1 and not (bool((dts > 0).all()) or bool((dts < 0).all())):
        raise ValueError("t must be strictly increasing or strictly decreasing")
    shape = y0.shape
    b = shape[0]
    y0f = y0.reshape(b, math.prod(shape[1:]))  # not -1: a batch of 0 is allowed
    if params is None:
        params = list(func.parameters()) if isinstance(func, nn.Module) else []
    tensor_pos = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    cfg = _Settings(func, shape, args, tensor_pos, list(params), kw, on_failure)
    if gradient == "adjoint":
        tensors = [args[i] for i in tensor_pos] + list(params)
        ys = _AdjointODE.apply(cfg, y0f, t.detach(), *tensors)
        res = cfg.result
    else:
        res = integrate(lambda tv, y: (cfg.flat(tv, y, list(args)), None), y0f, t.detach(), **kw)
        # A failed element's outputs past where it stopped are NaN constants, so plain
        # backprop would hand it a gradient of 0: give it on_failure's instead.
        ys = mask_failed_grad(torch.stack(res.ys), res.status == Status.CONVERGED.code, on_failure, "odeint", dim=1)
    value = ys.reshape(t.shape[0], *shape)
    return Solution(
        value=value,
        status_code=res.status,
        residual=(t[-1] - res.t_reached).abs().detach(),
        steps=res.steps,
        extras={"nfev": res.nfev, "attempts": res.attempts, "calls": res.calls},
    )


def odeint(func: Callable[..., torch.Tensor], y0: torch.Tensor, t: torch.Tensor, *args, on_failure: str = "raise",
           **options) -> torch.Tensor:
    """`odeint_solve` returning ``y (T, batch, ...)``; raises `SolverFailure` naming failed
    elements (unless ``on_failure`` is "nan"/"zero", which then set their gradients).
    ``options``: `odeint_solve`'s keywords (method, rtol, atol, ...), validated there.

    >>> import torch
    >>> y0 = torch.ones(1, 1, dtype=torch.float64)
    >>> y = odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-9, atol=1e-12)
    >>> round(float(y[-1, 0, 0]), 6)   # exp(-1)
    0.367879
    """
    sol = odeint_solve(func, y0, t, *args, on_failure=on_failure, **options)
    if on_failure == "raise":
        sol.raise_on_failure("odeint")
    return sol.value


class NeuralODE(nn.Module):
    """``y(t) = y₀ + ∫ vector_field(s, y(s)) ds`` as a layer (see the module docstring for the
    forward and adjoint equations).

    ``forward(y0, t, rtol=None, atol=None) -> (T, batch, ...)`` raises `SolverFailure` on
    failed elements when ``on_failure="raise"``; ``solve(...)`` returns the `Solution`.
    Tolerances given per call override the layer's.

    >>> import torch
    >>> class Decay(torch.nn.Module):            # dy/dt = -k y
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.k = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    ...     def forward(self, t, y):
    ...         return -self.k * y
    >>> ode = NeuralODE(Decay(), rtol=1e-10, atol=1e-12)
    >>> y = ode(torch.ones(1, 1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))
    >>> y[-1].sum().backward(); round(float(ode.vector_field.k.grad), 6)   # d e^{-k}/dk at k=1 = -e^{-1}
    -0.367879
    """

    #: `odeint_solve`'s solver settings a layer holds, with their defaults.
    DEFAULTS = dict(method="dopri5", rtol=1e-6, atol=1e-8, step_size=None, max_steps=10_000, min_step=None)

    def __init__(self, vector_field: nn.Module, *, gradient: str = "adjoint", on_failure: str = "raise", **options):
        """``options``: any of `DEFAULTS` (method, rtol, atol, step_size, max_steps, min_step), validated here."""
        super().__init__()
        unknown = sorted(set(options) - set(self.DEFAULTS))
        if unknown:
            raise TypeError(f"NeuralODE got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
        self.options = {**self.DEFAULTS, **options}
        _settings_kw(h0=None, **self.options)
        if gradient not in _GRADIENTS:
            raise ConfigError(f"NeuralODE: gradient must be one of {_GRADIENTS}, got {gradient!r}")
        check_on_failure(on_failure)
        self.vector_field = vector_field
        self.gradient, self.on_failure = gradient, on_failure

    def solve(self, y0: torch.Tensor, t: torch.Tensor, rtol: Optional[float] = None, atol: Optional[float] = None) -> Solution:
        tolerances = {k: v for k, v in (("rtol", rtol), ("atol", atol)) if v is not None}  # per call, over the layer's
        return odeint_solve(self.vector_field, y0, t, gradient=self.gradient, on_failure=self.on_failure,
                            params=list(self.vector_field.parameters()), **{**self.options, **tolerances})

    def forward(self, y0: torch.Tensor, t: torch.Tensor, rtol: Optional[float] = None, atol: Optional[float] = None) -> torch.Tensor:
        sol = self.solve(y0, t, rtol=rtol, atol=atol)
        if self.on_failure == "raise":
            sol.raise_on_failure("NeuralODE")
        return sol.value


__all__ = ["NeuralODE", "odeint", "odeint_solve"]
