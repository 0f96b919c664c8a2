"""Inverse AC-OPF timing: one outer iteration of the gradient method vs the KKT-residual baseline.

Same observations (case, 20 samples, noise-free, p_g and all LMPs) for both. Checks before
reporting times: the loss gradient at the truth is ~0 and the baseline recovers the
identifiable costs within 1e-3 relative. Reports per outer iteration: forward (Ipopt over
all samples), backward (KKT adjoint of the loss), and the forward-mode Jacobian used by
Levenberg-Marquardt; the baseline's cvxpy solve time; and ratios. One thread.

    .venv/bin/python benchmarks/bench_inverse.py [--case case118] [--samples 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    from gridlearn.grid import load_case
    from gridlearn.inverse import InverseSolver, kkt_residual_costs, simulate_market
    from gridlearn.inverse.params import cost_unknowns, current_values
    from gridlearn.inverse.recovery import InverseProblem

    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="case118")
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    net = load_case(args.case)
    obs = simulate_market(net, args.samples, seed=0, ipopt_tol=1e-9)
    unknowns = cost_unknowns(net)
    theta = current_values(net, unknowns)
    problem = InverseProblem(net, obs, unknowns, (1.0, 100.0), InverseSolver())

    t0 = time.perf_counter()
    _, _, _, results = problem.loss(theta, grad=False)
    forward_only = time.perf_counter() - t0
    loss, grad, _, _ = problem.loss(theta, grad=True)
    fwd, bwd = problem.timings["forward_s"] - forward_only, problem.timings["backward_s"]
    t0 = time.perf_counter()
    problem.jacobian(theta, results)
    jac = time.perf_counter() - t0
    b = kkt_residual_costs(net, obs, truth=net)
    df = b.parameters
    rel = ((df["value"] - df["true"]).abs() / df["true"].abs())[df["identifiable"]]
    # checks before times
    if not (loss < 1e-6 and float(rel.max()) < 1e-3):
        raise SystemExit(f"CHECK FAILED: loss at truth {loss:.3g}, baseline max rel err {float(rel.max()):.3g}")
    out = {
        "case": args.case, "n_samples": obs.n_samples, "n_unknowns": len(unknowns), "threads": 1,
        "note": "torch.set_num_threads(1); Ipopt (MUMPS) single-threaded; 2-core shared machine",
        "loss_at_truth": loss, "grad_norm_at_truth": float(grad.norm()),
        "baseline_max_rel_err_identifiable": float(rel.max()),
        "forward_s": fwd, "forward_s_per_sample": fwd / obs.n_samples,
        "backward_s": bwd, "backward_s_per_sample": bwd / obs.n_samples,
        "backward_over_forward": bwd / fwd,
        "lm_jacobian_s": jac, "lm_jacobian_over_forward": jac / fwd,
        "outer_iteration_s_gradient": fwd + bwd, "outer_iteration_s_lm": forward_only + jac,
        "baseline_solve_s": b.solve_time_s,
        "gradient_iteration_over_baseline": (fwd + bwd) / b.solve_time_s,
    }
    for k, v in out.items():
        print(f"{k:36s} {v}")
    dest = Path(__file__).resolve().parent / "results" / "inverse.json"
    dest.write_text(json.dumps(out, indent=2))
    print("wrote", dest)


if __name__ == "__main__":
    main()
