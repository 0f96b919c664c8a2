"""Sparse batched Newton–Raphson AC power flow, for 1,000–10,000-bus grids.

Same equations, state, bus types and statuses as `pf_newton` (read its docstring first),
with the Jacobian held sparse. With M_ik = V_i conj(Y_ik) conj(V_k) over the nonzeros of
Ybus and I = Y V (MATPOWER ``dSbus_dV``, polar):

    ∂S_i/∂θ_k   = −j M_ik            + δ_ik j V_i conj(I_i),
    ∂S_i/∂|V|_k =  M_ik / |V_k|      + δ_ik conj(I_i) V_i / |V_i|,

P rows take real parts, Q rows imaginary parts, and the distributed-slack column is −α at
the buses with a generator. Every scenario of a batch, and every iteration, shares ONE
pattern (`JacobianPattern`, built once from Ybus's pattern, which holds every diagonal), so
assembling a Jacobian is one gather of (B, nnz) arrays, and `sparse_lu.PatternLU` reuses one
fill-reducing ordering across the batch and the iterations. Memory is O(B · (n_bus +
n_branch)) plus the LU factors; no n_bus² array is formed.

Linear algebra runs in NumPy/SciPy on the CPU: tensors on another device are copied to the
host for the solve (the interface is device-agnostic; a CUDA sparse factorisation is not
implemented and this path is untested on CUDA).

Backward (`attach_sparse_grad`): the IFT system (∂g/∂y)ᵀ v = w is solved with the forward's
final LU factors, transposed, refined against the Jacobian at the converged state (the
factors are those of the last Newton iterate, or the batch's shared chord Jacobian; a few
refinement steps, each one sparse product and one pair of triangular solves, make the
solve exact). If refinement stalls the Jacobian at y* is factorised afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

from gridlearn.errors import SolverFailure
from gridlearn.grid.pf_newton import NewtonRaphson, PFLayout, PFProblem, mark_stopped
from gridlearn.grid.sparse_lu import LUFactor, PatternLU
from gridlearn.grid.sparse_matrices import SparseYbus, dc_bbus_csc
# _ImplicitLink: the same y* -> -v link the implicit core uses, fed the sparse adjoint solve
from gridlearn.implicit.adjoint import ImplicitAdjoint, PhantomAdjoint, _ImplicitLink
from gridlearn.implicit.solution import Solution, Status

if TYPE_CHECKING:
    from gridlearn.grid.network import Network

# Backward refinement: stop when the transposed residual is this small relative to w.
_REFINE_RTOL = 1e-13
_REFINE_STEPS = 30


@dataclass(frozen=True)
class JacobianPattern:
    """CSC pattern of ∂(mismatch)/∂y and where each stored value comes from.

    Values are ``stack[:, src]`` for ``stack = [Re ∂S/∂θ, Re ∂S/∂|V|, Im ∂S/∂θ, Im ∂S/∂|V|, −α]``
    laid side by side, (B, 4·nnz(Y) + n_bus).
    """

    n: int
    indptr: np.ndarray
    indices: np.ndarray
    src: np.ndarray

    @classmethod
    def build(cls, layout: PFLayout, ybus: SparseYbus, gen_buses: np.ndarray) -> "JacobianPattern":
        nb, nnz = ybus.n_bus, ybus.nnz
        rows, cols = ybus.rows_np, ybus.cols_np
        p_buses = layout.p_buses.cpu().numpy()
        q_buses = layout.q_buses.cpu().numpy()
        va_buses = layout.va_buses.cpu().numpy()
        vm_buses = layout.vm_buses.cpu().numpy()
        n_p, n_va = len(p_buses), len(va_buses)

        def where(buses: np.ndarray) -> np.ndarray:
            pos = np.full(nb, -1, dtype=np.int64)
            pos[buses] = np.arange(len(buses))
            return pos

        row_p, row_q, col_va, col_vm = where(p_buses), where(q_buses), where(va_buses), where(vm_buses)
        r_all, c_all, s_all = [], [], []
        for block, (rpos, roff), (cpos, coff) in (
            (0, (row_p, 0), (col_va, 0)), (1, (row_p, 0), (col_vm, n_va)),
            (2, (row_q, n_p), (col_va, 0)), (3, (row_q, n_p), (col_vm, n_va)),
        ):
            k = np.flatnonzero((rpos[rows] >= 0) & (cpos[cols] >= 0))
            r_all.append(rpos[rows[k]] + roff)
            c_all.append(cpos[cols[k]] + coff)
            s_all.append(block * nnz + k)
        n = n_p + len(q_buses)
        if layout.distributed:
            gb = np.unique(gen_buses)
            gb = gb[row_p[gb] >= 0]
            r_all.append(row_p[gb])
            c_all.append(np.full(len(gb), n - 1))
            s_all.append(4 * nnz + gb)
        r, c, s = (np.concatenate(x) for x in (r_all, c_all, s_all))
        order = np.lexsort((r, c))  # column-major: CSC order
        indptr = np.concatenate([[0], np.cumsum(np.bincount(c, minlength=n))])
        return cls(n=n, indptr=indptr, indices=r[order].astype(np.int32), src=s[order])

    def csc(self, data: np.ndarray) -> sp.csc_matrix:
        return sp.csc_matrix((data, self.indices, self.indptr), shape=(self.n, self.n))


@dataclass
class _Batch:
    """The host-side (NumPy) problem: yv (nnz,) or (B, nnz) complex; the rest (B, n_bus)."""

    ybus: SparseYbus
    yv: np.ndarray
    p_inj: np.ndarray
    q_inj: np.ndarray
    vm_set: np.ndarray
    va_ref: np.ndarray
    alpha: np.ndarray | None  # (B, n_bus)


def _np(t: Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().resolve_conj().numpy()


def host_batch(ybus: SparseYbus, p_inj: Tensor, q_inj: Tensor, vm_set: Tensor, va_ref: Tensor,
               alpha: Tensor | None) -> _Batch:
    bsz = p_inj.shape[0]
    a = None if alpha is None else np.broadcast_to(_np(alpha), (bsz, ybus.n_bus))
    a = None if a is None else np.ascontiguousarray(a)
    return _Batch(ybus, _np(ybus.values), _np(p_inj), _np(q_inj), _np(vm_set), _np(va_ref), a)


class SparsePF:
    """Mismatch, Jacobian values and the Newton loop for one batch (NumPy, no autograd)."""

    def __init__(self, layout: PFLayout, batch: _Batch, pattern: JacobianPattern):
        self.layout, self.b, self.pattern = layout, batch, pattern
        self.n_va, self.n_vm = len(layout.va_buses), len(layout.vm_buses)
        self.va_buses = layout.va_buses.cpu().numpy()
        self.vm_buses = layout.vm_buses.cpu().numpy()
        self.p_buses = layout.p_buses.cpu().numpy()
        self.q_buses = layout.q_buses.cpu().numpy()
        y = batch.ybus
        self.rows, self.cols, self.diag = y.rows_np, y.cols_np, y.diag.cpu().numpy()
        nb = y.n_bus
        if batch.yv.ndim == 1:
            self._y = sp.csr_matrix((batch.yv, (self.rows, self.cols)), shape=(nb, nb))
        else:  # per-scenario values: row sums of (values · V[cols]) by a 0/1 matrix
            self._rowsum = sp.csr_matrix((np.ones(len(self.rows)), (self.rows, np.arange(len(self.rows)))),
                                         shape=(nb, len(self.rows)))

    # ------------------------------------------------------------------ physics
    def _inputs(self, idx: np.ndarray, mean: bool):
        """(vm_set, va_ref, alpha, yv) of scenarios idx, or their mean (one row) for a chord step."""
        b = self.b
        vm_set, va_ref = b.vm_set[idx], b.va_ref[idx]
        alpha = None if b.alpha is None else b.alpha[idx]
        yv = b.yv if b.yv.ndim == 1 else b.yv[idx]
        if mean:
            vm_set, va_ref = vm_set.mean(0, keepdims=True), va_ref.mean(0, keepdims=True)
            alpha = None if alpha is None else alpha.mean(0, keepdims=True)
        return vm_set, va_ref, alpha, yv

    def voltages(self, y: np.ndarray, vm_set: np.ndarray, va_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vm, va = vm_set.copy(), va_ref.copy()
        vm[:, self.vm_buses] = y[:, self.n_va : self.n_va + self.n_vm]
        va[:, self.va_buses] = y[:, : self.n_va]
        return vm, va

    def current(self, v: np.ndarray, yv: np.ndarray) -> np.ndarray:
        if yv.ndim == 1:
            return (self._y @ v.T).T
        return (self._rowsum @ (yv * v[:, self.cols]).T).T

    def mismatch(self, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
        vm_set, va_ref, alpha, yv = self._inputs(idx, mean=False)
        vm, va = self.voltages(y, vm_set, va_ref)
        v = vm * np.exp(1j * va)
        s = v * np.conj(self.current(v, yv))
        p_spec = self.b.p_inj[idx]
        if self.layout.distributed:
            p_spec = p_spec + alpha * y[:, -1:]
        return np.concatenate([s.real[:, self.p_buses] - p_spec[:, self.p_buses],
                               s.imag[:, self.q_buses] - self.b.q_inj[idx][:, self.q_buses]], axis=1)

    def jacobian_values(self, y: np.ndarray, idx: np.ndarray, mean: bool = False) -> np.ndarray:
        """CSC values (len(y), nnz(J)) of the Jacobian at states y of scenarios idx (with
        ``mean``: y is one averaged state and the inputs are averaged over idx)."""
        vm_set, va_ref, alpha, yv = self._inputs(idx, mean)
        vm, va = self.voltages(y, vm_set, va_ref)
        v = vm * np.exp(1j * va)
        cur = self.current(v, yv)
        m = v[:, self.rows] * np.conj(yv) * np.conj(v[:, self.cols])
        d_va = -1j * m
        d_va[:, self.diag] += 1j * v * np.conj(cur)
        d_vm = m / vm[:, self.cols]
        d_vm[:, self.diag] += np.conj(cur) * v / vm
        parts = [d_va.real, d_vm.real, d_va.imag, d_vm.imag]
        parts.append(-alpha if self.layout.distributed else np.zeros((len(y), self.b.ybus.n_bus)))
        return np.concatenate(parts, axis=1)[:, self.pattern.src]

    def initial_state(self, init: str, dc_lu: spla.SuperLU | None) -> np.ndarray:
        bsz = self.b.p_inj.shape[0]
        ref = self.layout.ref.cpu().numpy()
        ref_angle = self.b.va_ref[:, ref].mean(-1, keepdims=True) if len(ref) else np.zeros((bsz, 1))
        va = np.repeat(ref_angle, self.n_va, axis=1)
        vm = np.ones((bsz, self.n_vm))
        if init == "dc" and dc_lu is not None:
            va = va + dc_lu.solve(np.ascontiguousarray(self.b.p_inj[:, self.va_buses].T)).T
        elif init == "case":  # the case's own |V|, θ (see pf_newton.initial_state)
            va = self.b.va_ref[:, self.va_buses].copy()
            vm0 = self.b.vm_set[:, self.vm_buses]
            vm = np.where(vm0 > 0, vm0, 1.0)
        parts = [va, vm]
        if self.layout.distributed:
            parts.append(np.zeros((bsz, 1)))
        return np.concatenate(parts, axis=1)


def newton_sparse(pf: SparsePF, solver: NewtonRaphson, base_mva: float, dc_lu: spla.SuperLU | None,
                  lu: PatternLU) -> tuple[Solution, list[LUFactor | None]]:
    """The `pf_newton.newton_raphson` loop (same statuses, same shared/per-scenario logic)
    with sparse factorisations. Returns the Solution (value: state y as a float64 tensor)
    and, per scenario, the last LU factor it stepped with (None if it never stepped)."""
    y = pf.initial_state(solver.init, dc_lu)
    bsz = y.shape[0]
    status = np.full(bsz, Status.MAX_STEPS.code, dtype=np.int64)
    steps = np.zeros(bsz, dtype=np.int64)
    res = np.full(bsz, np.inf)
    shared = solver.jacobian == "shared" and pf.b.yv.ndim == 1
    full = np.full(bsz, not shared)
    prev = np.full(bsz, np.inf)
    factors: list[LUFactor | None] = [None] * bsz
    tol, div = solver.tol_mva / base_mva, solver.divergence_mva / base_mva
    active = np.arange(bsz)
    with np.errstate(all="ignore"):  # NaN/inf iterates are detected and reported per scenario
        for it in range(solver.max_steps + 1):
            f = pf.mismatch(y[active], active)
            err = np.abs(f).max(-1) if f.shape[-1] else np.zeros(len(active))
            res[active] = err * base_mva
            stop = mark_stopped(np, status, active, err, y[active], tol, div)
            active, f, err = active[~stop], f[~stop], err[~stop]
            if len(active) == 0 or it == solver.max_steps:
                break
            full[active] |= err > solver.min_contraction * prev[active]
            prev[active] = err
            dx = np.zeros_like(f)
            ok = np.ones(len(active), dtype=bool)
            sel = np.flatnonzero(~full[active])
            if len(sel):
                idx = active[sel]
                # Chord step: one Jacobian at the mean state of these scenarios, one LU.
                data = pf.jacobian_values(y[idx].mean(0, keepdims=True), idx, mean=True)[0]
                fac = lu.factor(data)
                if fac is None:
                    full[idx] = True
                else:
                    dx[sel] = fac.solve(f[sel].T).T
                    for i in idx:
                        factors[i] = fac
            sel = np.flatnonzero(full[active])
            for start in range(0, len(sel), solver.chunk_size):
                chunk = sel[start : start + solver.chunk_size]
                idx = active[chunk]
                data = pf.jacobian_values(y[idx], idx)
                for j, (i, c) in enumerate(zip(idx, chunk)):
                    fac = lu.factor(data[j])
                    if fac is None:
                        ok[c] = False
                        continue
                    dx[c] = fac.solve(f[c])
                    factors[i] = fac
            ok &= np.isfinite(dx).all(-1)
            status[active[~ok]] = Status.NUMERICAL.code
            steps[active[~ok]] = it
            y[active[ok]] -= dx[ok]
            steps[active[ok]] = it + 1
            active = active[ok]
    extras = {"full_newton": torch.from_numpy(full)}
    if solver.retry:
        extras.update(_rescue_sparse(pf, solver, base_mva, dc_lu, lu, y, status, res, steps, factors))
    sol = Solution(value=torch.from_numpy(y), status_code=torch.from_numpy(status), residual=torch.from_numpy(res),
                   steps=torch.from_numpy(steps), extras=extras)
    return sol, factors


def _rescue_sparse(pf: SparsePF, solver: NewtonRaphson, base_mva: float, dc_lu: spla.SuperLU | None, lu: PatternLU,
                   y: np.ndarray, status: np.ndarray, res: np.ndarray, steps: np.ndarray,
                   factors: list[LUFactor | None]) -> dict:
    """`pf_newton._rescue_dense` on the sparse path (updates y, status, res, steps and the
    stored factors in place)."""
    from gridlearn.grid.pf_newton import record_rescue, rescue_candidates, rescue_extras, rescued_status, vm_floor
    from gridlearn.grid.pf_robust import RETRY_STARTS, rescue, retry, sigma_min_by_solves

    extras = rescue_extras(y.shape[0], torch.float64, "cpu")
    failed, low = rescue_candidates(status, y, pf.n_va, pf.n_vm, solver.low_voltage_pu)
    if not failed and not low:
        return extras
    accept = vm_floor(pf.n_va, pf.n_vm, solver.low_voltage_pu) if solver.low_voltage_pu > 0 else None
    b = pf.b
    with np.errstate(all="ignore"):
        by_name = {"flat": pf.initial_state("flat", None), "dc": pf.initial_state("dc", dc_lu),
                   "case": pf.initial_state("case", None)}
    tol = solver.tol_mva / base_mva
    for i in failed + low:
        one = np.array([i])

        def F(x):
            return pf.mismatch(x[None], one)[0]

        def factor(x):
            return lu.factor(pf.jacobian_values(x[None], one)[0])

        def step(x, f):
            fac = factor(x)
            return None if fac is None else fac.solve(f)

        def sigma_min(x):
            fac = factor(x)
            return float("nan") if fac is None else sigma_min_by_solves(lambda v, tr: fac.solve(v, trans=tr), len(x))

        starts = {k: by_name[k][i] for k in RETRY_STARTS}
        with np.errstate(all="ignore"):
            if i in low:
                name, r = retry(F, step, starts, tol, solver.retry_max_steps, accept)
                extras["retried"][i] = True
                if name is None:
                    extras["low_voltage"][i] = True
                    continue
                extras["rescued_from"][i] = name
            else:
                spec = np.concatenate([b.p_inj[i, pf.p_buses], b.q_inj[i, pf.q_buses]])
                r = rescue(F, step, starts, spec, tol, solver.retry_max_steps, sigma_min, accept)
                record_rescue(extras, int(i), r)
                code = rescued_status(r)
                if code is not None:
                    status[i] = code
                if not r.converged:
                    continue
                extras["low_voltage"][i] = accept is not None and not accept(r.y)
        y[i] = r.y
        res[i] = r.err * base_mva
        steps[i] += r.steps
        factors[i] = factor(r.y)  # the backward's transposed solves start from J(y*)
    return extras


# ---------------------------------------------------------------------- autograd
def residual_torch(y: Tensor, layout: PFLayout, ybus: SparseYbus, p_inj: Tensor, q_inj: Tensor,
                   vm_set: Tensor, va_ref: Tensor, alpha: Tensor | None) -> Tensor:
    """`pf_newton.residual` with a sparse Ybus (torch, differentiable): (B, n_state)."""
    n_va, n_vm = len(layout.va_buses), len(layout.vm_buses)
    vm = vm_set.index_copy(-1, layout.vm_buses, y[:, n_va : n_va + n_vm])
    va = va_ref.index_copy(-1, layout.va_buses, y[:, :n_va])
    v = torch.polar(vm, va)
    s = v * ybus.matvec(v).conj()
    p_spec = p_inj + alpha * y[:, -1:] if layout.distributed else p_inj
    return torch.cat([(s.real - p_spec)[:, layout.p_buses], (s.imag - q_inj)[:, layout.q_buses]], dim=-1)


def _transposed_solve(pf: SparsePF, y_star: np.ndarray, i: int, w: np.ndarray, fac: LUFactor | None,
                      lu: PatternLU) -> np.ndarray | None:
    """v with J(y*_i)ᵀ v = w: the stored factor's transposed solve plus iterative refinement."""
    a = pf.pattern.csc(pf.jacobian_values(y_star[None], np.array([i]))[0])
    at = a.T.tocsr()
    scale = max(float(np.abs(w).max()), 1e-300)
    for attempt in range(2):
        if fac is None:
            return None
        v = fac.solve(w, trans=True)
        for _ in range(_REFINE_STEPS):
            r = w - at @ v
            if not np.isfinite(r).all():
                break
            if float(np.abs(r).max()) <= _REFINE_RTOL * scale:
                return v
            v = v + fac.solve(r, trans=True)
        if attempt == 0:  # refinement stalled (the stored factor is far from J(y*)): refactor
            fac = lu.factor(a.data.copy())
    r = w - at @ v
    return v if np.isfinite(v).all() and float(np.abs(r).max()) <= 1e-9 * scale else None


def attach_sparse_grad(g: Callable[[Tensor], Tensor], y_star: Tensor, pf: SparsePF, factors: list[LUFactor | None],
                       lu: PatternLU, converged: Tensor, adjoint: ImplicitAdjoint | PhantomAdjoint,
                       on_failure: str) -> Tensor:
    """``y_star`` with the IFT gradient of g(y, θ) = 0 attached (θ: what g closes over).

    Scenarios not converged get no gradient: "raise" raises `SolverFailure` in backward if
    one receives a non-zero cotangent, "nan"/"zero" fill their gradient with NaN/0.
    """
    y_star = y_star.detach()
    if not torch.is_grad_enabled():
        return y_star
    with torch.enable_grad():
        h = g(y_star)
    if not h.requires_grad:
        return y_star
    y_np = y_star.cpu().numpy()
    conv = converged.detach().cpu().numpy().astype(bool)

    def backward_fn(w: Tensor) -> Tensor:
        w_np = w.detach().cpu().numpy()
        v = np.zeros_like(w_np)
        bad = []
        for i in np.flatnonzero((w_np != 0).any(-1)):
            vi = None
            if conv[i] and np.isfinite(y_np[i]).all():
                if isinstance(adjoint, PhantomAdjoint):
                    at = pf.pattern.csc(pf.jacobian_values(y_np[i][None], np.array([i]))[0]).T.tocsr()
                    vi = w_np[i].copy()
                    for _ in range(adjoint.steps):
                        vi = vi + adjoint.damping * (w_np[i] - at @ vi)
                    vi = vi if np.isfinite(vi).all() else None
                else:
                    vi = _transposed_solve(pf, y_np[i], int(i), w_np[i], factors[i], lu)
            if vi is None:
                bad.append(int(i))
            else:
                v[i] = vi
        if bad:
            unconv = [i for i in bad if not conv[i]]
            if on_failure == "raise":
                why = (f"the forward solve did not converge for scenarios {unconv}" if unconv else
                       f"the backward linear system (∂g/∂y)ᵀv = w was not solved for scenarios {bad} (∂g/∂y singular)")
                raise SolverFailure(f"PowerFlowLayer (sparse): no implicit gradient: {why}", indices=bad)
            v[bad] = np.nan if on_failure == "nan" else 0.0
        return torch.from_numpy(v).to(device=w.device, dtype=w.dtype)

    return _ImplicitLink.apply(h, y_star, backward_fn)


def solve_sparse(network: "Network", layout: PFLayout, pr: PFProblem, solver: NewtonRaphson,
                 adjoint: ImplicitAdjoint | PhantomAdjoint, on_failure: str) -> tuple[Solution, Tensor]:
    """Forward and IFT backward on the sparse path for `PowerFlowLayer` (``pr.ybus`` a
    `SparseYbus`). Returns the Solution (state y, no autograd) and y* with its gradient."""
    ybus = pr.ybus
    batch = host_batch(ybus, pr.p_inj, pr.q_inj, pr.vm_set, pr.va_ref, pr.alpha)
    pattern = JacobianPattern.build(layout, ybus, network.gen.bus.cpu().numpy())
    pf = SparsePF(layout, batch, pattern)
    lu = PatternLU(pattern.indptr, pattern.indices, pattern.n)
    dc_lu = None
    if solver.init == "dc" and len(layout.va_buses):
        va = layout.va_buses.cpu().numpy()
        try:
            dc_lu = spla.splu(dc_bbus_csc(network)[va][:, va].tocsc())
        except RuntimeError:  # singular B': start flat, as the dense path does
            dc_lu = None
    sol, factors = newton_sparse(pf, solver, network.base_mva, dc_lu, lu)
    dev, dt = pr.p_inj.device, pr.p_inj.dtype
    sol = Solution(value=sol.value.to(device=dev, dtype=dt), status_code=sol.status_code.to(dev),
                   residual=sol.residual.to(device=dev, dtype=dt), steps=sol.steps.to(dev),
                   extras={k: (v.to(dev) if isinstance(v, Tensor) else v) for k, v in sol.extras.items()})

    def g(y: Tensor) -> Tensor:
        return residual_torch(y, layout, ybus, pr.p_inj, pr.q_inj, pr.vm_set, pr.va_ref, pr.alpha)

    y = attach_sparse_grad(g, sol.value, pf, factors, lu, sol.converged, adjoint, on_failure)
    return sol, y


__all__ = ["solve_sparse", "JacobianPattern", "SparsePF", "newton_sparse", "residual_torch", "attach_sparse_grad", "host_batch"]
