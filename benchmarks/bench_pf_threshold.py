"""Where the sparse power flow path overtakes the dense one: sets `pf_newton.SPARSE_MIN_BUS`.

Run: .venv/bin/python benchmarks/bench_pf_threshold.py [--cases case30,case57,case118,case300]

Same process, one thread, the same load scenarios (`bench_powerflow.scenarios`, ±10%):
``PowerFlowLayer`` with ``backend="dense"`` and ``backend="sparse"`` (default shared
Jacobian) for batches of 1, 10 and 100, best of 3, forward only and forward + backward
(∂Σvm/∂pd through the IFT); answers compared (max |Δvm| between the two). Writes benchmarks/results/powerflow_threshold.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_powerflow import scenarios  # noqa: E402

from gridlearn.grid import network_from_pandapower, PowerFlowLayer  # noqa: E402
from gridlearn.grid.cases import load_pandapower_net  # noqa: E402
from gridlearn.grid.pf_newton import NewtonRaphson  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="case30,case57,case118,case300,case1354pegase")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for case in a.cases.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = load_pandapower_net(case)
            network = network_from_pandapower(net)
        _, pd, qd = scenarios(net, network, 100, a.seed)
        for b in (1, 10, 100):
            t, sols, tb = {}, {}, {}
            for backend in ("dense", "sparse"):
                if backend == "dense" and network.n_bus > 1000 and b > 1:
                    continue  # minutes per call (issue #18's table); one scenario shows the trend
                layer = PowerFlowLayer(solver=NewtonRaphson(backend=backend))
                layer.solve(network, pd_mw=pd[:1], qd_mvar=qd[:1])
                best = float("inf")
                for _ in range(3 if network.n_bus < 1000 else 1):
                    t0 = time.perf_counter()
                    sols[backend] = layer.solve(network, pd_mw=pd[:b], qd_mvar=qd[:b])
                    best = min(best, time.perf_counter() - t0)
                t[backend] = best
                best = float("inf")
                for _ in range(3 if network.n_bus < 1000 else 1):
                    x = pd[:b].clone().requires_grad_()
                    t0 = time.perf_counter()
                    layer(network, pd_mw=x, qd_mvar=qd[:b]).vm_pu.sum().backward()
                    best = min(best, time.perf_counter() - t0)
                tb[backend] = best
            dvm = (float((sols["dense"].value.vm_pu - sols["sparse"].value.vm_pu).abs().max())
                   if "dense" in sols else None)
            row = {"case": case, "n_bus": network.n_bus, "batch": b, "dense_s": t.get("dense"), "sparse_s": t["sparse"],
                   "dense_over_sparse": (t["dense"] / t["sparse"]) if "dense" in t else None, "max_dvm_pu": dvm,
                   "dense_fwd_bwd_s": tb.get("dense"), "sparse_fwd_bwd_s": tb["sparse"],
                   "dense_over_sparse_fwd_bwd": (tb["dense"] / tb["sparse"]) if "dense" in tb else None}
            rows.append(row)
            print(f"{case:15s} n={network.n_bus:5d} B={b:3d}: dense {t.get('dense', float('nan')):7.3f} s, "
                  f"sparse {t['sparse']:7.3f} s, dense/sparse {row['dense_over_sparse'] or float('nan'):5.2f}; fwd+bwd dense "
                  f"{tb.get('dense', float('nan')):7.3f} s, sparse {tb['sparse']:7.3f} s, "
                  f"dense/sparse {row['dense_over_sparse_fwd_bwd'] or float('nan'):5.2f}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "powerflow_threshold.json").write_text(json.dumps({"rows": rows, "threads": 1}, indent=2))


if __name__ == "__main__":
    main()
