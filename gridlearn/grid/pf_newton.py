"""Batched Newton–Raphson for the AC power flow equations in polar form.

The power flow solves, per scenario, the complex power balance at every bus

    S_i(V) = V_i · conj((Y V)_i) = (P_inj,i + α_i k) + j Q_inj,i,

for the voltage angles θ of the non-reference buses and the magnitudes |V| of the PQ
buses (PV and reference buses hold |V| at their generators' setpoint ``vg_pu``, the
reference buses hold their angle). Rows: P at every non-reference bus, Q at every PQ bus
(MATPOWER's ``newtonpf``, Zimmerman et al. 2011, the method pandapower's ``runpp`` runs).

With a distributed slack (participation α ≥ 0, Σα = 1 over buses) one more unknown k
(the system-wide slack, per unit) is added, together with the P equation of the
(single) reference bus: the reference generator then no longer absorbs the mismatch
alone; every generator g changes its output by α_g k.

The Jacobian is the analytic polar one (MATPOWER ``dSbus_dV``):

    ∂S/∂θ   = j diag(V) conj(diag(I) − Y diag(V)),
    ∂S/∂|V| = diag(V) conj(Y diag(V/|V|)) + conj(diag(I)) diag(V/|V|),   I = Y V,

with real parts for P rows, imaginary parts for Q rows, and ∂(P mismatch)/∂k = −α.
It is dense and batched, which is the right trade for a few hundred buses; above
``NewtonRaphson.sparse_min_bus`` buses `gridlearn.grid.pf_sparse` solves the same equations
with a sparse Jacobian and sparse LU (``NewtonRaphson.backend``).

This module is solver mechanics only; `gridlearn.grid.powerflow` builds the problem from
a `Network`, calls `newton_raphson`, and attaches implicit-function-theorem gradients.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gridlearn.errors import ConfigError
from gridlearn.implicit.solution import Solution, Status

log = logging.getLogger(__name__)


def mark_stopped(xp, status, active, err, y_active, tol: float, div: float):
    """Record CONVERGED, NONFINITE or DIVERGED in ``status`` for the scenarios ``active`` that stop.

    ``xp``: torch or numpy (the dense and the sparse Newton loops share this test). ``err``:
    each active scenario's largest mismatch (pu); returns the bool mask of those that stop.
    """
    finite = xp.isfinite(err) & xp.isfinite(y_active).all(-1)
    stop = xp.zeros_like(finite)
    for code, mask in ((Status.CONVERGED.code, finite & (err <= tol)), (Status.NONFINITE.code, ~finite),
                       (Status.DIVERGED.code, finite & (err > div))):
        status[active[mask]] = code
        stop |= mask
    return stop


_INITS = ("dc", "flat", "case")
_BACKENDS = ("auto", "dense", "sparse")
# Where the automatic choice switches to the sparse path: measured by
# benchmarks/bench_pf_threshold.py (see benchmarks/README.md, "Sparse AC power flow").
SPARSE_MIN_BUS = 30


@dataclass(frozen=True, kw_only=True)
class NewtonRaphson:
    """Settings of the batched polar Newton–Raphson power flow.

    tol_mva: largest bus power mismatch (MW or MVAr) accepted as converged; pandapower's
        ``runpp`` default is 1e-8.
    max_steps: iterations before MAX_STEPS (pandapower's default is 10 exact Newton steps;
        shared-Jacobian steps are cheaper and need a few more).
    init: "dc" (angles from a DC power flow, |V| flat; pandapower's default when voltage
        angles are computed), "flat" (θ = reference angle, |V| = 1 or the setpoint) or
        "case" (the network's own |V|, θ: ``bus.vm0_pu``/``va0_rad``, MATPOWER's ``runpf``
        start; a file that holds a solved operating point starts at its solution).
    retry: scenarios that plain Newton did not solve (any failure status) are handed to
        `gridlearn.grid.pf_robust.rescue`: exact Newton with a backtracking line search
        from the "case", "flat" and "dc" starts in turn, each up to ``retry_max_steps``;
        if none converges, a continuation in the injections measures the loadability λ*
        and the scenario becomes INFEASIBLE when λ* < 1 (no solution on the branch from
        no load: the set-points ask more than the network carries). ``extras`` of the
        `Solution` record what happened (see `PowerFlowLayer.solve`). False: plain
        Newton only (the status then says only how Newton stopped).
    retry_max_steps: damped-Newton steps per start of the retry and per continuation point.
    low_voltage_pu: with ``retry``, a converged scenario with some |V| below this is
        re-solved from the other starts, and a solution with every |V| at or above it
        replaces it: the high-voltage solution, the one MATPOWER's ``runpf`` reaches from a
        solved case file (case2848rte from a DC start converges to a solution of the same
        equations with |V| = 0.02 p.u. at a bus). If none is found the low-voltage solution
        is returned, flagged in ``extras["low_voltage"]``. 0 disables the check.
    divergence_mva: a mismatch above this marks the scenario DIVERGED and stops it.
    jacobian: "shared" (default): each step factors ONE Jacobian, at the mean state of
        the batch, and applies it to every scenario (a chord/quasi-Newton step: linear
        convergence whose rate is set by how far scenarios are apart, at a fraction of the
        cost); a scenario whose mismatch shrinks by less than ``min_contraction`` in a
        step moves to its own exact Jacobian for the rest of the solve. "per_scenario":
        exact Newton for every scenario from the start. The converged solution is the same
        (both stop on the same mismatch tolerance); only the path differs. A batched Ybus
        (per-scenario ``scale`` or admittances) always uses "per_scenario".
    min_contraction: see ``jacobian``.
    chunk_size: scenarios whose exact Jacobians are built at once; bounds memory, each
        dense Jacobian temporary takes ~16·chunk_size·n_bus² bytes (sparse: ~16·chunk_size·nnz(Ybus)).
    backend: "dense" (this module), "sparse" (`pf_sparse`: sparse Jacobian, SuperLU) or
        "auto" (default): sparse when the network has at least ``sparse_min_bus`` buses.
    sparse_min_bus: the automatic switch point. Measured (benchmarks/bench_pf_threshold.py,
        benchmarks/README.md): below it the dense batched kernels win.
    """

    tol_mva: float = 1e-8
    max_steps: int = 30
    init: str = "dc"
    divergence_mva: float = 1e10
    jacobian: str = "shared"
    min_contraction: float = 0.25
    chunk_size: int = 256
    backend: str = "auto"
    sparse_min_bus: int = SPARSE_MIN_BUS
    retry: bool = True
    retry_max_steps: int = 50
    low_voltage_pu: float = 0.5

    def __post_init__(self):
        if not (self.tol_mva > 0):
            raise ConfigError(f"NewtonRaphson: tol_mva must be > 0, got {self.tol_mva}")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ConfigError(f"NewtonRaphson: max_steps must be an int >= 1, got {self.max_steps!r}")
        if self.init not in _INITS:
            raise ConfigError(f"NewtonRaphson: init must be one of {_INITS}, got {self.init!r}")
        if not (self.divergence_mva > self.tol_mva):
            raise ConfigError("NewtonRaphson: divergence_mva must exceed tol_mva")
        if self.jacobian not in ("shared", "per_scenario"):
            raise ConfigError(f"NewtonRaphson: jacobian must be 'shared' or 'per_scenario', got {self.jacobian!r}")
        if not (0 < self.min_contraction < 1):
            raise ConfigError(f"NewtonRaphson: min_contraction must be in (0, 1), got {self.min_contraction}")
        if not (isinstance(self.chunk_size, int) and self.chunk_size >= 1):
            raise ConfigError(f"NewtonRaphson: chunk_size must be an int >= 1, got {self.chunk_size!r}")
        if self.backend not in _BACKENDS:
            raise ConfigError(f"NewtonRaphson: backend must be one of {_BACKENDS}, got {self.backend!r}")
        if not (isinstance(self.retry_max_steps, int) and self.retry_max_steps >= 1):
            raise ConfigError(f"NewtonRaphson: retry_max_steps must be an int >= 1, got {self.retry_max_steps!r}")
        if not (isinstance(self.sparse_min_bus, int) and self.sparse_min_bus >= 0):
            raise ConfigError(f"NewtonRaphson: sparse_min_bus must be an int >= 0, got {self.sparse_min_bus!r}")

    def use_sparse(self, n_bus: int) -> bool:
        """Whether a network of ``n_bus`` buses is solved on the sparse path."""
        return self.backend == "sparse" or (self.backend == "auto" and n_bus >= self.sparse_min_bus)


@dataclass(frozen=True)
class PFLayout:
    """Which buses are unknowns and which rows are equations (all long index tensors).

    State y = [θ at ``va_buses``, |V| at ``vm_buses``, (k if distributed)];
    residual = [P mismatch at ``p_buses``, Q mismatch at ``q_buses``].
    """

    n_bus: int
    ref: Tensor
    va_buses: Tensor  # non-reference buses (PV + PQ)
    vm_buses: Tensor  # PQ buses
    p_buses: Tensor  # va_buses, plus the reference bus with a distributed slack
    q_buses: Tensor  # PQ buses
    distributed: bool
    # Cached positions of the Jacobian's bus-diagonal entries (row r, column c, bus).
    diag_va: tuple[Tensor, Tensor, Tensor]
    diag_vm: tuple[Tensor, Tensor, Tensor]

    @property
    def n_state(self) -> int:
        return len(self.va_buses) + len(self.vm_buses) + int(self.distributed)

    @classmethod
    def build(cls, kind: Tensor, distributed: bool) -> "PFLayout":
        kind = kind.detach()
        dev = kind.device
        ref = torch.nonzero(kind == 3).flatten()
        va = torch.nonzero(kind != 3).flatten()
        pq = torch.nonzero(kind == 1).flatten()
        p_buses = torch.cat([va, ref]) if distributed else va
        rows = torch.cat([p_buses, pq])

        def diag(cols: Tensor, offset: int) -> tuple[Tensor, Tensor, Tensor]:
            # Rows whose bus is also a column (each bus appears at most once in cols); a
            # position lookup, not an (n_rows, n_cols) comparison, so it stays O(n_bus).
            pos = torch.full((int(kind.shape[-1]),), -1, dtype=torch.long, device=dev)
            pos[cols] = torch.arange(len(cols), device=dev)
            r = torch.nonzero(pos[rows] >= 0).flatten()
            c = pos[rows[r]]
            return r.to(dev), (c + offset).to(dev), rows[r]

        return cls(
            n_bus=int(kind.shape[-1]), ref=ref, va_buses=va, vm_buses=pq, p_buses=p_buses, q_buses=pq,
            distributed=distributed, diag_va=diag(va, 0), diag_vm=diag(pq, len(va)),
        )


@dataclass(frozen=True)
class PFProblem:
    """One batch of power flow problems, everything per unit on the network base.

    ybus: complex (n, n) shared or (B, n, n); p_inj, q_inj: (B, n) specified net injection
    (generation minus demand); vm_set: (B, n) |V| at PV/reference buses (at PQ buses: the
    case's |V|, used only by the "case" start); va_ref: (B, n) angle at reference buses (at
    the others: the case's angle, used only by the "case" start); alpha: (n,) or
    (B, n) bus participation summing to 1 (distributed slack) or None.
    """

    ybus: Tensor
    p_inj: Tensor
    q_inj: Tensor
    vm_set: Tensor
    va_ref: Tensor
    alpha: Tensor | None


def voltages(y: Tensor, layout: PFLayout, vm_set: Tensor, va_ref: Tensor) -> tuple[Tensor, Tensor]:
    """(|V|, θ), each (B, n), from the state y (B, n_state) and the fixed setpoints."""
    n_va, n_vm = len(layout.va_buses), len(layout.vm_buses)
    vm = vm_set.index_copy(-1, layout.vm_buses, y[:, n_va : n_va + n_vm])
    va = va_ref.index_copy(-1, layout.va_buses, y[:, :n_va])
    return vm, va


def _current(ybus: Tensor, v: Tensor) -> Tensor:
    if ybus.dim() == 2:
        return v @ ybus.transpose(-1, -2)
    return torch.einsum("bij,bj->bi", ybus, v)


def residual(y: Tensor, layout: PFLayout, pr: PFProblem) -> Tensor:
    """Power mismatch S(V) − S_spec, per unit: [P rows, Q rows] (B, n_state)."""
    vm, va = voltages(y, layout, pr.vm_set, pr.va_ref)
    v = torch.polar(vm, va)
    s = v * _current(pr.ybus, v).conj()
    p_spec = pr.p_inj
    if layout.distributed:
        p_spec = p_spec + pr.alpha * y[:, -1:]
    mis_p = s.real - p_spec
    mis_q = s.imag - pr.q_inj
    return torch.cat([mis_p[:, layout.p_buses], mis_q[:, layout.q_buses]], dim=-1)


def jacobian(y: Tensor, layout: PFLayout, pr: PFProblem, y_rc_conj: Tensor | None = None) -> Tensor:
    """Analytic ∂(mismatch)/∂y (B, n_state, n_state); see the module docstring.

    ``y_rc_conj``: conj(Y[rows, cols]) if already computed (it is fixed during a solve).
    """
    vm, va = voltages(y, layout, pr.vm_set, pr.va_ref)
    v = torch.polar(vm, va)
    cur = _current(pr.ybus, v)
    rows = torch.cat([layout.p_buses, layout.q_buses])
    cols = torch.cat([layout.va_buses, layout.vm_buses])
    if y_rc_conj is None:
        y_rc_conj = pr.ybus[..., rows, :][..., :, cols].conj()
    n_va = len(layout.va_buses)
    n_p = len(layout.p_buses)
    # M_rc = V_r conj(Y_rc) conj(V_c): the off-diagonal part of both derivatives.
    m = v[:, rows, None] * y_rc_conj * v[:, None, cols].conj()
    d_va = -1j * m[..., :n_va]
    d_vm = m[..., n_va:] / vm[:, None, layout.vm_buses]
    r, c, bus = layout.diag_va
    d_va[:, r, c] += 1j * v[:, bus] * cur[:, bus].conj()
    r, c, bus = layout.diag_vm
    d_vm[:, r, c - n_va] += cur[:, bus].conj() * v[:, bus] / vm[:, bus]
    blocks = torch.cat([d_va, d_vm], dim=-1)
    jac = torch.cat([blocks[:, :n_p].real, blocks[:, n_p:].imag], dim=1)
    if layout.distributed:
        alpha = pr.alpha.expand(y.shape[0], -1)
        k_col = torch.cat([-alpha[:, layout.p_buses], torch.zeros_like(alpha[:, layout.q_buses])], dim=-1)
        jac = torch.cat([jac, k_col[:, :, None]], dim=-1)
    return jac


def initial_state(layout: PFLayout, pr: PFProblem, init: str, b_red_lu: tuple[Tensor, Tensor] | None) -> Tensor:
    """Starting y (B, n_state): |V| = 1 at PQ buses, θ flat or from a DC power flow, k = 0;
    or ("case") the case's own |V| and θ (entries of vm_set/va_ref at the unknown buses)."""
    bsz = pr.p_inj.shape[0]
    if init == "case":
        vm0 = pr.vm_set[:, layout.vm_buses]
        parts = [pr.va_ref[:, layout.va_buses], torch.where(vm0 > 0, vm0, torch.ones_like(vm0))]
        if layout.distributed:
            parts.append(pr.p_inj.new_zeros(bsz, 1))
        return torch.cat(parts, dim=-1).clone()
    ref_angle = pr.va_ref[:, layout.ref].mean(-1, keepdim=True) if len(layout.ref) else pr.p_inj.new_zeros(bsz, 1)
    va = ref_angle.expand(bsz, len(layout.va_buses)).clone()
    if init == "dc" and b_red_lu is not None:
        # B'θ = P over the non-reference buses (DC power flow, reference angles held).
        lu, piv = b_red_lu
        va = va + torch.linalg.lu_solve(lu, piv, pr.p_inj[:, layout.va_buses, None]).squeeze(-1)
    parts = [va, torch.ones(bsz, len(layout.vm_buses), dtype=va.dtype, device=va.device)]
    if layout.distributed:
        parts.append(va.new_zeros(bsz, 1))
    return torch.cat(parts, dim=-1)


def _take(pr: PFProblem, idx: Tensor) -> PFProblem:
    def t(x: Tensor | None, batched_dim: int) -> Tensor | None:
        if x is None or x.dim() < batched_dim:
            return x
        return x[idx]

    return PFProblem(
        ybus=t(pr.ybus, 3), p_inj=pr.p_inj[idx], q_inj=pr.q_inj[idx], vm_set=pr.vm_set[idx],
        va_ref=pr.va_ref[idx], alpha=t(pr.alpha, 2),
    )


def newton_raphson(layout: PFLayout, pr: PFProblem, solver: NewtonRaphson, base_mva: float,
                   b_red_lu: tuple[Tensor, Tensor] | None = None) -> Solution:
    """Solve a batch (no autograd). Returns a `Solution` whose value is the state y (B, n_state).

    Per scenario: CONVERGED when max |mismatch| ≤ tol_mva; NONFINITE on NaN/inf; DIVERGED
    when the mismatch exceeds divergence_mva; NUMERICAL when the Jacobian is singular;
    MAX_STEPS otherwise. residual is the final max mismatch in MVA; steps counts Newton
    updates; extras["full_newton"] (bool, (B,)) marks scenarios that needed their own
    Jacobian (see `NewtonRaphson.jacobian`).
    """
    with torch.no_grad():
        pr = PFProblem(*(x.detach() if isinstance(x, Tensor) else x for x in
                         (pr.ybus, pr.p_inj, pr.q_inj, pr.vm_set, pr.va_ref, pr.alpha)))
        bsz = pr.p_inj.shape[0]
        y = initial_state(layout, pr, solver.init, b_red_lu)
        dev = y.device
        status = torch.full((bsz,), Status.MAX_STEPS.code, dtype=torch.long, device=dev)
        steps = torch.zeros(bsz, dtype=torch.long, device=dev)
        res = torch.full((bsz,), float("inf"), dtype=y.dtype, device=dev)
        # A shared Jacobian needs one Ybus for the whole batch.
        shared = solver.jacobian == "shared" and pr.ybus.dim() == 2
        full = torch.full((bsz,), not shared, dtype=torch.bool, device=dev)
        prev = torch.full((bsz,), float("inf"), dtype=y.dtype, device=dev)
        rows = torch.cat([layout.p_buses, layout.q_buses])
        cols = torch.cat([layout.va_buses, layout.vm_buses])
        y_rc_conj = pr.ybus[..., rows, :][..., :, cols].conj()
        tol, div = solver.tol_mva / base_mva, solver.divergence_mva / base_mva
        active = torch.arange(bsz, device=dev)
        for it in range(solver.max_steps + 1):
            f = residual(y[active], layout, _take(pr, active))
            err = f.abs().amax(-1) if f.shape[-1] else f.new_zeros(len(active))
            res[active] = err * base_mva
            stop = mark_stopped(torch, status, active, err, y[active], tol, div)
            active, f, err = active[~stop], f[~stop], err[~stop]
            if len(active) == 0 or it == solver.max_steps:
                break
            # A scenario whose mismatch did not shrink enough under the shared Jacobian
            # switches to its own (exact Newton) Jacobian for the rest of the solve.
            full[active] |= err > solver.min_contraction * prev[active]
            prev[active] = err
            dx = torch.empty_like(f)
            ok = torch.ones(len(active), dtype=torch.bool, device=dev)
            on_shared = ~full[active]
            if bool(on_shared.any()):
                sel = on_shared.nonzero().flatten()
                ok_shared = _shared_step(layout, pr, active[sel], y, f[sel], y_rc_conj, dx, sel)
                if not ok_shared:  # singular at the mean state: fall back to per-scenario Newton
                    full[active[sel]] = True
            on_full = full[active]
            for start in range(0, int(on_full.sum()), solver.chunk_size):
                sel = on_full.nonzero().flatten()[start : start + solver.chunk_size]
                idx = active[sel]
                yrc = y_rc_conj[idx] if y_rc_conj.dim() == 3 else y_rc_conj
                jac = jacobian(y[idx], layout, _take(pr, idx), yrc)
                step, info = torch.linalg.solve_ex(jac, f[sel].unsqueeze(-1))
                dx[sel] = step.squeeze(-1)
                ok[sel] = info == 0
            if bool((~ok).any()):
                status[active[~ok]] = Status.NUMERICAL.code
                steps[active[~ok]] = it
            y[active[ok]] = y[active[ok]] - dx[ok]
            steps[active[ok]] = it + 1
            active = active[ok]
        extras = {"full_newton": full}
        if solver.retry:
            extras.update(_rescue_dense(layout, pr, solver, base_mva, b_red_lu, y_rc_conj, y, status, res, steps))
    return Solution(value=y, status_code=status, residual=res, steps=steps, extras=extras)


def rescue_extras(bsz: int, dtype: torch.dtype, device) -> dict:
    """The per-scenario record of `pf_robust.rescue` (see `PowerFlowLayer.solve`), nothing rescued yet."""
    nan = float("nan")
    return {"retried": torch.zeros(bsz, dtype=torch.bool, device=device), "rescued_from": [None] * bsz,
            "loadability": torch.full((bsz,), nan, dtype=dtype, device=device),
            "sigma_ratio": torch.full((bsz,), nan, dtype=dtype, device=device),
            "low_voltage": torch.zeros(bsz, dtype=torch.bool, device=device)}


def vm_floor(n_va: int, n_vm: int, low_voltage_pu: float):
    """``accept(y)`` of `pf_robust.retry`: every unknown |V| at or above ``low_voltage_pu``."""
    return lambda y: bool(n_vm == 0 or float(y[n_va : n_va + n_vm].min()) >= low_voltage_pu)


def rescue_candidates(status: np.ndarray, y: np.ndarray, n_va: int, n_vm: int, low_voltage_pu: float
                      ) -> tuple[list[int], list[int]]:
    """(failed, low) scenario indices (host arrays): not converged; converged with a collapsed |V|."""
    conv = status == Status.CONVERGED.code
    failed = np.flatnonzero(~conv).tolist()
    low: list[int] = []
    if low_voltage_pu > 0 and n_vm:
        with np.errstate(invalid="ignore"):
            low = np.flatnonzero(conv & (y[:, n_va : n_va + n_vm].min(-1) < low_voltage_pu)).tolist()
    return failed, low


def record_rescue(extras: dict, i: int, r) -> None:
    extras["retried"][i] = True
    extras["rescued_from"][i] = r.start
    extras["loadability"][i] = r.lam
    extras["sigma_ratio"][i] = r.sigma_ratio


def rescued_status(r) -> int | None:
    """The status code a rescue outcome sets (None: keep plain Newton's)."""
    if r.converged:
        return Status.CONVERGED.code
    if r.lam == r.lam and r.lam < 1.0:  # loadability measured and short of the set-points
        return Status.INFEASIBLE.code
    return None


def _rescue_dense(layout: PFLayout, pr: PFProblem, solver: NewtonRaphson, base_mva: float, b_red_lu,
                  y_rc_conj: Tensor, y: Tensor, status: Tensor, res: Tensor, steps: Tensor) -> dict:
    """`pf_robust.rescue` for every scenario plain Newton did not solve, `pf_robust.retry` for
    those it solved with a collapsed |V| (updates y, status, res, steps in place)."""
    from gridlearn.grid.pf_robust import RETRY_STARTS, rescue, retry, sigma_min_dense

    dt, dev = y.dtype, y.device
    extras = rescue_extras(y.shape[0], dt, dev)
    n_va, n_vm = len(layout.va_buses), len(layout.vm_buses)
    conv = status == Status.CONVERGED.code
    low_mask = torch.zeros_like(conv)
    if solver.low_voltage_pu > 0 and n_vm:  # on y's device: no host copy of a converged batch
        low_mask = conv & (y[:, n_va : n_va + n_vm].amin(-1) < solver.low_voltage_pu)
    failed, low = (~conv).nonzero().flatten().tolist(), low_mask.nonzero().flatten().tolist()
    if not failed and not low:
        return extras
    accept = vm_floor(n_va, n_vm, solver.low_voltage_pu) if solver.low_voltage_pu > 0 else None
    for i in failed + low:
        idx = torch.tensor([i], device=dev)
        pr_i = _take(pr, idx)
        yrc = y_rc_conj[idx] if y_rc_conj.dim() == 3 else y_rc_conj

        def t(x):
            return torch.from_numpy(x).to(device=dev, dtype=dt)[None]

        def F(x):
            return residual(t(x), layout, pr_i)[0].cpu().numpy()

        def jac(x):
            return jacobian(t(x), layout, pr_i, yrc)[0]

        def step(x, f):
            dx, info = torch.linalg.solve_ex(jac(x), torch.from_numpy(f).to(device=dev, dtype=dt)[:, None])
            return None if int(info) != 0 else dx[:, 0].cpu().numpy()

        starts = {name: initial_state(layout, pr_i, name, b_red_lu)[0].cpu().numpy() for name in RETRY_STARTS}
        if i in low:
            name, r = retry(F, step, starts, solver.tol_mva / base_mva, solver.retry_max_steps, accept)
            extras["retried"][i] = True
            if name is None:
                extras["low_voltage"][i] = True
                continue
            extras["rescued_from"][i] = name
            y[i] = torch.from_numpy(r.y).to(device=dev, dtype=dt)
            res[i] = r.err * base_mva
            steps[i] += r.steps
            continue
        spec = torch.cat([pr_i.p_inj[0, layout.p_buses], pr_i.q_inj[0, layout.q_buses]]).cpu().numpy()
        r = rescue(F, step, starts, spec, solver.tol_mva / base_mva, solver.retry_max_steps,
                   sigma_min=lambda x: sigma_min_dense(jac(x).cpu().numpy()), accept=accept)
        record_rescue(extras, i, r)
        code = rescued_status(r)
        if code is not None:
            status[i] = code
        if r.converged:
            y[i] = torch.from_numpy(r.y).to(device=dev, dtype=dt)
            res[i] = r.err * base_mva
            steps[i] += r.steps
            extras["low_voltage"][i] = accept is not None and not accept(r.y)
    if bool(extras["retried"].any()):
        log.info("power flow: %d scenario(s) retried; rescued from %s", int(extras["retried"].sum()),
                 [s for s in extras["rescued_from"] if s])
    return extras


def _shared_step(layout: PFLayout, pr: PFProblem, idx: Tensor, y: Tensor, f: Tensor, y_rc_conj: Tensor,
                 dx: Tensor, sel: Tensor) -> bool:
    """Chord step for scenarios ``idx``: one Jacobian at their mean state, one LU, many solves."""
    one = lambda t: None if t is None else (t[idx].mean(0, keepdim=True) if t.dim() == 2 else t)  # noqa: E731
    mean_pr = PFProblem(pr.ybus, one(pr.p_inj), one(pr.q_inj), one(pr.vm_set), one(pr.va_ref), one(pr.alpha))
    jac = jacobian(y[idx].mean(0, keepdim=True), layout, mean_pr, y_rc_conj)[0]
    lu, piv, info = torch.linalg.lu_factor_ex(jac)
    if int(info) != 0:
        return False
    dx[sel] = torch.linalg.lu_solve(lu, piv, f.T).T
    return True


__all__ = ["NewtonRaphson", "PFLayout", "PFProblem", "newton_raphson", "residual", "jacobian", "voltages"]
