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

_INITS = ("dc", "flat")
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
        angles are computed) or "flat" (θ = reference angle, |V| = 1 or the setpoint).
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
    (generation minus demand); vm_set: (B, n) |V| at PV/reference buses (other entries are
    unused); va_ref: (B, n) angle at reference buses (other entries unused); alpha: (n,) or
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
    """Starting y (B, n_state): |V| = 1 at PQ buses; θ flat or from a DC power flow, k = 0."""
    bsz = pr.p_inj.shape[0]
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
    return Solution(value=y, status_code=status, residual=res, steps=steps, extras={"full_newton": full})


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
