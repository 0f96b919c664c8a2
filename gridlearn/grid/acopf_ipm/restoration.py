"""The local-infeasibility certificate of a scenario the interior point left without a status (MAX_STEPS).

Ipopt's way of concluding "infeasible" (Wächter & Biegler 2006, section 3.3): when the iteration makes
no progress towards feasibility it enters a restoration phase that minimises the constraint violation
alone, variable bounds kept; if that converges to a point whose violation stays above
``constr_viol_tol``, the point is a stationary point of the violation (a Fritz John point of the
constraints: the violation's gradient ``J^T r`` is balanced by the bound multipliers alone, whatever
the objective) and Ipopt returns "Converged to a point of local infeasibility" (case145 corpus #35:
300 iterations, four restoration phases, violation 5.46 pu at the end).

Here: the violation ``phi(x) = 1/2 |r(x)|^2``, ``r = (c(x), max(h_form(x), 0))`` (balances in pu,
flow limits in pu^2, angle limits in rad: the constraints unscaled, so that no gradient scaling can
hide a row, see `ipm`'s docstring on case16am; weighted by the iteration's scaling, phi was 7e-16 at
a case16am iterate violating its balances by 0.43 pu), minimised over the variable box ``lb <= x <= ub``
(bound multipliers ``z >= 0``) by Newton's method on the exact Hessian ``J^T J + sum r_i hess r_i``
(`problem.lagrangian_hessian` with the residuals as multipliers: the physics is `ACPolar`'s) with a
log barrier on the box (`certify_infeasible`), from the interior point's last iterate. The certificate
is first order and scale-free:

    kappa = max( max_j |(J^T r)_j - z_lo,j + z_hi,j| / ((|J|^T |r|)_j + z_lo,j + z_hi,j),
                 |s z|_inf / | |J|^T |r| |_inf ) <= tol     and   |r|_inf > constr_viol_tol,

s the distances to the bounds. kappa is the relative cancellation in the violation's stationarity,
column by column: about 1 where nothing cancels, 0 exactly at a Fritz John point, and unchanged when
r is rescaled by a constant or a variable by its units. A point of violation at most ``constr_viol_tol`` is feasible to Ipopt's tolerance: no
certificate (the scenario keeps MAX_STEPS), nor where kappa does not reach tol in MAX_ITER
iterations. The caller (`solve._Solver._certify_infeasible`) runs this only on scenarios without a
status, so a CONVERGED scenario's iteration is untouched, with ``tol = 1 / infeasible_multiplier``
(1e-7): the Fritz John accuracy that the iteration's own divergence test accepts (the objective's
share of stationarity). Like Ipopt's, the certificate is local: a violation minimiser above the
tolerance says no feasible point is near, not that none exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gridlearn.grid.acopf_ipm.problem import Scenarios, Structure, evaluate, lagrangian_hessian

#: Newton iterations at most (each: one evaluation with derivatives, one values-only trial or more). case145
#: corpus scenarios needed 112-278 (kappa creeps along a flat valley of the violation: Ipopt too took 300
#: iterations on #35); an iteration costs about 0.014 s there and 0.034 s on case300 (dense, one core).
MAX_ITER = 500
#: The bound barrier's start (Ipopt mu_init), the start's distance inside the box (bound_push) and the
#: fraction to the boundary (Ipopt's tau_min).
MU_START, PUSH, TAU = 0.1, 1e-2, 0.99
#: Consecutive iterations without a move (at most 1e-12 in x) at an unchanged mu that end an attempt
#: (no certificate): a stalled iteration cannot reach the certificate, and ran to MAX_ITER before.
STALL_STEPS = 10


@dataclass(frozen=True)
class Certificate:
    """Per scenario (B,): ``infeasible`` (certified), ``violation`` |r|_inf (pu, pu^2, rad) and
    ``stationarity`` kappa at the violation's local minimiser reached, ``iterations`` taken."""

    infeasible: Tensor
    violation: Tensor
    stationarity: Tensor
    iterations: Tensor


def box(st: Structure, like: Tensor) -> tuple[Tensor, Tensor]:
    """(lb, ub) of the variables of ``like`` (B, n, or B, n_free: the free entries of z alone), -inf / inf
    where unbounded (the epigraph variables: always)."""
    lo_rows = st.bound_sign < 0
    cols, val = st.bound_cols, st.bound_value
    n = like.shape[-1]
    lo = torch.full((n,), -float("inf"), dtype=like.dtype, device=like.device).index_copy(0, cols[lo_rows], val[lo_rows])
    hi = torch.full((n,), float("inf"), dtype=like.dtype, device=like.device).index_copy(0, cols[~lo_rows], val[~lo_rows])
    return lo, hi


def _residuals(st: Structure, sc: Scenarios, x: Tensor, derivatives: bool):
    """(r (B, m), evaluation) at ``x``: the balances and the violated parts of flow and angle limits,
    unscaled."""
    bsz = x.shape[0]
    one = torch.ones(bsz, dtype=x.dtype, device=x.device)
    ev = evaluate(st, sc, x, one, torch.ones(bsz, st.n_eq, dtype=x.dtype, device=x.device),
                  torch.ones(bsz, st.n_ineq, dtype=x.dtype, device=x.device), derivatives=derivatives)
    r = torch.cat([ev.c, ev.h[:, st.n_bound :].clamp_min(0)], -1)
    return r, ev


def _dense_jacobian(st: Structure, ev, r: Tensor) -> Tensor:
    """J (B, m, n) of `_residuals` (a satisfied limit's row is 0: max(h, 0) is flat there)."""
    bsz, n = r.shape[0], st.n
    m_form = st.n_ineq - st.n_bound
    jac = torch.zeros(bsz, (st.n_eq + m_form) * (n + 1), dtype=r.dtype, device=r.device)
    jac.index_add_(1, st.eq_rows * (n + 1) + st.eq_cols, ev.jc)
    rows = st.n_eq + torch.arange(m_form, device=r.device)[:, None]
    jh = ev.jh[:, st.n_bound :] * (r[:, st.n_eq :] > 0)[..., None]
    jac.index_add_(1, (rows * (n + 1) + st.ineq_cols[st.n_bound :]).reshape(-1), jh.reshape(bsz, -1))
    return jac.view(bsz, st.n_eq + m_form, n + 1)[:, :, :n]


def _hessian(st: Structure, sc: Scenarios, ev, mult: Tensor, jac: Tensor) -> Tensor:
    """``J^T J + sum_i mult_i hess r_i`` (B, n, n): with ``jac`` = J and ``mult`` = r, the Hessian of
    ``1/2 |r|^2`` (exact where no limit is at its kink)."""
    bsz, n = mult.shape[0], st.n
    mu = torch.zeros(bsz, st.n_ineq, dtype=mult.dtype, device=mult.device)
    mu[:, st.n_bound :] = mult[:, st.n_eq :]  # only the flow rows are nonlinear; the others' entries are unused
    one = torch.ones(bsz, dtype=mult.dtype, device=mult.device)
    hv = lagrangian_hessian(st, sc, ev, mult[:, : st.n_eq], mu, one, torch.ones_like(mult[:, : st.n_eq]),
                            torch.ones_like(mu))
    second = torch.zeros(bsz, n * n, dtype=mult.dtype, device=mult.device)
    second.index_add_(1, st.hes_r * n + st.hes_c, hv)
    return jac.transpose(1, 2) @ jac + second.view(bsz, n, n)


def push_inside(x: Tensor, lo: Tensor, hi: Tensor, push: float) -> Tensor:
    """``x`` moved at least ``push`` (relative, Ipopt's bound_push and bound_frac) inside the box."""
    width = torch.where(torch.isfinite(hi - lo), hi - lo, torch.full_like(lo, float("inf")))
    p_lo = torch.minimum(push * torch.clamp(lo.abs(), min=1.0), push * width)
    p_hi = torch.minimum(push * torch.clamp(hi.abs(), min=1.0), push * width)
    p_lo = torch.where(torch.isfinite(p_lo), p_lo, torch.zeros_like(p_lo))
    p_hi = torch.where(torch.isfinite(p_hi), p_hi, torch.zeros_like(p_hi))
    return torch.maximum(torch.minimum(x, hi - p_hi), lo + p_lo)


def certify_infeasible(st: Structure, sc: Scenarios, x0: Tensor, tol: float, constr_viol_tol: float,
                       max_iter: int = MAX_ITER) -> Certificate:
    """Minimise the violation from ``x0`` (B, n) (the module docstring) and certify local infeasibility.

    The box is kept by a log barrier on the bounds alone (Ipopt's monotone ``mu`` rule, fraction to the
    boundary 0.99, Armijo backtracking on the barrier function, inertia correction), so that the active
    bounds are found by the iteration, not guessed: distances to the bounds ``s``, bound multipliers
    ``z = mu / s``, Newton steps ``(H + mu S^-2 + delta I) dx = -(J^T r - z_lo + z_hi)``. The
    certificate's kappa (module docstring; ``s z = mu``): stationarity, column by column, and
    complementarity of the bound-constrained least-squares problem, relative to the gradient's size. mu falls only once a barrier problem is solved to ``10 mu``, so an iteration that
    stalls (no step accepted) cannot reach a small kappa; mu stops at ``tol / 10`` of that size.
    (A primal barrier, not primal-dual: with separate multipliers, a z held back by its fraction to
    the boundary kept the barrier error above ``10 mu`` at a solved barrier problem.)"""
    bsz, n = x0.shape
    lo, hi = box(st, x0)
    has_lo, has_hi = torch.isfinite(lo), torch.isfinite(hi)
    x = push_inside(x0, lo, hi, PUSH)
    barrier_mu = torch.full((bsz,), MU_START, dtype=x.dtype, device=x.device)
    delta = torch.zeros(bsz, dtype=x.dtype, device=x.device)
    running = torch.ones(bsz, dtype=torch.bool, device=x.device)
    violation = torch.full((bsz,), float("nan"), dtype=x.dtype, device=x.device)
    kappa = torch.full_like(violation, float("nan"))
    iters = torch.zeros(bsz, dtype=torch.long, device=x.device)
    stalled = torch.zeros_like(iters)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)

    def slacks(xv):
        return torch.where(has_lo, xv - lo, 1.0), torch.where(has_hi, hi - xv, 1.0)

    def barrier(rv, xv, mu_v):
        s_l, s_h = slacks(xv)
        logs = torch.where(has_lo, torch.log(s_l), 0 * s_l).sum(-1) + torch.where(has_hi, torch.log(s_h), 0 * s_h).sum(-1)
        return 0.5 * (rv * rv).sum(-1) - mu_v * logs

    for _ in range(max_iter + 1):
        act = torch.nonzero(running).squeeze(-1)
        if act.numel() == 0:
            break
        sub, xa, mu_a = sc.take(act), x[act], barrier_mu[act]
        r, ev = _residuals(st, sub, xa, derivatives=True)
        jac = _dense_jacobian(st, ev, r)
        g = (jac.transpose(1, 2) @ r[..., None])[..., 0]
        g_abs = (jac.abs().transpose(1, 2) @ r.abs()[..., None])[..., 0]
        size = g_abs.amax(-1).clamp_min(1e-300)
        s_l, s_h = slacks(xa)
        # A variable within constr_viol_tol (relative to max(1, |bound|)) of a bound is at it, to Ipopt's
        # tolerance on bounds: the barrier holds it off by about mu / |g_j| (case145 #35: 1.2e-5 at 1.086).
        k = _stationarity(g, jac, r, has_lo & (s_l <= constr_viol_tol * lo.abs().clamp_min(1.0)),
                          has_hi & (s_h <= constr_viol_tol * hi.abs().clamp_min(1.0)))
        v = r.abs().amax(-1)
        violation[act], kappa[act] = v, k
        stop = (k <= tol) | (v <= constr_viol_tol) | (iters[act] >= max_iter) | (stalled[act] >= STALL_STEPS)
        stop |= ~torch.isfinite(v) | ~torch.isfinite(k)
        running[act[stop]] = False
        keep = ~stop
        if not bool(keep.any()):
            break
        rows = torch.nonzero(keep).squeeze(-1)
        act, xa, mu_a, r, g, jac = (t[rows] for t in (act, xa, mu_a, r, g, jac))
        s_l, s_h, size = s_l[rows], s_h[rows], size[rows]
        sub, ev = sc.take(act), ev.take(rows)
        # Ipopt's monotone barrier rule: the barrier problem solved to 10 mu -> a smaller mu, down to the
        # level where the complementarity s z = mu meets the certificate's tolerance.
        floor = tol * tol * size
        for _k in range(4):
            err_mu = (g - _bound_multipliers(mu_a, s_l, s_h, has_lo, has_hi)).abs().amax(-1)
            dec = (err_mu <= 10 * mu_a) & (mu_a > floor)
            if not bool(dec.any()):
                break
            mu_a = torch.where(dec, torch.clamp(torch.minimum(0.2 * mu_a, mu_a ** 1.5), min=floor), mu_a)
        same_mu = mu_a == barrier_mu[act]
        barrier_mu[act] = mu_a
        # The primal barrier's Newton system (the bound multipliers are mu / s: no dual variables to lag).
        sig = mu_a[:, None] * (torch.where(has_lo, 1 / s_l**2, 0.0) + torch.where(has_hi, 1 / s_h**2, 0.0))
        mat = _hessian(st, sub, ev, r, jac) + torch.diag_embed(sig)
        rhs = -(g - _bound_multipliers(mu_a, s_l, s_h, has_lo, has_hi))
        # Inertia correction as Ipopt's (delta_w): the smallest delta (x8 from the last one / 3) making
        # the matrix positive definite, so that dx is a descent direction of the barrier function.
        scale = mat.diagonal(dim1=1, dim2=2).abs().amax(-1).clamp_min(1.0)
        dl = delta[act]
        chol, info = torch.linalg.cholesky_ex(mat)
        need = info != 0
        dl = torch.where(need, torch.where(dl > 0, (dl / 3).clamp_min(1e-20 * scale), 1e-8 * scale), torch.zeros_like(dl))
        for _k in range(40):
            if not bool(need.any()):
                break
            c2, i2 = torch.linalg.cholesky_ex(mat + dl[:, None, None] * eye)
            fixed = need & (i2 == 0)
            chol = torch.where(fixed[:, None, None], c2, chol)
            need = need & ~fixed
            dl = torch.where(need, dl * 8, dl)
        delta[act] = dl
        dx = torch.cholesky_solve(rhs[..., None], chol)[..., 0]
        a_p = torch.minimum(_to_boundary(s_l, dx, has_lo), _to_boundary(s_h, -dx, has_hi))
        psi = barrier(r, xa, mu_a)
        slope = (-rhs * dx).sum(-1)  # d psi / d alpha at 0: grad psi . dx < 0
        accepted = torch.zeros_like(keep[rows])
        alpha = a_p
        for _k in range(30):
            xt = xa + alpha[:, None] * dx
            rt = _residuals(st, sub, xt, derivatives=False)[0]
            ok = torch.isfinite(rt).all(-1) & (barrier(rt, xt, mu_a) <= psi + 1e-4 * alpha * slope)
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            alpha = torch.where(accepted, alpha, alpha / 2)
        alpha = torch.where(accepted, alpha, torch.zeros_like(alpha))
        x[act] = xa + alpha[:, None] * dx
        iters[act] += 1
        # No move at an unchanged mu: nothing will change any more (case16am's 1.6e9 entries: steps of 1e-17).
        still = same_mu & ((alpha[:, None] * dx).abs().amax(-1) <= 1e-12)
        stalled[act] = torch.where(still, stalled[act] + 1, torch.zeros_like(stalled[act]))
    certified = (kappa <= tol) & (violation > constr_viol_tol)
    return Certificate(certified, violation, kappa, iters)


def _stationarity(g: Tensor, jac: Tensor, r: Tensor, at_lo: Tensor, at_hi: Tensor) -> Tensor:
    """kappa (B,): the largest cosine between the residual r and a column of J, the projected gradient's
    components ``|P g|_j / (|J_j|_2 |r|_2)``, where P drops a component pointing out of the box at a bound
    the variable is within constr_viol_tol of (its bound multiplier takes it); 0 for a column of zeros. Column by
    column and in cosines: unchanged when a variable or r is rescaled. Against the largest component
    instead, one stiff column hid another's (case141 from its flat start: pg's gradient not cancelled at
    all, next to a 2e4 column, gave 1.6e-8 at a point 0.007 pu short, the barrier's mu / s standing in for
    a multiplier of pg 0.58 pu inside its bounds); against each column's own |J_j|^T |r|, a column whose
    only row is satisfied at the limit (a generator's qg) stayed at 1 (case145, where Ipopt says infeasible)."""
    pg = torch.where(at_lo, g.clamp_max(0), torch.where(at_hi, g.clamp_min(0), g))
    norm = jac.square().sum(1).sqrt() * r.square().sum(-1, keepdim=True).sqrt()
    return torch.where(norm > 0, pg.abs() / norm.clamp_min(1e-300), 0.0).amax(-1)


def _bound_multipliers(mu: Tensor, s_l: Tensor, s_h: Tensor, has_lo: Tensor, has_hi: Tensor) -> Tensor:
    """``z_lo - z_hi`` (B, n) of the primal barrier: ``z = mu / s`` on each finite bound."""
    return torch.where(has_lo, mu[:, None] / s_l, 0.0) - torch.where(has_hi, mu[:, None] / s_h, 0.0)


def _to_boundary(v: Tensor, dv: Tensor, has: Tensor) -> Tensor:
    """Largest alpha in (0, 1] keeping ``v + alpha dv >= (1 - TAU) v`` where ``has``."""
    ratio = torch.where(has & (dv < 0), -TAU * v / dv, torch.full_like(v, float("inf")))
    return torch.clamp(ratio.amin(-1), max=1.0)
