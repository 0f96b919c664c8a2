"""Benchmark: the task net's scheduling step on PJM training days, dense vs tridiagonal KKT path.

The step the reference protocol repeats up to 1,000 times per seed (train days) and again
on the hold-out days: `StochasticScheduler` forward (SQP, every QP on `QPLayer`) and the
implicit backward to (mu, sigma). Run in one process on identical inputs, alternating:
once with the QP's tridiagonal KKT path switched off (`TridiagonalPattern.build` -> None:
the dense batched Cholesky of `qp_kkt.KKTFactor`, the code before it), once with it on.
Schedules and gradients must agree to 1e-8 and the per-day statuses must be equal before
a time is reported. Inputs as in bench_task_sqp.py (least-squares forecast, per-hour
residual sigma; SQP started from mu, so it takes several QP steps, as a training step
does from last step's schedule).

    .venv/bin/python benchmarks/bench_task_kkt.py [--days 2552] [--repeats 3]

One torch thread. Writes benchmarks/results/task_kkt.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gridlearn.implicit.qp_backward as qp_backward  # noqa: E402
from bench_task_sqp import inputs  # noqa: E402
from gridlearn.forecast.scheduling import SQP, SchedulingParams, StochasticScheduler, realised_cost  # noqa: E402

FAST_BUILD = qp_backward.TridiagonalPattern.build


def step(scheduler, mu, sigma, y):
    """Forward + backward of one task-loss evaluation -> (seconds, z, grad mu, grad sigma, statuses)."""
    m, s = mu.clone().requires_grad_(), sigma.clone().requires_grad_()
    t0 = time.perf_counter()
    sol = scheduler.solve(m, s, z0=mu)
    z = scheduler(m, s, z0=mu)
    realised_cost(z, y, scheduler.params).sum(-1).mean().backward()
    return time.perf_counter() - t0, z.detach(), m.grad, s.grad, sol.status_code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=2552)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    mu, sigma = inputs(args.days)
    g = torch.Generator().manual_seed(0)
    y = mu + sigma * torch.randn(mu.shape, generator=g, dtype=mu.dtype)
    scheduler = StochasticScheduler(SchedulingParams(), SQP())
    best = {"dense": float("inf"), "tridiagonal": float("inf")}
    out = {}
    for _ in range(args.repeats):
        for name in best:
            qp_backward.TridiagonalPattern.build = FAST_BUILD if name == "tridiagonal" else staticmethod(lambda *a: None)
            t, *res = step(scheduler, mu, sigma, y)
            best[name] = min(best[name], t)
            out[name] = res
            print(f"{name:12s} {t:7.2f} s")
    qp_backward.TridiagonalPattern.build = FAST_BUILD
    (zd, gmd, gsd, std), (zt, gmt, gst, stt) = out["dense"], out["tridiagonal"]
    diffs = {"z": float((zd - zt).abs().max()), "grad_mu": float((gmd - gmt).abs().max()),
             "grad_sigma": float((gsd - gst).abs().max())}
    same_status = bool((std == stt).all())
    print(f"max |diff|: {diffs}; statuses equal: {same_status}")
    if max(diffs.values()) > 1e-8 or not same_status:
        raise SystemExit("dense and tridiagonal paths disagree; times not reported")
    ratio = best["dense"] / best["tridiagonal"]
    print(f"speed-up of the tridiagonal path: {ratio:.2f}x")
    result = {
        "benchmark": "task_kkt", "n_days": args.days, "torch_threads": 1, "repeats": args.repeats,
        "seconds_best": best, "speedup_tridiagonal_vs_dense": ratio, "max_abs_diff": diffs,
        "statuses_equal": same_status, "converged": int((stt == 0).sum()),
        "torch": torch.__version__, "python": platform.python_version(),
        "note": "forward SQP from mu + implicit backward; machine shared with other jobs while measured, "
                "peers alternated in one process; compare the ratio, not absolute seconds",
    }
    path = Path(__file__).resolve().parent / "results" / "task_kkt.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
