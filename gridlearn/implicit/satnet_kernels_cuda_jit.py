"""The numba.cuda kernel behind `gridlearn.implicit.satnet_kernels_cuda` (imported only when
used; see that module for the layout). ``cuda`` is a module global so that numba's CUDA
simulator can run the same source on a CPU."""

import math

from numba import cuda, float64, from_dtype


def make_kernel(np_dtype, wcap, TMAX, KMAX):
    """The sweeps kernel for one dtype; ``wcap`` entries of W fit in shared memory."""
    nb_dtype = from_dtype(np_dtype)

    @cuda.jit
    def sweeps(forward, St, sq, X, W, idx, ptr, V, rhs, gn, max_iter, eps, tiny, out, rows_smem):
        b = cuda.blockIdx.x
        t = cuda.threadIdx.x
        nthreads = cuda.blockDim.x
        k = X.shape[2]
        m = W.shape[1]
        G = nthreads // k
        kk = t % k
        grp = t // k
        Ws = cuda.shared.array(wcap, nb_dtype)
        red = cuda.shared.array(TMAX, nb_dtype)
        gbuf = cuda.shared.array(KMAX, nb_dtype)
        dxb = cuda.shared.array(KMAX, nb_dtype)
        scal = cuda.shared.array(4, float64)  # sweep decrease, weight, stop flag
        for e in range(t, rows_smem * k, nthreads):
            Ws[e] = W[b, e // k, e % k]
        start = ptr[b]
        nidx = ptr[b + 1] - start
        if t == 0:
            scal[0] = 0.0
            scal[2] = 0.0
        cuda.syncthreads()
        # the first variable's partial products s_j^T W
        if grp < G and nidx > 0:
            j0 = idx[start]
            acc = nb_dtype(0.0)
            for i in range(grp, m, G):
                if i < rows_smem:
                    acc += St[j0, i] * Ws[i * k + kk]
                else:
                    acc += St[j0, i] * W[b, i, kk]
            red[t] = acc
        cuda.syncthreads()
        delta0 = 0.0
        rel = math.inf
        conv = 0.0
        steps = 0
        for _sweep in range(max_iter):
            for jj in range(nidx):
                j = idx[start + jj]
                if t < k:
                    acc = nb_dtype(0.0)
                    for q in range(G):
                        acc += red[q * k + t]
                    acc -= sq[j] * X[b, j, t]
                    if forward:
                        gbuf[t] = acc
                    else:
                        gbuf[t] = rhs[b, j, t] - acc
                cuda.syncthreads()
                if t < k:
                    if forward:
                        nrm = nb_dtype(0.0)
                        for q in range(k):
                            nrm += gbuf[q] * gbuf[q]
                        nrm = math.sqrt(nrm)
                        weight = nrm
                        if nrm > tiny:
                            d = -gbuf[t] / nrm - X[b, j, t]
                        else:  # no interaction: the vector stays
                            d = nb_dtype(0.0)
                    else:  # u_j = P_j (rhs_j - field) / gn_j
                        proj = nb_dtype(0.0)
                        for q in range(k):
                            proj += gbuf[q] * V[b, j, q]
                        weight = gn[b, j]
                        d = (gbuf[t] - proj * V[b, j, t]) / weight - X[b, j, t]
                    X[b, j, t] += d
                    dxb[t] = d
                    if t == 0:
                        scal[1] = weight
                cuda.syncthreads()
                if grp < G:
                    # W += s_j dx^T on this thread's entries, fused with the next variable's
                    # partial product (the next sweep's first variable after the last one)
                    jn = idx[start + jj + 1] if jj + 1 < nidx else idx[start]
                    d = dxb[kk]
                    acc = nb_dtype(0.0)
                    for i in range(grp, m, G):
                        if i < rows_smem:
                            w = Ws[i * k + kk] + St[j, i] * d
                            Ws[i * k + kk] = w
                        else:
                            w = W[b, i, kk] + St[j, i] * d
                            W[b, i, kk] = w
                        acc += St[jn, i] * w
                    red[t] = acc
                if t == 0:
                    step2 = 0.0
                    for q in range(k):
                        step2 += dxb[q] * dxb[q]
                    scal[0] += scal[1] * step2
                cuda.syncthreads()
            steps += 1
            if t == 0:
                delta = scal[0]
                scal[0] = 0.0
                if steps == 1:
                    delta0 = delta
                    rel = 1.0 if delta0 > 0.0 else 0.0
                    if delta0 == 0.0:  # nothing moved: an exact fixed point
                        conv = 1.0
                else:
                    rel = delta / delta0
                    if rel < eps:
                        conv = 1.0
                scal[2] = conv
            cuda.syncthreads()
            if scal[2] != 0.0:
                break
        for e in range(t, rows_smem * k, nthreads):
            W[b, e // k, e % k] = Ws[e]
        if t == 0:
            out[b, 0] = steps
            out[b, 1] = rel
            out[b, 2] = conv

    return sweeps
