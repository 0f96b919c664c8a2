"""The numba code behind `gridlearn.implicit.satnet_kernels` (imported only when used).

Module-level functions, so that numba's on-disk cache (``cache=True``) holds them between
processes: compiling costs about 20 s the first time, a fraction of a second afterwards.
"""

import math

import numpy as np
from numba import njit, prange

_OPTS = dict(cache=True, nogil=True, error_model="numpy")


@njit(inline="always", **_OPTS)
def _gemv(s, W, g):
    # g = s^T W, s (m,), W (m, k)
    m, k = W.shape
    for kk in range(k):
        g[kk] = 0.0
    for i in range(m):
        si = s[i]
        for kk in range(k):
            g[kk] += si * W[i, kk]


@njit(inline="always", **_OPTS)
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


@njit(inline="always", **_OPTS)
def _update(s, dx, W):
    m, k = W.shape
    for i in range(m):
        a = s[i]
        for kk in range(k):
            W[i, kk] += a * dx[kk]


@njit(**_OPTS)
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


@njit(parallel=True, **_OPTS)
def sweeps(forward, St, sq, X, W, idx, ptr, V, rhs, gn, max_iter, eps, tiny, out):
    for b in prange(X.shape[0]):
        _sweeps_one(forward, St, sq, X[b], W[b], idx[ptr[b] : ptr[b + 1]], V[b], rhs[b], gn[b],
                    max_iter, eps, tiny, out[b])


@njit(**_OPTS)
def sweeps_serial(forward, St, sq, X, W, idx, ptr, V, rhs, gn, max_iter, eps, tiny, out):
    # one thread: no parallel region, whose barrier costs milliseconds on a loaded machine
    for b in range(X.shape[0]):
        _sweeps_one(forward, St, sq, X[b], W[b], idx[ptr[b] : ptr[b + 1]], V[b], rhs[b], gn[b],
                    max_iter, eps, tiny, out[b])
