"""SATNet's CUDA kernel (gridlearn.implicit.satnet_kernels_cuda), run by numba's CUDA
simulator on the CPU, so CI checks it without a GPU: the same sweeps as the numba CPU
kernels and the torch path, to round-off in float64, with W split between shared and
global memory and several thread groups per block; and on a real GPU when there is one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gridlearn.errors import ConfigError
from gridlearn.implicit import satnet_kernels_cuda as kc
from gridlearn.implicit.satnet import MixingSettings, satnet_solve

REPO = Path(__file__).resolve().parents[2]

# Runs under NUMBA_ENABLE_CUDASIM=1 (numba reads it at import, hence a subprocess). Tiny
# sizes: the simulator runs every GPU thread as a Python thread.
_CHECK = r"""
import json, torch
from gridlearn.implicit import satnet_kernels as kn, satnet_kernels_cuda as kc
from gridlearn.implicit.satnet import MixingSettings, satnet_solve
from gridlearn.implicit.satnet_mixing import init_vectors

assert kc.simulated() and kc.available()
g = torch.Generator().manual_seed(0)
B, n, m, aux, k = 2, 6, 5, 2, 4
N = n + 1 + aux
S = torch.randn(m, N, generator=g, dtype=torch.float64) * 0.5
z = torch.rand(B, n, generator=g, dtype=torch.float64)
mask = torch.rand(B, n, generator=g) < 0.4
out = {}

# 1. the kernel itself against the numba CPU kernel: forward sweeps, then adjoint sweeps,
#    2 thread groups of k, 2 of the 5 rows of W in shared memory, elements stopping apart
V, _ = init_vectors(z, mask, N, k, torch.Generator().manual_seed(1))
is_out = torch.ones(B, N, dtype=torch.bool); is_out[:, 0] = False; is_out[:, 1:n + 1] = ~mask
St = S.t().contiguous(); sq = (St * St).sum(1)
idx, ptr = kn.unknown_index(is_out)
gn = torch.rand(B, N, generator=g, dtype=torch.float64) + 2.0
rhs = torch.randn(B, N, k, generator=g, dtype=torch.float64)
for name, fwd in (("forward", True), ("adjoint", False)):
    res = []
    for run in (kn.run_sweeps, lambda *a: kc.run_sweeps(*a, threads=2 * k, rows_smem=2)):
        X = V.clone() if fwd else torch.zeros_like(V)
        W = torch.einsum("mn,bnk->bmk", S, X).contiguous()
        ph = X.new_zeros((1, 1, 1))
        o = run(fwd, St, sq, X, W, idx, ptr, ph if fwd else V, ph if fwd else rhs, ph[0] if fwd else gn,
                25, 1e-4, 1e-150)
        res.append((X, W, o))
    (Xa, Wa, oa), (Xb, Wb, ob) = res
    out[name] = {"dX": float((Xa - Xb).abs().max()), "dW": float((Wa - Wb).abs().max()),
                 "steps_a": oa[0].tolist(), "steps_b": ob[0].tolist(),
                 "dres": float((oa[1] - ob[1]).abs().max()), "conv_a": oa[2].tolist(), "conv_b": ob[2].tolist()}

# 2. the layer with backend="cuda" (forward kernel; adjoint by the kernel's sweeps) vs torch
w = torch.randn(B, n, generator=g, dtype=torch.float64)
got = {}
for be in ("torch", "cuda"):
    st = MixingSettings(aux=aux, k=k, max_iter=20, eps=1e-5, backend=be, on_failure="ignore", adjoint_solver="sweeps")
    Sr, zr = S.clone().requires_grad_(True), z.clone().requires_grad_(True)
    sol = satnet_solve(Sr, zr, mask, st, torch.Generator().manual_seed(1))
    (sol.value * w).sum().backward()
    got[be] = (sol.value, Sr.grad, zr.grad, sol.steps.tolist(), sol.extras["adjoint"]["steps"].tolist())
a, b = got["torch"], got["cuda"]
out["layer"] = {"dvalue": float((a[0] - b[0]).abs().max()), "dS": float((a[1] - b[1]).abs().max()),
                "dz": float((a[2] - b[2]).abs().max()), "dS_max": float(a[1].abs().max()),
                "steps": [a[3], b[3]], "adjoint_steps": [a[4], b[4]]}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_cuda_kernel_in_the_simulator_matches_the_cpu_kernels_and_torch():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHECK], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name in ("forward", "adjoint"):
        r = res[name]
        assert r["dX"] < 1e-10 and r["dW"] < 1e-10 and r["dres"] < 1e-10, (name, r)
        assert r["steps_a"] == r["steps_b"] and r["conv_a"] == r["conv_b"], (name, r)
    # one element converges, the other runs out of sweeps: they stop apart
    assert res["forward"]["conv_a"] == [True, False] and len(set(res["forward"]["steps_a"])) == 2
    lay = res["layer"]
    assert lay["dvalue"] < 1e-10 and lay["dS"] < 1e-10 and lay["dz"] < 1e-10, lay
    assert lay["steps"][0] == lay["steps"][1] and lay["adjoint_steps"][0] == lay["adjoint_steps"][1]
    assert lay["dS_max"] > 1e-3


def test_launch_shape_and_the_shared_memory_split():
    # 9x9 Sudoku at the reference's k = 32, float32: 16 groups of 32 threads, 327 of the 600
    # rows of W in 44 KB of shared memory (the reference keeps 320)
    assert kc.launch_shape(32, 600, 4) == (512, 327)
    threads, rows = kc.launch_shape(46, 600, 4)
    assert threads == 11 * 46 and rows * 46 * 4 <= kc.SMEM_BYTES
    assert kc.launch_shape(4, 5, 8) == (4, 5)  # a tiny layer: one group, all of W in shared memory
    with pytest.raises(ConfigError, match="k <= 128"):
        kc.launch_shape(200, 600, 4)


def test_backend_cuda_without_a_gpu_says_so():
    if torch.cuda.is_available() or kc.simulated():
        pytest.skip("a GPU (or the simulator) is present")
    st = MixingSettings(aux=0, k=4, max_iter=5, eps=1e-4, backend="cuda")
    with pytest.raises(ConfigError, match="backend='cuda'"):
        satnet_solve(torch.randn(3, 4), torch.rand(1, 3), torch.zeros(1, 3, dtype=torch.bool), st)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernel_on_the_gpu_matches_the_cpu_kernels():
    g = torch.Generator().manual_seed(0)
    B, n, m, aux = 6, 40, 32, 12
    S = torch.randn(m, n + 1 + aux, generator=g, dtype=torch.float64) * 0.3
    z = torch.rand(B, n, generator=g, dtype=torch.float64)
    mask = torch.rand(B, n, generator=g) < 0.4
    w = torch.randn(B, n, generator=g, dtype=torch.float64)
    got = {}
    for be, dev in (("numba", "cpu"), ("cuda", "cuda")):
        st = MixingSettings(aux=aux, k=8, max_iter=200, eps=1e-8, backend=be, on_failure="ignore",
                            adjoint_solver="sweeps")
        Sr = S.to(dev).requires_grad_(True)
        sol = satnet_solve(Sr, z.to(dev), mask.to(dev), st, torch.Generator().manual_seed(1))
        (sol.value * w.to(dev)).sum().backward()
        got[be] = (sol.value.cpu(), Sr.grad.cpu())
    torch.testing.assert_close(got["cuda"][0], got["numba"][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(got["cuda"][1], got["numba"][1], atol=1e-10, rtol=0)


def _nvvm_available() -> bool:
    try:
        from numba.cuda.cudadrv import nvvm

        return bool(nvvm.is_available())
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.skipif(kc.simulated() or not _nvvm_available(), reason="needs NVVM (a CUDA toolkit) to compile PTX")
def test_kernel_compiles_for_sm90_within_the_static_shared_memory():
    """The simulator runs Python; this checks the nopython CUDA compile of the same source
    (typing, shared arrays) for an H100/H200 (sm_90), without a GPU."""
    import re

    import numpy as np
    from numba import cuda, types as T

    from gridlearn.implicit.satnet_kernels_cuda_jit import make_kernel

    for np_dt, nb in ((np.float32, T.float32), (np.float64, T.float64)):
        dt = np.dtype(np_dt)
        kern = make_kernel(dt, kc.smem_capacity(dt.itemsize), kc.TMAX, kc.KMAX)
        a = [T.Array(nb, d, "C") for d in (1, 2, 3)]
        i64 = T.Array(T.int64, 1, "C")
        sig = (T.boolean, a[1], a[0], a[2], a[2], i64, i64, a[2], a[2], a[1], T.int64, T.float64, T.float64,
               T.Array(T.float64, 2, "C"), T.int64)
        ptx, _ = cuda.compile_ptx(kern.py_func, sig, cc=(9, 0))
        smem = sum(int(b) for b in re.findall(r"\.shared \.align \d+ \.b8 \w+\[(\d+)\]", ptx))
        assert 40 * 1024 < smem <= 48 * 1024, smem
        assert "bar.sync" in ptx
