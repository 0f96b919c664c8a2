"""Benchmark: N-k contingency analysis, gridlearn vs pandapower and lightsim2grid (DC), attack vs
enumeration, and process pool vs Ray (the attack with certify="none": its MILP certificate is
timed in bench_scopf_recall.py). One process, one torch thread (fair single-core
comparison), identical inputs; answers are checked to agree before any time is reported.

    .venv/bin/python benchmarks/bench_scopf.py [--quick] [--elements all|branches] [--with-n2]

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
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("GRIDLEARN_DATA_DIR", str(REPO.parent / "shared" / "data"))

from _results import best_of  # noqa: E402
from gridlearn.grid import load_case  # noqa: E402
from gridlearn.grid.cases import load_pandapower_net  # noqa: E402
from gridlearn.grid.from_pandapower import network_from_pandapower  # noqa: E402
from gridlearn.scopf import attack_contingencies, enumerate_contingencies  # noqa: E402
from gridlearn.scopf.dc import DCContingencyModel  # noqa: E402
from gridlearn.scopf.dispatch import base_dispatch  # noqa: E402
from gridlearn.scopf.outages import ElementSpace  # noqa: E402


def _timed(fn, repeat=1):
    """(result, fastest wall time of ``repeat`` calls)."""
    seconds, out = best_of(fn, repeat)
    return out, seconds


def n1_flows(case: str, n_pandapower: int) -> dict:
    """All N-1 branch outages of pandapower's ``case`` (DC): flows from gridlearn's LODF
    update, a pandapower rundcpp loop, pandapower.contingency.run_contingency, and
    lightsim2grid's ContingencyAnalysisCPP (DC_KLU).

    Like for like: every tool gets the net with transformer magnetising admittance zeroed
    (i0_percent = pfe_kw = 0). With it, pandapower's default T transformer model folds the
    magnetising branch into the series reactance (T -> pi conversion), so even its DC flows
    depend on it (0.032 MW on case118; we read pandapower's branch model, so we follow),
    while lightsim2grid's DC treats it differently (0.064 MW from pandapower's T model,
    0.032 MW from its pi model). case118's converter stores MATPOWER line charging of four
    transformer branches there. The raw difference on the unmodified net is reported too."""
    import copy

    import pandapower as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw_net = load_pandapower_net(case)
        pp_net = copy.deepcopy(raw_net)
        pp_net.trafo["i0_percent"] = 0.0
        pp_net.trafo["pfe_kw"] = 0.0
        network = network_from_pandapower(pp_net, name=case)
        raw_network = network_from_pandapower(raw_net, name=case)
    model = DCContingencyModel.build(network, ElementSpace.of(network, "branches"))
    pg = base_dispatch(network)
    for (table, idx), p in zip(network.gen.labels, pg.tolist()):
        if table == "gen":
            pp_net.gen.at[idx, "p_mw"] = p
            raw_net.gen.at[idx, "p_mw"] = p
    clean_net = copy.deepcopy(pp_net)  # run_contingency below leaves state on pp_net
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

    # lightsim2grid ContingencyAnalysisCPP, DC (like for like: see the docstring)
    try:
        from lightsim2grid.contingencyAnalysis import ContingencyAnalysisCPP
        from lightsim2grid.gridmodel import init_from_pandapower
        import lightsim2grid

        def ls_flows(net):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pp.rundcpp(net)
                gm = init_from_pandapower(net)
            ca = ContingencyAnalysisCPP(gm)
            ca.change_algorithm(lightsim2grid.AlgorithmType.DC_KLU)
            ca.add_multiple_n1([int(m) for m in members[:, 0].tolist()])
            v0 = np.ones(len(net.bus), dtype=complex)
            # Copy at once: compute_power_flows returns a view of memory that ``ca`` owns.
            out, t = _timed(lambda: (ca.compute(v0, 10, 1e-8), np.array(ca.compute_power_flows()))[1], repeat=3)
            return out[:, :nb], t

        flows_raw, _ = ls_flows(raw_net)
        raw_model = DCContingencyModel.build(raw_network, ElementSpace.of(raw_network, "branches"))
        flows_gl_raw = raw_model.set_flows(pg, members)[0]
        flows_ls, t_ls = ls_flows(copy.deepcopy(clean_net))
        diff_raw = float(np.abs(flows_raw - flows_gl_raw.numpy()).max())
        diff_ls = float(np.abs(flows_ls - flows_gl.numpy()).max())
        if diff_ls > 1e-6:
            raise SystemExit(f"gridlearn and lightsim2grid N-1 DC flows disagree by {diff_ls} MW (like for like)")
        res.update(lightsim2grid_pf_per_s=len(members) / t_ls, ratio_vs_lightsim2grid=pps_gl * t_ls / len(members),
                   max_abs_diff_lightsim2grid_mw=diff_ls, max_abs_diff_lightsim2grid_raw_mw=diff_raw,
                   lightsim2grid_note="all tools on the net with transformer magnetising admittance zeroed; "
                   "raw: unmodified net, where pandapower's T model and lightsim2grid treat it differently")
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001
        res["lightsim2grid_error"] = f"{type(exc).__name__}: {exc}"
    return res


def attack_vs_enumeration(case: str, k: int) -> dict:
    network = load_case(case)
    pg = base_dispatch(network)
    enum, t_enum = _timed(lambda: enumerate_contingencies(network, pg, k))
    att, t_att = _timed(lambda: attack_contingencies(network, pg, k, restarts=16, steps=30, seed=0, certify="none"))
    ok = enum[enum["status"] == "ok"]
    worst = float(ok["violation_mw"].iloc[0])
    found = float(att.ranking["violation_mw"].iloc[0])
    return {"case": case, "k": k, "worst_mw": worst, "found_mw": found, "found_worst": bool(found >= worst - 1e-6),
            "enum_power_flows": enum.attrs["n_power_flows"], "attack_power_flows": att.n_power_flows,
            "enum_time_s": t_enum, "attack_time_s": t_att,
            "pf_ratio": enum.attrs["n_power_flows"] / att.n_power_flows, "time_ratio": t_enum / t_att}


def pool_vs_ray(case: str, k: int, workers: int, chunk_size: int, elements: str) -> dict:
    """Enumerate every N-k set of ``case`` (DC, ``elements``) serially, on a process pool and
    on Ray (same chunks); the three tables must be identical. Start-up (spawning the workers,
    which import torch) is timed apart from the enumeration. Returns the serial table too."""
    from gridlearn.parallel import LocalPool, RayExecutor

    network = load_case(case)
    pg = base_dispatch(network)
    kw = dict(k=k, chunk_size=chunk_size, elements=elements)
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
    n_chunks = -(-len(serial) // chunk_size)
    return {"case": case, "k": k, "elements": elements, "n_sets": len(serial), "chunk_size": chunk_size,
            "n_chunks": n_chunks,
            "workers": workers, "serial_s": t_serial, "pool_s": t_pool, "pool_startup_s": t_pool_start,
            "ray_s": t_ray, "ray_startup_s": t_ray_start, "pool_speedup": t_serial / t_pool,
            "ray_speedup": t_serial / t_ray, "identical": True}, serial, t_serial


def attack_vs_given_enumeration(case: str, k: int, elements: str, enum, t_enum: float) -> dict:
    network = load_case(case)
    pg = base_dispatch(network)
    att, t_att = _timed(lambda: attack_contingencies(network, pg, k, elements=elements, restarts=16, steps=30, seed=0,
                                                    certify="none"))
    ok = enum[enum["status"] == "ok"]
    worst = float(ok["violation_mw"].iloc[0])
    found = float(att.ranking["violation_mw"].iloc[0])
    rank = 1 + int((ok["violation_mw"] > found + 1e-6).sum())
    return {"case": case, "k": k, "elements": elements, "worst_mw": worst, "found_mw": found,
            "found_worst": bool(found >= worst - 1e-6), "rank": rank, "worst_outage": str(ok["outage"].iloc[0]),
            "found_outage": str(att.best),
            "enum_power_flows": enum.attrs["n_power_flows"], "attack_power_flows": att.n_power_flows,
            "enum_time_s": t_enum, "attack_time_s": t_att,
            "pf_ratio": enum.attrs["n_power_flows"] / att.n_power_flows, "time_ratio": t_enum / t_att}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller cases")
    ap.add_argument("--elements", default="all", choices=["all", "branches"], help="N-3 element space")
    ap.add_argument("--with-n2", action="store_true", help="also attack vs enumeration N-2 on case57/118")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out: dict = {"torch_threads": 1, "n1_flows": [], "attack_vs_enumeration": [],
                 "note": "single torch thread; pool/Ray: 2 worker processes of one torch thread each; "
                         "shared 2-core machine (other jobs ran beside it)"}
    out["n1_flows"].append(n1_flows("case57" if args.quick else "case118", 30))
    if args.with_n2:
        for case in ["pglib_opf_case57_ieee", "pglib_opf_case118_ieee"]:
            out["attack_vs_enumeration"].append(attack_vs_enumeration(case, 2))
    # N-3 on case118 (all 240 elements: 2,275,280 sets; branches only: 186 -> 1,055,240 sets):
    # the executor comparison, then the attack against the serial enumeration's ground truth.
    big, k_big = ("pglib_opf_case57_ieee", 2) if args.quick else ("pglib_opf_case118_ieee", 3)
    pvr, serial, t_serial = pool_vs_ray(big, k_big, 2, 16384 if args.quick else 65536, args.elements)
    out["pool_vs_ray"] = pvr
    out["attack_vs_enumeration"].append(attack_vs_given_enumeration(big, k_big, args.elements, serial, t_serial))
    print(json.dumps(out, indent=2))
    dest = REPO / "benchmarks" / "results" / "scopf.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
