"""SATNet on the paper's Sudoku configuration (n=729, aux=300, m=600, batch 40, 40 sweeps).

Times forward (mixing) and backward (adjoint solve) per batch on CPU, one thread, over a
few batches of generated puzzles, and extrapolates an epoch of 9000 puzzles (225 batches).
No peer runs here: the reference C++/CUDA extension does not build (see the SATNet task
notes), so only gridlearn's numbers are recorded. Before timing, the gradient of a tiny
instance is checked against central finite differences, so the timed code is the
checked code. Writes benchmarks/results/satnet.json.

    .venv/bin/python benchmarks/bench_satnet.py [--batches 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gridlearn.implicit.satnet import MixingSettings, SATNet, satnet_solve
from gridlearn.logic.sudoku import generate_dataset, input_mask, one_hot

OUT = Path(__file__).resolve().parent / "results" / "satnet.json"


def check_gradient() -> float:
    g = torch.Generator().manual_seed(0)
    S = torch.randn(6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.rand(2, 5, generator=g, dtype=torch.float64) * 0.8 + 0.1
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.bool)
    st = MixingSettings(aux=1, k=5, max_iter=5000, eps=1e-11, on_failure="raise")

    def f(S):
        return satnet_solve(S, z, mask, st, torch.Generator().manual_seed(1)).value

    w = torch.randn(2, 5, generator=g, dtype=torch.float64)
    (gS,) = torch.autograd.grad((f(S) * w).sum(), S)
    err = 0.0
    with torch.no_grad():
        for idx in range(S.numel()):
            d = torch.zeros_like(S).view(-1)
            d[idx] = 1e-6
            d = d.view_as(S)
            num = ((f(S + d) * w).sum() - (f(S - d) * w).sum()) / 2e-6
            err = max(err, abs(float(num) - float(gS.view(-1)[idx])))
    if err > 1e-5:
        raise SystemExit(f"gradient check failed: max abs error {err:.3g}")
    return err


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    grad_err = check_gradient()
    ds = generate_dataset(args.batches * args.batch_size, seed=123)
    z = torch.from_numpy(one_hot(ds.puzzles))
    y = torch.from_numpy(one_hot(ds.solutions))
    mask = torch.from_numpy(input_mask(ds.puzzles))
    net = SATNet(729, 600, aux=300, max_iter=40, eps=1e-4, on_failure="ignore", seed=0,
                 generator=torch.Generator().manual_seed(0))
    fwd, bwd, conv, sweeps = [], [], [], []
    for b in range(args.batches):
        sl = slice(b * args.batch_size, (b + 1) * args.batch_size)
        t0 = time.perf_counter()
        sol = net.solve(z[sl], mask[sl])
        t1 = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy(sol.value.clamp(1e-6, 1 - 1e-6), y[sl])
        net.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        if not (torch.isfinite(sol.value).all() and torch.isfinite(net.S.grad).all()):
            raise SystemExit("non-finite output or gradient")
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
        conv.append(float(sol.converged.float().mean()))
        sweeps.append(float(sol.steps.float().mean()))
        print(f"batch {b}: forward {fwd[-1]:.1f} s, backward {bwd[-1]:.1f} s, "
              f"converged {conv[-1]:.0%}, mean sweeps {sweeps[-1]:.1f}")
    per_batch = float(np.mean(fwd) + np.mean(bwd))
    result = {
        "what": "gridlearn SATNet, paper Sudoku configuration, CPU",
        "config": {"n": 729, "aux": 300, "m": 600, "k": net.k, "batch_size": args.batch_size,
                   "max_iter": 40, "eps": 1e-4, "dtype": "float32"},
        "torch_threads": 1,
        "note": "one thread; shared 2-core machine with other jobs running, so times are upper bounds; "
                "epoch time extrapolated from the timed batches (225 batches of 40 = 9000 puzzles); "
                "no peer: the reference extension does not build here",
        "gradient_check_max_abs_error": grad_err,
        "batches_timed": args.batches,
        "forward_s_per_batch": fwd,
        "backward_s_per_batch": bwd,
        "forward_s_mean": float(np.mean(fwd)),
        "backward_s_mean": float(np.mean(bwd)),
        "backward_over_forward": float(np.mean(bwd) / np.mean(fwd)),
        "epoch_s_extrapolated": per_batch * 9000 / args.batch_size,
        "fraction_converged_within_max_iter": conv,
        "mean_sweeps": sweeps,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"per batch {per_batch:.1f} s (backward/forward {result['backward_over_forward']:.2f}); "
          f"epoch of 9000 ~ {result['epoch_s_extrapolated'] / 3600:.2f} h (extrapolated); wrote {OUT}")


if __name__ == "__main__":
    main()
