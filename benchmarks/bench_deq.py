"""DEQ forward/backward: gridlearn vs torchdeq, same cell, same Anderson settings, same tolerance.

Run: .venv/bin/python benchmarks/bench_deq.py [--quick]

Both solve z* = tanh(W z + U x + b) (‖W‖₂ = 0.9) for a batch, forward with Anderson
(memory 6, mixing 1, stop when every element's ‖f(z) - z‖₂ < tol) and backward by the
implicit function theorem with the linear fixed point solved by Anderson to the same
backward tolerance. The answers (z*, ∂L/∂x, ∂L/∂θ) are checked to agree before any time is
reported. One intra-op thread for both (torch.set_num_threads(1)), so the comparison is fair
on a shared machine. Writes benchmarks/results/deq.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from _results import write_result

from gridlearn.implicit import DEQ, Anderson, ImplicitAdjoint



class Cell(nn.Module):
    def __init__(self, d: int, seed: int, dtype):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(d, d, generator=g, dtype=dtype)
        self.W = nn.Parameter(W * (0.9 / torch.linalg.matrix_norm(W, ord=2)))
        self.U = nn.Parameter(torch.randn(d, d, generator=g, dtype=dtype) / d**0.5)
        self.b = nn.Parameter(0.1 * torch.randn(d, generator=g, dtype=dtype))

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x @ self.U.T + self.b)


def timeit(fn, reps: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run_case(d: int, batch: int, tol: float, dtype, reps: int, seed: int = 0) -> dict:
    from torchdeq import get_deq

    cell = Cell(d, seed, dtype)
    x = torch.randn(batch, d, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    w = torch.randn(batch, d, generator=torch.Generator().manual_seed(seed + 2), dtype=dtype)
    max_iter = 200

    ours = DEQ(
        cell,
        solver=Anderson(memory=6, mixing=1.0, regularization=1e-4, rtol=0.0, atol=tol, max_steps=max_iter),
        adjoint=ImplicitAdjoint(direct=False, solver=Anderson(memory=6, regularization=1e-4, rtol=0.0, atol=tol, max_steps=max_iter)),
    )
    theirs = get_deq(
        f_solver="anderson", b_solver="anderson", f_max_iter=max_iter, b_max_iter=max_iter,
        f_tol=tol, b_tol=tol, f_stop_mode="abs", b_stop_mode="abs", ift=True,
    )
    theirs.train()

    def ours_fwd():
        with torch.no_grad():
            return ours.solve(x)

    def theirs_fwd():
        with torch.no_grad():
            z, info = theirs(lambda z: cell(z, x), torch.zeros_like(x))
        return z[-1], info


    def ours_train():
        xx = x.clone().requires_grad_(True)
        z = ours(xx)
        g = torch.autograd.grad((z * w).sum(), [xx, *cell.parameters()])
        return z.detach(), g

    def theirs_train():
        xx = x.clone().requires_grad_(True)
        z, info = theirs(lambda z: cell(z, xx), torch.zeros_like(xx))
        g = torch.autograd.grad((z[-1] * w).sum(), [xx, *cell.parameters()])
        return z[-1].detach(), g, info

    # --- agreement first ---------------------------------------------------------------
    sol = ours_fwd()
    z_t, info = theirs_fwd()
    assert sol.ok, sol.statuses
    z_o = sol.value
    with torch.no_grad():
        res_o = float((cell(z_o, x) - z_o).norm(dim=-1).max())
        res_t = float((cell(z_t, x) - z_t).norm(dim=-1).max())
    dz = float((z_o - z_t).norm(dim=-1).max())
    _, go = ours_train()
    zt, gt, _ = theirs_train()
    grad_rel = max(float((a - b).norm() / b.norm()) for a, b in zip(go, gt))
    # Both stop at residual < tol; with contraction 0.9 the distance between two such points
    # is at most 2·tol/(1-0.9) = 20·tol. Gradients: backward tolerance plus forward error.
    agree = dz < 20 * tol and grad_rel < 1e-2
    if not agree:
        raise SystemExit(f"answers disagree: |Δz|={dz:.3g}, grad rel diff={grad_rel:.3g}")

    t_fo, _ = timeit(ours_fwd, reps)
    t_ft, _ = timeit(theirs_fwd, reps)
    t_to, _ = timeit(ours_train, reps)
    t_tt, _ = timeit(theirs_train, reps)
    iters_o = int(sol.steps.max()) + 1  # function evaluations = steps + the initial one
    iters_t = int(info["nstep"].max())
    return {
        "d": d, "batch": batch, "dtype": str(dtype).replace("torch.", ""), "tol": tol,
        "forward_evaluations": {"gridlearn": iters_o, "torchdeq": iters_t},
        "final_residual_max": {"gridlearn": res_o, "torchdeq": res_t},
        "max_dz": dz, "grad_rel_diff": grad_rel,
        "forward_s": {"gridlearn": t_fo, "torchdeq": t_ft, "ratio": t_fo / t_ft},
        "forward_backward_s": {"gridlearn": t_to, "torchdeq": t_tt, "ratio": t_to / t_tt},
        "targets_met": {"iterations": iters_o <= iters_t, "forward_time_1.1x": t_fo <= 1.1 * t_ft, "train_time_1.1x": t_to <= 1.1 * t_tt},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    torch.set_num_threads(1)
    reps = 3 if args.quick else 7
    cases = [
        run_case(d=64, batch=32, tol=1e-4, dtype=torch.float32, reps=reps),
        run_case(d=256, batch=64, tol=1e-4, dtype=torch.float32, reps=reps),
        run_case(d=64, batch=32, tol=1e-8, dtype=torch.float64, reps=reps),
    ]
    for c in cases:
        print(
            f"d={c['d']:4d} batch={c['batch']:3d} {c['dtype']} tol={c['tol']:.0e}: "
            f"evals {c['forward_evaluations']['gridlearn']} vs {c['forward_evaluations']['torchdeq']}; "
            f"forward {c['forward_s']['gridlearn']*1e3:.1f} vs {c['forward_s']['torchdeq']*1e3:.1f} ms "
            f"(ratio {c['forward_s']['ratio']:.2f}); forward+backward {c['forward_backward_s']['gridlearn']*1e3:.1f} vs "
            f"{c['forward_backward_s']['torchdeq']*1e3:.1f} ms (ratio {c['forward_backward_s']['ratio']:.2f}); "
            f"|Δz|={c['max_dz']:.1e}, grad rel diff={c['grad_rel_diff']:.1e}"
        )
    import torchdeq

    write_result("deq.json", "deq", f"torchdeq {getattr(torchdeq, '__version__', '?')}",
                 "torch.set_num_threads(1) for both; median of repetitions; Anderson memory 6, mixing 1, "
                 "regularisation 1e-4 (gridlearn: relative to the mean squared residual difference; torchdeq: absolute); "
                 "stop when every element's ||f(z)-z|| < tol; IFT backward by Anderson to the same tol.",
                 cases=cases)


if __name__ == "__main__":
    main()
