"""Cost of the QP layer's contract (PSD check + objective scaling), in one process.

Run: .venv/bin/python benchmarks/bench_qp_contract.py
Writes benchmarks/results/qp_contract.json. Peers: `solve_qp` as shipped, and the same
call with the contract switched off (psd_mask -> all True, objective_scale -> 1), on the
same inputs, interleaved, one thread. Both peers' x are checked against Clarabel (via
cvxpy, tight tolerances) on the first 8 elements, and against each other (max |Δx| ≤ 1e-4,
as in bench_qp.py) before any time is reported. Times are medians of interleaved repeats on a shared,
loaded machine: read the ratio, not the seconds.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

import gridlearn.implicit.qp_backward as qb
from gridlearn.implicit import solve_qp

F64 = torch.float64
OUT = Path(__file__).resolve().parent / "results" / "qp_contract.json"
CASES = {  # name: (B, n, m, k, batched Q)
    "batched Q, n=10 m=20 B=64": (64, 10, 20, 1, True),
    "shared Q, n=60 m=120 B=256 (DC-OPF-like)": (256, 60, 120, 1, False),
    "batched Q, n=40 m=80 B=32": (32, 40, 80, 2, True),
}


def problem(B, n, m, k, batched, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(B if batched else 1, n, n, generator=g, dtype=F64)
    Q = M @ M.mT / n + 0.1 * torch.eye(n, dtype=F64)
    p = torch.randn(B, n, generator=g, dtype=F64)
    G = torch.randn(m, n, generator=g, dtype=F64)
    h = torch.rand(B, m, generator=g, dtype=F64) + 0.1
    A = torch.randn(k, n, generator=g, dtype=F64)
    b = torch.zeros(k, dtype=F64)
    return Q if batched else Q[0], p.requires_grad_(True), G, h, A, b


def clarabel(args, count):
    import cvxpy as cp

    Q, p, G, h, A, b = (t.detach().numpy() for t in args)
    out = []
    for i in range(count):
        Qi = Q[i] if Q.ndim == 3 else Q
        x = cp.Variable(Qi.shape[0])
        prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, cp.psd_wrap(Qi)) + p[i] @ x), [G @ x <= h[i], A @ x == b])
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        out.append(torch.as_tensor(x.value))
    return torch.stack(out)


def run(args, backward):
    t = time.perf_counter()
    sol = solve_qp(*args)
    if backward:
        sol.value.sum().backward()
    return time.perf_counter() - t, sol


def main(repeats: int = 7):
    torch.set_num_threads(1)
    shipped = (qb.psd_mask, qb.objective_scale)
    off = (lambda Q: torch.ones(Q.shape[0], dtype=torch.bool), lambda Q, p: torch.ones(Q.shape[0], dtype=Q.dtype))
    rows = []
    for name, shape in CASES.items():
        args = problem(*shape)
        times = {"contract": [], "no_contract": []}
        xs = {}
        for _ in range(repeats):
            for peer, fns in (("contract", shipped), ("no_contract", off)):
                qb.psd_mask, qb.objective_scale = fns
                args[1].grad = None
                dt, sol = run(args, backward=True)
                assert sol.ok, (peer, sol.statuses)
                times[peer].append(dt)
                xs[peer] = sol.value.detach()
        qb.psd_mask, qb.objective_scale = shipped
        dx = float((xs["contract"] - xs["no_contract"]).abs().max())
        assert dx <= 1e-4, f"{name}: answers disagree by {dx:.2e}"
        ref = clarabel(args, 8)
        err = {k: float((v[:8] - ref).abs().max()) for k, v in xs.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"case": name, "forward_backward_s": med, "ratio_contract_over_off": med["contract"] / med["no_contract"],
                     "max_abs_dx": dx, "max_abs_err_vs_clarabel_first8": err})
        print(f"{name:45s} contract {med['contract']*1e3:8.1f} ms   off {med['no_contract']*1e3:8.1f} ms   "
              f"ratio {rows[-1]['ratio_contract_over_off']:.2f}   |dx| {dx:.1e}   err vs Clarabel {err}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"rows": rows, "repeats": repeats, "threads": 1, "torch": torch.__version__,
                               "python": platform.python_version()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
