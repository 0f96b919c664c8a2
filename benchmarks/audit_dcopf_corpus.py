"""Audit: CONVERGED DC-OPF answers against an independent B-theta model in cvxpy/Clarabel.

For each MATPOWER/PGLib case up to ``--max-bus`` buses with a gencost table, random load
scenarios (each bus's Pd times U(0.7, 1.3)) and uniform scalings are solved with
`DCOPFLayer().solve`, and each scenario again with a DC-OPF written here from the raw file
tables (MATPOWER's ``makeBdc``: b = 1/(x·tap), phase shifts as injections; Gs consumed at
1 pu; polynomial or piecewise-linear (epigraph) costs; RATE_A = 0 unlimited; angle limits
as ``makeAang``), in bus-angle form (not PTDF), solved by Clarabel through cvxpy.

Checked per scenario: CONVERGED implies Clarabel optimal with the same cost (relative
1e-6), dispatch (1e-4 MW relative to total load), and LMPs (the balance duals; 1e-4
relative to the largest LMP, or, where an LP's LMP is not unique, inside the one-sided
derivatives of the optimal cost in that bus's load); INFEASIBLE implies Clarabel infeasible; exceptions are
`gridlearn.errors` classes. Writes a JSON summary (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_corpus import corpus  # noqa: E402

import gridlearn.errors as gerr  # noqa: E402
from gridlearn.grid import DCOPFLayer, load_case  # noqa: E402
from gridlearn.grid.matpower_file import read_m_file  # noqa: E402


def reference_model(path: Path):
    """The raw file's DC-OPF pieces, buses in file order (isolated buses dropped)."""
    import scipy.sparse as sp

    m = read_m_file(path)
    bus, gen, br = m.tables["bus"], m.tables["gen"], m.tables["branch"]
    gc = m.tables.get("gencost")
    if gc is None:
        return None
    base = m.base_mva
    keep = bus[:, 1] != 4
    num = bus[keep, 0].astype(int)
    idx = {int(b): k for k, b in enumerate(num)}
    n = len(num)
    on_g = (gen[:, 7] > 0) & np.isin(gen[:, 0], num)
    gcost = gc[: len(gen)][on_g]
    g = gen[on_g]
    on_b = (br[:, 10] > 0) & np.isin(br[:, 0], num) & np.isin(br[:, 1], num)
    r = br[on_b]
    f = np.array([idx[int(b)] for b in r[:, 0]], dtype=int)
    t = np.array([idx[int(b)] for b in r[:, 1]], dtype=int)
    tap = np.where(r[:, 8] == 0, 1.0, r[:, 8])
    b = 1.0 / (r[:, 3] * tap)
    nl = len(r)
    cft = sp.coo_matrix((np.r_[np.ones(nl), -np.ones(nl)], (np.r_[np.arange(nl), np.arange(nl)], np.r_[f, t])),
                        (nl, n)).tocsr()
    bf = sp.diags(b) @ cft
    bbus = cft.T @ bf
    pf_inj = -b * np.deg2rad(r[:, 9])
    pbus_inj = cft.T @ pf_inj
    gb = np.array([idx[int(x)] for x in g[:, 0]], dtype=int)
    btype = bus[keep, 1].astype(int)
    on_count = np.bincount(gb, minlength=n)
    ref = np.flatnonzero((btype == 3) & (on_count > 0))
    if len(ref) == 0:
        ref = np.flatnonzero((btype == 2) & (on_count > 0))[:1]
    rate = np.where(r[:, 5] == 0, np.inf, r[:, 5])
    amin = np.deg2rad(r[:, 11]) if r.shape[1] > 12 else np.full(nl, -np.inf)
    amax = np.deg2rad(r[:, 12]) if r.shape[1] > 12 else np.full(nl, np.inf)
    if r.shape[1] > 12:
        amin = np.where((r[:, 11] == 0) | (r[:, 11] <= -360), -np.inf, amin)
        amax = np.where((r[:, 12] == 0) | (r[:, 12] >= 360), np.inf, amax)
    return dict(base=base, n=n, idx=idx, bbus=bbus, bf=bf, pf_inj=pf_inj, pbus_inj=pbus_inj, gb=gb, g=g,
                gcost=gcost, ref=int(ref[0]), va_ref=np.deg2rad(bus[keep, 8][ref[0]]), gs=bus[keep, 4],
                pd=bus[keep, 2], rate=rate, amin=amin, amax=amax, f=f, t=t)


_TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "tol_ktratio": 1e-10}


def solve_reference(md, pd_mw, tight: bool = False):
    import cvxpy as cp

    base, n, ng = md["base"], md["n"], len(md["g"])
    pg = cp.Variable(ng)
    th = cp.Variable(n)
    cost = 0
    cons = []
    for j in range(ng):
        row = md["gcost"][j]
        model, ncost = int(row[0]), int(row[3])
        if model == 2:
            c = row[4 : 4 + ncost][::-1]  # lowest order first
            cost += c[0] + (c[1] * pg[j] if ncost > 1 else 0) + (c[2] * cp.square(pg[j]) if ncost > 2 else 0)
        else:
            x, y = row[4 : 4 + 2 * ncost : 2], row[5 : 5 + 2 * ncost : 2]
            z = cp.Variable()
            for k in range(ncost - 1):
                s = (y[k + 1] - y[k]) / (x[k + 1] - x[k])
                cons.append(z >= y[k] + s * (pg[j] - x[k]))
            cost += z
    cg = np.zeros((n, ng))
    cg[md["gb"], np.arange(ng)] = 1
    bal = md["bbus"] @ th + md["pbus_inj"] == (cg @ pg - pd_mw - md["gs"]) / base
    cons += [bal, th[md["ref"]] == md["va_ref"], pg <= md["g"][:, 8], pg >= md["g"][:, 9]]
    lim = np.isfinite(md["rate"])
    if lim.any():
        flow = md["bf"][lim] @ th + md["pf_inj"][lim]
        cons += [flow <= md["rate"][lim] / base, flow >= -md["rate"][lim] / base]
    for side, arr in (("max", md["amax"]), ("min", md["amin"])):
        fin = np.isfinite(arr)
        if fin.any():
            d = th[md["f"][fin]] - th[md["t"][fin]]
            cons.append(d <= arr[fin] if side == "max" else d >= arr[fin])
    prob = cp.Problem(cp.Minimize(cost), cons)
    try:
        prob.solve(solver="CLARABEL", **(_TIGHT if tight else {}))
    except Exception as e:  # noqa: BLE001
        return {"status": f"error {type(e).__name__}"}
    out = {"status": prob.status}
    if prob.status in ("optimal", "optimal_inaccurate"):
        out.update(cost=float(prob.value), pg=np.array(pg.value), lmp=np.array(bal.dual_value) / base)  # cvxpy: d cost / d(rhs) of "... == (Cg pg - pd)/base"
    return out


def _lmp_outside(net, pd_i, sol, i, perm, lmp_gl, lmp_ref, h: float = 1e-3, most: int = 20) -> float:
    """How far gridlearn's LMPs lie outside [left, right] derivative of its own optimal cost
    (finite differences of ±h MW), at the buses (up to ``most``) where it differs from the reference."""
    layer = DCOPFLayer()
    c0 = float(sol.value.cost_usd_per_h[i])
    worst = 0.0
    for b in np.argsort(-np.abs(lmp_gl - lmp_ref))[:most]:
        k = int(np.flatnonzero(perm == b)[0])  # network position of file bus b
        e = torch.zeros_like(pd_i)
        e[k] = h
        up = float(layer.solve(net, pd_mw=pd_i + e).value.cost_usd_per_h)
        dn = float(layer.solve(net, pd_mw=pd_i - e).value.cost_usd_per_h)
        lo, hi = sorted(((c0 - dn) / h, (up - c0) / h))
        worst = max(worst, lo - lmp_gl[b], lmp_gl[b] - hi, 0.0)
    return float(worst)


def run_case(path: Path, n_random: int, scales: list[float], seed: int) -> dict:
    row: dict = {"case": path.stem}
    md = reference_model(path)
    if md is None:
        row["skip"] = "no gencost"
        return row
    try:
        net = load_case(path)
        rng = np.random.default_rng(seed)
        pd0 = net.bus.pd_mw.numpy()
        facs = [rng.uniform(0.7, 1.3, size=len(pd0)) for _ in range(n_random)] + [np.full(len(pd0), s) for s in scales]
        pd = torch.tensor(np.stack([pd0 * f for f in facs]))
        t0 = time.perf_counter()
        sol = DCOPFLayer().solve(net, pd_mw=pd)
        row["seconds"] = time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001
        row["error"] = type(e).__name__
        row["named"] = isinstance(e, gerr.GridlearnError)
        row["msg"] = str(e)[:200]
        return row
    perm = np.array([md["idx"][int(b)] for b in net.bus.labels])
    names = [s.name for s in sol.statuses]
    row["statuses"] = names
    checks = []
    for i, name in enumerate(names):
        pdr = np.empty(md["n"])
        pdr[perm] = pd[i].numpy()
        ref = solve_reference(md, pdr)
        c = {"i": i, "gl": name, "ref": ref["status"]}
        if name == "CONVERGED":
            if "cost" not in ref:
                c["problem"] = "CONVERGED but the reference is " + ref["status"]
            else:
                cost = float(sol.value.cost_usd_per_h[i])
                c["cost_rel"] = abs(cost - ref["cost"]) / max(1.0, abs(ref["cost"]))
                # dispatch: compare sorted-by-bus totals (generator order differs; units on one bus may split freely)
                pg_bus_gl = np.zeros(md["n"])
                np.add.at(pg_bus_gl, perm[net.gen.bus.numpy()], sol.value.pg_mw[i].numpy())
                pg_bus_ref = np.zeros(md["n"])
                np.add.at(pg_bus_ref, md["gb"], ref["pg"])
                c["pg_bus_err_mw"] = float(np.abs(pg_bus_gl - pg_bus_ref).max())
                lmp_gl = np.empty(md["n"])
                lmp_gl[perm] = sol.value.lmp_usd_per_mwh[i].numpy()
                c["lmp_err"] = float(np.abs(lmp_gl - ref["lmp"]).max())
                c["lmp_scale"] = float(np.abs(ref["lmp"]).max())
                if c["cost_rel"] > 1e-6:  # Clarabel's default tolerance is 1e-8 on the gap: re-solve it tight
                    tight = solve_reference(md, pdr, tight=True)
                    if "cost" in tight:
                        c["cost_rel_tight"] = abs(cost - tight["cost"]) / max(1.0, abs(tight["cost"]))
                    if c.get("cost_rel_tight", 1.0) > 1e-6:
                        c["problem"] = f"cost {cost} vs reference {ref['cost']}"
                if c["lmp_err"] > 1e-4 * max(1.0, c["lmp_scale"]):
                    # An LP's LMP need not be unique (degenerate dispatch): it must lie between the
                    # one-sided derivatives of the optimal cost in that bus's load.
                    c["lmp_outside_subgradient"] = _lmp_outside(net, pd[i], sol, i, perm, lmp_gl, ref["lmp"])
                    if c["lmp_outside_subgradient"] > 1e-3 * max(1.0, c["lmp_scale"]):
                        c["problem"] = f"LMP differs by {c['lmp_err']:.3g} (scale {c['lmp_scale']:.3g}) and lies " \
                                       "outside the one-sided derivatives of the cost"
        elif name == "INFEASIBLE" and ref["status"] in ("optimal", "optimal_inaccurate"):
            c["problem"] = "INFEASIBLE but the reference solves it"
        checks.append(c)
    row["checks"] = checks
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-bus", type=int, default=600)
    ap.add_argument("--random", type=int, default=4)
    ap.add_argument("--scales", default="1.0,1.3,2.0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/audit_dc.json")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args()
    scales = [float(s) for s in a.scales.split(",")]
    files = corpus(a.max_bus)
    if a.cases:
        files = [f for f in files if f.stem in a.cases]
    rows = []
    for f in files:
        try:
            nb = read_m_file(f).tables["bus"].shape[0]
        except gerr.DataError:
            continue
        if nb > a.max_bus:
            continue
        row = run_case(f, a.random, scales, a.seed)
        rows.append(row)
        probs = [c for c in row.get("checks", []) if "problem" in c]
        worst = max((c.get("cost_rel", 0) for c in row.get("checks", [])), default=0)
        print(f"{row['case']:<28} n={nb:<5} {row.get('skip', '')}{row.get('error', '')} "
              f"{dict((s, row.get('statuses', []).count(s)) for s in set(row.get('statuses', [])))} "
              f"worst_cost_rel={worst:.2e} PROBLEMS={len(probs)} {probs[:2]} {row.get('msg', '')[:100]}", flush=True)
        Path(a.out).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
