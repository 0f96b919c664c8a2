"""Explicit Runge–Kutta integration with a step size per batch element.

`integrate` advances ``dy/dt = rhs(t, y)`` for a batch of independent systems, each with
its own time and step size: an element whose dynamics are stiff takes small steps without
forcing them on the others (a shared step, as when the batch is one big system, makes every
element pay for the hardest one). All elements are evaluated together in one batched call;
finished or failed elements are masked, and ``nfev`` counts, per element, only the
evaluations it was active for.

Adaptive stepping (Dormand–Prince 5(4), Dormand & Prince 1980, "A family of embedded
Runge–Kutta formulae"; controller and initial step from Hairer, Nørsett & Wanner,
"Solving ODEs I", §II.4): per element the error estimate ``e = h Σ (b_j - b̂_j) k_j`` is
measured as ``‖e / (atol + rtol max(|y|, |y_new|))‖_RMS``; a step is accepted when that is
≤ 1 and the next step is ``h · clip(0.9 err^(-1/5), 0.2, 10)``. Steps are clipped to land
exactly on the output times. Fixed-step RK4 splits each output interval into equal steps
no longer than ``step_size``, and checks every step by step doubling (Hairer, Nørsett &
Wanner, §II.4): the same step taken as two half steps gives y₂, and ``|y₁ − y₂|`` (which
is 16/15 of y₁'s local error for a 4th-order method when h is in the asymptotic regime,
and is huge when h is outside the stability region) is measured in the same norm as
above. An element whose estimate exceeds 1 stops with status UNSTABLE: a fixed step is
CONVERGED only if every step met (atol, rtol). The check costs 7 more evaluations per
step, taken without autograd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from gridlearn.implicit.solution import Status

_CONVERGED = Status.CONVERGED.code
_MAX_STEPS = Status.MAX_STEPS.code
_NONFINITE = Status.NONFINITE.code
_TOO_SMALL = Status.STEP_TOO_SMALL.code
_UNSTABLE = Status.UNSTABLE.code


@dataclass(frozen=True)
class Tableau:
    c: tuple
    a: tuple  # a[j] = coefficients of stages 0..j-1 for stage j
    b: tuple
    e: Optional[tuple]  # b - b_hat (error weights); None for fixed-step methods
    order: int  # order of the propagated solution
    fsal: bool  # last stage equals the first stage of the next step


DOPRI5 = Tableau(
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    e=(
        35 / 384 - 5179 / 57600,
        0.0,
        500 / 1113 - 7571 / 16695,
        125 / 192 - 393 / 640,
        -2187 / 6784 + 92097 / 339200,
        11 / 84 - 187 / 2100,
        -1 / 40,
    ),
    order=5,
    fsal=True,
)

RK4 = Tableau(
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    e=None,
    order=4,
    fsal=False,
)

TABLEAUS = {"dopri5": DOPRI5, "rk4": RK4}

# rhs(t (batch,), y (batch, D)) -> (dy/dt (batch, D), aux); aux is handed to on_accept.
Rhs = Callable[[torch.Tensor, torch.Tensor], tuple]
# on_accept(stages, weights): stages[j] = list of (aux, mask (batch,)) pieces; weights (S, batch)
# are h_i b_j for elements whose step was accepted, 0 elsewhere.
OnAccept = Callable[[list, torch.Tensor], None]


@dataclass
class Integration:
    ys: list  # T tensors (batch, D); NaN where an element never reached that time
    status: torch.Tensor  # (batch,) Status codes
    steps: torch.Tensor  # accepted steps per element
    attempts: torch.Tensor  # accepted + rejected
    nfev: torch.Tensor  # evaluations per element (while active)
    calls: int  # batched rhs calls
    h_last: torch.Tensor  # |h| at the end, per element
    t_reached: torch.Tensor  # time each element got to


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(dim=-1).sqrt()


def _initial_step(rhs, t0, y0, f0, rtol, atol, order, err_cols, span):
    """Hairer–Nørsett–Wanner II.4 starting step |h|, per element (one extra evaluation).

    ``span``: signed length of the first output interval, (batch,).
    """
    sl = slice(None) if err_cols is None else slice(0, err_cols)
    direction = torch.sign(span)
    width = span.abs()
    scale = atol + rtol * y0[:, sl].abs()
    d0 = _rms(y0[:, sl] / scale)
    d1 = _rms(f0[:, sl] / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    h0 = torch.minimum(h0, width)
    f1, _ = rhs(t0 + direction * h0, y0 + (direction * h0)[:, None] * f0)
    d2 = _rms((f1[:, sl] - f0[:, sl]) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / dmax.clamp_min(1e-300)) ** (1.0 / order))
    return torch.minimum(torch.minimum(100 * h0, h1), width)


def _two_half_steps(rhs, tab: Tableau, t0: torch.Tensor, y: torch.Tensor, k1: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Two explicit RK steps of h/2 from (t0, y); k1 = rhs(t0, y) is reused. No autograd."""
    half = h / 2
    for step in range(2):
        hcol = half[:, None]
        tc = t0 + step * half
        ks = [k1 if step == 0 else rhs(tc, y)[0].detach()]
        for j in range(1, len(tab.c)):
            incr = sum(a * k for a, k in zip(tab.a[j], ks) if a != 0.0)
            ks.append(rhs(tc + tab.c[j] * half, y + hcol * incr)[0].detach())
        y = y + hcol * sum(bj * k for bj, k in zip(tab.b, ks) if bj != 0.0)
    return y


def integrate(
    rhs: Rhs,
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-6,
    atol: float = 1e-8,
    max_steps: int = 10_000,
    min_step: Optional[float] = None,
    h0: Optional[float] = None,
    step_size: Optional[float] = None,
    err_cols: Optional[int] = None,
    on_accept: Optional[OnAccept] = None,
) -> Integration:
    """Integrate ``dy/dt = rhs(t, y)`` from ``y0 (batch, D)`` through the output times ``t (T,)``.

    ``t`` must be strictly monotone (increasing or decreasing). ``err_cols``: only the
    first that many columns enter the error norm (the adjoint's seminorm). ``min_step``
    (default: where t + h == t would round) stops an element with STEP_TOO_SMALL, or
    NONFINITE if the step was shrinking because of NaN/inf; ``max_steps`` bounds attempted
    steps per element (MAX_STEPS). Differentiable when run with autograd on (the step-size
    decisions themselves are taken on detached values).
    """
    tab = TABLEAUS[method]
    b, D = y0.shape
    dt, dev = y0.dtype, y0.device
    t = t.to(dtype=dt, device=dev)
    T = t.shape[0]
    S = len(tab.c)
    outs = [y0] + [torch.full_like(y0, float("nan")) for _ in range(T - 1)]
    status = torch.full((b,), _MAX_STEPS, dtype=torch.long, device=dev)
    zeros = torch.zeros(b, dtype=torch.long, device=dev)
    steps, attempts, nfev = zeros.clone(), zeros.clone(), zeros.clone()
    if T == 1:
        status[:] = _CONVERGED
        return Integration(outs, status, steps, attempts, nfev, 0, torch.zeros(b, dtype=dt, device=dev), t[0].expand(b))
    direction = torch.sign(t[-1] - t[0])
    t_cur = t[0].expand(b).clone()
    idx = torch.ones(b, dtype=torch.long, device=dev)
    eps = torch.finfo(dt).eps
    tmax = t.abs().max()
    h_floor = float(min_step) if min_step is not None else float(8 * eps * max(float(tmax), 1e-300))

    y = y0
    k1, aux1 = rhs(t_cur, y)
    calls = 1
    active = torch.ones(b, dtype=torch.bool, device=dev)
    nfev += 1
    bad0 = ~(torch.isfinite(y0).all(-1) & torch.isfinite(k1.detach()).all(-1))
    status[bad0] = _NONFINITE
    active &= ~bad0
    k1_pieces = [(aux1, torch.ones(b, dtype=torch.bool, device=dev))]
    adaptive = tab.e is not None
    if adaptive:
        span = (t[1] - t[0]).expand(b)
        if h0 is not None:
            h = torch.full((b,), abs(float(h0)), dtype=dt, device=dev)
        else:
            with torch.no_grad():
                h = _initial_step(rhs, t_cur, y.detach(), k1.detach(), rtol, atol, tab.order, err_cols, span)
            calls += 1
            nfev += active.long()
    else:
        if step_size is None or step_size <= 0:
            raise ValueError(f"method={method!r} needs a positive step_size")
        span = (t[1] - t[0]).abs()
        h = (span / torch.ceil(span / step_size - 1e-9)).expand(b).clone()
    last_nonfinite = torch.zeros(b, dtype=torch.bool, device=dev)

    while bool(active.any()):
        target = t[idx.clamp(max=T - 1)]
        remaining = (target - t_cur).abs()
        clipped = h >= remaining * (1 - 4 * eps)
        h_abs = torch.where(clipped, remaining, h)
        h_eff = direction * h_abs
        if not tab.fsal and calls > 1:
            k1, aux1 = rhs(t_cur, y)
            calls += 1
            nfev += active.long()
            k1_pieces = [(aux1, torch.ones(b, dtype=torch.bool, device=dev))]
        ks = [k1]
        stage_aux = [k1_pieces]
        hcol = h_eff[:, None]
        for j in range(1, S):
            incr = sum(a * k for a, k in zip(tab.a[j], ks) if a != 0.0)
            kj, auxj = rhs(t_cur + tab.c[j] * h_eff, y + hcol * incr)
            ks.append(kj)
            keep = tab.b[j] != 0.0 or (tab.fsal and j == S - 1)
            stage_aux.append([(auxj if keep else None, active)])
        calls += S - 1
        nfev += (S - 1) * active.long()
        y_new = y + hcol * sum(bj * k for bj, k in zip(tab.b, ks) if bj != 0.0)
        finite = torch.isfinite(y_new.detach().sum(-1))  # non-finite if any entry is; cheaper than all()
        if adaptive:
            with torch.no_grad():
                err = hcol * sum(ej * k.detach() for ej, k in zip(tab.e, ks) if ej != 0.0)
                ycols = slice(None) if err_cols is None else slice(0, err_cols)
                scale = atol + rtol * torch.maximum(y.detach()[:, ycols].abs(), y_new.detach()[:, ycols].abs())
                en = _rms(err[:, ycols] / scale)
                finite = finite & torch.isfinite(en)
                accept = active & finite & (en <= 1.0)
        else:
            with torch.no_grad():
                y_half = _two_half_steps(rhs, tab, t_cur, y.detach(), k1.detach(), h_eff)
                ycols = slice(None) if err_cols is None else slice(0, err_cols)
                scale = atol + rtol * torch.maximum(y.detach()[:, ycols].abs(), y_new.detach()[:, ycols].abs())
                en = _rms((y_new.detach() - y_half)[:, ycols] / scale)
            calls += 2 * S - 1
            nfev += (2 * S - 1) * active.long()
            unstable = active & finite & ~(en <= 1.0)
            status[unstable] = _UNSTABLE
            active = active & ~unstable
            accept = active & finite
        attempts += active.long()
        if on_accept is not None and bool(accept.any()):
            weights = torch.stack([h_eff * bj * accept.to(dt) for bj in tab.b])
            on_accept(stage_aux, weights)
        m = accept[:, None]
        y = torch.where(m, y_new, y)
        t_cur = torch.where(accept, torch.where(clipped, target, t_cur + h_eff), t_cur)
        steps += accept.long()
        if tab.fsal:
            k1 = torch.where(m, ks[-1], k1)
            aux_last = stage_aux[-1][0][0]
            k1_pieces = [(aux_last, accept)] + [(a, pm & ~accept) for a, pm in k1_pieces if bool((pm & ~accept).any())]
        reached = accept & clipped
        for k in torch.unique(idx[reached]).tolist():
            sel = (reached & (idx == k))[:, None]
            outs[k] = torch.where(sel, y, outs[k])
        idx = idx + reached.long()
        done = active & (idx >= T)
        status[done] = _CONVERGED
        active = active & ~done
        if adaptive:
            with torch.no_grad():
                factor = torch.where(
                    finite, (0.9 * en.clamp_min(1e-10) ** (-1.0 / tab.order)).clamp(0.2, 10.0), torch.full_like(en, 0.2)
                )
                factor = torch.where(accept, factor, factor.clamp(max=1.0))
                h_next = h_abs * factor
                h = torch.where(accept & clipped, torch.maximum(h_next, h), h_next)
            last_nonfinite = active & ~finite
            small = active & ~accept & (h < h_floor)
            status[small & last_nonfinite] = _NONFINITE
            status[small & ~last_nonfinite] = _TOO_SMALL
            active = active & ~small
        else:
            nf = active & ~finite
            status[nf] = _NONFINITE
            active = active & ~nf
            if bool(reached.any()):
                new_span = (t[idx.clamp(max=T - 1)] - t_cur).abs()
                h_new = new_span / torch.ceil(new_span / step_size - 1e-9).clamp_min(1)
                h = torch.where(reached, h_new, h)
        over = active & (attempts >= max_steps)
        active = active & ~over  # status stays MAX_STEPS
    return Integration(outs, status, steps, attempts, nfev, calls, h, t_cur)


__all__ = ["integrate", "Integration", "Tableau", "DOPRI5", "RK4", "TABLEAUS"]
