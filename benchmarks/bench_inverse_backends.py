"""`recover` with InverseSolver(backend="ipopt") against backend="torch", side by side in one process.

The inverse study's part D setting (`studies/inverse_acopf.py`, `Config`): per case, one set of
noise-free observations (p_g and every LMP, `Config.sweep_samples` hours of the adaptive load
design, simulated by Ipopt), priors at +-`Config.sweep_spread` (the study's draws, seeds
``seed + 1000 + d``), all cost coefficients unknown. Each draw is fitted by both backends,
in alternating order, with the study's default start (``init="auto"``) and with the gradient
method alone from the prior (``init="prior"``, one start: many more AC-OPF evaluations). Per
fit: status, start kept, iterations, loss evaluations, hours left out, final loss, the largest
relative error of a coefficient against the truth, wall time; per pair: the largest relative
difference between the two backends' recovered coefficients (coefficients with a nonzero
true value; a zero one, PGLib's c2 = 0, by its absolute difference) and whether both flag
the same coefficients identifiable.

Also, at the true costs of each case, the Jacobian of the weighted residuals three ways: the
Ipopt path's forward-mode sparse KKT sensitivity (`sensitivity.observation_jacobian`, one sparse
LU per sample), the same at the torch solutions (``torch_jacobian="kkt"``, the torch default) and
the batched reverse passes (``"reverse"``, `inverse.batched.reverse_jacobian`, one pass of the
layer's backward per residual column), their agreement and times; and the forward of every
sample (cold, and warm from the same point) each way.

Threads: one (torch.set_num_threads(1), OMP_NUM_THREADS=1, NUMBA_NUM_THREADS=1; Ipopt's MUMPS is
single-threaded). numba compiles (or loads its cache) on first use: a warm-up fit on case9 runs
first, untimed. A 2-core machine shared with other jobs: ratios matter more than seconds.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/bench_inverse_backends.py \\
        [--cases case14 case30 pglib_opf_case57_ieee] [--draws 3] [--inits auto prior]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # before numba loads (see gridlearn.inverse.batched)

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _results import write_result  # noqa: E402

BACKENDS = ("ipopt", "torch")


def coefficient_difference(a, b) -> float:
    """Largest relative difference of two fits' recovered coefficients (absolute where the truth is 0)."""
    true = a["true"].to_numpy()
    va, vb = a["value"].to_numpy(), b["value"].to_numpy()
    nz = np.abs(true) > 0
    rel = np.abs(va - vb)[nz] / np.abs(true[nz])
    ab = np.abs(va - vb)[~nz]
    return float(max(rel.max(initial=0.0), ab.max(initial=0.0)))


def fit_row(res, seconds: float) -> dict:
    df = res.parameters
    nz = df["true"].abs() > 0
    rel = ((df["value"] - df["true"]).abs() / df["true"].abs())[nz]
    flagged = df["identifiable"].astype(bool)
    return {"status": res.status.value, "start": res.start, "n_starts": len(res.starts), "iterations": res.iterations,
            "n_forward": int(res.timings.get("n_forward", 0)), "forward_s": res.timings.get("forward_s", np.nan),
            "jacobian_s": res.timings.get("jacobian_s", np.nan), "final_loss": res.final_loss,
            "hours_left_out": list(res.hours_left_out), "n_flagged": int(flagged.sum()),
            "max_rel_err": float(rel.max()) if len(rel) else np.nan,
            "max_rel_err_flagged": float(rel[flagged[nz]].max()) if bool(flagged[nz].any()) else np.nan,
            "time_s": seconds, "message": res.message[:300]}


def jacobian_check(net, obs, unknowns) -> dict:
    """At the true costs: forward both ways (cold, warm), Jacobian both ways, agreement and times."""
    from gridlearn.inverse import InverseSolver
    from gridlearn.inverse.params import current_values
    from gridlearn.inverse.recovery import InverseProblem

    theta = current_values(net, unknowns)
    out = {}
    jacs = {}
    variants = {"ipopt": InverseSolver(), "torch": InverseSolver(backend="torch"),
                "torch_reverse": InverseSolver(backend="torch", torch_jacobian="reverse")}
    methods = {"ipopt": "forward-mode sparse KKT sensitivity at the Ipopt solutions, one sparse LU per sample",
               "torch": "the same sensitivity at the torch solutions (torch_jacobian='kkt', the default)",
               "torch_reverse": "one batched reverse pass of the layer's backward per residual column"}
    for backend, solver in variants.items():
        problem = InverseProblem(net, obs, unknowns, (1.0, 100.0), solver)
        t0 = time.perf_counter()
        loss, _, r, results = problem.loss(theta, grad=False)
        t1 = time.perf_counter()
        problem.accept(results)
        _, _, r_warm, results_warm = problem.loss(theta, grad=False)
        t2 = time.perf_counter()
        jac = problem.jacobian(theta, results_warm)
        t3 = time.perf_counter()
        jacs[backend] = jac
        out[backend] = {"loss_at_truth": loss, "forward_cold_s": t1 - t0, "forward_warm_s": t2 - t1,
                        "jacobian_s": t3 - t2, "jacobian_method": methods[backend],
                        "n_residual_columns": int(r.shape[1]), "n_unknowns": len(unknowns),
                        "samples_without_derivative": int((~torch.isfinite(jac).all(dim=(1, 2))).sum())}
    for k in ("torch", "torch_reverse"):
        both = torch.isfinite(jacs["ipopt"]).all(dim=(1, 2)) & torch.isfinite(jacs[k]).all(dim=(1, 2))
        ji, jt = jacs["ipopt"][both], jacs[k][both]
        out[k]["jacobian_max_abs_diff_over_max_abs_vs_ipopt"] = float(
            (ji - jt).abs().max() / ji.abs().max().clamp_min(1e-300)) if bool(both.any()) else np.nan
        out[k]["jacobian_samples_compared"] = int(both.sum())
    out["forward_warm_ratio_ipopt_over_torch"] = out["ipopt"]["forward_warm_s"] / out["torch"]["forward_warm_s"]
    out["jacobian_ratio_torch_over_ipopt"] = out["torch"]["jacobian_s"] / out["ipopt"]["jacobian_s"]
    out["jacobian_ratio_reverse_over_kkt"] = out["torch_reverse"]["jacobian_s"] / out["torch"]["jacobian_s"]
    return out


def main() -> None:
    import studies.inverse_acopf as study
    from gridlearn.grid import load_case
    from gridlearn.inverse import InverseSolver, recover, simulate_market
    from gridlearn.inverse.params import cost_unknowns

    cfg = study.Config()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["case14", "case30", "pglib_opf_case57_ieee"])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--inits", nargs="+", default=["auto", "prior"])
    ap.add_argument("--samples", type=int, default=cfg.sweep_samples)
    ap.add_argument("--out", default="inverse_backends.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    # warm-up, untimed: numba compiles or loads its cache, Ipopt loads
    net9 = load_case("case9")
    obs9 = simulate_market(net9, 3, seed=0)
    for backend in BACKENDS:
        for init in ("auto", "prior"):
            recover(net9, obs9, "costs", solver=InverseSolver(backend=backend, init=init, n_starts=1, max_iter=2))

    cases = {}
    t_all = time.perf_counter()
    for case in args.cases:
        net = load_case(case)
        obs = simulate_market(net, args.samples, seed=cfg.seed, ipopt_tol=1e-9, **study._design(cfg))
        unk = cost_unknowns(net)
        entry = {"n_samples": obs.n_samples, "n_bus": net.n_bus, "n_gen": net.n_gen, "n_unknowns": len(unk),
                 "jacobian_at_truth": jacobian_check(net, obs, unk), "fits": []}
        for init in args.inits:
            for d in range(args.draws):
                prior = study._prior(net, unk, cfg.sweep_spread, cfg.seed + 1000 + d)
                order = BACKENDS if d % 2 == 0 else BACKENDS[::-1]  # alternate: neither always runs first
                fits = {}
                for backend in order:
                    solver = InverseSolver(init=init, n_starts=1 if init == "prior" else InverseSolver().n_starts,
                                           max_iter=cfg.max_iter, backend=backend)
                    t0 = time.perf_counter()
                    res = recover(prior, obs, "costs", weights=(1.0, 100.0), solver=solver, truth=net)
                    fits[backend] = (res, time.perf_counter() - t0)
                (ri, ti), (rt, tt) = fits["ipopt"], fits["torch"]
                row = {"init": init, "draw": d, "ipopt": fit_row(ri, ti), "torch": fit_row(rt, tt),
                       "same_status": ri.status is rt.status,
                       "max_coefficient_difference": coefficient_difference(ri.parameters, rt.parameters),
                       "same_flags": bool((ri.parameters["identifiable"] == rt.parameters["identifiable"]).all()),
                       "time_ratio_ipopt_over_torch": ti / tt}
                entry["fits"].append(row)
                print(f"{case} {init} draw {d}: ipopt {row['ipopt']['status']} {ti:.2f}s it {ri.iterations}, "
                      f"torch {row['torch']['status']} {tt:.2f}s it {rt.iterations}, "
                      f"coef diff {row['max_coefficient_difference']:.2e}, ratio {ti / tt:.2f}", flush=True)
        fits = entry["fits"]
        entry["summary"] = {init: {
            "fits": sum(f["init"] == init for f in fits),
            "converged_ipopt": sum(f["ipopt"]["status"] == "converged" for f in fits if f["init"] == init),
            "converged_torch": sum(f["torch"]["status"] == "converged" for f in fits if f["init"] == init),
            "same_status": sum(f["same_status"] for f in fits if f["init"] == init),
            "same_flags": sum(f["same_flags"] for f in fits if f["init"] == init),
            "max_coefficient_difference": max(f["max_coefficient_difference"] for f in fits if f["init"] == init),
            "total_time_ipopt_s": sum(f["ipopt"]["time_s"] for f in fits if f["init"] == init),
            "total_time_torch_s": sum(f["torch"]["time_s"] for f in fits if f["init"] == init),
            "iterations_ipopt": [f["ipopt"]["iterations"] for f in fits if f["init"] == init],
            "iterations_torch": [f["torch"]["iterations"] for f in fits if f["init"] == init],
        } for init in args.inits}
        for s in entry["summary"].values():
            s["time_ratio_ipopt_over_torch"] = s["total_time_ipopt_s"] / s["total_time_torch_s"]
        cases[case] = entry
    write_result(args.out, "bench_inverse_backends", peer="recover(backend='ipopt') in the same process",
                 note="one thread (OMP/NUMBA/torch); a 2-core machine shared with other jobs; times are wall seconds",
                 command="OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/bench_inverse_backends.py "
                         + " ".join(sys.argv[1:]),
                 numba_num_threads=os.environ.get("NUMBA_NUM_THREADS"), load_average=list(os.getloadavg()),
                 total_s=time.perf_counter() - t_all, cases=cases)


if __name__ == "__main__":
    main()
