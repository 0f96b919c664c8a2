"""Accuracy of the torch AC-OPF interior point's backward against the Ipopt layer (issue 20).

Run: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/check_acopf_ipm_backward.py
         [--cases case30 case9 ...] [--scenarios 20] [--fd-scenarios 3]
         -> benchmarks/results/acopf_ipm_backward.json

Scenarios: those of `check_acopf_ipm_corpus.py` (pd, then qd, U(0.9, 1.1), seed 0), the first
``--scenarios`` of them. Loss ``sum(pg_mw * w_pg) + sum(lmp_usd_per_mwh * w_lmp)`` (w seeded
normal, one row per scenario); gradient with respect to pd by:

- the reference: `ACOPFLayer` (Ipopt, ``tol`` ``--ipopt-tol``, ``bound_relax_factor=0``), its active-set
  KKT backward, one call per scenario (a scenario it refuses, `SolverFailure`/`InfeasibleError`, is
  counted, not compared); also the gap to the same layer with Ipopt's default bound relaxation (1e-8);
- the torch interior point, sparse and dense KKT paths, one batched `solve_acopf_batched` call each
  (``retry_flat=False``; a refused scenario: NaN gradient, counted).

Where the Ipopt layer refuses a case (piecewise-linear or reactive costs: its backward does not model
them) and for every case besides, a second reference: the envelope theorem, ``d cost* / d pd_mw`` of the
torch solve against Ipopt's own p-balance multipliers (``lmp_usd_per_mwh`` of `solve_acopf`,
``backend="direct"``, the same tolerance, ``bound_relax_factor=0``), one solve per scenario.

Per scenario: ``max |g - ref| / max |ref|``. On the first ``--fd-scenarios`` scenarios also central
differences of re-solves (the torch interior point at tol 1e-11, step ``--fd-step`` MW along three
seeded random directions) against both gradients. All in one process, the same scenarios.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_CASES = ("case9", "case30", "case_ieee30", "case39", "case57", "case118", "pglib_opf_case30_ieee",
                 "pglib_opf_case57_ieee", "pglib_opf_case118_ieee")


def corpus_loads(net, batch: int = 100):
    """`check_acopf_ipm_corpus.py`'s scenarios (pd, then qd, U(0.9, 1.1), seed 0)."""
    g = torch.Generator().manual_seed(0)
    pd = net.bus.pd_mw * (1 + 0.1 * (2 * torch.rand(batch, net.n_bus, generator=g, dtype=torch.float64) - 1))
    qd = net.bus.qd_mvar * (1 + 0.1 * (2 * torch.rand(batch, net.n_bus, generator=g, dtype=torch.float64) - 1))
    return pd, qd


def loss_weights(net, n: int):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, net.n_gen, generator=g, dtype=torch.float64),
            torch.randn(n, net.n_bus, generator=g, dtype=torch.float64))


def gap(g: torch.Tensor, ref: torch.Tensor) -> float | None:
    if not bool(torch.isfinite(g).all()):
        return None
    return float((g - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def run_case(name: str, n: int, n_fd: int, ipopt_tol: float, fd_step: float) -> dict:
    from gridlearn.errors import ConfigError
    from gridlearn.grid import ACOPFLayer, load_case
    from gridlearn.grid.acopf import solve_acopf
    from gridlearn.grid.acopf_ipm import IPMOptions, solve_acopf_batched

    net = load_case(name)
    pd, qd = corpus_loads(net, max(100, n))
    pd, qd = pd[:n], qd[:n]
    w_pg, w_lmp = loss_weights(net, n)
    rows = [{"scenario": b} for b in range(n)]
    refs: dict[int, torch.Tensor] = {}
    relaxed: dict[int, torch.Tensor] = {}
    t0 = time.perf_counter()
    # The reference solves the problem as stated: Ipopt's default bound_relax_factor (1e-8) moves every
    # bound and limit outwards, which on case30 moves the gradient by up to 1e-5 relative.
    for key, opts, store in (("reference", {"tol": ipopt_tol, "bound_relax_factor": 0.0}, refs),
                             ("reference_relaxed", {"tol": ipopt_tol}, relaxed)):
        try:
            layer = ACOPFLayer(net, ipopt_options=opts)
        except ConfigError as exc:  # costs the Ipopt layer's backward does not model: no layer reference
            for row in rows:
                row[key] = f"ConfigError: {str(exc)[:120]}"
            continue
        for b in range(n):
            x = pd[[b]].clone().requires_grad_()
            try:
                out = layer(x, qd[[b]])
                ((out.pg_mw * w_pg[[b]]).sum() + (out.lmp_usd_per_mwh * w_lmp[[b]]).sum()).backward()
            except Exception as exc:  # noqa: BLE001 - a scenario the reference refuses has no reference
                rows[b][key] = f"{type(exc).__name__}: {str(exc)[:120]}"
                continue
            store[b] = x.grad[0]
    lmps: dict[int, torch.Tensor] = {}
    for b in range(n):
        try:
            ref = solve_acopf(net.with_(pd_mw=pd[b], qd_mvar=qd[b]), backend="direct", tol=ipopt_tol,
                              bound_relax_factor=0.0)
        except Exception as exc:  # noqa: BLE001 - a scenario Ipopt does not solve has no envelope reference
            rows[b]["envelope_reference"] = f"{type(exc).__name__}: {str(exc)[:120]}"
            continue
        lmps[b] = torch.as_tensor(ref.lmp_usd_per_mwh, dtype=torch.float64)
    t_ref = time.perf_counter() - t0
    grads, times = {}, {}
    for ls in ("sparse", "dense"):
        x = pd.clone().requires_grad_()
        t0 = time.perf_counter()
        r = solve_acopf_batched(net, x, qd, options=IPMOptions(linear_solver=ls, retry_flat=False))
        t1 = time.perf_counter()
        ((r.pg_mw * w_pg).sum() + (r.lmp_usd_per_mwh * w_lmp).sum()).backward(retain_graph=True)
        times[ls] = {"forward_s": t1 - t0, "backward_s": time.perf_counter() - t1}
        grads[ls] = x.grad
        (g_cost,) = torch.autograd.grad(r.cost_usd_per_h.sum(), x)
        for b in range(n):
            if b in lmps:
                rows[b][f"{ls}_envelope"] = gap(g_cost[b], lmps[b])
            rows[b][f"{ls}_status"] = r.status[b].name
            rows[b][f"{ls}_weakly_active"] = bool(r.weakly_active[b])
            if b in refs:
                rows[b][ls] = gap(x.grad[b], refs[b])
            if b in relaxed:
                rows[b][f"{ls}_vs_relaxed"] = gap(x.grad[b], relaxed[b])
    fd_rows = []
    if n_fd:
        fd_opts = IPMOptions(tol=1e-11, retry_flat=False)
        k = min(n_fd, n)
        dirs = torch.randn(3, k, net.n_bus, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        for j in range(3):
            dpd = dirs[j] * fd_step
            f = []
            for sgn in (1.0, -1.0):
                r = solve_acopf_batched(net, pd[:k] + sgn * dpd, qd[:k], options=fd_opts)
                f.append((r.pg_mw * w_pg[:k]).sum(-1) + (r.lmp_usd_per_mwh * w_lmp[:k]).sum(-1))
            fd = (f[0] - f[1]) / (2 * fd_step)
            for b in range(k):
                row = {"scenario": b, "direction": j, "fd": float(fd[b])}
                for label, g in (("ipopt", refs.get(b)), ("sparse", grads["sparse"][b]), ("dense", grads["dense"][b])):
                    dd = None if g is None else float((g * dirs[j, b]).sum())
                    # None: no gradient, or a re-solve that did not converge (NaN difference)
                    row[label] = (None if dd is None or dd != dd or not bool(torch.isfinite(fd[b]))
                                  else abs(dd - float(fd[b])) / max(abs(float(fd[b])), 1e-300))
                fd_rows.append(row)
    compared = [r for r in rows if "reference" not in r]
    summary = {"scenarios": n, "reference_refused": n - len(compared), "reference_time_s": t_ref, "times": times}
    for ls in ("sparse", "dense"):
        vals = [r[ls] for r in compared if r.get(ls) is not None]
        summary[ls] = {"refused": sum(r.get(ls) is None for r in compared),
                       "not_converged_where_reference_refused": sum(r[f"{ls}_status"] != "CONVERGED" for r in rows if "reference" in r),
                       "max_gap": max(vals, default=None),
                       "median_gap": sorted(vals)[len(vals) // 2] if vals else None,
                       "over_1e-5": sum(v > 1e-5 for v in vals),
                       "max_gap_vs_relaxed": max((r[f"{ls}_vs_relaxed"] for r in rows
                                                  if r.get(f"{ls}_vs_relaxed") is not None), default=None),
                       "envelope_compared": sum(r.get(f"{ls}_envelope") is not None for r in rows),
                       "envelope_max_gap": max((r[f"{ls}_envelope"] for r in rows
                                                if r.get(f"{ls}_envelope") is not None), default=None)}
    if fd_rows:
        summary["fd_max_rel"] = {k: max((r[k] for r in fd_rows if r[k] is not None), default=None)
                                 for k in ("ipopt", "sparse", "dense")}
    return {"case": name, "summary": summary, "rows": rows, "fd": fd_rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES))
    ap.add_argument("--scenarios", type=int, default=20)
    ap.add_argument("--fd-scenarios", type=int, default=3)
    ap.add_argument("--fd-step", type=float, default=1e-3)
    ap.add_argument("--ipopt-tol", type=float, default=1e-11)
    ap.add_argument("--active-rho", type=float, help="override solve.ACTIVE_RHO (the penalty weight's measurement)")
    ap.add_argument("--out", default=str(HERE / "results" / "acopf_ipm_backward.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from gridlearn.grid.acopf_ipm import solve as ipm_solve

    if args.active_rho is not None:
        ipm_solve.ACTIVE_RHO = args.active_rho
    out = {"command": "OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/check_acopf_ipm_backward.py "
                      f"--cases {' '.join(args.cases)} --scenarios {args.scenarios} --fd-scenarios {args.fd_scenarios} "
                      f"--fd-step {args.fd_step} --ipopt-tol {args.ipopt_tol}"
                      + (f" --active-rho {args.active_rho:g}" if args.active_rho is not None else ""),
           "active_rho": getattr(ipm_solve, "ACTIVE_RHO", None), "backward_rtol": ipm_solve.BACKWARD_RTOL,
           "machine": platform.processor() or platform.machine(), "cases": []}
    for name in args.cases:
        res = run_case(name, args.scenarios, args.fd_scenarios, args.ipopt_tol, args.fd_step)
        out["cases"].append(res)
        print(name, json.dumps(res["summary"]), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
