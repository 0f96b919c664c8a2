"""Batched AC power flow (PowerFlowLayer) vs a loop of pandapower ``runpp``, case118.

Run: .venv/bin/python benchmarks/bench_powerflow.py [--scenarios 1000] [--pp-subset 50]
     .venv/bin/python benchmarks/bench_powerflow.py --scale [bench_pf_scale.py options]
       (the transmission-scale table, case118 ... case9241pegase: see bench_pf_scale.py)

Inputs: N load scenarios, every pandapower load's P and Q scaled by its own factor drawn
uniformly in [0.9, 1.1] (seeded). gridlearn solves all N in one batched call (Newton–
Raphson, shared Jacobian by default; also timed with exact per-scenario Jacobians).
pandapower runs ``runpp`` (Newton–Raphson, tolerance_mva 1e-8 like ours, default init,
calculate_voltage_angles=True) once per scenario on a SUBSET of the scenarios (it is slow),
and its per-scenario time is extrapolated to N (stated in the JSON). Before any time is
reported, the subset's voltages are checked to agree (|Δvm| ≤ 1e-6 pu, |Δva| ≤ 1e-6 rad).
One intra-op thread for both (torch.set_num_threads(1)). Writes
benchmarks/results/powerflow.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gridlearn.grid import network_from_pandapower, PowerFlowLayer
from gridlearn.grid.cases import load_pandapower_net
from gridlearn.grid.pf_newton import NewtonRaphson

RESULTS = Path(__file__).resolve().parent / "results"


def case_arguments(pp_subset: int, derate: bool = False):
    """The options every per-case benchmark takes (case, scenarios, pandapower subset, seed), parsed.

    Also pins torch to one thread: the measured ratios are single-threaded on both sides.
    """
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="case118")
    ap.add_argument("--scenarios", type=int, default=1000)
    ap.add_argument("--pp-subset", type=int, default=pp_subset)
    if derate:
        ap.add_argument("--derate", type=float, default=1.0, help="scale every line's max_i_ka (congestion)")
    ap.add_argument("--seed", type=int, default=0)
    torch.set_num_threads(1)
    return ap.parse_args()


def scenarios(net, network, n: int, seed: int):
    """(load factors (n, n_load), pd_mw (n, n_bus), qd_mvar (n, n_bus)): every load scaled by ±10%."""
    rng = np.random.default_rng(seed)
    factors = 1 + 0.2 * (rng.random((n, len(net.load))) - 0.5)
    pos = {b: i for i, b in enumerate(network.bus.labels)}
    to_bus = np.zeros((len(net.load), network.n_bus))
    for k, b in enumerate(net.load.bus.values):
        to_bus[k, pos[int(b)]] = 1.0
    scale = net.load.scaling.values * net.load.in_service.values
    pd = network.bus.pd_mw.numpy() + ((factors - 1) * net.load.p_mw.values * scale) @ to_bus
    qd = network.bus.qd_mvar.numpy() + ((factors - 1) * net.load.q_mvar.values * scale) @ to_bus
    return factors, torch.from_numpy(pd), torch.from_numpy(qd)


def main() -> None:
    if "--scale" in sys.argv:
        import bench_pf_scale

        sys.argv = [a for a in sys.argv if a != "--scale"]
        bench_pf_scale.main()
        return
    a = case_arguments(pp_subset=50)
    import pandapower as pp

    net = load_pandapower_net(a.case)
    network = network_from_pandapower(net)
    factors, pd, qd = scenarios(net, network, a.scenarios, a.seed)

    timings = {}
    results = {}
    for mode in ("shared", "per_scenario"):
        layer = PowerFlowLayer(solver=NewtonRaphson(jacobian=mode))
        layer.solve(network, pd_mw=pd[:8], qd_mvar=qd[:8])  # warm-up
        t0 = time.perf_counter()
        sol = layer.solve(network, pd_mw=pd, qd_mvar=qd)
        timings[mode] = time.perf_counter() - t0
        if not sol.ok:
            raise SystemExit(f"gridlearn ({mode}) failed on scenarios {sol.failed_indices()[:10]}")
        results[mode] = sol

    p0, q0 = net.load.p_mw.values.copy(), net.load.q_mvar.values.copy()
    labels = list(network.bus.labels)
    worst_vm = worst_va = 0.0
    t_pp = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, calculate_voltage_angles=True)  # warm-up (numba compilation)
        for s in range(a.pp_subset):
            net.load["p_mw"] = p0 * factors[s]
            net.load["q_mvar"] = q0 * factors[s]
            t0 = time.perf_counter()
            pp.runpp(net, calculate_voltage_angles=True, tolerance_mva=1e-8)
            t_pp += time.perf_counter() - t0
            vm = net.res_bus.vm_pu.loc[labels].values
            va = np.deg2rad(net.res_bus.va_degree.loc[labels].values)
            for mode in results:
                worst_vm = max(worst_vm, float(np.abs(results[mode].value.vm_pu[s].numpy() - vm).max()))
                worst_va = max(worst_va, float(np.abs(results[mode].value.va_rad[s].numpy() - va).max()))
    if worst_vm > 1e-6 or worst_va > 1e-6:
        raise SystemExit(f"answers disagree: max |Δvm| {worst_vm:.3g} pu, max |Δva| {worst_va:.3g} rad")
    per_pp = t_pp / a.pp_subset
    pp_total = per_pp * a.scenarios
    out = {
        "case": a.case,
        "scenarios": a.scenarios,
        "load_factor_range": [0.9, 1.1],
        "threads": 1,
        "tolerance_mva": 1e-8,
        "agreement_checked_on": a.pp_subset,
        "max_abs_dvm_pu": worst_vm,
        "max_abs_dva_rad": worst_va,
        "gridlearn_s": {"shared_jacobian": timings["shared"], "per_scenario_jacobian": timings["per_scenario"]},
        "gridlearn_mean_steps": {m: float(r.steps.double().mean()) for m, r in results.items()},
        "pandapower_runpp_s_per_scenario": per_pp,
        "pandapower_runpp_s_total_extrapolated": pp_total,
        "pandapower_note": f"runpp timed on {a.pp_subset} scenarios in a loop, extrapolated linearly to {a.scenarios}",
        "speedup_shared": pp_total / timings["shared"],
        "speedup_per_scenario": pp_total / timings["per_scenario"],
        "torch": torch.__version__,
        "pandapower": pp.__version__,
        "machine": platform.platform(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "powerflow.json").write_text(json.dumps(out, indent=2))
    print(f"{a.case}, {a.scenarios} scenarios, 1 thread; answers agree (max |Δvm| {worst_vm:.1e} pu, |Δva| {worst_va:.1e} rad)")
    print(f"  gridlearn batched, shared Jacobian:   {timings['shared']:8.3f} s   ({pp_total / timings['shared']:6.1f}x faster)")
    print(f"  gridlearn batched, exact Jacobians:   {timings['per_scenario']:8.3f} s   ({pp_total / timings['per_scenario']:6.1f}x faster)")
    print(f"  pandapower runpp loop (extrapolated): {pp_total:8.3f} s   ({per_pp * 1e3:.1f} ms per scenario, from {a.pp_subset})")


if __name__ == "__main__":
    main()
