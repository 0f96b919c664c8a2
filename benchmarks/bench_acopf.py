"""AC-OPF end to end (build + solve + extract) vs pandapower runopp (PIPS), and backward/forward time.

Run: .venv/bin/python benchmarks/bench_acopf.py   -> benchmarks/results/bench_acopf.json
Both peers get the same pandapower net and the pandapower convention (|I| limits, ext_grid
voltage fixed); objectives must agree to 1e-5 before a time is reported. One thread.
"""

from __future__ import annotations

import glob
import json
import os
import time
import warnings
from pathlib import Path

import torch

PUBLISHED = {"case30": 578.486, "case118": 129704.74}  # pandapower runopp, shared/data/README.md
PGLIB = {"pglib_opf_case3_lmbd": 5812.64, "pglib_opf_case5_pjm": 17551.89, "pglib_opf_case14_ieee": 2178.08,
         "pglib_opf_case24_ieee_rts": 63352.20, "pglib_opf_case30_ieee": 8208.52, "pglib_opf_case39_epri": 138415.56,
         "pglib_opf_case57_ieee": 37589.34, "pglib_opf_case118_ieee": 97213.61}


def best_of(fn, repeats=3):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> dict:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import pandapower as pp

    from gridlearn.grid import ACOPFLayer, load_case
    from gridlearn.grid.acopf import solve_acopf
    from gridlearn.grid.cases import load_pandapower_net
    from gridlearn.grid.network import Network

    solve_acopf(load_case("case9"))  # Ipopt's first-solve warm-up, not counted
    rows = []
    cases = ["case30", "case118", "case300"]
    data = os.environ.get("GRIDLEARN_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    pglib_paths = sorted(glob.glob(f"{data}/pglib-opf/*.m"))
    for case in cases + pglib_paths:
        name = Path(case).stem
        pp_net = load_pandapower_net(case)
        net = Network.from_pandapower(pp_net)
        row = {"case": name}
        try:
            t_gl, res = best_of(lambda: solve_acopf(net, "pandapower"))
            row["gridlearn_pandapower_conv_s"], row["gridlearn_pandapower_conv_objective"] = t_gl, res.objective
        except Exception as exc:  # noqa: BLE001 - report and keep going
            row["gridlearn_error"] = f"{type(exc).__name__}: {exc}"
            res = None
        try:
            t_pp, _ = best_of(lambda: pp.runopp(pp_net, init="flat", calculate_voltage_angles=True), repeats=2)
            row["runopp_s"], row["runopp_objective"] = t_pp, float(pp_net.res_cost)
            agree = res is not None and abs(row["runopp_objective"] / res.objective - 1) < 1e-5
            row["objectives_agree_1e-5"] = agree
            row["speedup_vs_runopp"] = t_pp / t_gl if agree else None
        except Exception as exc:  # noqa: BLE001 - report the peer's failure, keep going
            row["runopp_error"] = f"{type(exc).__name__}: {exc}"
        if name in PUBLISHED:
            row["published_runopp"] = PUBLISHED[name]
        if name in PGLIB:
            t_m, res_m = best_of(lambda: solve_acopf(net, "matpower"), repeats=1)
            row["gridlearn_matpower_conv_objective"], row["gridlearn_matpower_conv_s"] = res_m.objective, t_m
            row["published_pglib"] = PGLIB[name]
        print(json.dumps(row))
        rows.append(row)

    grad_rows = []
    for case in ("case30", "case118"):
        net = load_case(case)
        layer = ACOPFLayer(net)
        pd = net.bus.pd_mw[None].clone().requires_grad_()
        t_f, out = best_of(lambda: layer(pd), repeats=2)
        loss = out.pg_mw.sum() + out.lmp_usd_per_mwh.sum()
        t_b, _ = best_of(lambda: torch.autograd.grad(loss, pd, retain_graph=True), repeats=2)
        grad_rows.append({"case": case, "forward_s": t_f, "backward_s": t_b, "backward_over_forward": t_b / t_f})
        print(json.dumps(grad_rows[-1]))
    result = {"threads": 1, "note": "torch.set_num_threads(1); best of repeats; Ipopt warm-up excluded",
              "acopf": rows, "layer": grad_rows}
    out_path = Path(__file__).resolve().parent / "results" / "bench_acopf.json"
    out_path.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
