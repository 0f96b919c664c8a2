"""Batched KKT systems of the interior point: dense assembly from the shared sparsity pattern,
LDLᵀ factorisation (torch.linalg.ldl_factor_ex, Bunch-Kaufman) and Ipopt's inertia correction.

The condensed primal-dual system (inequality slacks and multipliers eliminated, as in
MATPOWER's MIPS, Wang et al. 2007) is

    K = [[ H + Jh^T diag(mu/s) Jh + delta_w I,  Jc^T        ],
         [ Jc,                                  -delta_c I   ]]      (n + n_eq square)

with H the Lagrangian Hessian, Jc the balance Jacobian, Jh the inequality Jacobian. Every
scenario's K has the same pattern: the flat positions of all entries are computed once
(`KKTPattern`) and each iteration is one ``index_add`` of the batch's values into a
``(B, N*N + 1)`` buffer (the last slot takes the entries of constant variables).

**Inertia.** A Newton step is a descent direction of the barrier problem only when K has
n positive and n_eq negative eigenvalues (Wächter & Biegler 2006, section 3.1). Chosen
test: count the signs of the block-diagonal D of the Bunch-Kaufman LDLᵀ that the solve
needs anyway (Sylvester's law of inertia), 1x1 and 2x2 blocks read from LAPACK's
``sytrf`` layout (a 2x2 block at k, k+1 has negative pivots at both). It costs nothing
beyond the factorisation, works on CPU and CUDA alike, and is exact up to rounding,
unlike a reduced-Hessian eigen test (which needs a null-space basis per scenario).
Where the inertia is wrong, delta_w is raised as Ipopt does (first 1e-4, or a third of the
last successful value; then times 8, times 100 the first time) for those scenarios only;
a zero eigenvalue also sets delta_c = 1e-8 gamma^(1/4).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gridlearn.grid.acopf_ipm import sparse_kkt
from gridlearn.grid.acopf_ipm.problem import Structure

DELTA_W_FIRST = 1e-4  # Ipopt first_hessian_perturbation
DELTA_W_MIN = 1e-20
DELTA_W_MAX = 1e40
KAPPA_MINUS, KAPPA_PLUS, KAPPA_PLUS_FIRST = 1.0 / 3.0, 8.0, 100.0
DELTA_C = 1e-8  # Ipopt jacobian_regularization_value
#: |pivot| (and |det| of a 2x2 block, squared) below this counts as a zero eigenvalue.
ZERO_PIVOT = 1e-13


@dataclass(frozen=True)
class KKTPattern:
    """Flat positions in a ``(N*N + 1)`` buffer of every entry kind (N*N: the dump slot)."""

    n: int
    n_eq: int
    hes: Tensor  # Lagrangian Hessian entries
    obj: Tensor  # objective diagonal (`Structure.obj_cols`: pg, then qg where reactive power is priced)
    jc_low: Tensor  # Jc at (n + row, col)
    jc_up: Tensor  # Jc^T at (col, n + row)
    outer: Tensor  # (n_ineq * 16) Jh row outer products
    diag_x: Tensor
    diag_eq: Tensor
    hes_src: Tensor  # the Lagrangian Hessian entries `assemble` takes (`problem.lagrangian_hessian`'s src)
    sparse: sparse_kkt.SparseSymbolic | None = None  # set: the batched sparse LDLᵀ; None: dense
    #: The sparse path's pattern for the iteration's Newton steps (`ITERATION_MATCHED`); None: this one.
    iteration: "KKTPattern | None" = None

    @property
    def size(self) -> int:
        return self.n + self.n_eq

    @property
    def parts(self) -> list[Tensor]:
        """The flat indices of every entry kind, in `assemble`'s order."""
        return [self.hes, self.obj, self.jc_low, self.jc_up, self.outer, self.diag_x, self.diag_eq]


#: ``linear_solver="auto"``: the sparse path on CPU from this KKT size up, the dense one below it
#: and on every other device. Measured (`benchmarks/bench_acopf_kkt_crossover.py` ->
#: benchmarks/results/acopf_batched_kkt.json, 16 scenarios, after the batch-inner sparse kernels):
#: sparse 1.14x ahead at N = 41 (case9), 1.22x at N = 65 (case14), 17x at N = 579 (case118). Kept
#: at 60: below case9 nothing was measured, and the dense path is the one the smallest cases' tests
#: (gradcheck on case9) were built on; both paths are tested equal there.
SPARSE_FROM_N = 60
LINEAR_SOLVERS = ("auto", "dense", "sparse")
#: The interior point's Newton steps on the sparse path use `sparse_kkt`'s matched ordering (an
#: equality row may follow its generator's pg or qg alone; ``KKTPattern.iteration``), the backward's
#: factorisation at the solution (no regularisation) the constrained one (a row after all its
#: variables). Measured once (scripts not kept; `benchmarks/check_acopf_ipm_corpus.py` rechecks the
#: statuses and objectives with it on), 32 corpus scenarios each of 9 cases, against the constrained
#: order everywhere: multiply-adds per factorisation case118 236k -> 143k, case300 743k -> 694k,
#: case30 34k -> 26k; every status and every converged iteration count the same but 3 of 12
#: case89pegase (+-1); infeasible scenarios took more iterations to be declared so (case89pegase's 20:
#: 1,953 -> 2,269 iterations, case300's one 56 -> 80). The
#: matched order in the backward too lost the gradient of 10 of those 12 converged case89pegase
#: scenarios (a pg pivot with a linear cost is 0 there), so the backward keeps the constrained one.
ITERATION_MATCHED = True


def choose_linear_solver(linear_solver: str, N: int, device) -> str:
    """"dense" or "sparse" for a KKT system of size N on ``device`` (see `SPARSE_FROM_N`)."""
    if linear_solver == "auto":
        return "sparse" if torch.device(device).type == "cpu" and N >= SPARSE_FROM_N else "dense"
    if linear_solver == "sparse" and torch.device(device).type != "cpu":
        from gridlearn.errors import ConfigError
        raise ConfigError(f"linear_solver='sparse' runs on CPU only (numba); got device {device}: use 'dense'")
    return linear_solver


def kkt_pattern(st: Structure, linear_solver: str = "dense") -> KKTPattern:
    n, N = st.n, st.n + st.n_eq
    dump = N * N

    def flat(r, c):
        ok = (r < N) & (c < N) & (r >= 0) & (c >= 0)
        return torch.where(ok, r * N + c, torch.full_like(r, dump))

    ec = st.eq_cols
    eq_c = torch.where(ec < n, ec, torch.full_like(ec, N))  # a constant column: dumped
    cols = st.ineq_cols
    cols = torch.where(cols < n, cols, torch.full_like(cols, N))
    a, b = cols[:, :, None].expand(-1, 4, 4), cols[:, None, :].expand(-1, 4, 4)
    oc = st.obj_cols
    oc = torch.where(oc < n, oc, torch.full_like(oc, N))
    ar = torch.arange(n, device=cols.device)
    are = torch.arange(st.n_eq, device=cols.device)
    p = KKTPattern(n=n, n_eq=st.n_eq, hes=flat(st.hes_r, st.hes_c), obj=flat(oc, oc),
                   jc_low=flat(n + st.eq_rows, eq_c), jc_up=flat(eq_c, n + st.eq_rows),
                   outer=flat(a.reshape(-1), b.reshape(-1)), diag_x=flat(ar, ar), diag_eq=flat(n + are, n + are),
                   hes_src=st.hes_src)
    if choose_linear_solver(linear_solver, N, cols.device) == "sparse":
        p = dataclasses.replace(_sparse(p, st, matched=False),
                                iteration=_sparse(p, st, matched=True) if ITERATION_MATCHED else None)
    return p


def _sparse(p: KKTPattern, st: Structure, matched: bool) -> KKTPattern:
    """``p`` on the sparse path, with `sparse_kkt.symbolic`'s ordering (``matched``: see there)."""
    sym = sparse_kkt.symbolic(p.parts, p.size, p.n, matched)
    # The Hessian is listed in both triangles (the dense K needs both); the sparse factor keeps
    # only P K P^T's lower one, so the other half is neither gathered nor scattered.
    m_hes = sym.part_maps[0]
    keep = torch.as_tensor(np.flatnonzero(m_hes < sym.nnz_a), device=p.hes.device)
    sym = dataclasses.replace(sym, part_maps=(m_hes[keep.cpu().numpy()], *sym.part_maps[1:]))
    return dataclasses.replace(p, sparse=sym, hes_src=st.hes_src[keep])


def assemble(p: KKTPattern, hes: Tensor, obj_diag: Tensor, jc: Tensor, jh: Tensor, sigma: Tensor,
             delta_w: Tensor, delta_c: Tensor) -> Tensor:
    """K (B, N, N) from the entry values (each with the batch first) and the regularisations (B,);
    sparse path: the (B, nnz) lower-triangle values of the permuted K instead."""
    bsz, N = hes.shape[0], p.size
    if p.sparse is not None:
        return sparse_kkt.assemble_parts(p.sparse, hes, obj_diag, jc, jh, sigma, delta_w, delta_c)
    outer = (sigma[:, :, None, None] * jh[:, :, :, None] * jh[:, :, None, :]).reshape(bsz, -1)
    vals = torch.cat([hes, obj_diag.expand(bsz, -1), jc, jc, outer, delta_w[:, None].expand(bsz, p.n),
                      -delta_c[:, None].expand(bsz, p.n_eq)], 1)
    idx = torch.cat(p.parts)
    buf = torch.zeros(bsz, N * N + 1, dtype=hes.dtype, device=hes.device)
    buf.index_add_(1, idx, vals)
    return buf[:, : N * N].reshape(bsz, N, N)


def inertia(ld: Tensor, pivots: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """(negative, zero) eigenvalue counts (B,) of the matrix factorised by ``ldl_factor_ex``.

    ``scale`` (B,): a magnitude of K's entries, for the zero test. See the module docstring.
    """
    d = torch.diagonal(ld, dim1=-2, dim2=-1)
    off = torch.diagonal(ld, offset=-1, dim1=-2, dim2=-1)
    N = d.shape[-1]
    two = pivots < 0
    idx = torch.arange(N, device=d.device).expand_as(pivots)
    last_one = torch.cummax(torch.where(two, torch.full_like(idx, -1), idx), dim=-1).values
    start = two & ((idx - last_one - 1) % 2 == 0)  # first row of each 2x2 block
    tiny = ZERO_PIVOT * torch.ones_like(scale)[:, None]  # absolute: the scaled problem is O(1); a max-entry scale
    # is inflated by mu/s of active bounds (1e10) and would call small but sound pivots zero
    one = ~two
    neg = (one & (d < -tiny)).sum(-1)
    zero = (one & (d.abs() <= tiny)).sum(-1)
    a = d[:, :-1]
    c = d[:, 1:]
    det = a * c - off * off
    st2 = start[:, :-1]
    neg = neg + (st2 & (det < 0)).sum(-1) + 2 * (st2 & (det > 0) & (a < 0)).sum(-1)
    zero = zero + (st2 & (det.abs() <= tiny * tiny)).sum(-1)
    return neg, zero


@dataclass
class Factorisation:
    """LDLᵀ factors of K for B scenarios, the regularisation used, and whether it succeeded.

    ``factors``: dense (ld, pivots) of ``ldl_factor_ex``; sparse (lx, d, K's values) of `sparse_kkt`."""

    factors: tuple[Tensor, ...]
    delta_w: Tensor  # (B,)
    delta_c: Tensor
    ok: Tensor  # (B,) bool: correct inertia reached (within DELTA_W_MAX)
    sparse: sparse_kkt.SparseSymbolic | None = None
    matrix: Tensor | None = None  # dense path, backward's factorisation only: K (B, N, N), for `matvec`

    def matvec(self, x: Tensor, absolute: bool = False) -> Tensor:
        """K x (B, N), or |K| x with ``absolute`` (the componentwise backward error's denominator)."""
        if self.sparse is not None:
            return sparse_kkt.matvec(self.sparse, self.factors[2], x, absolute)
        if self.matrix is None:
            raise ValueError("this dense factorisation did not keep K (factor_with_inertia_correction(correct=False) does)")
        k = self.matrix.abs() if absolute else self.matrix
        return (k @ x[..., None])[..., 0]

    def solve(self, rhs: Tensor, rtol: float = sparse_kkt.REFINE_RTOL) -> Tensor:
        """K^{-1} rhs for rhs (B, N); the sparse path refines to a residual of ``rtol * |rhs|``."""
        if self.sparse is not None:
            return sparse_kkt.solve(self.sparse, *self.factors, rhs, rtol)
        ld, piv = self.factors
        return torch.linalg.ldl_solve(ld, piv, rhs[..., None])[..., 0]


def _factor(p: KKTPattern, K: Tensor):
    """(factors, negative count, zero count, info) of K (dense matrices or sparse values)."""
    if p.sparse is not None:
        lx, d, ax, neg, zero = sparse_kkt.factor(p.sparse, K, ZERO_PIVOT)
        dev = K.device
        return (lx, d, ax), neg.to(dev), zero.to(dev), torch.zeros_like(neg).to(dev)
    ld, piv, info = torch.linalg.ldl_factor_ex(K)
    neg, zero = inertia(ld, piv, K.abs().amax(dim=(-2, -1)))
    return (ld, piv), neg, zero, info


def factor_with_inertia_correction(build, p: KKTPattern, delta_last: Tensor, gamma: Tensor,
                                   correct: bool = True, max_trials: int = 60) -> Factorisation:
    """Factorise ``build(idx, delta_w, delta_c)`` (K of scenarios ``idx``, None: all; dense or sparse
    values per ``p``), raising delta_w per scenario until the inertia is (n, n_eq, 0); ``correct=False``:
    factorise once with no regularisation (the backward's system at the solution)."""
    bsz = delta_last.shape[0]
    dt, dev = delta_last.dtype, delta_last.device
    delta_w = torch.zeros(bsz, dtype=dt, device=dev)
    delta_c = torch.zeros(bsz, dtype=dt, device=dev)
    K = build(None, delta_w, delta_c)
    factors, neg, zero, info = _factor(p, K)
    if not correct:  # the backward's factorisation keeps dense K for its residual checks
        return Factorisation(factors, delta_w, delta_c, (info == 0) & (zero == 0), p.sparse,
                             None if p.sparse is not None else K)
    del K
    bad = (neg != p.n_eq) | (zero > 0) | (info != 0)
    failed = torch.zeros(bsz, dtype=torch.bool, device=dev)
    for trial in range(max_trials):
        if not bool(bad.any()):
            break
        b = torch.nonzero(bad).squeeze(-1)
        dl, dw = delta_last[b], delta_w[b]
        if trial == 0:  # Ipopt: start from a third of the last value, or 1e-4 the first time
            dw = torch.where(dl == 0, torch.full_like(dl, DELTA_W_FIRST), torch.clamp(KAPPA_MINUS * dl, min=DELTA_W_MIN))
        else:
            dw = dw * torch.where(dl == 0, torch.full_like(dl, KAPPA_PLUS_FIRST), torch.full_like(dl, KAPPA_PLUS))
        delta_w[b] = dw
        delta_c[b] = torch.where(zero[b] > 0, DELTA_C * gamma[b].clamp_min(0) ** 0.25, delta_c[b])
        Kb = build(b, delta_w[b], delta_c[b])
        fb, negb, zerob, infob = _factor(p, Kb)
        del Kb
        for full, part in zip(factors, fb):
            full[b] = part
        zero[b] = zerob
        still = (negb != p.n_eq) | (zerob > 0) | (infob != 0)
        over = still & (dw > DELTA_W_MAX)
        failed[b] = over
        bad[b] = still & ~over
    return Factorisation(factors, delta_w, delta_c, ~bad & ~failed, p.sparse)
