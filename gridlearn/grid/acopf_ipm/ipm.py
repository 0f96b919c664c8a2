"""The batched primal-dual interior-point iteration (the method of Ipopt, Wächter & Biegler 2006,
on the condensed system of MATPOWER's MIPS, Wang, Murillo-Sanchez, Zimmerman & Thomas 2007).

Problem (`problem`): ``min f(x)  s.t. c(x) = 0,  h(x) + s = 0,  s >= 0``, Lagrangian
``L = f + lam^T c + mu^T h``. Per iteration, for every scenario still running:

* **Newton step** on the perturbed KKT conditions ``grad L = 0, c = 0, h + s = 0,
  s mu = gamma``, condensed to `kkt` (s and mu eliminated), with Ipopt's inertia correction.
* **Barrier parameter** gamma: Ipopt's monotone (Fiacco-McCormick) rule,
  ``gamma <- max(tol/10, min(0.2 gamma, gamma^1.5))`` once the barrier problem's own error
  is below ``10 gamma``; the Newton step aims at ``sigma = 0`` of that gamma.
* **Fraction to boundary** ``tau = max(0.99, 1 - gamma)`` on s (primal) and mu (dual), separately;
  the equality multipliers take the dual step, as in MIPS (Ipopt gives them the primal step,
  which, cut by the line search near the optimum, stalled them on case12da), and mu is kept
  within Ipopt's ``kappa_sigma = 1e10`` of ``gamma / s``.
* **Line search**: backtracking (halving, at most `IPMOptions.max_backtrack` times) with
  Ipopt's filter acceptance test against the current iterate only (no filter memory: a
  measured choice, the l1-merit variant jammed on case30 load scenarios with steps ~1e-3 while
  the multipliers diverged); a scenario whose step is not accepted takes the full
  fraction-to-boundary step (a watchdog-like escape).
* **Masking**: a scenario leaves the iteration as soon as it has a status; the others are
  evaluated and factorised alone (`Scenarios.take`).

Statuses (`gridlearn.implicit.solution.Status`): CONVERGED when Ipopt's scaled optimality
error ``max(|grad L|/s_d, |(c, h+s)|, |s mu|/s_c) <= tol`` and, as Ipopt's termination test,
the unscaled errors are within ``dual_inf_tol``, ``constr_viol_tol`` and ``compl_inf_tol``
(`unscaled_errors`): the gradient scaling can shrink a row by up to 1e8 (case16am's 6e-10 pu
branch: its two balance rows by 6e-8), and a scaled violation below tol then hides an
unscaled one of 0.4 pu, the whole load unserved (case16am at 10% load "converged" at cost
6e-9 $/h before this test; Ipopt: 57.5 $/h); INFEASIBLE when the iterate
stalls infeasible while the multipliers diverge with ``grad f`` negligible against
``J^T (lam, mu)``: a Fritz John point of the constraints alone, i.e. a stationary point of
infeasibility (Ipopt reaches the same conclusion through its restoration phase); MAX_STEPS
after ``max_iter`` (where `restoration` may still certify INFEASIBLE: the caller's
`solve._Solver._certify_infeasible`); NUMERICAL when the inertia cannot be corrected or the iterate is not finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gridlearn.errors import ConfigError
from gridlearn.grid.acopf_ipm import sparse_kkt
from gridlearn.grid.acopf_ipm.kkt import LINEAR_SOLVERS, KKTPattern, assemble, factor_with_inertia_correction
from gridlearn.grid.acopf_ipm.problem import (Evaluation, Scenarios, Structure, evaluate, lagrangian_hessian,
                                              objective_hessian_diagonal, scatter_cols)
from gridlearn.implicit.solution import Status

RUNNING = -1
KAPPA_SIGMA = 1e10
GAMMA_THETA, GAMMA_PHI, ETA_PHI = 1e-5, 1e-5, 1e-4  # Ipopt's filter margins and Armijo constant
THETA_MIN = 1e-8  # infeasibility below which a step must decrease phi (switching condition)
SUSPECT_ITERATIONS = 5  # consecutive iterations of diverging multipliers before INFEASIBLE
#: A stalled infeasible iterate (the second INFEASIBLE test): the primal infeasibility has not fallen
#: by STALL_DECREASE (relative) for STALL_ITERATIONS iterations while the multipliers exceed
#: STALL_MULTIPLIER times |grad f|: the objective's share of the stationarity condition is below
#: 1/STALL_MULTIPLIER, so the iterate is a Fritz John point of the constraints alone to that
#: accuracy, and it makes no progress towards feasibility. (case6ww, a +-10% load scenario that
#: Ipopt calls infeasible: primal stuck at 1.2e-3 from iteration 15 while the multipliers grew
#: linearly, 8e7 to 9e8, never crossing the divergence test's 1e7 |grad f| = 1.1e9 in 200 iterations.)
STALL_ITERATIONS = 10
STALL_DECREASE = 1e-3
STALL_MULTIPLIER = 1e5
#: The Newton step's iterative refinement stops at a residual of STEP_REFINE_RTOL |rhs| (Ipopt's
#: residual_ratio_max = 1e-10); the backward's solves keep `sparse_kkt.REFINE_RTOL`. Measured once
#: (scripts not kept; `benchmarks/check_acopf_ipm_corpus.py` rechecks statuses and objectives) against
#: 1e-14 (32 corpus scenarios each of 9 cases): every status and converged iteration count the same
#: but one case89pegase scenario (37 -> 36), objectives within 1.4e-14; case118 x 256 forward 1.83 ->
#: 1.61 s (1.71 -> 0.38 refinement solves per step per chunk); the infeasible case89pegase scenarios, whose
#: multipliers diverge, took 2,269 -> 2,504 iterations, up or down by scenario.
STEP_REFINE_RTOL = 1e-10


@dataclass(frozen=True, kw_only=True)
class IPMOptions:
    """Settings of `solve_batched`. Defaults follow Ipopt's where it has one."""

    tol: float = 1e-8  # Ipopt tol (scaled optimality error)
    max_iter: int = 200
    mu_init: float = 0.1  # initial barrier parameter (Ipopt mu_init)
    bound_push: float = 1e-2  # start inside the bounds by this much (Ipopt bound_push/bound_frac)
    warm_mu_init: float = 1e-5  # barrier parameter of a warm start
    warm_bound_push: float = 1e-6
    max_backtrack: int = 12
    infeasible_multiplier: float = 1e7  # |multipliers| / max(1, |grad f|) above it: a divergence
    chunk: int = 64  # scenarios factorised together (memory: chunk * (n + 2 n_bus)^2 floats)
    retry_flat: bool = True  # solve a scenario that did not converge again from a flat start (as solve_acopf)
    linear_solver: str = "auto"  # KKT factorisation: "dense" (batched LDLᵀ), "sparse" (CPU, numba), "auto" (kkt)
    # Ipopt's unscaled termination tolerances (its defaults): CONVERGED needs them too (`unscaled_errors`).
    dual_inf_tol: float = 1.0  # |grad L| in the problem's units ($/h per pu)
    constr_viol_tol: float = 1e-4  # |c|, max(h, 0) in pu (power, voltage) and rad
    compl_inf_tol: float = 1e-4  # |s mu| unscaled

    def __post_init__(self):
        for name in ("tol", "dual_inf_tol", "constr_viol_tol", "compl_inf_tol"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_iter < 1 or self.chunk < 1:
            raise ConfigError("max_iter and chunk must be >= 1")
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ConfigError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {self.linear_solver!r}")


@dataclass
class IPMState:
    """Iterates of B scenarios (scaled problem) and their per-scenario bookkeeping."""

    x: Tensor  # (B, n)
    s: Tensor  # (B, n_ineq) slacks, > 0
    lam: Tensor  # (B, n_eq)
    mu: Tensor  # (B, n_ineq) > 0
    gamma: Tensor  # (B,) barrier parameter
    status: Tensor  # (B,) long, RUNNING or a Status code
    iters: Tensor  # (B,)
    error: Tensor  # (B,) last scaled optimality error
    primal: Tensor  # (B,) last |(c, h + s)|_inf
    delta_last: Tensor  # (B,) last Hessian regularisation
    suspect: Tensor  # (B,) consecutive iterations with diverging multipliers
    stall: Tensor | None = None  # (B,) consecutive iterations of a stalled infeasible iterate (STALL_*)
    primal_ref: Tensor | None = None  # (B,) primal infeasibility when the stall count last restarted
    #: (B,) `iterate`'s polish (its ``polish`` argument): NOT_POLISHED, steps taken since the scenario
    #: converged at ``tol`` (>= 0, while it goes on), POLISHED, or POLISH_FAILED (it did not get there:
    #: the state is the best converged iterate on the way).
    polish: Tensor | None = None

    def __post_init__(self):
        if self.stall is None:
            self.stall = torch.zeros_like(self.suspect)
        if self.primal_ref is None:
            self.primal_ref = torch.full_like(self.primal, float("inf"))
        if self.polish is None:
            self.polish = torch.full_like(self.suspect, NOT_POLISHED)


NOT_POLISHED, POLISHED, POLISH_FAILED = -1, -2, -3
#: What a polish that fails restores: the converged iterate with the smallest error on the way.
_SNAPSHOT = ("x", "s", "lam", "mu", "gamma", "error", "primal", "delta_last")


def _numba_ok(*ts: Tensor) -> bool:
    """Whether the CPU kernels of `sparse_kkt` may stand in for torch: float64 CPU, no autograd history."""
    return (ts[0].device.type == "cpu" and all(t.dtype == torch.float64 for t in ts)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in ts)))


def _jht(st: Structure, ev: Evaluation, v: Tensor) -> Tensor:
    """Jh^T v (B, n) (numba where `_numba_ok`, else torch)."""
    if _numba_ok(ev.jh, v):
        return sparse_kkt.inequality_transpose_product(st.ineq_cols_np, ev.jh, v, st.n)
    return scatter_cols(ev.jh * v[:, :, None], st.ineq_cols, st.n)


def _jt(st: Structure, ev: Evaluation, lam: Tensor, mu: Tensor) -> Tensor:
    """Jc^T lam + Jh^T mu (B, n): a numba pass on CPU float64 values outside autograd (the iteration),
    torch's index_add otherwise (CUDA, and the backward, which differentiates through it)."""
    if _numba_ok(ev.jc, ev.jh, lam, mu):
        return sparse_kkt.jacobian_transpose_product(st.eq_rows_np, st.eq_cols_np, ev.jc, lam, st.ineq_cols_np, ev.jh,
                                                     mu, st.n)
    return (scatter_cols(ev.jc * lam[:, st.eq_rows], st.eq_cols, st.n)
            + scatter_cols(ev.jh * mu[:, :, None], st.ineq_cols, st.n))


def _jh_dot(st: Structure, ev: Evaluation, dx: Tensor) -> Tensor:
    """Jh dx (B, n_ineq) (numba where `_numba_ok`, else torch)."""
    if _numba_ok(ev.jh, dx):
        return sparse_kkt.inequality_product(st.ineq_cols_np, ev.jh, dx)
    pad = torch.cat([dx, torch.zeros_like(dx[:, :1])], 1)
    return (ev.jh * pad[:, st.ineq_cols]).sum(-1)


def _optimality_scales(st: Structure, lam: Tensor, mu: Tensor) -> tuple[Tensor, Tensor]:
    """Ipopt's (s_d, s_c) of the optimality error (B,): multiplier sizes above s_max = 100."""
    s_max = 100.0
    m = st.n_eq + st.n_ineq
    s_d = torch.clamp((lam.abs().sum(-1) + mu.abs().sum(-1)) / m, min=s_max) / s_max
    s_c = torch.clamp(mu.abs().sum(-1) / max(st.n_ineq, 1), min=s_max) / s_max
    return s_d, s_c


def _complementarity(st: Structure, s: Tensor, mu: Tensor, gamma: Tensor) -> Tensor:
    """max |s mu - gamma| (B,)."""
    return (s * mu - gamma[:, None]).abs().amax(-1) if st.n_ineq else torch.zeros_like(gamma)


def optimality(st: Structure, ev: Evaluation, s: Tensor, lam: Tensor, mu: Tensor, gamma: Tensor | float = 0.0):
    """Ipopt's scaled optimality error (B,) at barrier ``gamma``, with its parts (dual, primal, comp)."""
    s_d, s_c = _optimality_scales(st, lam, mu)
    lx = ev.grad_f + _jt(st, ev, lam, mu)
    dual = lx.abs().amax(-1)
    primal = torch.maximum(ev.c.abs().amax(-1), (ev.h + s).abs().amax(-1) if st.n_ineq else 0 * dual)
    g = gamma if isinstance(gamma, Tensor) else torch.full_like(dual, gamma)
    comp = _complementarity(st, s, mu, g)
    return torch.maximum(torch.maximum(dual / s_d, primal), comp / s_c), dual, primal, comp, lx


def unscaled_errors(st: Structure, ev: Evaluation, s: Tensor, mu: Tensor, lx: Tensor,
                    scales: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Ipopt's unscaled dual infeasibility, constraint violation and complementarity (B,) at a scaled
    evaluation ``ev`` with stationarity residual ``lx`` (scaled): ``|lx| / s_f``; ``max(|c| / s_c,
    max(h, 0) / s_h)`` (the violation of the constraints themselves, not of ``h + s = 0``);
    ``|s mu| / s_f`` (unscaled slack ``s / s_h`` times unscaled multiplier ``mu s_h / s_f``)."""
    s_f, s_c, s_h = scales
    dual = lx.abs().amax(-1) / s_f
    viol = (ev.c / s_c).abs().amax(-1) if st.n_eq else torch.zeros_like(s_f)
    if st.n_ineq:
        viol = torch.maximum(viol, (ev.h.clamp_min(0) / s_h).amax(-1))
        comp = (s * mu).abs().amax(-1) / s_f
    else:
        comp = torch.zeros_like(s_f)
    return dual, viol, comp


def _fraction_to_boundary(v: Tensor, dv: Tensor, tau: Tensor) -> Tensor:
    """Largest alpha in (0, 1] with v + alpha dv >= (1 - tau) v, per scenario."""
    ratio = torch.where(dv < 0, -tau[:, None] * v / dv, torch.full_like(v, float("inf")))
    return torch.clamp(ratio.amin(-1), max=1.0)


def slacks_and_multipliers(ev: Evaluation, s: Tensor, mu: Tensor, s_f: Tensor, s_h: Tensor) -> tuple[Tensor, Tensor]:
    """(B, n_ineq) unscaled slacks, and unscaled multipliers divided by the objective gradient's size
    (as `acopf_kkt.multiplier_scale`): what the Ipopt layer's active-set rule
    (`acopf_kkt.complementarity_classes`) compares."""
    g_scale = (ev.grad_f / s_f[:, None]).abs().amax(-1).clamp_min(1e-12)
    return s / s_h, mu * s_h / s_f[:, None] / g_scale[:, None]


def separation_ratio(ev: Evaluation, s: Tensor, mu: Tensor, s_f: Tensor, s_h: Tensor) -> Tensor:
    """(B,) the smallest ratio max/min of an inequality's slack and multiplier (`slacks_and_multipliers`):
    below ~1e3 a later iterate may classify that constraint the other way."""
    if s.shape[-1] == 0:
        return torch.full_like(s_f, float("inf"))
    slack, mult = slacks_and_multipliers(ev, s, mu, s_f, s_h)
    return (torch.maximum(slack, mult) / torch.minimum(slack, mult).clamp_min(1e-300)).amin(-1)


def iterate(st: Structure, pat: KKTPattern, sc: Scenarios, scales: tuple[Tensor, Tensor, Tensor], state: IPMState,
            opts: IPMOptions, polish: tuple[float, int, float] | None = None) -> IPMState:
    """Run the interior point until every scenario of ``state`` has a status (see the module docstring).

    ``polish=(tol_p, steps, separation)``: a scenario that converges at ``opts.tol`` with an ambiguous
    active set (`separation_ratio` below ``separation``) goes on, in the same batch, until its error is
    at most ``tol_p`` or the active set is no longer ambiguous, in at most ``steps`` more iterations
    (`IPMState.polish`); one that does not get there gets back the converged iterate with the smallest
    error on the way (POLISH_FAILED), CONVERGED either way. For the backward's active set
    (`solve._Solver._polish`): in the batch, each extra iteration costs what the others do, where a
    separate call afterwards costs about twice per scenario (case118 x 256)."""
    s_f_all, s_c_all, s_h_all = scales
    tol = opts.tol
    pat = pat.iteration or pat  # the Newton steps' ordering (`kkt.ITERATION_MATCHED`)
    cached = None  # (scenarios, values-only evaluation at their new iterate): the accepted line-search trials
    snap = None  # `_SNAPSHOT` of the scenarios being polished: their best converged iterate so far
    for _ in range(opts.max_iter + 1 + (polish[1] if polish else 0)):
        act = torch.nonzero(state.status == RUNNING).squeeze(-1)
        if act.numel() == 0:
            break
        full = act.numel() == state.x.shape[0]
        sub = sc if full else sc.take(act)
        s_f, s_c, s_h = (t if full else t[act] for t in (s_f_all, s_c_all, s_h_all))
        # Every scenario running (most iterations): the iterates themselves, no gathered copies.
        x, s, lam, mu, gamma = ((state.x, state.s, state.lam, state.mu, state.gamma) if full else
                                (state.x[act], state.s[act], state.lam[act], state.mu[act], state.gamma[act]))
        values = None
        if cached is not None and cached[0].numel() == act.numel() and bool((cached[0] == act).all()):
            values = cached[1]  # the values at this x were computed by the line search: only derivatives now
        cached = None
        ev = evaluate(st, sub, x, s_f, s_c, s_h, values=values)
        err0, dual, primal, comp, lx = optimality(st, ev, s, lam, mu)
        state.error[act], state.primal[act] = err0, primal
        dual_u, viol_u, comp_u = unscaled_errors(st, ev, s, mu, lx, (s_f, s_c, s_h))
        status = torch.full_like(act, RUNNING)
        done = ((err0 <= tol) & (dual_u <= opts.dual_inf_tol) & (viol_u <= opts.constr_viol_tol)
                & (comp_u <= opts.compl_inf_tol))
        status = torch.where(done, Status.CONVERGED.code, status)
        if polish is not None:
            pol = state.polish[act]
            going = pol >= 0
            fine = done & ((err0 <= polish[0]) | (separation_ratio(ev, s, mu, s_f, s_h) >= polish[2]))
            start = done & ~fine & ~going  # converged at tol just now: remember this iterate, go on
            # ... and a better converged iterate on the way replaces it (restored if the polish fails)
            better = done & ~fine & going & (err0 < snap["error"][act] if snap is not None else going)
            if bool((start | better).any()):
                if snap is None:
                    snap = {name: getattr(state, name).clone() for name in _SNAPSHOT}
                start = start | better
                rows = act[start]
                here = {"x": x, "s": s, "lam": lam, "mu": mu, "gamma": gamma, "error": err0, "primal": primal,
                        "delta_last": state.delta_last[act]}
                for name in _SNAPSHOT:
                    snap[name][rows] = here[name][start]
            status = torch.where(done & ~fine, RUNNING, status)
            status = torch.where(going & (pol >= polish[1]), Status.CONVERGED.code, status)  # restored below
            state.polish[act] = torch.where(start & ~going, torch.zeros_like(pol), torch.where(fine, POLISHED, pol))
        finite = torch.isfinite(err0) & torch.isfinite(x).all(-1)
        status = torch.where(~finite, Status.NUMERICAL.code, status)
        # Local infeasibility: multipliers diverging while grad f is negligible against J^T y.
        y_max = torch.maximum(lam.abs().amax(-1), mu.abs().amax(-1))
        g_max = ev.grad_f.abs().amax(-1).clamp_min(1.0)
        diverged = (y_max > opts.infeasible_multiplier * g_max) & (primal > 1e2 * tol)
        state.suspect[act] = torch.where(diverged, state.suspect[act] + 1, torch.zeros_like(state.suspect[act]))
        progress = primal < (1 - STALL_DECREASE) * state.primal_ref[act]
        stalled = ~progress & (y_max > STALL_MULTIPLIER * g_max) & (primal > 1e2 * tol)
        state.primal_ref[act] = torch.where(progress, primal, state.primal_ref[act])
        state.stall[act] = torch.where(stalled, state.stall[act] + 1, torch.zeros_like(state.stall[act]))
        infeasible = (state.suspect[act] >= SUSPECT_ITERATIONS) | (state.stall[act] >= STALL_ITERATIONS)
        status = torch.where(infeasible & (status == RUNNING), Status.INFEASIBLE.code, status)
        over = (state.iters[act] >= opts.max_iter) & (status == RUNNING)
        status = torch.where(over, Status.MAX_STEPS.code, status)
        state.status[act] = status
        run = status == RUNNING
        if not bool(run.any()):
            continue
        if not bool(run.all()):
            keep = torch.nonzero(run).squeeze(-1)
            act = act[keep]
            sub = sub.take(keep)
            s_f, s_c, s_h = s_f[keep], s_c[keep], s_h[keep]
            x, s, lam, mu, gamma = x[keep], s[keep], lam[keep], mu[keep], gamma[keep]
            ev = ev.take(keep)
            lx, dual, primal = lx[keep], dual[keep], primal[keep]
        # Barrier update (monotone): while the barrier problem is solved to 10 gamma, decrease gamma.
        # Only the complementarity part of the error depends on gamma.
        s_d_opt, s_c_opt = _optimality_scales(st, lam, mu)
        err_fixed = torch.maximum(dual / s_d_opt, primal)
        floor = tol / 10 if polish is None else torch.where(state.polish[act] >= 0, polish[0] / 10, tol / 10)
        for _k in range(5):
            err_mu = torch.maximum(err_fixed, _complementarity(st, s, mu, gamma) / s_c_opt)
            dec = err_mu <= 10.0 * gamma
            if not bool(dec.any()):
                break
            new = torch.clamp(torch.minimum(0.2 * gamma, gamma ** 1.5), min=floor)
            dec = dec & (new < gamma)
            if not bool(dec.any()):
                break
            gamma = torch.where(dec, new, gamma)
        step = newton_step(st, pat, sub, ev, s, lam, mu, gamma, lx, s_f, s_c, s_h, state.delta_last[act])
        dx, dlam, ds, dmu, fac = step
        state.delta_last[act] = torch.where(fac.delta_w > 0, fac.delta_w, state.delta_last[act])
        tau = torch.clamp(1.0 - gamma, min=0.99)
        a_p = _fraction_to_boundary(s, ds, tau)
        a_d = _fraction_to_boundary(mu, dmu, tau)
        a_p, trial = _line_search(st, sub, ev, x, s, lam, mu, gamma, dx, ds, a_p, s_f, s_c, s_h, opts)
        ok = fac.ok & torch.isfinite(dx).all(-1) & torch.isfinite(dmu).all(-1)
        if trial is not None and bool(ok.all()):
            cached = (act, trial)
        a_p = torch.where(ok, a_p, torch.zeros_like(a_p))
        a_d = torch.where(ok, a_d, torch.zeros_like(a_d))
        # The new iterates replace the state's tensors when every scenario moved (nothing else holds them).
        mu_new = mu + a_d[:, None] * dmu
        s_new = s + a_p[:, None] * ds
        g_s = gamma[:, None] / s_new
        new = {"x": x + a_p[:, None] * dx, "s": s_new,
               # as MIPS: the dual step (a primal step cut by the line search near the optimum would
               # stall the equality multipliers: case12da, 14 of 100 scenarios)
               "lam": lam + a_d[:, None] * dlam,
               # Ipopt's safeguard (kappa_sigma = 1e10): keep each mu within a factor of gamma / s.
               "mu": torch.maximum(torch.minimum(mu_new, KAPPA_SIGMA * g_s), g_s / KAPPA_SIGMA), "gamma": gamma}
        every = act.numel() == state.x.shape[0]  # not `full`: scenarios that stopped this iteration left act
        for name, v in new.items():
            if every:
                setattr(state, name, v)
            else:
                getattr(state, name)[act] = v
        state.iters[act] += 1
        if polish is not None:
            state.polish[act] += (state.polish[act] >= 0).to(state.polish.dtype)
        bad = torch.nonzero(~ok).squeeze(-1)
        if bad.numel():
            state.status[act[bad]] = Status.NUMERICAL.code
    if polish is not None:  # a polish that stopped short (any status): back to its best converged iterate
        rows = torch.nonzero(state.polish >= 0).squeeze(-1)
        if rows.numel():
            for name in _SNAPSHOT:
                getattr(state, name)[rows] = snap[name][rows]
            state.status[rows] = Status.CONVERGED.code
            state.polish[rows] = POLISH_FAILED
    return state


def newton_step(st, pat, sub, ev, s, lam, mu, gamma, lx, s_f, s_c, s_h, delta_last):
    """(dx, dlam, ds, dmu, Factorisation) of the condensed system at barrier ``gamma``."""
    hes = lagrangian_hessian(st, sub, ev, lam, mu, s_f, s_c, s_h, pat.hes_src)
    od = objective_hessian_diagonal(st, sub, s_f)
    sigma = mu / s

    def build(idx, dw, dc):
        if idx is None:
            return assemble(pat, hes, od, ev.jc, ev.jh, sigma, dw, dc)
        return assemble(pat, hes[idx], od[idx], ev.jc[idx], ev.jh[idx], sigma[idx], dw, dc)

    fac = factor_with_inertia_correction(build, pat, delta_last, gamma)
    r_x = -(lx + _jht(st, ev, (mu * ev.h + gamma[:, None]) / s))
    rhs = torch.cat([r_x, -ev.c], 1)
    sol = fac.solve(rhs, STEP_REFINE_RTOL)
    dx, dlam = sol[:, : st.n], sol[:, st.n :]
    ds = -ev.h - s - _jh_dot(st, ev, dx)
    dmu = -mu + (gamma[:, None] - mu * ds) / s
    # The condensed system solves for lam + dlam directly only through lx's lam term: dlam is the change.
    return dx, dlam, ds, dmu, fac


def _line_search(st, sub, ev, x, s, lam, mu, gamma, dx, ds, alpha, s_f, s_c, s_h, opts):
    """Backtracking with Ipopt's filter acceptance against the current iterate (module docstring).

    A trial point is accepted when it reduces the infeasibility ``theta = |(c, h + s)|_1`` or the
    barrier objective ``phi = f - gamma sum log s`` by a margin (Wächter & Biegler 2006, eq. 18),
    and must satisfy Armijo on phi once the iterate is feasible (their switching condition);
    ``theta`` may never exceed ``1e4 max(1, theta)``. Returns the accepted primal step per scenario and,
    when every scenario accepted a trial, the values there (the next iteration's, which then only
    needs derivatives); None when one took the escape step.
    """
    theta0 = ev.c.abs().sum(-1) + (ev.h + s).abs().sum(-1)
    phi0 = ev.f - gamma * torch.log(s).sum(-1)
    slope = (ev.grad_f * dx).sum(-1) - gamma * (ds / s).sum(-1)
    switching = (slope < 0) & (theta0 <= THETA_MIN)
    theta_max = 1e4 * torch.clamp(theta0, min=1.0)
    pending = torch.ones_like(alpha, dtype=torch.bool)
    a = alpha.clone()
    accepted = []  # (rows, values at their accepted trial point)
    for _ in range(opts.max_backtrack):
        idx = torch.nonzero(pending).squeeze(-1)
        if idx.numel() == 0:
            break
        ai = a[idx]
        sub_i = sub if idx.numel() == x.shape[0] else sub.take(idx)
        xt = x[idx] + ai[:, None] * dx[idx]
        s_t = s[idx] + ai[:, None] * ds[idx]
        evt = evaluate(st, sub_i, xt, s_f[idx], s_c[idx], s_h[idx], derivatives=False)
        theta = evt.c.abs().sum(-1) + (evt.h + s_t).abs().sum(-1)
        phi = evt.f - gamma[idx] * torch.log(s_t).sum(-1)
        th0, ph0 = theta0[idx], phi0[idx]
        filt = (theta <= (1 - GAMMA_THETA) * th0) | (phi <= ph0 - GAMMA_PHI * th0)
        armijo = phi <= ph0 + ETA_PHI * ai * slope[idx] + 1e-14 * ph0.abs()
        accept = torch.where(switching[idx], armijo, filt) & (theta <= theta_max[idx])
        accept = accept & torch.isfinite(phi) & torch.isfinite(theta)
        pending[idx] = ~accept
        a[idx] = torch.where(accept, ai, 0.5 * ai)
        if bool(accept.all()):
            accepted.append((idx, evt))
        elif bool(accept.any()):
            k = torch.nonzero(accept).squeeze(-1)
            accepted.append((idx[k], evt.take(k)))
    # Not accepted within max_backtrack halvings: take the fraction-to-boundary step (escape).
    if bool(pending.any()):
        return torch.where(pending, alpha, a), None
    return a, Evaluation.stack_rows(accepted, x.shape[0])
