"""`solve_acopf_batched`: B scenarios of one network's AC-OPF in one torch interior point, differentiable.

Forward: `ipm.iterate` in chunks of `IPMOptions.chunk` scenarios. Backward (`_IPMFunction`):
the implicit function theorem on the KKT conditions of the active set at the solution, as the
Ipopt layer (`acopf_kkt`) does,

    F(x, lam, mu_A; theta) = [ grad f + Jc^T lam + J_A^T mu_A ;  c ;  h_A ] = 0,

with the active set A classified by the Ipopt layer's rule (`acopf_kkt.complementarity_classes`
on unscaled slacks and multipliers), inactive inequalities dropped and active ones as equalities.
For a cotangent v: ``[[K_0, J_A^T], [J_A, 0]] (w, u) = (v, 0)`` (`_bordered_solve`, on one
factorisation per chunk of ``K_rho = K_0 + J_A^T rho J_A``, which has the iteration's sparsity
pattern), then ``grad_theta = -(w, u)^T dF/dtheta`` by torch autograd through `ACPolar`'s values
at theta (loads, costs, branch parameters). Differentiating the barrier KKT at the final mu
instead (the earlier design) left an active constraint with a moderate mu/s as a soft penalty of
that weight (gradients up to 7e-4 off on case30) and a strongly active one as a 1e10 entry.
A scenario that did not converge has NaN outputs and NaN gradients (a parameter shared across the
batch gets NaN if any scenario failed); so has a converged one with a weakly active constraint
(the Ipopt layer's test), where the solution map has no derivative (``strict_gradients=True``:
`SolverFailure`), and one whose bordered solve does not settle (`BACKWARD_RTOL`): a singular active-set
KKT matrix, where the solution is not unique (case_RTS_GMLC: identical units sharing one linear cost
segment, whose split between them the optimum leaves free).
When any input requires grad, a scenario whose active set is ambiguous at ``tol`` is iterated on
until it is not (`POLISH_TOL`, `POLISH_SEPARATION`): its outputs are then a more accurate solution
than the same call without gradients gives (the same optimum, to the tolerance).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gridlearn._deprecation import renamed_attribute
from gridlearn.errors import ConfigError, DataError, SolverFailure
from gridlearn.grid.acopf import default_start
from gridlearn.grid.acopf_kkt import complementarity_classes
from gridlearn.grid.adequacy import active_power_shortfall_mw
from gridlearn.grid.acopf_recovery import flat_start
from gridlearn.grid.acopf_ipm import sparse_kkt
from gridlearn.grid.acopf_ipm.ipm import (POLISH_FAILED, POLISHED, RUNNING, IPMOptions, IPMState, _jh_dot, _jht, _jt,
                                          iterate, optimality, separation_ratio, slacks_and_multipliers,
                                          unscaled_errors)
from gridlearn.grid.acopf_ipm.kkt import KKTPattern, assemble, factor_with_inertia_correction, kkt_pattern
from gridlearn.grid.acopf_ipm.problem import (Scenarios, Structure, build_structure, evaluate, gradient_scaling,
                                              lagrangian_hessian, objective, objective_hessian_diagonal, scenarios_from,
                                              to_z, with_epigraph)
from gridlearn.grid.acopf_ipm.restoration import box, certify_infeasible, push_inside
from gridlearn.grid.acopf_model import acopf_arrays, polar_formulation
from gridlearn.grid.checks import check_costs, check_finite
from gridlearn.grid.formulations import Convention, get_convention
from gridlearn.implicit.solution import Status

THETA_NAMES = ("pd_mw", "qd_mvar", "cost_c2_usd_per_mw2h", "cost_c1_usd_per_mwh", "cost_c0_usd_per_h",
               "r_pu", "x_pu", "g_pu", "b_pu")


@dataclass(frozen=True)
class BatchedACOPFResult:
    """B solved AC-OPFs: the fields of `ACOPFResult`, each with the batch first (NaN where not converged).

    ``status``: one `Status` per scenario; ``duals``: Ipopt's sign convention (`acopf` module
    docstring): ``p_balance``, ``q_balance`` (B, n_bus), ``flow_f``/``flow_t``/``angle``
    (B, n_branch), ``{vm,pg,qg}_lower/_upper``; ``residuals``: the scaled optimality error and its
    parts (B,), and ``constraint_violation``, the unscaled one (pu, rad; `ipm.unscaled_errors`); for a
    scenario the iteration left MAX_STEPS, ``least_violation`` and ``infeasibility_stationarity``, what
    `restoration` reached (INFEASIBLE where it certified local infeasibility; NaN for the others);
    ``warm``: what a later call's ``warm_start`` needs.
    """

    convention: str
    status: list
    cost_usd_per_h: Tensor  # (B,) the objective: generation cost
    pg_mw: Tensor
    qg_mvar: Tensor
    vm_pu: Tensor
    va_rad: Tensor
    p_from_mw: Tensor
    q_from_mvar: Tensor
    p_to_mw: Tensor
    q_to_mvar: Tensor
    lmp_usd_per_mwh: Tensor
    lmp_q_usd_per_mvarh: Tensor
    duals: dict = field(repr=False)
    residuals: dict = field(repr=False)
    iterations: Tensor = field(repr=False, default=None)
    weakly_active: Tensor = field(repr=False, default=None)  # (B,) bool: no derivative there (NaN gradient)
    solve_time_s: float = 0.0
    warm: dict = field(repr=False, default_factory=dict)

    objective = renamed_attribute("BatchedACOPFResult", "objective", "cost_usd_per_h")

    @property
    def converged(self) -> Tensor:
        return torch.tensor([s is Status.CONVERGED for s in self.status])


@dataclass
class _Chunk:
    """One chunk's solve: its scenarios, scales, final state and the factorisation at the solution."""

    idx: Tensor
    sc: Scenarios
    scales: tuple
    state: IPMState
    fac: Any = None
    weak: Any = None  # (B,) bool: a constraint is weakly active at the solution (no derivative there)
    active: Any = None  # (B, n_ineq) bool: the active set at the solution (`_classify`)
    ev: Any = None  # the evaluation at the final iterate (`_final_evaluation`), once the state is final


def _final_evaluation(st: Structure, ch: _Chunk):
    """The evaluation at the chunk's final iterate, computed once (the backward's factorisation, the
    weak-activity test and the residuals all need it)."""
    if ch.ev is None:
        ch.ev = evaluate(st, ch.sc, ch.state.x, *ch.scales)
    return ch.ev


def _check(network) -> None:
    check_costs(network, convex=True, pwl=True, reactive=True)
    for name in ("pd_mw", "qd_mvar", "gs_mw", "bs_mvar"):
        check_finite(f"bus.{name}", getattr(network.bus, name), network.bus.labels)


def _start(st: Structure, d, network, batch: int, device, dtype, push: float) -> Tensor:
    """The case's start (as `solve_acopf`'s default), pushed ``push`` inside the bounds (Ipopt bound_push)."""
    s0 = default_start(d, network)
    z0 = torch.as_tensor(np.concatenate([s0["va"], s0["vm"], s0["pg"], s0["qg"]]), dtype=dtype, device=device)
    return with_epigraph(st, _push(st, z0[st.free].expand(batch, st.n_free).clone(), push))


def _push(st: Structure, x: Tensor, push: float) -> Tensor:
    """``x`` (B, n or n_free) moved ``push`` inside its bounds (relative, as Ipopt's bound_push and
    bound_frac); the epigraph variables have none."""
    return push_inside(x, *box(st, x), push)


def _solve_chunk(st, pat, sc, x0, warm, opts, idx, proven: Tensor | None = None,
                 polish: tuple[float, int, float] | None = None) -> _Chunk:
    """Solve scenarios ``idx``; those ``proven`` (bool (B,), `_Solver.proven`) infeasible start INFEASIBLE
    and are not iterated; ``polish``: `ipm.iterate`'s."""
    bsz = x0.shape[0]
    one = torch.ones(bsz, dtype=x0.dtype, device=x0.device)
    ev0 = evaluate(st, sc, x0, one, torch.ones(bsz, st.n_eq, dtype=x0.dtype, device=x0.device),
                   torch.ones(bsz, st.n_ineq, dtype=x0.dtype, device=x0.device))
    s_f, s_c, s_h = gradient_scaling(st, ev0, bsz)
    h0 = ev0.h * s_h
    s = torch.clamp(-h0, min=opts.bound_push)
    lam = torch.zeros(bsz, st.n_eq, dtype=x0.dtype, device=x0.device)
    mu = opts.mu_init / s
    gamma = torch.full_like(one, opts.mu_init)
    if warm is not None:  # Ipopt's warm start: previous slacks and multipliers, pushed off zero, small gamma
        ok = warm["converged"][idx].to(x0.device)[:, None]
        push = opts.warm_bound_push
        s = torch.where(ok, torch.clamp(torch.maximum(-h0, warm["slack"][idx] * s_h), min=push), s)
        lam = torch.where(ok, warm["lam"][idx] * s_f[:, None] / s_c, lam)
        mu = torch.where(ok, torch.clamp(warm["mu"][idx] * s_f[:, None] / s_h, min=push), mu)
        gamma = torch.where(ok[:, 0], torch.full_like(one, opts.warm_mu_init), gamma)
    status = torch.full((bsz,), RUNNING, dtype=torch.long, device=x0.device)
    if proven is not None:
        status = torch.where(proven, Status.INFEASIBLE.code, status)
    state = IPMState(x=x0.clone(), s=s, lam=lam, mu=mu, gamma=gamma, status=status,
                     iters=torch.zeros(bsz, dtype=torch.long, device=x0.device), error=torch.zeros_like(one),
                     primal=torch.zeros_like(one), delta_last=torch.zeros_like(one),
                     suspect=torch.zeros(bsz, dtype=torch.long, device=x0.device))
    state = iterate(st, pat, sc, (s_f, s_c, s_h), state, opts, polish)
    return _Chunk(idx, sc, (s_f, s_c, s_h), state)


def _final_factorisation(st: Structure, pat: KKTPattern, ch: _Chunk):
    """LDLᵀ of the backward's matrix at the solution (no regularisation), and what `_bordered_solve`
    needs with it: (factorisation, evaluation, rho, sigma_inactive).

    The matrix factorised is K_rho + J_I^T diag(sigma_I) J_I: K_rho is the active-set KKT matrix's
    leading block (inactive multipliers 0) with each active row added as the penalty
    ``rho_i J_i^T J_i`` (`active_penalty`); the inactive rows get `INACTIVE_SIGMA`, only so that the
    sparse path's static-order pivots of variables with no curvature (qg) are not zero.
    `_bordered_solve` removes that term again by refinement."""
    s_f, s_c, s_h = ch.scales
    stt = ch.state
    ev = _final_evaluation(st, ch)
    mu_a = torch.where(ch.active, stt.mu, torch.zeros_like(stt.mu))  # inactive multipliers are 0 in the limit
    hes = lagrangian_hessian(st, ch.sc, ev, stt.lam, mu_a, s_f, s_c, s_h, pat.hes_src)
    od = objective_hessian_diagonal(st, ch.sc, s_f)
    rho = active_penalty(ev.jh, ch.active, hes, od)
    sig_i = torch.where(ch.active, torch.zeros_like(rho), torch.full_like(rho, INACTIVE_SIGMA))
    build = lambda idx, dw, dc: assemble(pat, hes, od, ev.jc, ev.jh, rho + sig_i, dw, dc)  # noqa: E731
    fac = factor_with_inertia_correction(build, pat, stt.delta_last, stt.gamma, correct=False)
    return fac, ev, rho, sig_i


#: The backward's bordered solve is accepted when its row-wise backward error (`_bordered_solve`)
#: is at most BACKWARD_RTOL; otherwise (sparse path) it is redone on the dense LDLᵀ, and failing
#: that too, the scenario gets no gradient.
BACKWARD_RTOL = 1e-10
#: ... and the last augmented-Lagrangian step must have moved the solution by at most this
#: (relative to its max-abs): a stationary iteration that is still moving has not converged.
FORWARD_RTOL = 1e-6
#: Weight of an active row's penalty ``rho_i J_i^T J_i`` in K_rho, per unit of |J_i|^2 and of the
#: largest Hessian entry (`active_penalty`): large enough that K_rho is nonsingular where the active-set
#: K_0 is not (a variable held at its bound has no other curvature) and that the
#: augmented-Lagrangian iteration contracts fast (rate ~ |H| / rho), small enough not to bring back
#: the barrier's 1e10 entries. Measured: see `benchmarks/check_acopf_ipm_backward.py`.
ACTIVE_RHO = 1e5
#: Augmented-Lagrangian steps of the bordered solve at most (each: one solve with K_rho).
BORDERED_STEPS = 8
#: Weight of the inactive rows' term ``sigma J_i^T J_i`` in the factorised matrix (`_final_factorisation`),
#: scaled units: only there to keep the sparse path's static-order pivots of variables without curvature
#: (qg) off zero; refinement removes it (rate ~ sigma |K_rho^{-1}|). The barrier's own mu/s is no good:
#: after `_Solver._polish` (gamma 1e-12) it is ~1e-12, at the zero-pivot threshold, and the sparse
#: factor failed over to the dense one (case118 x 256: backward 0.09 s -> 2.9 s).
INACTIVE_SIGMA = 1e-6
#: When gradients are asked for, a converged scenario with a constraint whose slack and multiplier are
#: within POLISH_SEPARATION of each other is iterated on (from its final iterate) to POLISH_TOL before
#: its active set is classified (`_Solver._polish`): at tol 1e-8 (gamma ~1e-9) a binding limit with a
#: small multiplier can still show a slack of 1e-4 and be called inactive, and the active-set gradient
#: is then silently off (case39 corpus #23: slack 1.05e-4, multiplier 9e-7 (ratio 116), 1e-2 off the
#: Ipopt layer; at tol 1e-11 slack 2.8e-8, multiplier 5.3e-7: active). A scenario whose polish does not
#: converge in POLISH_STEPS iterations keeps its forward result and gets no gradient (weakly active).
#: Nearly every scenario has such a constraint (case118 x 256: 253), so the iteration itself goes on
#: once a scenario converges, until its error is below POLISH_TOL or no constraint is within
#: POLISH_SEPARATION (`ipm.iterate`'s ``polish``): case118 x 256 forward with gradients 1.44 -> 1.30 s
#: (487 -> 283 extra iterations) against polishing afterwards in a second call. The separation stop
#: matters where POLISH_TOL is out of reach (case300, where Ipopt too ends ACCEPTABLE at tol 1e-11): a
#: polish that stopped only at POLISH_TOL failed on 5 of 7 scenarios and left them without a gradient.
#: `_Solver._polish` is left with what that did not polish (retries, failures).
POLISH_SEPARATION = 1e3
POLISH_TOL = 1e-11
POLISH_STEPS = 30
#: MAX_STEPS scenarios whose violation `restoration` minimises together: its matrices are dense, B n^2
#: floats (case300: n = 1,200, 11 MB per scenario), and several of them live at once, so fewer scenarios
#: go together where each matrix is larger than RESTORATION_MATRIX_BYTES (case1354pegase, n ~ 5,000:
#: 200 MB; case2869pegase: 1 GB; one at a time).
RESTORATION_CHUNK = 8
RESTORATION_MATRIX_BYTES = 64 * 2**20


def active_penalty(jh: Tensor, active: Tensor, hes: Tensor, obj_diag: Tensor) -> Tensor:
    """(B, n_ineq) rho: ``ACTIVE_RHO * |H|_max / |J_i|^2`` on active rows (|H|_max: the largest
    Hessian entry, at least 1), 0 on inactive ones."""
    entries = torch.cat([hes, obj_diag.expand(hes.shape[0], -1), torch.ones_like(hes[:, :1])], -1)
    h_max = entries.abs().amax(-1)
    norm2 = (jh * jh).sum(-1).clamp_min(1e-300)
    return torch.where(active, ACTIVE_RHO * h_max[:, None] / norm2, torch.zeros_like(norm2))


def _classify(st: Structure, ch: _Chunk) -> tuple[Tensor, Tensor]:
    """((B, n_ineq) active, (B,) any weakly active) at the chunk's solution, by the Ipopt layer's rule
    (`acopf_kkt.complementarity_classes`)."""
    s_f, _, s_h = ch.scales
    both = slacks_and_multipliers(_final_evaluation(st, ch), ch.state.s, ch.state.mu, s_f, s_h)
    active, weak = complementarity_classes(*reversed(both))
    return active, weak.any(-1) if st.n_ineq else torch.zeros(active.shape[0], dtype=torch.bool, device=active.device)


def _separation(st: Structure, ch: _Chunk) -> Tensor:
    """(B,) `ipm.separation_ratio` at the chunk's final iterate."""
    s_f, _, s_h = ch.scales
    return separation_ratio(_final_evaluation(st, ch), ch.state.s, ch.state.mu, s_f, s_h)


def _bordered_solve(st: Structure, fac, ev, active: Tensor, rho: Tensor, sig_i: Tensor, v: Tensor,
                    need: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Solve the active-set system ``[[K_0, J_A^T], [J_A, 0]] (w, u) = (v, 0)`` for B scenarios.

    K_0: the KKT matrix with the inactive rows dropped, J_A: the active inequality rows (in x).
    Since ``J_A w = 0`` at the solution, K_0 may be replaced by ``K_rho = K_0 + J_A^T rho J_A``
    without changing (w, u). Iteration (augmented Lagrangian, Uzawa): ``u += rho J_A w``, then
    ``w += F^{-1} r`` with r the residual of the first block row against K_rho and F the
    factorised ``K_rho + J_I^T sigma_I J_I`` (`_final_factorisation`; with sigma_I = 0 this is
    ``w = K_rho^{-1} (v - J_A^T u)``, and the refinement removes sigma_I). It contracts by about
    ``|K_0| / rho`` per step, and stops once every scenario of ``need`` (B,) is ok. Returns (w (B, N), u (B, n_ineq), ok (B,)): ok where no zero pivot,
    w finite, the bordered system's backward error <= BACKWARD_RTOL and the last step moved
    z = (w, u) by <= FORWARD_RTOL |z|_inf. Backward error: row-wise normwise,
    ``|r_i| / (|M_i|_1 |z|_inf + |b_i|)`` (|K_rho|'s rows bounded by the factorised matrix's), with
    the whole z: a cotangent on a variable held at an active bound (pg at pmax) has w = 0 exactly and
    u carrying it all, so any norm of w alone stays O(1) against J_A w while w decays to 0 (it left 10
    of 20 PGLib case118 inverse samples without a gradient). Not componentwise: a bound's
    row of J_A has one entry, so no relative perturbation of it absorbs a residual; and a component
    whose exact value is 0 (the q-balance multiplier of a bus whose qg is free, for a cotangent
    without qg) comes out at rounding level, where a componentwise ratio is O(1e-9) noise.
    """
    n = st.n
    pad = torch.zeros(v.shape[0], v.shape[1] - n, dtype=v.dtype, device=v.device)
    ev_abs = dataclasses.replace(ev, jh=ev.jh.abs())
    zero_u = torch.zeros_like(rho)
    j_norm = torch.where(active, ev.jh.abs().sum(-1), zero_u)  # (B, n_ineq) |J_i|_1 of active rows

    def j_t(e, u):
        return torch.cat([_jht(st, e, u), pad], 1)

    # Row 1-norms of the bordered matrix's two column blocks (K: the factorised matrix's, an upper bound)
    k_rows = fac.matvec(torch.ones_like(v), absolute=True)
    jt_rows = j_t(ev_abs, active.to(v.dtype))
    u = zero_u
    w = fac.solve(v)
    ok = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
    moved = torch.full_like(v[:, 0], float("inf"))
    for _ in range(BORDERED_STEPS):
        jw_all = _jh_dot(st, ev, w[:, :n].contiguous())
        jw = torch.where(active, jw_all, zero_u)
        r = v - fac.matvec(w) + j_t(ev, sig_i * jw_all) - j_t(ev, u)  # v - K_rho w - J_A^T u
        z_max = _amax(w, u)[:, None]
        ratio = torch.maximum(sparse_kkt.oettli_prager(r.abs(), (k_rows + jt_rows) * z_max + v.abs()),
                              sparse_kkt.oettli_prager(jw.abs(), j_norm * z_max))
        ok = fac.ok & torch.isfinite(w).all(-1) & (ratio <= BACKWARD_RTOL) & (moved <= FORWARD_RTOL)
        if bool((ok | ~need).all()):
            break
        du = rho * jw
        u = u + du
        dw = fac.solve(r - j_t(ev, du))
        w = w + dw
        moved = _amax(dw, du) / _amax(w, u).clamp_min(1e-300)
    return w, u, ok


def _amax(w: Tensor, u: Tensor) -> Tensor:
    """(B,) max |(w, u)|."""
    return torch.cat([w, u], -1).abs().amax(-1)


class _IPMFunction(torch.autograd.Function):
    """(x, lam_scaled) of every scenario (NaN where not converged) as a function of theta."""

    @staticmethod
    def forward(ctx, solver: "_Solver", *thetas: Tensor):
        x, lam = solver.run()
        ctx.solver = solver
        ctx.save_for_backward(*thetas)
        return x, lam

    @staticmethod
    def backward(ctx, g_x, g_lam):
        solver: _Solver = ctx.solver
        thetas = ctx.saved_tensors
        return (None, *solver.vjp(thetas, g_x, g_lam))


class _Solver:
    """Holds one batched solve between forward and backward (structure, chunks, factorisations)."""

    def __init__(self, network, d, conv, st, pat, names, batch, device, dtype, opts, warm):
        self.network, self.d, self.conv, self.st, self.pat = network, d, conv, st, pat
        self.names, self.batch, self.device, self.dtype, self.opts, self.warm = names, batch, device, dtype, opts, warm
        self.chunks: list[_Chunk] = []

    def scenarios(self, thetas) -> Scenarios:
        return scenarios_from(self.network, self.d, self.conv, dict(zip(self.names, thetas)), self.batch,
                              self.device, self.dtype)

    def _proven_infeasible(self) -> Tensor:
        """(B,) bool: the scenario's data prove it infeasible (`adequacy`: least withdrawal above the
        generation capacity on passive branches) by more than any point within ``constr_viol_tol``
        could hide: each of the n_bus balance rows and n_gen ``pg <= pmax`` rows may be off by that
        tolerance at a CONVERGED point, so the margin is ``2 (n_bus + n_gen) constr_viol_tol``
        (factor 2 for the shunts' vm^2 at voltages off their bounds by the same tolerance), in MW.
        Such a scenario is INFEASIBLE without iterating: an interior point cannot see this when the
        gradient scaling shrinks the rows that carry the shortfall (case16am, IPMOptions docstring)."""
        given = dict(zip(self.names, self.thetas))
        short = active_power_shortfall_mw(self.network, given.get("pd_mw"), given.get("r_pu"), given.get("g_pu"))
        margin = 2 * (self.d.n_bus + self.d.n_gen) * self.opts.constr_viol_tol * self.d.base_mva
        return (short > margin).to(self.device).expand(self.batch)

    def run(self):
        st, opts = self.st, self.opts
        sc_all = self.scenarios(self.thetas)
        self.proven = self._proven_infeasible()
        x0 = _start(st, self.d, self.network, self.batch, self.device, self.dtype, opts.bound_push)
        if self.warm is not None:  # scenarios whose previous solve failed start cold
            ok = self.warm["converged"].to(self.device)
            x0 = torch.where(ok[:, None], _push(st, self.warm["x"].to(self.device, self.dtype), opts.warm_bound_push), x0)
        x = torch.full((self.batch, st.n), float("nan"), dtype=self.dtype, device=self.device)
        lam = torch.full((self.batch, st.n_eq), float("nan"), dtype=self.dtype, device=self.device)
        # With gradients asked for, a scenario with an ambiguous active set goes on in the batch once it
        # converges (`_polish` says why): nearly all (case118 x 256: 253 of 256).
        polish = (POLISH_TOL, POLISH_STEPS, POLISH_SEPARATION) if self.needs_grad and opts.tol > POLISH_TOL else None
        for lo in range(0, self.batch, opts.chunk):
            idx = torch.arange(lo, min(lo + opts.chunk, self.batch), device=self.device)
            self.chunks.append(_solve_chunk(st, self.pat, sc_all.take(idx), x0[idx], self.warm, opts, idx,
                                            self.proven[idx], polish))
        if opts.retry_flat:
            self._retry_flat(sc_all)
        if self.pat.sparse is not None:
            self._retry_dense(sc_all, x0)
        self.certificate = self._certify_infeasible()
        unresolved = [self._polish(ch) if self.needs_grad else None for ch in self.chunks]
        for ch, unres in zip(self.chunks, unresolved):
            idx = ch.idx
            conv = ch.state.status == Status.CONVERGED.code
            ch.active, weak = _classify(st, ch)
            ch.weak = (weak if unres is None else weak | unres) & conv
            ch.fac = _final_factorisation(st, self.pat, ch) if self.needs_grad else None
            x[idx] = torch.where(conv[:, None], ch.state.x, x[idx])
            lam[idx] = torch.where(conv[:, None], ch.state.lam, lam[idx])
        return x, lam

    def _certify_infeasible(self) -> tuple[Tensor, Tensor]:
        """Ipopt's restoration-phase conclusion for the scenarios every attempt left MAX_STEPS
        (`restoration`): INFEASIBLE where the violation's local minimiser, from the last iterate, keeps a
        violation above ``constr_viol_tol`` at a Fritz John point to within ``1 / infeasible_multiplier``
        (the accuracy the iteration's own divergence test accepts: the objective's share of stationarity).
        Returns the (B,) least violation and stationarity reached (NaN where not run: every other status)."""
        st, opts = self.st, self.opts
        violation = torch.full((self.batch,), float("nan"), dtype=self.dtype, device=self.device)
        stationarity = violation.clone()
        for ch in self.chunks:
            rows = torch.nonzero(ch.state.status == Status.MAX_STEPS.code).squeeze(-1)
            step = max(1, min(RESTORATION_CHUNK, RESTORATION_MATRIX_BYTES // (st.n * st.n * 8)))
            for lo in range(0, rows.numel(), step):
                part = rows[lo : lo + step]
                cert = certify_infeasible(st, ch.sc.take(part), ch.state.x[part], 1.0 / opts.infeasible_multiplier,
                                          opts.constr_viol_tol)
                ch.state.status[part[cert.infeasible]] = Status.INFEASIBLE.code
                violation[ch.idx[part]], stationarity[ch.idx[part]] = cert.violation, cert.stationarity
        return violation, stationarity

    def _polish(self, ch: _Chunk) -> Tensor:
        """Iterate the chunk's converged scenarios whose active set is ambiguous (`POLISH_SEPARATION`) and
        that the iteration's own polish (`ipm.iterate`'s ``polish``) did not take to POLISH_TOL (a retry's,
        or one that failed there) on to POLISH_TOL from their final iterate; returns (B,) bool: polished
        without converging (their forward result is kept; the backward gives them no gradient)."""
        st = self.st
        failed = torch.zeros(ch.idx.shape[0], dtype=torch.bool, device=ch.idx.device)
        conv = ch.state.status == Status.CONVERGED.code
        rows = torch.nonzero(conv & (ch.state.polish != POLISHED) & (_separation(st, ch) < POLISH_SEPARATION)).squeeze(-1)
        if rows.numel() == 0 or self.opts.tol <= POLISH_TOL:
            return failed
        opts = dataclasses.replace(self.opts, tol=POLISH_TOL, max_iter=POLISH_STEPS)
        # The sparse path's static pivots can stall where the dense retry was needed (`_retry_dense`):
        # what the sparse polish leaves unconverged is polished densely (and what failed in the
        # iteration's polish, on the iteration's path, goes there at once).
        pats = [self.pat] + ([kkt_pattern(st, "dense")] if self.pat.sparse is not None else [])
        for k, pat in enumerate(pats):
            if k == 0 and len(pats) > 1:
                tried = ch.state.polish[rows] == POLISH_FAILED
                later, rows = rows[tried], rows[~tried]
            else:
                later = rows[:0]
            if rows.numel() == 0:
                rows = later
                continue
            sub = IPMState(**{f.name: getattr(ch.state, f.name)[rows].clone() for f in dataclasses.fields(IPMState)})
            first = sub.iters.clone()
            sub.status = torch.full_like(sub.status, RUNNING)
            sub.iters = torch.zeros_like(sub.iters)
            new = iterate(st, pat, ch.sc.take(rows), tuple(t[rows] for t in ch.scales), sub, opts)
            done = new.status == Status.CONVERGED.code
            new.iters = new.iters + first
            for f in dataclasses.fields(IPMState):
                getattr(ch.state, f.name)[rows[done]] = getattr(new, f.name)[done]
            ch.state.polish[rows[done]] = POLISHED
            ch.state.iters[rows[~done]] += new.iters[~done] - first[~done]
            ch.ev = None  # the final iterate moved
            rows = torch.cat([rows[~done], later])
            if rows.numel() == 0:
                break
        failed[rows] = True
        return failed

    def _retry_flat(self, sc_all: Scenarios) -> None:
        """Solve the scenarios that did not converge again from MATPOWER's flat start (as `solve_acopf`
        retries); a converged retry replaces the first attempt (its iterations are added)."""
        st, opts = self.st, self.opts
        fs = flat_start(self.d, self.network)
        zf = torch.as_tensor(np.concatenate([fs["va"], fs["vm"], fs["pg"], fs["qg"]]), dtype=self.dtype,
                             device=self.device)
        x_flat = with_epigraph(st, _push(st, zf[st.free].expand(self.batch, st.n_free).clone(), opts.bound_push))
        self._retry(sc_all, x_flat, self.pat, (Status.CONVERGED.code,))

    def _retry_dense(self, sc_all: Scenarios, x0: Tensor) -> None:
        """Solve the scenarios that ended MAX_STEPS or NUMERICAL on the sparse KKT path again, from their
        first start, with the dense (Bunch-Kaufman pivoting) factorisation. The sparse LDLᵀ pivots in
        a static order; where multipliers are ~1e5 and mu/s spans 1e10 its growth can stall the
        iteration (case30, a +-10% scenario next to infeasibility: error stuck at 2.4e-6 for 400
        iterations sparse, converged in 23 dense). INFEASIBLE is kept: that is a finding, not a failure."""
        self._retry(sc_all, x0, kkt_pattern(self.st, "dense"), (Status.CONVERGED.code, Status.INFEASIBLE.code))

    def _retry(self, sc_all: Scenarios, x_start: Tensor, pat: KKTPattern, keep_codes: tuple) -> None:
        """Solve again, from ``x_start`` (B, n) and with ``pat``, the scenarios whose status is not in
        ``keep_codes`` (never one `_proven_infeasible`: a retry cannot change a proof); a converged retry
        replaces the first attempt, and so does an INFEASIBLE one where the first ended MAX_STEPS or
        NUMERICAL (its iterations are added)."""
        st, opts = self.st, self.opts
        codes = torch.as_tensor(keep_codes, device=self.device)
        bad = torch.cat([ch.idx[~torch.isin(ch.state.status, codes) & ~self.proven[ch.idx]] for ch in self.chunks])
        if bad.numel() == 0:
            return
        where = {int(i): (c, k) for c, ch in enumerate(self.chunks) for k, i in enumerate(ch.idx.tolist())}
        for lo in range(0, bad.numel(), opts.chunk):
            idx = bad[lo : lo + opts.chunk]
            x0 = x_start[idx].clone()
            r = _solve_chunk(st, pat, sc_all.take(idx), x0, None, opts, idx)
            for j, i in enumerate(idx.tolist()):
                c, k = where[i]
                ch = self.chunks[c]
                first = int(ch.state.iters[k])
                new, old = int(r.state.status[j]), int(ch.state.status[k])
                # A converged retry replaces the first attempt; so does an INFEASIBLE one (local
                # infeasibility detected) where the first attempt reached no conclusion (case145: 200
                # iterations to MAX_STEPS, then the dense retry's multipliers diverge, as Ipopt's do).
                if new == Status.CONVERGED.code or (new == Status.INFEASIBLE.code and old in (
                        Status.MAX_STEPS.code, Status.NUMERICAL.code)):
                    for f in dataclasses.fields(IPMState):
                        getattr(ch.state, f.name)[k] = getattr(r.state, f.name)[j]
                    for a, b in zip(ch.scales, r.scales):
                        a[k] = b[j]
                ch.state.iters[k] = first + int(r.state.iters[j])

    def _dense_solve(self, ch: _Chunk, rows: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`_bordered_solve` of chunk ``ch``'s scenarios ``rows`` on the dense LDLᵀ (Bunch-Kaufman
        pivoting) of K_rho: (w, u, ok)."""
        st = self.st
        sub = _Chunk(ch.idx[rows], ch.sc.take(rows), tuple(t[rows] for t in ch.scales),
                     IPMState(**{f.name: getattr(ch.state, f.name)[rows] for f in dataclasses.fields(IPMState)}),
                     active=ch.active[rows])
        fac, ev, rho, sig_i = _final_factorisation(st, kkt_pattern(st, "dense"), sub)
        return _bordered_solve(st, fac, ev, sub.active, rho, sig_i, v, torch.ones_like(rows, dtype=torch.bool))

    def vjp(self, thetas, g_x, g_lam):
        st = self.st
        need = [t.requires_grad for t in thetas]
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(n) for t, n in zip(thetas, need)]
            sc_all = self.scenarios(leaves)
            total = None
            nograd = torch.ones(self.batch, dtype=torch.bool, device=self.device)
            for ch in self.chunks:
                fac, ev, rho, sig_i = ch.fac
                stt = ch.state
                conv = stt.status == Status.CONVERGED.code
                v = torch.cat([g_x[ch.idx], g_lam[ch.idx]], 1)
                weak = ch.weak & (v.abs().amax(-1) > 0)
                if self.strict and bool(weak.any()):
                    bad = ch.idx[weak].tolist()
                    raise SolverFailure(f"AC-OPF samples {bad}: a constraint is weakly active at the solution (slack "
                                        "and multiplier both ~0): strict complementarity fails, so the solution is "
                                        "not differentiable there", indices=bad, statuses=[Status.NUMERICAL] * len(bad))
                conv = conv & ~weak
                v = torch.where(conv[:, None], v, torch.zeros_like(v))
                w, u, ok = _bordered_solve(st, fac, ev, ch.active, rho, sig_i, v, conv)
                # No implicit gradient from an inaccurate solve: a scenario whose bordered solve did not
                # settle (a zero pivot in K_rho, or the sparse path's static pivots grew) is solved again
                # densely; if that fails too, it gets none.
                bad = conv & ~ok
                if bool(bad.any()) and self.pat.sparse is not None:
                    rows = torch.nonzero(bad).squeeze(-1)
                    w_d, u_d, ok_d = self._dense_solve(ch, rows, v[rows])
                    w, u, ok = w.clone(), u.clone(), ok.clone()
                    w[rows], u[rows], ok[rows] = w_d, u_d, ok_d
                conv = conv & ok
                nograd[ch.idx] = ~conv
                w = torch.where(conv[:, None], w, torch.zeros_like(w))
                u = torch.where(conv[:, None], u, torch.zeros_like(u))
                w_x, w_lam = w[:, : st.n], w[:, st.n :]
                s_f, s_c, s_h = ch.scales
                sc = sc_all.take(ch.idx)
                evt = evaluate(st, sc, stt.x, s_f, s_c, s_h)
                mu_a = torch.where(ch.active, stt.mu, torch.zeros_like(stt.mu))
                lx = evt.grad_f + _jt(st, evt, stt.lam, mu_a)
                # -w^T dF/dtheta of F = (grad_x L_A, c, h_A): u multiplies the active rows' h(theta)
                s_val = (w_x * lx).sum() + (u * evt.h).sum() + (w_lam * evt.c).sum()
                total = s_val if total is None else total + s_val
            params = [lf for lf, n in zip(leaves, need) if n]
            grads = torch.autograd.grad(-total, params, allow_unused=True) if params else []
        out, it = [], iter(grads)
        failed = nograd
        for t, n in zip(thetas, need):
            if not n:
                out.append(None)
                continue
            g = next(it)
            g = torch.zeros_like(t) if g is None else g
            if bool(failed.any()):
                if t.dim() >= 1 and t.shape[0] == self.batch and t.dim() == 2:
                    g = torch.where(failed[:, None], torch.full_like(g, float("nan")), g)
                else:
                    g = torch.full_like(g, float("nan"))
            out.append(g)
        return out


def solve_acopf_batched(network, pd_mw: Tensor | None = None, qd_mvar: Tensor | None = None, *,
                        convention: str | Convention = "matpower", options: IPMOptions | None = None,
                        warm_start: BatchedACOPFResult | None = None, batch: int | None = None,
                        strict_gradients: bool = False, **params: Tensor) -> BatchedACOPFResult:
    """Solve the AC-OPF of ``network`` for B scenarios at once with the torch interior point.

    Args:
        network: the base `Network`: polynomial costs of degree <= 2, piecewise-linear ones (an epigraph variable
            per generator, as `solve_acopf`) and priced reactive power (`Network.reactive_cost`) too.
        pd_mw, qd_mvar: loads (B, n_bus); default the network's.
        convention: ``"matpower"`` or ``"pandapower"`` (`formulations`), as `solve_acopf`.
        options: `IPMOptions`.
        warm_start: a previous `BatchedACOPFResult` of the same network and batch size.
        batch: B when no per-scenario tensor gives it.
        strict_gradients: the backward raises `SolverFailure` for a scenario with a weakly
            active constraint (``result.weakly_active``) instead of giving it NaN gradients.
        **params: ``cost_c2_usd_per_mw2h``, ``cost_c1_usd_per_mwh``, ``cost_c0_usd_per_h``
            ((n_gen,) or (B, n_gen)), ``r_pu``, ``x_pu``, ``g_pu``, ``b_pu`` ((n_branch,) or (B, n_branch)).

    Returns a `BatchedACOPFResult` on the device and in the dtype of the given tensors
    (float64 CPU by default). Never raises on a scenario's failure: see ``status``. Outputs
    are differentiable with respect to every tensor argument (module docstring).
    """
    t0 = time.perf_counter()
    conv = get_convention(convention)
    opts = options or IPMOptions()
    extra = set(params) - set(THETA_NAMES)
    if extra:
        raise ConfigError(f"unexpected parameters {sorted(extra)}; accepted: {list(THETA_NAMES[2:])}")
    _check(network)
    given = {"pd_mw": pd_mw, "qd_mvar": qd_mvar, **params}
    given = {k: v for k, v in given.items() if v is not None}
    like = next(iter(given.values()), None)
    device = like.device if like is not None else torch.device("cpu")
    dtype = like.dtype if like is not None and like.is_floating_point() else torch.float64
    sizes = {int(v.shape[0]) for v in given.values() if v.dim() == 2}
    if batch is None:
        batch = sizes.pop() if len(sizes) == 1 else (1 if not sizes else None)
    if batch is None or len(sizes - {batch}) > 0:
        raise ConfigError(f"inconsistent batch sizes {sorted(sizes)}")
    for k, v in given.items():
        if not bool(torch.isfinite(v.detach()).all()):
            raise DataError(f"{k} has non-finite entries")
    d = acopf_arrays(network, conv)
    st = build_structure(d, polar_formulation(d, conv), device, dtype)
    pat = kkt_pattern(st, opts.linear_solver)
    warm = None
    if warm_start is not None:
        warm = warm_start.warm
        if warm.get("x") is None or warm["x"].shape != (batch, st.n):
            raise ConfigError(f"warm_start is of another network or batch size (needs x of shape {(batch, st.n)})")
    names = tuple(given)
    thetas = tuple(given[k] for k in names)
    solver = _Solver(network, d, conv, st, pat, names, batch, device, dtype, opts, warm)
    solver.thetas = tuple(t.detach() for t in thetas)
    solver.needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in thetas)
    solver.strict = strict_gradients
    x, lam = _IPMFunction.apply(solver, *thetas)
    return _pack(solver, x, lam, thetas, time.perf_counter() - t0)


def _pack(solver: _Solver, x: Tensor, lam: Tensor, thetas, elapsed: float) -> BatchedACOPFResult:
    """Physical outputs from (x, lam) by differentiable torch (so gradients flow through them)."""
    st, d = solver.st, solver.d
    base, nb = d.base_mva, d.n_bus
    sc = solver.scenarios(thetas)
    z = to_z(st, x)
    va, vm, pg, qg = sc.form.split(z)
    ends = sc.form.end_state(va, vm)
    pf, qf, pt, qt = sc.form.flows(ends)
    cost = objective(st, sc, x, pg, qg)
    s_f = torch.cat([ch.scales[0] for ch in solver.chunks])
    s_c = torch.cat([ch.scales[1] for ch in solver.chunks])
    s_h = torch.cat([ch.scales[2] for ch in solver.chunks])
    lam_ipopt = lam * s_c / s_f[:, None]
    state_mu = torch.cat([ch.state.mu for ch in solver.chunks])
    state_s = torch.cat([ch.state.s for ch in solver.chunks])
    status_code = torch.cat([ch.state.status for ch in solver.chunks])
    conv = status_code == Status.CONVERGED.code
    mu_u = (state_mu * s_h / s_f[:, None]).detach()
    mu_u = torch.where(conv[:, None], mu_u, torch.full_like(mu_u, float("nan")))
    duals = _named_duals(st, d, lam_ipopt, mu_u)
    err, parts = [], {"dual": [], "primal": [], "complementarity": [], "constraint_violation": []}
    for ch in solver.chunks:
        ev = _final_evaluation(st, ch)
        e, du, pr, co, lx = optimality(st, ev, ch.state.s, ch.state.lam, ch.state.mu)
        err.append(e)
        parts["dual"].append(du), parts["primal"].append(pr), parts["complementarity"].append(co)
        parts["constraint_violation"].append(unscaled_errors(st, ev, ch.state.s, ch.state.mu, lx, ch.scales)[1])
    residuals = {"error": torch.cat(err), **{k: torch.cat(v) for k, v in parts.items()},
                 "least_violation": solver.certificate[0], "infeasibility_stationarity": solver.certificate[1]}
    warm = {"x": torch.cat([ch.state.x for ch in solver.chunks]).detach(), "lam": lam_ipopt.detach(),
            "mu": mu_u, "slack": (state_s / s_h).detach(), "converged": conv.detach()}
    iters = torch.cat([ch.state.iters for ch in solver.chunks])
    return BatchedACOPFResult(
        convention=solver.conv.name, status=[Status.from_code(int(c)) for c in status_code.tolist()],
        cost_usd_per_h=cost, pg_mw=pg * base, qg_mvar=qg * base, vm_pu=vm, va_rad=va,
        p_from_mw=pf * base, q_from_mvar=qf * base, p_to_mw=pt * base, q_to_mvar=qt * base,
        lmp_usd_per_mwh=-lam_ipopt[:, :nb] / base, lmp_q_usd_per_mvarh=-lam_ipopt[:, nb:] / base,
        duals=duals, residuals=residuals, iterations=iters, solve_time_s=elapsed, warm=warm,
        weakly_active=torch.cat([ch.weak for ch in solver.chunks]))


def _named_duals(st: Structure, d, lam_ipopt: Tensor, mu_u: Tensor) -> dict[str, Tensor]:
    """Ipopt-convention multipliers per named constraint (see `BatchedACOPFResult`)."""
    nb, ng, B = d.n_bus, d.n_gen, lam_ipopt.shape[0]
    out = {"p_balance": lam_ipopt[:, :nb], "q_balance": lam_ipopt[:, nb:]}
    nbd, nl = st.n_bound, st.n_lim
    bounds = mu_u[:, :nbd]
    free = st.free
    zl = torch.zeros(B, st.n_z, dtype=mu_u.dtype, device=mu_u.device)
    zu = torch.zeros_like(zl)
    lo = st.bound_sign < 0
    zl[:, free[st.bound_cols[lo]]] = bounds[:, lo]
    zu[:, free[st.bound_cols[~lo]]] = bounds[:, ~lo]
    for name, a, b in (("vm", nb, 2 * nb), ("pg", 2 * nb, 2 * nb + ng), ("qg", 2 * nb + ng, 2 * nb + 2 * ng)):
        out[f"{name}_lower"], out[f"{name}_upper"] = zl[:, a:b], zu[:, a:b]
    flow = mu_u[:, nbd : nbd + nl]
    half = nl // 2
    lim = torch.as_tensor(d.limited, device=mu_u.device)
    ff = torch.zeros(B, d.n_branch, dtype=mu_u.dtype, device=mu_u.device)
    ft = torch.zeros_like(ff)
    ff[:, lim], ft[:, lim] = flow[:, :half], flow[:, half:]
    out["flow_f"], out["flow_t"] = ff, ft
    ang = mu_u[:, nbd + nl : st.n_ineq - st.n_seg]
    rows = st.form_rows[nl:] - nl  # position among angle_limited
    sign = st.form_sign[nl:]
    al = torch.as_tensor(d.angle_limited, device=mu_u.device)
    a_out = torch.zeros(B, d.n_branch, dtype=mu_u.dtype, device=mu_u.device)
    a_out.index_add_(1, al[rows], ang * sign)
    out["angle"] = a_out
    if st.n_seg:  # epigraph segments, in `ACOPFArrays.pwl_gen`'s order (as `solve_acopf`'s duals["pwl"])
        out["pwl"] = mu_u[:, st.n_ineq - st.n_seg :]
    return out
