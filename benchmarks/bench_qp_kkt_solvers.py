"""QPSettings.kkt_solver: the four KKT linear solvers side by side on the same QPs.

Run: .venv/bin/python benchmarks/bench_qp_kkt_solvers.py [--quick]
Writes benchmarks/results/qp_kkt_solvers.json. One CPU thread. For each problem shape and
solver: the best of ``repeats`` forward+backward times (solve, then the gradient of a fixed
weighted sum of x w.r.t. every input), the mean interior-point iterations, and the largest
difference of x and of ∂/∂p from the "bordered_lu" reference (every solver solves the same
equations, so they must agree). Ratios are within this one process.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from bench_qp import dcopf_problem, optnet_problem, scheduling_problem
from gridlearn.implicit.qp import QPSettings, solve_qp
from gridlearn.implicit.qp_kkt_solvers import KKT_SOLVERS

OUT = Path(__file__).resolve().parent / "results" / "qp_kkt_solvers.json"


def run_once(data, solver: str):
    ins = [t.clone().requires_grad_() if t is not None else None for t in data]
    t0 = time.perf_counter()
    sol = solve_qp(*ins, settings=QPSettings(kkt_solver=solver))
    w = torch.linspace(-1.0, 1.0, sol.value.numel(), dtype=sol.value.dtype).view_as(sol.value)
    (sol.value * w).sum().backward()
    return time.perf_counter() - t0, sol, ins[1].grad


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 32, one repeat")
    quick = ap.parse_args().quick
    B = 32 if quick else 256
    problems = {
        "optnet n=40 m=6 k=2 (few constraints: dual favoured)": optnet_problem(40, 6, 2, B, 0),
        "optnet n=20 m=40 k=0 (many constraints)": optnet_problem(20, 40, 0, B, 1),
        "scheduling n=24 m=46 (diagonal Q)": scheduling_problem(B, 2),
        "dcopf n=54 m=480 k=1 (case118-shaped)": dcopf_problem(B, 3),
    }
    repeats = 1 if quick else 3
    results = []
    for name, data in problems.items():
        _, ref, ref_gp = run_once(data, "bordered_lu")
        row = {"problem": name, "batch": B, "solvers": {}}
        for solver in sorted(KKT_SOLVERS):
            times = []
            for _ in range(repeats):
                dt, sol, gp = run_once(data, solver)
                times.append(dt)
            ok = sol.converged & ref.converged
            row["solvers"][solver] = {
                "best_s": min(times),
                "converged": int(sol.converged.sum()),
                "mean_iterations": float(sol.steps.double().mean()),
                "max_abs_dx_vs_bordered_lu": float((sol.value - ref.value).detach()[ok].abs().max()),
                "max_abs_dgrad_p_vs_bordered_lu": float((gp - ref_gp)[ok].abs().max()),
            }
        fastest = min(v["best_s"] for v in row["solvers"].values())
        for v in row["solvers"].values():
            v["time_vs_fastest"] = v["best_s"] / fastest
        results.append(row)
        print(name, {k: round(v["best_s"], 4) for k, v in row["solvers"].items()})
    meta = {"threads": 1, "python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "quick": quick, "repeats": repeats}
    OUT.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
