"""Benchmark: one SQP scheduling solve over the PJM training days, inner QP by qpth vs QPLayer.

The SQP loop (gridlearn.forecast.scheduling.sqp_schedule: same start, same line search,
same tolerance) is run twice on identical (mu, sigma): once with qpth's QPFunction as the
inner batched QP solver (as the original e2e-model-learning code does), once with
gridlearn's QPLayer (warm-started between SQP iterations). The schedules must agree to
1e-4 before any time is reported. Inputs: mu = the least-squares linear forecast of each
training day, sigma = its per-hour residual RMS (no training, so the run is deterministic).

    .venv/bin/python benchmarks/bench_task_sqp.py [--days 2553] [--repeats 1]

One torch thread for both peers. Writes benchmarks/results/task_sqp.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gridlearn.data import load_pjm  # noqa: E402
from gridlearn.forecast.scheduling import SQP, SchedulingParams, qplayer_solve, sqp_schedule  # noqa: E402
from gridlearn.implicit.qp import QPLayer, QPSettings  # noqa: E402


def qpth_solve():
    from qpth.qp import QPFunction

    def solve(q, p, g, h, warm):
        b = q.shape[0]
        e = torch.empty(0, dtype=q.dtype)
        x = QPFunction(verbose=-1, eps=1e-12, maxIter=40)(q, p, g.expand(b, *g.shape), h.expand(b, *h.shape), e, e)
        return x, torch.isfinite(x).all(-1), None  # qpth reports no per-element status

    return solve


def inputs(n_days: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_pjm()
    x, y = data.x_train[:n_days], data.y_train[:n_days]
    x1 = np.hstack([x, np.ones((len(x), 1))])
    theta = np.linalg.lstsq(x1, y, rcond=None)[0]
    mu = x1 @ theta
    sigma = np.broadcast_to(np.sqrt(((mu - y) ** 2).mean(0)), mu.shape).copy()
    return torch.as_tensor(mu), torch.as_tensor(sigma)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=2553)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    mu, sigma = inputs(args.days)
    params, solver = SchedulingParams(), SQP(tol=1e-6)
    peers = {"qpth": qpth_solve(), "gridlearn.QPLayer": qplayer_solve(QPLayer(settings=QPSettings(tol=1e-10)))}
    scenarios = {}
    # start "mu": the original code's start (z0 = mu); "unconstrained": gridlearn's default
    # start, the per-hour optimum without ramp limits (the QPs then only fix ramp violations).
    for start, z0 in (("mu", mu), ("unconstrained", None)):
        out, times = {}, {}
        for name, qp in peers.items():
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                sol = sqp_schedule(mu, sigma, params, solver, qp, z0=z0)
                best = min(best, time.perf_counter() - t0)
            out[name], times[name] = sol, best
            print(f"start={start:13s} {name:18s} {best:8.2f} s  converged {int(sol.converged.sum())}/{args.days}  "
                  f"SQP steps mean {sol.steps.float().mean():.2f}")
        diff = float((out["qpth"].value - out["gridlearn.QPLayer"].value).abs().max())
        agree = diff < 1e-4
        print(f"  max |z_qpth - z_QPLayer| = {diff:.2e}  ({'agree' if agree else 'DISAGREE'} at 1e-4)")
        if not agree:
            raise SystemExit("schedules disagree; times not reported")
        ratio = times["qpth"] / times["gridlearn.QPLayer"]
        print(f"  speed-up of QPLayer over qpth: {ratio:.1f}x")
        scenarios[start] = {"seconds": times, "speedup_qplayer_vs_qpth": ratio, "max_abs_schedule_diff": diff,
                            "sqp_steps_mean": {k: float(v.steps.float().mean()) for k, v in out.items()},
                            "converged": {k: int(v.converged.sum()) for k, v in out.items()}}
    cross = float((sqp_schedule(mu, sigma, params, solver, peers["gridlearn.QPLayer"]).value
                   - sqp_schedule(mu, sigma, params, solver, peers["gridlearn.QPLayer"], z0=mu).value).abs().max())
    print(f"max |z(start=mu) - z(start=unconstrained)| = {cross:.2e}")
    result = {
        "benchmark": "task_sqp", "n_days": args.days, "torch_threads": 1, "repeats": args.repeats,
        "sqp": {"tol": solver.tol, "max_steps": solver.max_steps, "line_search": solver.line_search},
        "scenarios": scenarios, "max_abs_diff_between_starts": cross,
        "original_code_reference_s": 145.0,
        "torch": torch.__version__, "python": platform.python_version(),
        "note": "machine shared with other jobs while measured; compare the ratio, not absolute seconds",
    }
    path = Path(__file__).resolve().parent / "results" / "task_sqp.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
