"""Batched sparse LDLᵀ of the KKT systems: one symbolic analysis per pattern, numeric factors in numba.

Every scenario's condensed KKT matrix K (`kkt`) has the same sparsity pattern, so the
ordering and the pattern of L are computed once (`symbolic`), and each iteration runs a
numeric up-looking LDLᵀ with 1x1 pivots in that fixed order for the whole batch
(`_factor`: numba, ``prange`` over the scenarios, static pattern arrays), as QDLDL does
for one matrix (Stellato et al., OSQP) but for B value arrays.

**Ordering.** Minimum degree on the elimination graph (it runs once per pattern, so a
plain exact-degree version is enough), with one constraint: an equality row (a ``-delta_c``
diagonal, zero before regularisation) is eliminated only after all the variables it
involves. Its pivot is then a diagonal entry of ``-J H^{-1} J^T`` over the eliminated set,
nonzero when those rows of J have full rank. (Measured: allowing it after any one neighbour
left structural zero pivots on case30, two buses' four rows after two variables.) The
elimination graph also gives the pattern of L. ``matched=True`` relaxes the constraint for a row
with a variable of its own (one that appears in no other row: a generator's pg or qg): the row
may follow it alone, its pivot then ``-J_kv^2 / d_v`` with ``J_kv = -1``, nonzero. It halves L on
case118 (nnz_l 9,437 -> 7,206), but ``d_v`` is 0 at a solution where that generator has a linear
cost and no active bound, so it is the iteration's order only (`kkt.ITERATION_MATCHED`).

**Pivots and inertia.** With 1x1 pivots in a static order there is no pivoting: a pivot
below `kkt.ZERO_PIVOT` in magnitude, or cancelled to rounding level (`ZERO_PIVOT_REL`), is
counted as a zero eigenvalue (and replaced by that
size, so the factors stay finite); Ipopt's inertia correction (`kkt`) then raises delta_w
and sets delta_c > 0, which makes K quasi-definite once ``H + delta_w I`` is positive
definite, and a quasi-definite matrix has an LDLᵀ in any symmetric order (Vanderbei 1995).
The inertia is the signs of D (Sylvester's law holds for any LDLᵀ). CPU only (numba); on
CUDA `kkt` uses the dense path.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass

import numba as nb
import numpy as np
import torch
from torch import Tensor

_CACHE: dict[str, "SparseSymbolic"] = {}


@dataclass(frozen=True)
class SparseSymbolic:
    """Ordering and static patterns of one KKT pattern (numpy int64 arrays)."""

    N: int
    perm: np.ndarray  # new position k holds original row perm[k]
    iperm: np.ndarray
    a_ptr: np.ndarray  # lower triangle of P K P^T, by rows: row k's entries at columns a_col <= k
    a_col: np.ndarray
    l_ptr: np.ndarray  # L by columns (strictly lower), rows ascending
    l_row: np.ndarray
    r_ptr: np.ndarray  # L by rows: row k's columns r_col (ascending) and their positions in l_row
    r_col: np.ndarray
    r_pos: np.ndarray
    entry_map: Tensor  # (M,) position in the value array of each entry kind's flat index (nnz_a: dropped)
    part_maps: tuple = ()  # entry_map split by entry kind (numpy), for `assemble_parts`

    @property
    def nnz_a(self) -> int:
        return int(self.a_col.size)

    @property
    def nnz_l(self) -> int:
        return int(self.l_row.size)

    @property
    def flops(self) -> int:
        """Multiply-adds of one numeric factorisation (sum over columns of count^2)."""
        c = np.diff(self.l_ptr)
        return int((c * (c + 1)).sum())


def _min_degree(N: int, rows: np.ndarray, cols: np.ndarray, n_x: int,
                matched: bool = False) -> tuple[np.ndarray, list[list[int]]]:
    """Elimination order and, per eliminated node, its neighbours at elimination (L's column pattern).

    Nodes >= n_x (equality rows) become eligible once all their variables have been eliminated;
    ``matched``: also once a variable that appears in that row alone (a generator's pg or qg in
    its bus balance) has been (see the module docstring, **Ordering**).
    """
    adj = [set() for _ in range(N)]
    for r, c in zip(rows.tolist(), cols.tolist()):
        if r != c:
            adj[r].add(c)
            adj[c].add(r)
    x_left = np.array([sum(1 for u in adj[v] if u < n_x) if v >= n_x else 0 for v in range(N)])
    rows_of = [[u for u in adj[v] if u >= n_x] if v < n_x else [] for v in range(N)]
    done = np.zeros(N, dtype=bool)
    eligible = x_left == 0
    heap = [(len(adj[v]), v) for v in range(N) if eligible[v]]
    heapq.heapify(heap)
    order, cols_of = [], []
    while heap:
        deg, v = heapq.heappop(heap)
        if done[v] or deg != len(adj[v]):
            continue  # a stale heap entry
        nbrs = adj[v]
        done[v] = True
        order.append(v)
        cols_of.append(list(nbrs))
        for u in nbrs:
            au = adj[u]
            au.discard(v)
            au |= nbrs
            au.discard(u)
            if eligible[u]:
                heapq.heappush(heap, (len(au), u))
        waiting = []
        for u in rows_of[v]:  # an equality row whose last variable this was becomes eligible
            x_left[u] -= 1
            if not eligible[u] and not done[u]:
                if x_left[u] == 0:
                    eligible[u] = True
                    heapq.heappush(heap, (len(adj[u]), u))
                else:
                    waiting.append(u)
        if matched and waiting and len(rows_of[v]) == 1:  # its only row
            u = waiting[0]
            eligible[u] = True
            heapq.heappush(heap, (len(adj[u]), u))
        adj[v] = set()
    if len(order) != N:  # an equality row with no neighbour: a structurally singular K; put it last
        rest = [v for v in range(N) if not done[v]]
        order += rest
        cols_of += [[] for _ in rest]
    return np.asarray(order, dtype=np.int64), cols_of


def symbolic(flat_parts: list[Tensor], N: int, n_x: int, matched: bool = False) -> SparseSymbolic:
    """Symbolic analysis of the pattern given by the flat indices (into N*N + 1, N*N: dropped) of every
    entry kind `kkt.assemble` writes, in its order (``matched``: `_min_degree`'s). Cached by pattern."""
    flat = torch.cat(flat_parts).cpu().numpy().astype(np.int64)
    sizes = [int(p.numel()) for p in flat_parts]
    key = hashlib.sha1(flat.tobytes() + np.int64([N, n_x, matched, *sizes]).tobytes()).hexdigest()
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    live = flat < N * N
    r, c = flat[live] // N, flat[live] % N
    perm, cols_of = _min_degree(N, r, c, n_x, matched)
    iperm = np.empty(N, dtype=np.int64)
    iperm[perm] = np.arange(N)
    # L's columns in the new numbering (rows ascending).
    l_cols = [np.sort(iperm[np.asarray(cs, dtype=np.int64)]) if cs else np.zeros(0, np.int64) for cs in cols_of]
    l_ptr = np.zeros(N + 1, dtype=np.int64)
    l_ptr[1:] = np.cumsum([lc.size for lc in l_cols])
    l_row = np.concatenate(l_cols) if l_ptr[-1] else np.zeros(0, np.int64)
    col_of_pos = np.repeat(np.arange(N), np.diff(l_ptr))
    order = np.lexsort((col_of_pos, l_row))  # by row, then column
    r_ptr = np.zeros(N + 1, dtype=np.int64)
    np.add.at(r_ptr, l_row + 1, 1)
    r_ptr = np.cumsum(r_ptr)
    r_col, r_pos = col_of_pos[order], order.astype(np.int64)
    # Lower triangle of P K P^T by rows, and where each written entry lands (upper mirror: dropped).
    pr, pc = iperm[r], iperm[c]
    low = pr >= pc
    keys = np.unique(pr[low] * N + pc[low])
    a_row, a_col = keys // N, keys % N
    a_ptr = np.zeros(N + 1, dtype=np.int64)
    np.add.at(a_ptr, a_row + 1, 1)
    a_ptr = np.cumsum(a_ptr)
    emap = np.full(flat.size, keys.size, dtype=np.int64)
    where_live = np.flatnonzero(live)
    emap[where_live[low]] = np.searchsorted(keys, pr[low] * N + pc[low])
    out = SparseSymbolic(N=N, perm=perm, iperm=iperm, a_ptr=a_ptr, a_col=a_col, l_ptr=l_ptr, l_row=l_row,
                         r_ptr=r_ptr, r_col=r_col, r_pos=r_pos,
                         entry_map=torch.as_tensor(emap, device=flat_parts[0].device),
                         part_maps=tuple(np.split(emap, np.cumsum(sizes)[:-1])))
    _CACHE[key] = out
    return out


#: Scenarios per block of the kernels below: the batch is the innermost (contiguous) index of every
#: value array, so each step of the static pattern is one loop over a block of scenarios that the
#: compiler vectorises, and the pattern's index arithmetic is paid once per block, not per scenario.
#: Blocks run in parallel (prange). Measured (cProfile of case118 x 64 forward + backward, 1 thread,
#: 25 factorisations): scenario-outer 0.179 s, blocks of 16 / 32 / 64: 0.115 / 0.118 / 0.084 s.
BLOCK = 64


@nb.njit(parallel=True, cache=True, fastmath=False)
def _factor(a_ptr, a_col, ax, l_ptr, l_row, r_ptr, r_col, r_pos, tiny, rel, block, lx, d, neg, zero):  # pragma: no cover
    """Up-looking LDLᵀ of the (nnz_a, B) values ``ax`` into ``lx`` (nnz_l, B), ``d`` (N, B).

    Every vector loop runs over a row view (``y[r]``, ``lx[p, b0:b1]``): measured 1.6x faster than
    indexing the 2-D arrays inside the loop (2.8 -> 1.7 ms for a case118 x 64 factorisation), same bits.
    """
    N, bsz = d.shape
    n_blk = (bsz + block - 1) // block
    for blk in nb.prange(n_blk):
        b0 = blk * block
        b1 = min(bsz, b0 + block)
        w = b1 - b0
        y = np.zeros((N, w))
        dk = np.empty(w)
        mag = np.empty(w)
        yj = np.empty(w)
        nneg = np.zeros(w, dtype=np.int64)
        nzero = np.zeros(w, dtype=np.int64)
        for k in range(N):
            dk[:] = 0.0
            mag[:] = 0.0
            for p in range(a_ptr[k], a_ptr[k + 1]):
                j = a_col[p]
                axp = ax[p, b0:b1]
                if j == k:
                    for i in range(w):
                        v = axp[i]
                        dk[i] += v
                        mag[i] += abs(v)
                else:
                    yr = y[j]
                    for i in range(w):
                        yr[i] += axp[i]
            for q in range(r_ptr[k], r_ptr[k + 1]):
                j = r_col[q]
                pos = r_pos[q]
                yjr = y[j]
                for i in range(w):
                    yj[i] = yjr[i]
                    yjr[i] = 0.0
                for p in range(l_ptr[j], pos):
                    yr = y[l_row[p]]
                    lp = lx[p, b0:b1]
                    for i in range(w):
                        yr[i] -= lp[i] * yj[i]
                lpos = lx[pos, b0:b1]
                dj = d[j, b0:b1]
                for i in range(w):
                    lkj = yj[i] / dj[i]
                    lpos[i] = lkj
                    dk[i] -= lkj * yj[i]
                    mag[i] += abs(lkj * yj[i])
            dkr = d[k, b0:b1]
            for i in range(w):
                dki = dk[i]
                if abs(dki) <= tiny or abs(dki) <= rel * mag[i] or not np.isfinite(dki):
                    nzero[i] += 1
                    dki = tiny if not dki < 0 else -tiny
                if dki < 0:
                    nneg[i] += 1
                dkr[i] = dki
        for i in range(w):
            neg[b0 + i] = nneg[i]
            zero[b0 + i] = nzero[i]


@nb.njit(parallel=True, cache=True)
def _solve(l_ptr, l_row, lx, d, perm, rhs, block, out):  # pragma: no cover
    """out (B, N) = K^{-1} rhs (B, N) from ``lx`` (nnz_l, B), ``d`` (N, B)."""
    N, bsz = d.shape
    n_blk = (bsz + block - 1) // block
    for blk in nb.prange(n_blk):
        b0 = blk * block
        b1 = min(bsz, b0 + block)
        w = b1 - b0
        z = np.empty((N, w))
        for k in range(N):
            for i in range(w):
                z[k, i] = rhs[b0 + i, perm[k]]
        for j in range(N):  # row views, as in `_factor`
            zj = z[j]
            for p in range(l_ptr[j], l_ptr[j + 1]):
                zr = z[l_row[p]]
                lp = lx[p, b0:b1]
                for i in range(w):
                    zr[i] -= lp[i] * zj[i]
        for k in range(N):
            zk = z[k]
            dk = d[k, b0:b1]
            for i in range(w):
                zk[i] /= dk[i]
        for j in range(N - 1, -1, -1):
            zj = z[j]
            for p in range(l_ptr[j], l_ptr[j + 1]):
                zr = z[l_row[p]]
                lp = lx[p, b0:b1]
                for i in range(w):
                    zj[i] -= lp[i] * zr[i]
        for k in range(N):
            for i in range(w):
                out[b0 + i, perm[k]] = z[k, i]


@nb.njit(parallel=True, cache=True)
def _matvec(a_ptr, a_col, ax, perm, x, block, out):  # pragma: no cover
    """out (B, N) = K x for K given by its permuted lower triangle ``ax`` (nnz_a, B), both triangles applied."""
    bsz, N = x.shape
    n_blk = (bsz + block - 1) // block
    for blk in nb.prange(n_blk):
        b0 = blk * block
        b1 = min(bsz, b0 + block)
        w = b1 - b0
        y = np.zeros((N, w))
        z = np.empty((N, w))
        for k in range(N):
            for i in range(w):
                z[k, i] = x[b0 + i, perm[k]]
        for k in range(N):
            for p in range(a_ptr[k], a_ptr[k + 1]):
                j = a_col[p]
                for i in range(w):
                    v = ax[p, b0 + i]
                    y[k, i] += v * z[j, i]
                    if j != k:
                        y[j, i] += v * z[k, i]
        for k in range(N):
            for i in range(w):
                out[b0 + i, perm[k]] = y[k, i]


@nb.njit(parallel=True, cache=True)
def _assemble(m_hes, m_obj, m_jcl, m_jcu, m_outer, m_dx, m_deq, hes, obj, jc, jh, sigma, dw, dc, ax):  # pragma: no cover
    """ax[b] = the lower triangle of P K P^T (B, nnz_a), summed entry kind by entry kind in
    `kkt.assemble`'s order (so duplicates add up in the same order as the index_add of
    `assemble_values`). Dropped entries (slot nnz_a: upper triangle, constants) are skipped by a
    test, not summed into a dump slot: that would chain every one of them through one address."""
    bsz, nnz = ax.shape
    n_ineq = sigma.shape[1]
    for b in nb.prange(bsz):
        row = ax[b]
        row[:] = 0.0
        for k in range(m_hes.size):
            if m_hes[k] < nnz:
                row[m_hes[k]] += hes[b, k]
        for k in range(m_obj.size):
            if m_obj[k] < nnz:
                row[m_obj[k]] += obj[b, k]
        for k in range(m_jcl.size):
            if m_jcl[k] < nnz:
                row[m_jcl[k]] += jc[b, k]
        for k in range(m_jcu.size):
            if m_jcu[k] < nnz:
                row[m_jcu[k]] += jc[b, k]
        for i in range(n_ineq):
            si = sigma[b, i]
            for u in range(4):
                su = si * jh[b, i, u]
                for v in range(4):
                    slot = m_outer[16 * i + 4 * u + v]
                    if slot < nnz:
                        row[slot] += su * jh[b, i, v]
        for k in range(m_dx.size):
            if m_dx[k] < nnz:
                row[m_dx[k]] += dw[b]
        for k in range(m_deq.size):
            if m_deq[k] < nnz:
                row[m_deq[k]] += -dc[b]


@nb.njit(parallel=True, cache=True)
def _jt_kernel(eq_rows, eq_cols, jc, lam, ineq_cols, jh, mu, n, out):  # pragma: no cover
    """out (B, n) = Jc^T lam + Jh^T mu (columns >= n dropped); each product summed in entry order
    (as torch's index_add), then the two added, so the result equals `ipm._jt`'s bit for bit."""
    bsz = out.shape[0]
    n_ineq = mu.shape[1]
    for b in nb.prange(bsz):
        a = np.zeros(n)
        c = np.zeros(n)
        for k in range(eq_rows.size):
            col = eq_cols[k]
            if col < n:
                a[col] += jc[b, k] * lam[b, eq_rows[k]]
        for i in range(n_ineq):
            m = mu[b, i]
            for u in range(4):
                col = ineq_cols[i, u]
                if col < n:
                    c[col] += jh[b, i, u] * m
        for j in range(n):
            out[b, j] = a[j] + c[j]


def jacobian_transpose_product(eq_rows: np.ndarray, eq_cols: np.ndarray, jc: Tensor, lam: Tensor,
                               ineq_cols: np.ndarray, jh: Tensor, mu: Tensor, n: int) -> Tensor:
    """Jc^T lam + Jh^T mu (B, n) for float64 CPU values with no autograd history (see `_jt_kernel`)."""
    out = np.empty((jc.shape[0], n))
    _jt_kernel(eq_rows, eq_cols, _np(jc), _np(lam), ineq_cols, _np(jh), _np(mu), n, out)
    return torch.from_numpy(out)


@nb.njit(parallel=True, cache=True)
def _jht_kernel(ineq_cols, jh, v, n, out):  # pragma: no cover
    """out (B, n) = Jh^T v, summed in entry order (as torch's index_add)."""
    bsz = out.shape[0]
    n_ineq = v.shape[1]
    for b in nb.prange(bsz):
        c = np.zeros(n + 1)  # column n: the pads, never read
        for i in range(n_ineq):
            m = v[b, i]
            for u in range(4):
                c[ineq_cols[i, u]] += jh[b, i, u] * m
        for j in range(n):
            out[b, j] = c[j]


@nb.njit(parallel=True, cache=True)
def _jh_dot_kernel(ineq_cols, jh, dx, out):  # pragma: no cover
    """out (B, n_ineq) = Jh dx (pad column n: 0), each row's four products summed left to right."""
    bsz, n_ineq = out.shape
    n = dx.shape[1]
    for b in nb.prange(bsz):
        for i in range(n_ineq):
            acc = 0.0
            for u in range(4):
                c = ineq_cols[i, u]
                acc += jh[b, i, u] * (dx[b, c] if c < n else 0.0)
            out[b, i] = acc


def inequality_product(ineq_cols: np.ndarray, jh: Tensor, dx: Tensor) -> Tensor:
    """Jh dx (B, n_ineq) for float64 CPU values with no autograd history."""
    out = np.empty((jh.shape[0], jh.shape[1]))
    _jh_dot_kernel(ineq_cols, _np(jh), _np(dx), out)
    return torch.from_numpy(out)


def inequality_transpose_product(ineq_cols: np.ndarray, jh: Tensor, v: Tensor, n: int) -> Tensor:
    """Jh^T v (B, n) for float64 CPU values with no autograd history."""
    out = np.empty((jh.shape[0], n))
    _jht_kernel(ineq_cols, _np(jh), _np(v), n, out)
    return torch.from_numpy(out)


def _np(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)


def _batch_inner(t: Tensor) -> np.ndarray:
    """(M, B) contiguous numpy of a (B, M) tensor (no copy when it is already the transpose of one)."""
    return np.ascontiguousarray(t.detach().cpu().T.numpy(), dtype=np.float64)


def assemble_parts(sym: SparseSymbolic, hes: Tensor, obj: Tensor, jc: Tensor, jh: Tensor, sigma: Tensor,
                   dw: Tensor, dc: Tensor) -> Tensor:
    """(B, nnz_a) values of P K P^T straight from `kkt.assemble`'s entry kinds (one numba pass, no
    (B, M) value table): the outer products ``sigma jh jh^T`` are formed in place. Stored batch-inner
    (the result is the transpose of a contiguous (nnz_a, B) array), as the factorisation reads it."""
    bsz = hes.shape[0]
    ax = np.empty((bsz, sym.nnz_a))
    _assemble(*sym.part_maps, _np(hes), _np(obj.expand(bsz, -1)), _np(jc), _np(jh), _np(sigma), _np(dw), _np(dc), ax)
    return torch.from_numpy(np.ascontiguousarray(ax.T)).T  # scattered by row, stored by column


def assemble_values(sym: SparseSymbolic, vals: Tensor) -> Tensor:
    """(B, nnz_a) lower-triangle values of P K P^T from the entry values (B, M) in `kkt.assemble`'s order."""
    buf = torch.zeros(vals.shape[0], sym.nnz_a + 1, dtype=vals.dtype, device=vals.device)
    buf.index_add_(1, sym.entry_map, vals)
    return buf[:, : sym.nnz_a]


#: A pivot is a zero eigenvalue when it is this small against the terms that formed it
#: (``|k_kk| + sum |l_kj y_j|``): cancellation to rounding level. An absolute test alone would
#: call the sound small pivots ``-|J_k|^2 / delta_w`` of a large delta_w zero. Measured: 1e-12
#: flagged sound pivots near the optimum (terms ~1e10 from mu/s of active bounds) and pushed
#: delta_w to 1e2, stalling case30 at error 1e-8; a few eps flags only true cancellation.
ZERO_PIVOT_REL = 1e-15


def factor(sym: SparseSymbolic, ax: Tensor, tiny: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(lx (B, nnz_l), d (B, N), ax (CPU float64), negative count (B,), zero count (B,)) of the values ``ax``
    (B, nnz_a). The value arrays are views of batch-inner storage (`BLOCK`)."""
    a = _batch_inner(ax)
    bsz = a.shape[1]
    lx = np.zeros((sym.nnz_l, bsz))
    d = np.zeros((sym.N, bsz))
    neg = np.zeros(bsz, dtype=np.int64)
    zero = np.zeros(bsz, dtype=np.int64)
    _factor(sym.a_ptr, sym.a_col, a, sym.l_ptr, sym.l_row, sym.r_ptr, sym.r_col, sym.r_pos, tiny, ZERO_PIVOT_REL, BLOCK,
            lx, d, neg, zero)
    t = torch.from_numpy
    return t(lx).T, t(d).T, t(a).T, t(neg), t(zero)


#: Iterative refinement against K itself: a static-order LDLᵀ has no pivoting, so its growth
#: can cost digits where multipliers are large (near-infeasible scenarios); refine until the
#: residual is below ``REFINE_RTOL * |rhs|`` or `REFINE_STEPS` steps.
REFINE_STEPS = 3
REFINE_RTOL = 1e-14


def solve(sym: SparseSymbolic, lx: Tensor, d: Tensor, ax: Tensor, rhs: Tensor, rtol: float = REFINE_RTOL) -> Tensor:
    """K^{-1} rhs (B, N) from the factors of K (values ``ax``), refined to a residual of ``rtol * |rhs|``."""
    r = np.ascontiguousarray(rhs.detach().cpu().numpy(), dtype=np.float64)
    lxn, dn, axn = _batch_inner(lx), _batch_inner(d), _batch_inner(ax)
    z = np.empty_like(r)
    _solve(sym.l_ptr, sym.l_row, lxn, dn, sym.perm, r, BLOCK, z)
    scale = np.abs(r).max(-1) if r.size else np.zeros(r.shape[0])
    kz = np.empty_like(r)
    dz = np.empty_like(r)
    for _ in range(REFINE_STEPS):
        _matvec(sym.a_ptr, sym.a_col, axn, sym.perm, z, BLOCK, kz)
        res = r - kz
        err = np.abs(res).max(-1)
        if not (err > rtol * scale).any():
            break
        _solve(sym.l_ptr, sym.l_row, lxn, dn, sym.perm, np.ascontiguousarray(res), BLOCK, dz)
        z = z + dz
    return torch.from_numpy(z).to(device=rhs.device, dtype=rhs.dtype)


def matvec(sym: SparseSymbolic, ax: Tensor, x: Tensor, absolute: bool = False) -> Tensor:
    """K x (B, N) from K's values ``ax`` (B, nnz_a); ``absolute``: |K| x."""
    a = _batch_inner(ax)
    xn = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float64)
    out = np.empty_like(xn)
    _matvec(sym.a_ptr, sym.a_col, np.abs(a) if absolute else a, sym.perm, xn, BLOCK, out)
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def backward_error(sym: SparseSymbolic, ax: Tensor, rhs: Tensor, sol: Tensor) -> Tensor:
    """Componentwise backward error of ``sol`` for ``K sol = rhs`` (Oettli-Prager), per scenario (B,):
    ``max_i |K sol - rhs|_i / (|K| |sol| + |rhs|)_i``, the smallest relative perturbation of K's
    entries and rhs for which ``sol`` is exact. It is ~ machine epsilon for a stable solve however
    ill-conditioned K is (entries mu/s ~ 1e10 at active bounds), and large where the static order's
    pivots grew or a pivot was replaced."""
    r = np.ascontiguousarray(rhs.detach().cpu().numpy(), dtype=np.float64)
    z = np.ascontiguousarray(sol.detach().cpu().numpy(), dtype=np.float64)
    a = _batch_inner(ax)
    kz = np.empty_like(r)
    _matvec(sym.a_ptr, sym.a_col, a, sym.perm, z, BLOCK, kz)
    mag = np.empty_like(r)
    _matvec(sym.a_ptr, sym.a_col, np.abs(a), sym.perm, np.abs(z), BLOCK, mag)
    out = oettli_prager(torch.from_numpy(np.abs(kz - r)), torch.from_numpy(mag + np.abs(r)))
    return torch.where(torch.from_numpy(np.isfinite(z).all(-1)), out, torch.inf).to(rhs.device)


def oettli_prager(num: Tensor, den: Tensor) -> Tensor:
    """``max_i num_i / den_i`` per scenario (B,) for ``num = |K sol - rhs|`` and ``den = |K| |sol| + |rhs|``
    (B, N); 0/0 counts as 0 and x/0 as inf. Shared by the sparse and dense backward checks."""
    ratio = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                        torch.where(num > 0, torch.inf, 0.0).to(num))
    return ratio.amax(-1) if ratio.shape[-1] else torch.zeros(ratio.shape[:-1], dtype=num.dtype, device=num.device)
