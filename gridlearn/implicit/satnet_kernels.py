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


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        import numba

        from gridlearn.implicit.satnet_kernels_numba import sweeps, sweeps_serial

        _KERNELS = numba, sweeps, sweeps_serial
    return _KERNELS


def unknown_index(is_out: torch.Tensor, order=None) -> tuple[np.ndarray, np.ndarray]:
    """Per element, its own unknowns: flat int64 indices and (B+1,) offsets.

    In ascending index order, or, with ``order`` (a sequence of variable indices holding
    every unknown), in that order: the update order of the sweeps.
    """
    rows, cols = torch.nonzero(is_out, as_tuple=True)
    if order is not None:
        N = is_out.shape[1]
        rank = torch.full((N,), N, dtype=torch.long)
        rank[torch.as_tensor(order, dtype=torch.long)] = torch.arange(len(order))
        if bool((rank[cols] == N).any()):
            raise ValueError("order must list every unknown variable")
        # rows stay grouped (ascending), within a row the unknowns follow ``order``
        sort = torch.argsort(rows * (N + 1) + rank[cols])
        rows, cols = rows[sort], cols[sort]
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
    numba, sweeps_parallel, sweeps_serial = _kernels()
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS, X.shape[0]))
    if threads > 1:
        numba.set_num_threads(threads)
        sweeps = sweeps_parallel
    else:
        sweeps = sweeps_serial
    B = X.shape[0]
    out = np.zeros((B, 3), dtype=np.float64)
    npy = [t.numpy() for t in (St, sq, X, W, V, rhs, gn)]
    sweeps(forward, npy[0], npy[1], npy[2], npy[3], idx, ptr, npy[4], npy[5], npy[6],
           int(max_iter), float(eps), float(tiny), out)
    out_t = torch.from_numpy(out)
    return out_t[:, 0].long(), out_t[:, 1], out_t[:, 2] > 0


__all__ = ["available", "run_sweeps", "unknown_index"]
