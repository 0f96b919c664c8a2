"""Batched DC-OPF (DCOPFLayer) vs a loop of pandapower ``rundcopp``, case118.

Run: .venv/bin/python benchmarks/bench_dcopf.py [--scenarios 1000] [--pp-subset 30] [--derate 1.0]

Inputs: N load scenarios, every pandapower load's P scaled by its own factor drawn
uniformly in [0.9, 1.1] (seeded); ``--derate`` < 1 scales every line's max_i_ka to make
the case congested. gridlearn solves all N in one batched QP (PTDF form, interior point,
tol 1e-11). pandapower runs ``rundcopp`` (PIPS) once per scenario on a SUBSET of the
scenarios (it is slow) and its per-scenario time is extrapolated to N (stated in the
JSON). Before any time is reported the subset's objective (rel 1e-6), dispatch (1e-5 MW)
and LMPs (1e-5 $/MWh) are checked to agree. One intra-op thread for both
(torch.set_num_threads(1)). Writes benchmarks/results/dcopf.json.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench_powerflow import case_arguments, scenarios
from gridlearn.grid import DCOPFLayer, network_from_pandapower
from gridlearn.grid.cases import load_pandapower_net

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    a = case_arguments(pp_subset=30, derate=True)
    import pandapower as pp

    net = load_pandapower_net(a.case)
    net.line["max_i_ka"] *= a.derate
    network = network_from_pandapower(net)
    factors, pd, _ = scenarios(net, network, a.scenarios, a.seed)

    layer = DCOPFLayer()
    layer.solve(network, pd_mw=pd[:8])  # warm-up
    t0 = time.perf_counter()
    sol = layer.solve(network, pd_mw=pd)
    t_ours = time.perf_counter() - t0
    if not sol.ok:
        raise SystemExit(f"gridlearn failed on scenarios {sol.failed_indices()[:10]}: {sol.statuses[sol.failed_indices()[0]]}")
    res = sol.value

    p0 = net.load.p_mw.values.copy()
    labels = list(network.bus.labels)
    worst = {"objective_rel": 0.0, "pg_mw": 0.0, "lmp_usd_per_mwh": 0.0}
    t_pp = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.rundcopp(net)  # warm-up
        for s in range(a.pp_subset):
            net.load["p_mw"] = p0 * factors[s]
            t0 = time.perf_counter()
            pp.rundcopp(net)
            t_pp += time.perf_counter() - t0
            pg = np.array([net["res_" + t].p_mw.at[i] for t, i in network.gen.labels])
            worst["objective_rel"] = max(worst["objective_rel"], abs(float(res.cost_usd_per_h[s]) - net.res_cost) / abs(net.res_cost))
            worst["pg_mw"] = max(worst["pg_mw"], float(np.abs(res.pg_mw[s].numpy() - pg).max()))
            lam = net.res_bus.lam_p.loc[labels].values
            worst["lmp_usd_per_mwh"] = max(worst["lmp_usd_per_mwh"], float(np.abs(res.lmp_usd_per_mwh[s].numpy() - lam).max()))
    if worst["objective_rel"] > 1e-6 or worst["pg_mw"] > 1e-5 or worst["lmp_usd_per_mwh"] > 1e-5:
        raise SystemExit(f"answers disagree: {worst}")
    per_pp = t_pp / a.pp_subset
    pp_total = per_pp * a.scenarios
    lmp_spread = float((res.lmp_usd_per_mwh.amax(-1) - res.lmp_usd_per_mwh.amin(-1)).mean())
    out = {
        "case": a.case,
        "scenarios": a.scenarios,
        "line_derate": a.derate,
        "mean_lmp_spread_usd_per_mwh": lmp_spread,
        "load_factor_range": [0.9, 1.1],
        "threads": 1,
        "formulation": "PTDF form, n_gen variables per scenario; dense batched interior point",
        "agreement_checked_on": a.pp_subset,
        "max_disagreement": worst,
        "gridlearn_s": t_ours,
        "gridlearn_mean_iterations": float(sol.steps.double().mean()),
        "pandapower_rundcopp_s_per_scenario": per_pp,
        "pandapower_rundcopp_s_total_extrapolated": pp_total,
        "pandapower_note": f"rundcopp timed on {a.pp_subset} scenarios in a loop, extrapolated linearly to {a.scenarios}",
        "speedup": pp_total / t_ours,
        "torch": torch.__version__,
        "pandapower": pp.__version__,
        "machine": platform.platform(),
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if a.derate == 1.0 else f"_derate{a.derate:g}"
    (RESULTS / f"dcopf{suffix}.json").write_text(json.dumps(out, indent=2))
    print(f"{a.case} DC-OPF, {a.scenarios} scenarios, 1 thread, line derate {a.derate:g} (mean LMP spread {lmp_spread:.3g} $/MWh)")
    print(f"  answers agree on {a.pp_subset}: {worst}")
    print(f"  gridlearn batched:                       {t_ours:8.3f} s   ({pp_total / t_ours:6.1f}x faster)")
    print(f"  pandapower rundcopp loop (extrapolated): {pp_total:8.3f} s   ({per_pp * 1e3:.1f} ms per scenario, from {a.pp_subset})")


if __name__ == "__main__":
    main()
