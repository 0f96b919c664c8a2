"""The restoration certificate never calls a feasible scenario infeasible (issue 20): forced on early iterates.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_acopf_ipm_certificate.py [--scenarios 100]
         [--steps 1 3 10] -> benchmarks/results/acopf_ipm_certificate.json

Cases: every corpus case whose 100 corpus scenarios (+-10% per bus, seed 0, as `check_acopf_ipm_corpus.py`)
Ipopt solved, all of them, per the committed ``acopf_ipm_corpus.json`` (``--max-bus`` buses at most). Each
scenario is feasible. The torch interior point is stopped after ``--steps`` iterations
(``IPMOptions(max_iter=k, retry_flat=False, linear_solver="dense")``), so nearly every scenario ends
MAX_STEPS and `acopf_ipm.restoration` runs from an iterate far from the optimum. An INFEASIBLE status
here is a false claim. Per case and k: the status counts, the certificate's runs, and the largest
least violation and smallest stationarity it reached (the latter against its tolerance 1e-7).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenarios", type=int, default=100)
    ap.add_argument("--steps", type=int, nargs="*", default=[1, 3, 10])
    ap.add_argument("--max-bus", type=int, default=200)
    ap.add_argument("--out", default=str(HERE / "results" / "acopf_ipm_certificate.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from gridlearn.grid import load_case
    from gridlearn.grid.acopf_ipm import IPMOptions, solve_acopf_batched

    corpus = json.loads((HERE / "results" / "acopf_ipm_corpus.json").read_text())["rows"]
    cases = [r["case"] for r in corpus if r["ipopt_converged"] == r["compared"] == r["scenarios"] == 100
             and r["n_bus"] <= args.max_bus]
    rows = []
    for name in cases:
        net = load_case(name)
        g = torch.Generator().manual_seed(0)
        B = 100
        pd = net.bus.pd_mw * (1 + 0.1 * (2 * torch.rand(B, net.n_bus, generator=g, dtype=torch.float64) - 1))
        qd = net.bus.qd_mvar * (1 + 0.1 * (2 * torch.rand(B, net.n_bus, generator=g, dtype=torch.float64) - 1))
        pd, qd = pd[: args.scenarios], qd[: args.scenarios]
        for k in args.steps:
            t = time.process_time()
            res = solve_acopf_batched(net, pd, qd, options=IPMOptions(max_iter=k, retry_flat=False,
                                                                      linear_solver="dense"))
            ran = ~torch.isnan(res.residuals["least_violation"])
            lv, ks = res.residuals["least_violation"][ran], res.residuals["infeasibility_stationarity"][ran]
            row = {"case": name, "n_bus": net.n_bus, "steps": k,
                   "statuses": {s: sum(x.name == s for x in res.status) for s in {x.name for x in res.status}},
                   "certificate_ran": int(ran.sum()),
                   "false_infeasible": sum(x.name == "INFEASIBLE" for x in res.status),
                   "max_least_violation": float(lv.max()) if lv.numel() else None,
                   "min_stationarity_where_violation_above_tol": float(ks[lv > 1e-4].min()) if (lv > 1e-4).any()
                   else None, "torch_s": time.process_time() - t}
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_acopf_ipm_certificate.py "
                   f"--scenarios {args.scenarios} --steps {' '.join(map(str, args.steps))} --max-bus {args.max_bus}",
        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
