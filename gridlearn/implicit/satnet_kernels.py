"""Compiled (numba) CPU kernels for SATNet's coordinate-descent sweeps, parallel over the batch.

The same two sweeps as the pure-torch reference in `gridlearn.implicit.satnet_mixing`
(forward: the mixing method; backward: the adjoint coordinate descent), with the same
update order and the same stopping test, so the two agree to round-off. What differs is
how the work is laid out:

- each batch element runs its own sweeps (``prange`` over the batch), over its own
  unknowns only, and stops on its own;
- its working matrix ``W = S X`` (``(m, k)``: 77-110 KB for Sudoku in float32) stays in
  the core's L2 cache, where the batched ``(m, B*k)`` matrix of the torch path does not;
- the rank-one update of ``W`` for variable j and the product ``s_{j'}^T W`` for the next
  variable j' are one pass over ``W`` (one read and one write per entry instead of two
  reads and one write). Entry (i, :) is updated before it is read, so the numbers are those
  of the two separate passes.

Why numba rather than a C++ extension: measured against the reference's C++/SSE extension
(locuslab/SATNet) in `benchmarks/bench_satnet.py`; numba needs no compiler at install time
and is already a dependency. The kernels are compiled on first use (a few seconds, cached
on disk afterwards) for float32 and float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_KERNELS = None


def available() -> bool:
    """True when numba imports (the compiled path can run)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _build():
    import numba
    from numba import njit, prange

    opts = dict(cache=True, nogil=True, error_model="numpy")

    @njit(inline="always", **opts)
    def _gemv(s, W, g):
        # g = s^T W, s (m,), W (m, k)
        m, k = W.shape
        for kk in range(k):
            g[kk] = 0.0
        for i in range(m):
            si = s[i]
            for kk in range(k):
                g[kk] += si * W[i, kk]

    @njit(inline="always", **opts)
    def _update_then_gemv(s, dx, W, s_next, g):
        # W += s dx^T, and g = s_next^T W (the updated W), in one pass over W
        m, k = W.shape
        for kk in range(k):
            g[kk] = 0.0
        for i in range(m):
            a = s[i]
            c = s_next[i]
            for kk in range(k):
                w = W[i, kk] + a * dx[kk]
                W[i, kk] = w
                g[kk] += c * w

    @njit(inline="always", **opts)
    def _update(s, dx, W):
        m, k = W.shape
        for i in range(m):
            a = s[i]
            for kk in range(k):
                W[i, kk] += a * dx[kk]

    @njit(**opts)
    def _sweeps_one(forward, St, sq, X, W, idx, V, rhs, gn, max_iter, eps, tiny, out):
        """One element's sweeps; X (N, k) and W (m, k) updated in place.
        out = [steps, relative decrease of the last sweep, converged (1/0)]."""
        k = X.shape[1]
        g = np.empty(k, dtype=X.dtype)
        dx = np.zeros(k, dtype=X.dtype)
        nidx = idx.shape[0]
        delta0 = 0.0
        rel = math.inf
        converged = 0.0
        t = 0
        while t < max_iter:
            delta = 0.0
            if nidx > 0:
                _gemv(St[idx[0]], W, g)
            for jj in range(nidx):
                j = idx[jj]
                # field = sum_{i != j} c_ji x_i = s_j^T W - ||s_j||^2 x_j
                for kk in range(k):
                    g[kk] -= sq[j] * X[j, kk]
                if forward:
                    nrm = 0.0
                    for kk in range(k):
                        nrm += g[kk] * g[kk]
                    nrm = math.sqrt(nrm)
                    weight = nrm
                    if nrm > tiny:
                        for kk in range(k):
                            dx[kk] = -g[kk] / nrm - X[j, kk]
                    else:  # no interaction: the vector stays
                        for kk in range(k):
                            dx[kk] = 0.0
                else:
                    # u_j = P_j (rhs_j - field) / ||g_j||
                    proj = 0.0
                    for kk in range(k):
                        g[kk] = rhs[j, kk] - g[kk]
                        proj += g[kk] * V[j, kk]
                    weight = gn[j]
                    for kk in range(k):
                        dx[kk] = (g[kk] - proj * V[j, kk]) / weight - X[j, kk]
                step2 = 0.0
                for kk in range(k):
                    X[j, kk] += dx[kk]
                    step2 += dx[kk] * dx[kk]
                delta += weight * step2
                if jj + 1 < nidx:
                    _update_then_gemv(St[j], dx, W, St[idx[jj + 1]], g)
                else:
                    _update(St[j], dx, W)
            t += 1
            if t == 1:
                delta0 = delta
                rel = 1.0 if delta0 > 0.0 else 0.0
                if delta0 == 0.0:  # nothing moved: an exact fixed point
                    converged = 1.0
                    break
            else:
                rel = delta / delta0
                if rel < eps:
                    converged = 1.0
                    break
        out[0] = t
        out[1] = rel
        out[2] = converged

    @njit(parallel=True, **opts)
    def sweeps(forward, St, sq, X, W, idx, ptr, V, rhs, gn, max_iter, eps, tiny, out):
        for b in prange(X.shape[0]):
            _sweeps_one(forward, St, sq, X[b], W[b], idx[ptr[b] : ptr[b + 1]], V[b], rhs[b], gn[b],
                        max_iter, eps, tiny, out[b])

    return numba, sweeps


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build()
    return _KERNELS


def unknown_index(is_out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per element, its own unknowns in ascending order: flat int64 indices and (B+1,) offsets."""
    rows, cols = torch.nonzero(is_out, as_tuple=True)
    counts = torch.bincount(rows, minlength=is_out.shape[0])
    ptr = np.zeros(is_out.shape[0] + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(counts.numpy())
    return np.ascontiguousarray(cols.numpy().astype(np.int64)), ptr


def run_sweeps(forward: bool, St, sq, X, W, idx, ptr, V, rhs, gn, max_iter: int, eps: float, tiny: float):
    """Run the sweeps in place on X ``(B, N, k)`` and W ``(B, m, k)`` (contiguous CPU tensors).

    ``V``, ``rhs`` ``(B, N, k)`` and ``gn`` ``(B, N)`` are used by the adjoint (backward)
    sweep only. Threads: as many as torch is set to use (``torch.set_num_threads``), at
    most numba's pool. Returns (steps long ``(B,)``, residual float64 ``(B,)``,
    converged bool ``(B,)``).
    """
    numba, sweeps = _kernels()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    B = X.shape[0]
    out = np.zeros((B, 3), dtype=np.float64)
    npy = [t.numpy() for t in (St, sq, X, W, V, rhs, gn)]
    sweeps(forward, npy[0], npy[1], npy[2], npy[3], idx, ptr, npy[4], npy[5], npy[6],
           int(max_iter), float(eps), float(tiny), out)
    out_t = torch.from_numpy(out)
    return out_t[:, 0].long(), out_t[:, 1], out_t[:, 2] > 0


__all__ = ["available", "run_sweeps", "unknown_index"]
