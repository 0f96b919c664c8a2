"""Benchmark: N-k contingency analysis, gridlearn vs pandapower and lightsim2grid (DC), attack vs
enumeration, and process pool vs Ray. One process, one torch thread (fair single-core
comparison), identical inputs; answers are checked to agree before any time is reported.

    .venv/bin/python benchmarks/bench_scopf.py [--quick]

Writes benchmarks/results/scopf.json. PGLib cases are read from $GRIDLEARN_DATA_DIR
(default ../shared/data beside the checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GRIDLEARN_DATA_DIR", str(REPO.parent / "shared" / "data"))

from gridlearn.grid import load_case  # noqa: E402
from gridlearn.grid.cases import load_pandapower_net  # noqa: E402
from gridlearn.grid.network import Network  # noqa: E402
from gridlearn.scopf import attack_contingencies, enumerate_contingencies  # noqa: E402
from gridlearn.scopf.dc import DCContingencyModel  # noqa: E402
from gridlearn.scopf.dispatch import base_dispatch  # noqa: E402
from gridlearn.scopf.outages import ElementSpace  # noqa: E402


def _timed(fn, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def n1_flows(case: str, n_pandapower: int) -> dict:
    """All N-1 branch outages of pandapower's ``case`` (DC): flows from gridlearn's LODF
    update, a pandapower rundcpp loop, pandapower.contingency.run_contingency, and
    lightsim2grid's ContingencyAnalysisCPP (DC_KLU)."""
    import pandapower as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp_net = load_pandapower_net(case)
        network = Network.from_pandapower(pp_net, name=case)
    model = DCContingencyModel.build(network, ElementSpace.of(network, "branches"))
    pg = base_dispatch(network)
    for (table, idx), p in zip(network.gen.labels, pg.tolist()):
        if table == "gen":
            pp_net.gen.at[idx, "p_mw"] = p
    nb = network.n_branch
    members = torch.arange(nb).reshape(-1, 1)
    # islanding N-1 sets are excluded from every tool's comparison
    _, _, _, _, singular, _ = model.set_flows(pg, members)
    keep = (~singular).nonzero().flatten()
    members = members[keep]
    flows_gl, t_gl = _timed(lambda: model.set_flows(pg, members)[0], repeat=3)
    res: dict = {"case": case, "n_contingencies": int(len(members))}

    # pandapower loop (checked), on the first n_pandapower contingencies
    def pp_loop():
        out = []
        for m in members[:n_pandapower, 0].tolist():
            table, idx = network.branch.labels[m]
            pp_net[table].at[idx, "in_service"] = False
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pp.rundcpp(pp_net)
            row = []
            for t, i in network.branch.labels:
                col = "p_from_mw" if t == "line" else "p_hv_mw"
                row.append(float(pp_net[f"res_{t}"].at[i, col]) if pp_net[t].at[i, "in_service"] else 0.0)
            out.append(row)
            pp_net[table].at[idx, "in_service"] = True
        return np.array(out)

    flows_pp, t_pp = _timed(pp_loop)
    diff_pp = float(np.abs(flows_pp - flows_gl[:n_pandapower].numpy()).max())
    if diff_pp > 1e-6:
        raise SystemExit(f"gridlearn and pandapower N-1 DC flows disagree by {diff_pp} MW")
    pps_gl = len(members) / t_gl
    pps_pp = n_pandapower / t_pp
    res.update(gridlearn_pf_per_s=pps_gl, pandapower_loop_pf_per_s=pps_pp, ratio_vs_pandapower=pps_gl / pps_pp,
               max_abs_diff_pandapower_mw=diff_pp)
    # the full enumeration (scores included), not just the flows
    enum, t_enum = _timed(lambda: enumerate_contingencies(network, pg, 1, elements="branches"))
    res["gridlearn_enumeration_pf_per_s"] = nb / t_enum

    # pandapower.contingency.run_contingency with rundcpp (its N-1 driver; timed, checked on max loading)
    try:
        import pandapower.contingency as pc

        lines = [network.branch.labels[m][1] for m in members[:n_pandapower, 0].tolist() if network.branch.labels[m][0] == "line"]
        cases = {"line": {"index": np.array(lines)}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, t_rc = _timed(lambda: pc.run_contingency(pp_net, cases, contingency_evaluation_function=pp.rundcpp))
        res["pandapower_run_contingency_pf_per_s"] = len(lines) / t_rc
    except Exception as exc:  # noqa: BLE001 - report, don't abort the benchmark
        res["pandapower_run_contingency_error"] = f"{type(exc).__name__}: {exc}"

    # lightsim2grid ContingencyAnalysisCPP, DC
    try:
        from lightsim2grid.contingencyAnalysis import ContingencyAnalysisCPP
        from lightsim2grid.gridmodel import init_from_pandapower
        import lightsim2grid

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.rundcpp(pp_net)
            gm = init_from_pandapower(pp_net)
        ca = ContingencyAnalysisCPP(gm)
        ca.change_algorithm(lightsim2grid.AlgorithmType.DC_KLU)
        ca.add_multiple_n1([int(m) for m in members[:, 0].tolist()])
        v0 = np.ones(len(pp_net.bus), dtype=complex)
        ca_out, t_ls = _timed(lambda: (ca.compute(v0, 10, 1e-8), ca.compute_power_flows())[1], repeat=3)
        flows_ls = np.asarray(ca_out)[:, :nb]
        diff_ls = float(np.abs(flows_ls - flows_gl.numpy()).max())
        res.update(lightsim2grid_pf_per_s=len(members) / t_ls, max_abs_diff_lightsim2grid_mw=diff_ls,
                   lightsim2grid_agrees=bool(diff_ls < 1e-3))
    except Exception as exc:  # noqa: BLE001
        res["lightsim2grid_error"] = f"{type(exc).__name__}: {exc}"
    return res


def attack_vs_enumeration(case: str, k: int) -> dict:
    network = load_case(case)
    pg = base_dispatch(network)
    enum, t_enum = _timed(lambda: enumerate_contingencies(network, pg, k))
    att, t_att = _timed(lambda: attack_contingencies(network, pg, k, restarts=16, steps=30, seed=0))
    ok = enum[enum["status"] == "ok"]
    worst = float(ok["violation_mw"].iloc[0])
    found = float(att.ranking["violation_mw"].iloc[0])
    return {"case": case, "k": k, "worst_mw": worst, "found_mw": found, "found_worst": bool(found >= worst - 1e-6),
            "enum_power_flows": enum.attrs["n_power_flows"], "attack_power_flows": att.n_power_flows,
            "enum_time_s": t_enum, "attack_time_s": t_att,
            "pf_ratio": enum.attrs["n_power_flows"] / att.n_power_flows, "time_ratio": t_enum / t_att}


def pool_vs_ray(case: str, k: int, workers: int) -> dict:
    from gridlearn.parallel import LocalPool, RayExecutor

    network = load_case(case)
    pg = base_dispatch(network)
    kw = dict(k=k, chunk_size=2048)
    serial, t_serial = _timed(lambda: enumerate_contingencies(network, pg, executor="serial", **kw))
    t0 = time.perf_counter()
    with LocalPool(workers) as pool:
        pool.map(abs, list(range(workers * 2)))  # warm-up: spawn the workers
        t_pool_start = time.perf_counter() - t0
        pooled, t_pool = _timed(lambda: enumerate_contingencies(network, pg, executor=pool, **kw))
    ray_ex = RayExecutor(num_cpus=workers)
    t0 = time.perf_counter()
    ray_ex._ensure()
    ray_ex.map(abs, list(range(workers * 2)))  # warm-up: start the workers
    t_ray_start = time.perf_counter() - t0
    try:
        rayed, t_ray = _timed(lambda: enumerate_contingencies(network, pg, executor=ray_ex, **kw))
    finally:
        ray_ex.shutdown()
    import pandas as pd

    pd.testing.assert_frame_equal(pooled, serial)
    pd.testing.assert_frame_equal(rayed, serial)
    return {"case": case, "k": k, "workers": workers, "serial_s": t_serial, "pool_s": t_pool,
            "pool_startup_s": t_pool_start, "ray_s": t_ray, "ray_startup_s": t_ray_start, "identical": True}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller cases")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"torch_threads": 1, "note": "single torch thread; pool/Ray use 2 worker processes", "n1_flows": [],
                 "attack_vs_enumeration": []}
    out["n1_flows"].append(n1_flows("case57" if args.quick else "case118", 30))
    cases = ["pglib_opf_case30_ieee"] if args.quick else ["pglib_opf_case57_ieee", "pglib_opf_case118_ieee"]
    for case in cases:
        out["attack_vs_enumeration"].append(attack_vs_enumeration(case, 2))
    out["pool_vs_ray"] = pool_vs_ray("pglib_opf_case57_ieee" if args.quick else "pglib_opf_case118_ieee", 2, 2)
    print(json.dumps(out, indent=2))
    dest = REPO / "benchmarks" / "results" / "scopf.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
