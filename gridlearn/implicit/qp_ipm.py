"""Batched primal-dual interior point for convex QPs (Mehrotra predictor-corrector).

Problem, per batch element (Q symmetric PSD):

    minimise ½ xᵀQx + pᵀx   s.t.   Gx + s = h,  s ≥ 0,   Ax = b,

with duals λ ≥ 0 (inequalities) and ν (equalities). The KKT conditions are

    r_d = Qx + p + Gᵀλ + Aᵀν = 0,   r_p = Gx + s − h = 0,   r_e = Ax − b = 0,   s∘λ = 0.

Each iteration takes Newton steps on (r_d, r_p, r_e, s∘λ − σμ) from an infeasible
start, with Mehrotra's predictor-corrector choice of σ (Mehrotra 1992; the same scheme
as CVXOPT's coneqp and qpth, Amos & Kolter 2017). Eliminating ds and dλ,

    ds = −r_p − G dx,    dλ = D(G dx + r_p) − r_c / s,    D = diag(λ / s),
    (Q + GᵀDG) dx + Aᵀ dν = −r_d − Gᵀ(D r_p − r_c / s),    A dx = −r_e,

which the `qp_kkt_solvers.KKTSolver` chosen in the settings factors once per iteration and solves twice (predictor,
corrector). Elements that finish (converged, infeasible, unbounded, failed) leave the
active set and stop costing work.

Infeasibility is detected from certificates, not by running out of iterations:

* primal infeasible: λ ≥ 0, ν with q = hᵀλ + bᵀν < 0 and ‖Gᵀλ + Aᵀν‖₁ ≤ ε_inf·(−q).
  For any feasible x₀, q ≥ −‖Gᵀλ + Aᵀν‖₁‖x₀‖∞, so this proves that no feasible point
  has ‖x₀‖∞ < 1/ε_inf. In an infeasible problem the iterates' (λ, ν) diverge along such
  a ray, so the test fires after a few iterations.
* dual infeasible (unbounded): a direction d (the last primal step) with pᵀd < 0 and
  ‖Qd‖₁ + ‖(Gd)₊‖₁ + ‖Ad‖₁ ≤ ε_inf·(−pᵀd); by the same argument no dual-feasible point
  has ‖(x, λ, ν)‖∞ < 1/ε_inf.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gridlearn.implicit.qp_kkt import QPData, mtv, mv
from gridlearn.implicit.qp_kkt_solvers import KKTSolver
from gridlearn.implicit.solution import Status

RUNNING = -1


@dataclass
class QPWarmStart:
    """A primal-dual point to start from: x (b, n), s (b, m), lam (b, m), nu (b, k)."""

    x: Tensor
    s: Tensor
    lam: Tensor
    nu: Tensor


@dataclass
class IPMResult:
    """Raw output of `interior_point` for a full batch (all tensors detached)."""

    x: Tensor
    s: Tensor
    lam: Tensor
    nu: Tensor
    status: Tensor
    residual: Tensor
    iterations: Tensor


def _max_step(v: Tensor, dv: Tensor) -> Tensor:
    """Largest α ≤ 1 with v + α dv ≥ 0, per row; v > 0 (b, m) -> (b,)."""
    ratio = torch.where(dv < 0, -v / dv, torch.full_like(v, float("inf")))
    return ratio.amin(-1).clamp(max=1.0) if v.shape[-1] else v.new_ones(v.shape[0])


def _inf(v: Tensor) -> Tensor:
    return v.abs().amax(-1) if v.shape[-1] else v.new_zeros(v.shape[0])


def _one(v: Tensor) -> Tensor:
    return v.abs().sum(-1)


def _cold_start(data: QPData, batch: int, solver: KKTSolver, reg: float, refine: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CVXOPT's initial point: solve the KKT system with D = I, shift s and λ positive.

    (Q + GᵀG) x + Aᵀν = −p + Gᵀh,  Ax = b;  then z = Gx − h, s = −z, λ = z, each
    shifted by (1 − min) when not already positive.
    """
    dt, dev, m = data.Q.dtype, data.Q.device, data.m
    ones = torch.ones(batch, m, dtype=dt, device=dev)
    f = solver.factor(data, ones, reg, refine)
    p = data.p.expand(batch, data.n)
    h = data.h.expand(batch, m)
    rx = -p + (mtv(data.G, h) if m else 0.0)
    x, nu = f.solve(rx, data.b.expand(batch, data.k).clone())
    z = mv(data.G, x) - h if m else h
    s, lam = -z, z.clone()

    def shift(v: Tensor) -> Tensor:
        low = v.amin(-1, keepdim=True) if m else v.new_zeros(batch, 1)
        return torch.where(low > 0, v, v + 1.0 - low)

    return x, shift(s), shift(lam), nu


def _warm(data: QPData, ws: QPWarmStart, push: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Warm start: keep x, ν; move s and λ off the boundary by at least ``push``.

    An interior point needs s, λ > 0 and roughly centred; a previous optimum has
    s_i λ_i ≈ 0, so the small components are lifted to ``push`` (relative to scale).
    """
    s = ws.s.clamp_min(push)
    lam = ws.lam.clamp_min(push)
    return ws.x.clone(), s, lam, ws.nu.clone()


def interior_point(
    data: QPData,
    batch: int,
    *,
    solver: KKTSolver,
    tol: float,
    eps_inf: float,
    max_iter: int,
    reg: float,
    refine_steps: int,
    step_fraction: float,
    warm_start: QPWarmStart | None,
    warm_push: float,
) -> IPMResult:
    """Run the interior point on every element of the batch; see the module docstring."""
    dt, dev = data.Q.dtype, data.Q.device
    n, m, k = data.n, data.m, data.k
    if warm_start is None:
        x, s, lam, nu = _cold_start(data, batch, solver, reg, refine_steps)
    else:
        x, s, lam, nu = _warm(data, warm_start, warm_push)
    status = torch.full((batch,), RUNNING, dtype=torch.long, device=dev)
    residual = torch.full((batch,), float("inf"), dtype=dt, device=dev)
    iters = torch.zeros(batch, dtype=torch.long, device=dev)
    x_prev = x.clone()
    idx = torch.arange(batch, device=dev)
    p_inf = _inf(data.p.expand(batch, n))
    hb_inf = torch.maximum(_inf(data.h.expand(batch, m)), _inf(data.b.expand(batch, k)))

    # ``sub`` is always ``data`` restricted to ``idx``: it is narrowed as elements finish
    # and carried to the next iteration, so each element's Q, G... is copied once per
    # narrowing rather than re-gathered from the full batch every iteration.
    sub = data
    for it in range(max_iter + 1):
        xa, sa, la, na = x[idx], s[idx], lam[idx], nu[idx]
        nb = idx.numel()
        Gx = mv(sub.G, xa) if m else xa.new_zeros(nb, 0)
        Ax = mv(sub.A, xa) if k else xa.new_zeros(nb, 0)
        h = sub.h.expand(nb, m)
        b = sub.b.expand(nb, k)
        p = sub.p.expand(nb, n)
        Qx = mv(sub.Q, xa)
        Gl = mtv(sub.G, la) if m else torch.zeros_like(xa)
        An = mtv(sub.A, na) if k else torch.zeros_like(xa)
        r_d = Qx + p + Gl + An
        r_p = Gx + sa - h
        r_e = Ax - b
        gap = (sa * la).sum(-1)
        obj = 0.5 * (xa * Qx).sum(-1) + (p * xa).sum(-1)
        pres = torch.maximum(_inf(r_p), _inf(r_e)) / (1.0 + hb_inf[idx])
        dres = _inf(r_d) / (1.0 + p_inf[idx])
        gres = gap / (1.0 + obj.abs())
        res = torch.maximum(torch.maximum(pres, dres), gres)
        residual[idx] = res
        iters[idx] = it

        st = torch.full((nb,), RUNNING, dtype=torch.long, device=dev)
        finite = torch.isfinite(res) & torch.isfinite(xa).all(-1) & torch.isfinite(la).all(-1)
        st[~finite] = Status.NUMERICAL.code
        st[(st == RUNNING) & (res <= tol)] = Status.CONVERGED.code
        # Primal infeasibility certificate from the (diverging) dual iterate.
        q = (h * la).sum(-1) + (b * na).sum(-1)
        pinf = (q < 0) & (_one(Gl + An) <= eps_inf * (-q)) & (pres > tol)
        st[(st == RUNNING) & pinf] = Status.INFEASIBLE.code
        # Dual infeasibility certificate from the last primal step direction.
        dxa = xa - x_prev[idx]
        pd = (p * dxa).sum(-1)
        viol = _one(mv(sub.Q, dxa))
        if m:
            viol = viol + _one(mv(sub.G, dxa).clamp_min(0))
        if k:
            viol = viol + _one(mv(sub.A, dxa))
        dinf = (pd < 0) & (viol <= eps_inf * (-pd)) & (dres > tol)
        st[(st == RUNNING) & dinf] = Status.UNBOUNDED.code
        if it == max_iter:
            st[st == RUNNING] = Status.MAX_STEPS.code

        live = st == RUNNING
        done = st != RUNNING
        if bool(done.any()):
            status[idx[done]] = st[done]
        if not bool(live.any()):
            break
        loc = torch.nonzero(live).flatten()
        if loc.numel() < nb:
            sub = sub.take(loc)
            xa, sa, la, na = xa[loc], sa[loc], la[loc], na[loc]
            r_d, r_p, r_e = r_d[loc], r_p[loc], r_e[loc]
            gap = gap[loc]
        G = sub.G
        f = solver.factor(sub, la / sa if m else la, reg, refine_steps)
        if bool(f.broken.any()):
            # Elements whose KKT system is singular even after regularisation.
            status[idx[loc[f.broken]]] = Status.NUMERICAL.code
            ok = torch.nonzero(~f.broken).flatten()
            if ok.numel() == 0:
                break
            f = f.take(ok)
            sub = f.data
            loc = loc[ok]
            xa, sa, la, na = xa[ok], sa[ok], la[ok], na[ok]
            r_d, r_p, r_e = r_d[ok], r_p[ok], r_e[ok]
            gap = gap[ok]
            G = sub.G
        dinv = f.d

        def direction(r_c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            rx = -r_d
            if m:
                rx = rx - mtv(G, dinv * r_p - r_c / sa)
            dx, dnu = f.solve(rx, -r_e)
            if m:
                ds = -r_p - mv(G, dx)
                dl = dinv * (mv(G, dx) + r_p) - r_c / sa
            else:
                ds, dl = sa, la
            return dx, ds, dl, dnu

        if m:
            mu = gap / m
            _, ds_a, dl_a, _ = direction(sa * la)  # the predictor needs only the s and lambda steps
            alpha_a = torch.minimum(_max_step(sa, ds_a), _max_step(la, dl_a))
            mu_a = ((sa + alpha_a[:, None] * ds_a) * (la + alpha_a[:, None] * dl_a)).sum(-1) / m
            sigma = (mu_a / mu.clamp_min(torch.finfo(dt).tiny)).clamp(0.0, 1.0) ** 3
            r_c = sa * la + ds_a * dl_a - (sigma * mu)[:, None]
            dx, ds, dl, dnu = direction(r_c)
            alpha = (step_fraction * torch.minimum(_max_step(sa, ds), _max_step(la, dl))).clamp(max=1.0)
            a = alpha[:, None]
            gi = idx[loc]
            x_prev[gi] = xa
            x[gi] = xa + a * dx
            s[gi] = sa + a * ds
            lam[gi] = la + a * dl
            nu[gi] = na + a * dnu
        else:
            # Equality-only QP: one full Newton step is exact up to the factorisation.
            dx, _, _, dnu = direction(xa.new_zeros(loc.numel(), 0))
            gi = idx[loc]
            x_prev[gi] = xa
            x[gi] = xa + dx
            nu[gi] = na + dnu
        idx = gi

    return IPMResult(x, s, lam, nu, status, residual, iters)
