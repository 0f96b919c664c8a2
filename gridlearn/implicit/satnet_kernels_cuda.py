"""SATNet's coordinate-descent sweeps on CUDA: one persistent kernel, one thread block per
batch element (numba.cuda), as the reference's CUDA kernel (locuslab/SATNet) is laid out.

What a block does. Element b's sweeps, all of them, in one launch: for each of its own
unknowns j in order, ``g = s_j^T W - ||s_j||^2 x_j``, the update of x_j (the mixing step,
or the adjoint step), then ``W += s_j dx^T``; after each sweep the stopping test of
`gridlearn.implicit.satnet_mixing` (relative objective decrease below eps). The threads are
``G`` groups of ``k``: thread (grp, kk) owns column kk of the rows ``i = grp, grp + G, ...``
of ``W`` (``(m, k)``), so the product ``s_j^T W`` is G partial sums per column (reduced
through shared memory) and the rank-one update touches only the thread's own entries, fused
with the next variable's partial product (one pass over W per variable, as on the CPU).
Three block barriers per variable; no atomics; results do not depend on the batch.

Working matrix in shared memory. numba allocates shared arrays statically, below the 48 KB
a block gets without an opt-in, so the first ``rows_smem`` rows of W live in shared memory
and the rest in global memory (L1/L2-resident), as the reference does with its
``MBUF_SIZE = 320`` rows (9x9 Sudoku, m = 600, k = 32, float32: 327 of 600 rows here).

Why numba.cuda (not a CUDA C++ extension, not Triton). It is already a dependency, compiles
at first use (no nvcc at install time), and its simulator (``NUMBA_ENABLE_CUDASIM=1``) runs
the same kernel source on a CPU, so CI checks it against the torch path without a GPU.
Triton's block-level programs have no per-thread sequential loop with barriers and would
hold W in registers, not in shared memory. The backward's default CG solve
(`gridlearn.implicit.satnet_adjoint_cg`) is batched GEMMs, run by torch on the GPU.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from gridlearn.errors import ConfigError

SMEM_BYTES = 44 * 1024  # static shared memory per block, under the 48 KB default
KMAX = 128  # largest rank k the kernel takes
TMAX = 512  # most threads per block (94 registers a thread: 512 fit in one SM's 64 K)
_KERNELS: dict = {}


def simulated() -> bool:
    """True when numba's CUDA simulator is on (kernels run on the CPU, for tests)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def available() -> bool:
    """True when numba.cuda can run a kernel here (a GPU, or the simulator)."""
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a driver that fails to load says "not available", not an error
        return False


def smem_capacity(itemsize: int) -> int:
    """Entries of W that fit in the static shared buffer, next to the small buffers."""
    return SMEM_BYTES // itemsize - (TMAX + 2 * KMAX + 8)


def _kernel(np_dtype):
    key = np.dtype(np_dtype).name
    if key not in _KERNELS:
        from gridlearn.implicit.satnet_kernels_cuda_jit import make_kernel

        _KERNELS[key] = make_kernel(np.dtype(np_dtype), smem_capacity(np.dtype(np_dtype).itemsize), TMAX, KMAX)
    return _KERNELS[key]


def launch_shape(k: int, m: int, itemsize: int, threads: int | None = None, rows_smem: int | None = None):
    """(threads per block, rows of W in shared memory) for rank k: G groups of k threads,
    by default as many as fit in TMAX threads while each group keeps at least 16 rows of W
    (a barrier per variable costs more than summing a few partial products)."""
    if k > KMAX:
        raise ConfigError(f"the CUDA kernel takes k <= {KMAX}, got k={k}")
    G = max(1, threads // k if threads else min(TMAX // k, m // 16))
    cap = smem_capacity(itemsize) // k
    rows = min(m, cap) if rows_smem is None else min(m, cap, rows_smem)
    return G * k, rows


def run_sweeps(forward: bool, St, sq, X, W, idx, ptr, V, rhs, gn, max_iter: int, eps: float, tiny: float,
               threads: int | None = None, rows_smem: int | None = None):
    """The sweeps of `gridlearn.implicit.satnet_kernels.run_sweeps`, on the GPU, in place on
    X ``(B, N, k)`` and W ``(B, m, k)``. Tensors on one CUDA device (or CPU tensors under the
    simulator); idx, ptr: int64 (flat unknowns per element, offsets). Returns (steps long
    ``(B,)``, residual float64 ``(B,)``, converged bool ``(B,)``) on X's device."""
    from numba import cuda

    B, N, k = X.shape
    m = W.shape[1]
    nthreads, rows = launch_shape(k, m, X.element_size(), threads, rows_smem)
    dev = X.device
    out = torch.zeros((B, 3), dtype=torch.float64, device=dev)
    idx_t = torch.as_tensor(idx, device=dev)
    ptr_t = torch.as_tensor(ptr, device=dev)
    args = [St, sq, X, W, idx_t, ptr_t, V, rhs, gn]
    if simulated() or dev.type != "cuda":
        conv = [a.numpy() for a in args] + [out.numpy()]
        launch = _kernel(X.numpy().dtype)[B, nthreads]
    else:
        conv = [cuda.as_cuda_array(a) for a in args] + [cuda.as_cuda_array(out)]
        stream = cuda.external_stream(torch.cuda.current_stream(dev).cuda_stream)
        launch = _kernel(np.dtype(str(X.dtype).removeprefix("torch.")))[B, nthreads, stream]
    launch(bool(forward), *conv[:9], int(max_iter), float(eps), float(tiny), conv[9], int(rows))
    return out[:, 0].long(), out[:, 1], out[:, 2] > 0


__all__ = ["available", "launch_shape", "run_sweeps", "simulated", "smem_capacity"]
