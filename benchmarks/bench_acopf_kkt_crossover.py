"""Where the batched AC-OPF interior point's sparse KKT path overtakes the dense one (issue 20):
the measurement behind `acopf_ipm.kkt.SPARSE_FROM_N` (``linear_solver="auto"``).

Run: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/bench_acopf_kkt_crossover.py
         [--cases case9 case14 case30 case118] [--batch 16] [--repeats 3] -> benchmarks/results/acopf_batched_kkt.json

Per case: the same B scenarios (`bench_acopf_batched.loads`, +-10% loads, seed 0) solved forward
(no gradient) with ``linear_solver="sparse"`` and ``"dense"`` in one process, interleaved
``--repeats`` times after a one-scenario warm-up of each; CPU seconds (process_time), minimum of
the repeats, one thread. Checks that both paths take the same iterations and statuses and that
their objectives agree (max relative difference).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import torch  # noqa: E402

from benchmarks.bench_acopf_batched import loads  # noqa: E402


def measure(case: str, batch: int, repeats: int) -> dict:
    from gridlearn.grid import load_case
    from gridlearn.grid.acopf_ipm import IPMOptions, solve_acopf_batched
    from gridlearn.grid.acopf_ipm.kkt import SPARSE_FROM_N

    net = load_case(case)
    pd, qd = loads(net, batch)
    opts = {k: IPMOptions(linear_solver=k) for k in ("sparse", "dense")}
    for o in opts.values():
        solve_acopf_batched(net, pd[:1], qd[:1], options=o)  # warm-up (numba load, first-call costs)
    times = {k: [] for k in opts}
    res = {}
    for _ in range(repeats):
        for k, o in opts.items():
            t = time.process_time()
            res[k] = solve_acopf_batched(net, pd, qd, options=o)
            times[k].append(time.process_time() - t)
    sp, de = res["sparse"], res["dense"]
    both = sp.converged & de.converged
    rel = ((sp.cost_usd_per_h - de.cost_usd_per_h).abs() / de.cost_usd_per_h.abs())[both]
    n_kkt = int(sp.warm["x"].shape[1]) + 2 * net.n_bus
    return {"case": case, "n_kkt": n_kkt, "batch": batch, "sparse_s": min(times["sparse"]), "dense_s": min(times["dense"]),
            "sparse_s_repeats": times["sparse"], "dense_s_repeats": times["dense"],
            "dense_over_sparse": min(times["dense"]) / min(times["sparse"]),
            "auto_chooses": "sparse" if n_kkt >= SPARSE_FROM_N else "dense",
            "same_iterations": bool((sp.iterations == de.iterations).all()),
            "same_statuses": [a.name for a in sp.status] == [a.name for a in de.status],
            "max_rel_objective": float(rel.max()) if rel.numel() else float("nan"),
            "load_avg_1min": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", default=["case9", "case14", "case30", "case118"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "acopf_batched_kkt.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for case in args.cases:
        rows.append(measure(case, args.batch, args.repeats))
        print(json.dumps({k: rows[-1][k] for k in ("case", "n_kkt", "sparse_s", "dense_s", "same_iterations",
                                                    "max_rel_objective", "load_avg_1min")}), flush=True)
    result = {"what": "crossover of IPMOptions(linear_solver='auto'): whole forward solve, dense vs sparse KKT path, "
                      f"same process, {args.batch} scenarios (+-10% loads, seed 0), CPU seconds, 1 thread, min of "
                      f"{args.repeats} interleaved repeats",
              "command": " ".join(["OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1", ".venv/bin/python",
                                   "benchmarks/bench_acopf_kkt_crossover.py", *sys.argv[1:]]),
              "rows": rows}
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
