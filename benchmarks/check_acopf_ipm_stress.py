"""Statuses of the torch AC-OPF interior point against Ipopt's near the feasibility boundary (issue 20).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_acopf_ipm_stress.py [--cases case30 case39 ...]
         [--scenarios 40] [--low 1.0] [--high 1.8] [--seed 7] -> benchmarks/results/acopf_ipm_stress.json

The corpus check (`check_acopf_ipm_corpus.py`) draws +-10% around each case's own load, where most cases
are comfortably feasible. Here every scenario scales the whole load (pd and qd) by one factor drawn
uniformly from [--low, --high], times +-5% per bus: many scenarios lie near the edge of feasibility,
where the iteration is most often left undecided (MAX_STEPS) and `acopf_ipm.restoration`'s certificate
decides. Ours: one `solve_acopf_batched` call per case (default options). Reference:
``solve_acopf(backend="direct", tol=1e-9)`` per scenario (InfeasibleError: INFEASIBLE; another
failure: FAILED). Per case: the table of (torch, Ipopt) status pairs, the scenarios the certificate
ran on and those it called INFEASIBLE, and every disagreement. A CONVERGED or INFEASIBLE torch status
against the other one from Ipopt is a wrong claim (``wrong_claims``); MAX_STEPS or NUMERICAL is a
failure reported as such.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=["case30", "case39", "case57", "case89pegase", "case118"])
    ap.add_argument("--scenarios", type=int, default=40)
    ap.add_argument("--low", type=float, default=1.0)
    ap.add_argument("--high", type=float, default=1.8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "results" / "acopf_ipm_stress.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from gridlearn.errors import InfeasibleError, SolverFailure
    from gridlearn.grid import load_case
    from gridlearn.grid.acopf import solve_acopf
    from gridlearn.grid.acopf_ipm import solve_acopf_batched

    rows = []
    for name in args.cases:
        net = load_case(name)
        g = torch.Generator().manual_seed(args.seed)
        B = args.scenarios
        k = args.low + (args.high - args.low) * torch.rand(B, 1, generator=g, dtype=torch.float64)
        noise = 1 + 0.05 * (2 * torch.rand(B, net.n_bus, generator=g, dtype=torch.float64) - 1)
        pd, qd = net.bus.pd_mw * k * noise, net.bus.qd_mvar * k * noise
        t = time.process_time()
        res = solve_acopf_batched(net, pd, qd)
        ours_s = time.process_time() - t
        restored = ~torch.isnan(res.residuals["least_violation"])
        pairs, disagree, wrong = Counter(), [], 0
        t0 = time.process_time()
        for b in range(B):
            mine = res.status[b].name
            try:
                solve_acopf(net.with_(pd_mw=pd[b], qd_mvar=qd[b]), backend="direct", tol=1e-9)
                ref = "CONVERGED"
            except InfeasibleError:
                ref = "INFEASIBLE"
            except SolverFailure:
                ref = "FAILED"
            pairs[f"{mine}/{ref}"] += 1
            claim = mine in ("CONVERGED", "INFEASIBLE")
            if mine != ref and not (ref == "FAILED" and mine != "CONVERGED"):
                wrong += claim and ref != "FAILED"
                disagree.append({"scenario": b, "load_factor": float(k[b]), "torch": mine, "ipopt": ref,
                                 "certificate_ran": bool(restored[b]),
                                 "least_violation": float(res.residuals["least_violation"][b]),
                                 "infeasibility_stationarity": float(res.residuals["infeasibility_stationarity"][b])})
        row = {"case": name, "n_bus": net.n_bus, "scenarios": B, "pairs_torch_over_ipopt": dict(pairs),
               "certificate_ran": int(restored.sum()),
               "certificate_infeasible": sum(bool(restored[b]) and res.status[b].name == "INFEASIBLE" for b in range(B)),
               "wrong_claims": wrong, "disagreements": disagree, "torch_s": ours_s,
               "ipopt_s": time.process_time() - t0}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_acopf_ipm_stress.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()
            if k != "out"),
        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
