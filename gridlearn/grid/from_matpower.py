"""`network_from_matpower`: a `Network` from a MATPOWER case, with MATPOWER's semantics.

The tables come from `matpower_file.read_m_file` and are turned into per-unit tensors
here directly, not through pandapower's converter (which fails on baseKV = 0, on any
out-of-service generator but the last, and on a reference bus whose first generator is
off, and which rewrites some branches; see the issue history of `gridlearn.grid.cases`).
What MATPOWER does, and so what this does (``ext2int``, ``bustypes``, ``opf_setup``):

- isolated buses (type 4), out-of-service generators and branches, and branches or
  generators at an isolated bus are left out; several generators on one bus are kept;
- bus types as ``bustypes`` makes them: a PV or reference bus with no in-service
  generator becomes PQ, and if no reference bus remains the first PV bus becomes one;
- TAP = 0 means ratio 1; RATE_A = 0 means unlimited; an angle limit of 0 or beyond
  +-360 degrees means none on that side (``makeAang``);
- gencost model 2 (polynomial, degree <= 2 here) or model 1 (piecewise linear, as
  epigraph segments in `PWLCost`); a second block of ng rows prices reactive power
  (`ReactiveCost`, polynomial).

Validation runs on the raw tables (every message names the file line and table row)
and again on the built `Network` (`checks.check_network`).

Labels follow pandapower's conversion of the same file, so results stay comparable with
pandapower nets: generator ``("ext_grid", k)`` for the first generator of each reference
bus, ``("gen", k)`` for the first of each PV bus, ``("sgen", k)`` for the others; branch
``("line", k)``, ``("trafo", k)`` (off-nominal tap or phase shift) or ``("impedance", k)``;
each counted in file order over all rows, in service or not; and the elements are in
pandapower's order (ext_grids, gens, sgens; lines, trafos, impedances). Bus labels are
MATPOWER's bus numbers, buses in file order.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from gridlearn.errors import DataError
from gridlearn.grid.matpower_file import MatpowerCase
from gridlearn.grid.network import Network
from gridlearn.grid.matpower_columns import (ANGMAX, ANGMIN, BASE_KV, BR_B, BR_R, BR_STATUS, BR_X, BS, BUS_I, BUS_TYPE,
                                             F_BUS, GEN_BUS, GEN_STATUS, GS, NO_ANGLE_LIMIT_DEG, NONE, PD, PG, PMAX,
                                             PMIN, PQ, PV, QD, QG, QMAX, QMIN, RATE_A, REF, SHIFT, T_BUS, TAP, VA, VG,
                                             VM, VMAX, VMIN)
from gridlearn.grid.matpower_columns import branch_params as matpower_branch_params
from gridlearn.grid.matpower_columns import bus_params as matpower_bus_params
from gridlearn.grid.matpower_columns import gen_params as matpower_gen_params
from gridlearn.grid.params import PWLCost, ReactiveCost, as_tensor

#: Relative fall in slope tolerated in a "convex" piecewise-linear cost (data rounding).
_PWL_CONVEX_RTOL = 1e-4

# Columns read per table, with a name for messages; Inf is legitimate only where it means "no limit".
_COLUMNS = {
    "bus": {BUS_I: "BUS_I", BUS_TYPE: "BUS_TYPE", PD: "PD", QD: "QD", GS: "GS", BS: "BS", VM: "VM", VA: "VA",
            BASE_KV: "BASE_KV", VMAX: "VMAX", VMIN: "VMIN"},
    "gen": {GEN_BUS: "GEN_BUS", PG: "PG", QG: "QG", QMAX: "QMAX", QMIN: "QMIN", VG: "VG", GEN_STATUS: "GEN_STATUS",
            PMAX: "PMAX", PMIN: "PMIN"},
    "branch": {F_BUS: "F_BUS", T_BUS: "T_BUS", BR_R: "BR_R", BR_X: "BR_X", BR_B: "BR_B", RATE_A: "RATE_A",
               TAP: "TAP", SHIFT: "SHIFT", BR_STATUS: "BR_STATUS", ANGMIN: "ANGMIN", ANGMAX: "ANGMAX"},
}
_MAY_BE_INFINITE = {("gen", QMAX), ("gen", QMIN), ("gen", PMAX), ("gen", PMIN), ("branch", RATE_A),
                    ("branch", ANGMIN), ("branch", ANGMAX)}


def _check_raw(case: MatpowerCase) -> None:
    """NaN/inf, bus numbers, bus types, taps and rates on the file's own rows."""
    for table, cols in _COLUMNS.items():
        data = case.tables[table]
        for col, cname in cols.items():
            if col >= data.shape[1]:
                continue
            v = data[:, col]
            bad = np.isnan(v) if (table, col) in _MAY_BE_INFINITE else ~np.isfinite(v)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"{case.where(table, i)}: {cname} is {v[i]}; it must be a finite number")
    bus = case.tables["bus"]
    ids = bus[:, BUS_I]
    if np.any(ids != np.round(ids)) or np.any(ids <= 0):
        i = int(np.flatnonzero((ids != np.round(ids)) | (ids <= 0))[0])
        raise DataError(f"{case.where('bus', i)}: bus number {ids[i]} must be a positive integer")
    _, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if np.any(counts > 1):
        dup = ids[first[counts > 1][0]]
        i = int(np.flatnonzero(ids == dup)[1])
        raise DataError(f"{case.where('bus', i)}: bus number {int(dup)} appears twice")
    types = bus[:, BUS_TYPE]
    bad = ~np.isin(types, (PQ, PV, REF, NONE))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{case.where('bus', i)}: bus type {types[i]:g} is not 1 (PQ), 2 (PV), 3 (REF) or 4 (isolated)")
    known = set(ids.astype(np.int64).tolist())
    for table, cols in (("gen", (GEN_BUS,)), ("branch", (F_BUS, T_BUS))):
        data = case.tables[table]
        for col in cols:
            missing = ~np.isin(data[:, col], ids)
            if missing.any():
                i = int(np.flatnonzero(missing)[0])
                raise DataError(f"{case.where(table, i)}: {_COLUMNS[table][col]} = {data[i, col]:g} is not a bus of the "
                                f"case ({len(known)} buses)")
    # A |V| set-point is a magnitude: VG <= 0 on a unit that holds a voltage (in service, at a
    # PV or reference bus) would otherwise reach the power flow, which reports it as infeasible.
    gen = case.tables["gen"]
    kind_of = dict(zip(ids.tolist(), types.tolist()))
    holds_v = (gen[:, GEN_STATUS] > 0) & np.isin([kind_of[b] for b in gen[:, GEN_BUS].tolist()], (PV, REF))
    bad = holds_v & (gen[:, VG] <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{case.where('gen', i)}: VG = {gen[i, VG]:g} at a voltage-controlled bus; a |V| set-point "
                        "must be > 0 (p.u.)")
    br = case.tables["branch"]
    for col, rule, what in ((TAP, br[:, TAP] < 0, "a tap ratio must be positive (0 means 1)"),
                            (RATE_A, br[:, RATE_A] < 0, "RATE_A must be >= 0 (0 means unlimited)"),
                            (BR_X, (br[:, BR_X] == 0) & (br[:, BR_R] == 0), "a branch needs a nonzero impedance")):
        if rule.any():
            i = int(np.flatnonzero(rule)[0])
            raise DataError(f"{case.where('branch', i)}: {_COLUMNS['branch'][col]} = {br[i, col]:g}: {what}")


def _effective_bus_types(types: np.ndarray, bus_on: np.ndarray, gen_bus_pos: np.ndarray, gen_on: np.ndarray,
                         case: MatpowerCase) -> np.ndarray:
    """MATPOWER's ``bustypes``: PV/REF without an in-service generator -> PQ; no REF -> first PV."""
    has_gen = np.zeros(len(types), dtype=bool)
    has_gen[gen_bus_pos[gen_on]] = True
    out = types.copy()
    out[(np.isin(types, (PV, REF))) & ~has_gen & bus_on] = PQ
    if not np.any((out == REF) & bus_on):
        pv = np.flatnonzero((out == PV) & bus_on)
        if not len(pv):
            raise DataError(f"{case.path}: no bus can be the reference: no in-service generator at any PV or "
                            "reference bus")
        out[pv[0]] = REF
    return out


def _pandapower_labels(case: MatpowerCase, gen_bus_pos: np.ndarray) -> tuple[list, list]:
    """Generator and branch labels as pandapower's ``from_ppc`` would name them (see module docstring)."""
    bus, br = case.tables["bus"], case.tables["branch"]
    types = bus[:, BUS_TYPE]
    seen: set[int] = set()
    counters = {"ext_grid": 0, "gen": 0, "sgen": 0}
    gen_labels = []
    for g, b in enumerate(gen_bus_pos.tolist()):
        first = b not in seen
        seen.add(b)
        kind = "ext_grid" if first and types[b] == REF else "gen" if first and types[b] == PV else "sgen"
        gen_labels.append((kind, counters[kind]))
        counters[kind] += 1
    pos = {int(n): i for i, n in enumerate(bus[:, BUS_I])}
    kv_f = np.array([bus[pos[int(b)], BASE_KV] for b in br[:, F_BUS]])
    kv_t = np.array([bus[pos[int(b)], BASE_KV] for b in br[:, T_BUS]])
    tap, shift = br[:, TAP], br[:, SHIFT]
    is_trafo = ((tap != 0) & (tap != 1)) | (shift != 0)
    is_line = (kv_f == kv_t) & ~is_trafo
    counters = {"line": 0, "trafo": 0, "impedance": 0}
    br_labels = []
    for k in range(br.shape[0]):
        kind = "line" if is_line[k] else "trafo" if is_trafo[k] else "impedance"
        br_labels.append((kind, counters[kind]))
        counters[kind] += 1
    return gen_labels, br_labels


def _costs(case: MatpowerCase, gen_on: np.ndarray, gen_labels: list):
    """Polynomial (c2, c1, c0), epigraph segments and reactive costs of the in-service generators."""
    ng_all = case.tables["gen"].shape[0]
    keep = np.flatnonzero(gen_on)
    new_pos = -np.ones(ng_all, dtype=np.int64)
    new_pos[keep] = np.arange(len(keep))
    nan = np.full((ng_all, 3), np.nan)
    if "gencost" not in case.tables:
        return nan[keep], None, None
    gc = case.tables["gencost"]
    if gc.shape[0] not in (ng_all, 2 * ng_all):
        raise DataError(f"{case.path}: mpc.gencost has {gc.shape[0]} rows; MATPOWER needs {ng_all} (one per generator) "
                        f"or {2 * ng_all} (active, then reactive power)")
    if gc.shape[1] < 4:
        raise DataError(f"{case.path}: mpc.gencost has {gc.shape[1]} columns; MATPOWER needs at least 4")
    poly = np.zeros((ng_all, 3))
    seg_gen, seg_slope, seg_icpt = [], [], []
    reactive = np.zeros((ng_all, 3)) if gc.shape[0] == 2 * ng_all else None
    for row in range(gc.shape[0]):
        g = row % ng_all
        if not gen_on[g]:
            continue
        where = f"{case.where('gencost', row)}, generator {gen_labels[g]}"
        model, n = gc[row, 0], gc[row, 3]
        if not np.isfinite(gc[row, :4]).all() or n != round(n) or n < 0 or 4 + (2 * n if model == 1 else n) > gc.shape[1]:
            raise DataError(f"{where}: NCOST = {n:g} does not fit the row's {gc.shape[1]} columns")
        n = int(n)
        vals = gc[row, 4 : 4 + (2 * n if model == 1 else n)]
        if not np.isfinite(vals).all():
            raise DataError(f"{where}: cost data has a non-finite value")
        if model == 2:
            coeffs = vals[::-1]  # lowest order first
            if n > 3 and np.any(coeffs[3:] != 0):
                raise DataError(f"{where}: polynomial cost of degree {n - 1}; gridlearn's OPFs take degree <= 2")
            c = np.zeros(3)
            c[: min(n, 3)] = coeffs[:3]
            (poly if row < ng_all else reactive)[g] = c[::-1]  # (c2, c1, c0)
        elif model == 1:
            if row >= ng_all:
                raise DataError(f"{where}: a piecewise-linear reactive-power cost is not supported (polynomial only)")
            x, y = vals[0::2], vals[1::2]
            if n < 2 or np.any(np.diff(x) <= 0):
                raise DataError(f"{where}: a piecewise-linear cost needs >= 2 points with increasing MW, got x = {x.tolist()}")
            slope = np.diff(y) / np.diff(x)
            # MATPOWER's epigraph prices a cost at its convex hull. Slopes that fall by rounding
            # in the data (case_RTS_GMLC: 8.10352, 8.10345, 8.10352 $/MWh) change nothing that
            # matters; a real dip would, so it is refused.
            if np.any(np.diff(slope) < -_PWL_CONVEX_RTOL * np.maximum(1.0, np.abs(slope[1:]))):
                raise DataError(f"{where}: the piecewise-linear cost is not convex (slopes {slope.tolist()}); its "
                                "epigraph would price it as its convex hull")
            seg_gen += [int(new_pos[g])] * len(slope)
            seg_slope += slope.tolist()
            seg_icpt += (y[:-1] - slope * x[:-1]).tolist()
        else:
            raise DataError(f"{where}: cost model {model:g} is not 1 (piecewise linear) or 2 (polynomial)")
    pwl = None
    if seg_gen:
        pwl = PWLCost(gen=torch.tensor(seg_gen, dtype=torch.long), slope_usd_per_mwh=as_tensor(seg_slope),
                      intercept_usd_per_h=as_tensor(seg_icpt))
    q = None
    if reactive is not None and np.any(reactive[keep] != 0):
        r = reactive[keep]
        q = ReactiveCost(c2_usd_per_mvar2h=as_tensor(r[:, 0]), c1_usd_per_mvarh=as_tensor(r[:, 1]),
                         c0_usd_per_h=as_tensor(r[:, 2]))
    return poly[keep], pwl, q


def network_from_matpower(case: MatpowerCase, name: str = "") -> Network:
    """A `Network` from a `MatpowerCase` (see the module docstring for the semantics).

    Raises:
        DataError: NaN/inf, a duplicate or missing bus, a negative tap or rate, a zero
            impedance, a malformed cost row, or an island (each names the file row).
    """
    from gridlearn.grid.checks import check_network

    _check_raw(case)
    bus, gen, br = (case.tables[k] for k in ("bus", "gen", "branch"))
    pos = {int(n): i for i, n in enumerate(bus[:, BUS_I])}
    gen_bus_pos = np.array([pos[int(b)] for b in gen[:, GEN_BUS]], dtype=np.int64)
    fpos = np.array([pos[int(b)] for b in br[:, F_BUS]], dtype=np.int64)
    tpos = np.array([pos[int(b)] for b in br[:, T_BUS]], dtype=np.int64)
    bus_on = bus[:, BUS_TYPE] != NONE
    gen_on = (gen[:, GEN_STATUS] > 0) & bus_on[gen_bus_pos]
    br_on = (br[:, BR_STATUS] > 0) & bus_on[fpos] & bus_on[tpos]
    types = _effective_bus_types(bus[:, BUS_TYPE], bus_on, gen_bus_pos, gen_on, case)
    gen_labels, br_labels = _pandapower_labels(case, gen_bus_pos)
    poly, pwl, qcost = _costs(case, gen_on, gen_labels)

    # pandapower's element order (ext_grids, gens, sgens; lines, trafos, impedances; each in file
    # order), so that positions agree with `network_from_pandapower` of the same case.
    gen_rank = {"ext_grid": 0, "gen": 1, "sgen": 2}
    br_rank = {"line": 0, "trafo": 1, "impedance": 2}
    gen_order = np.array(sorted(np.flatnonzero(gen_on), key=lambda i: (gen_rank[gen_labels[i][0]], i)), dtype=np.int64)
    br_order = np.array(sorted(np.flatnonzero(br_on), key=lambda i: (br_rank[br_labels[i][0]], i)), dtype=np.int64)
    new_index = -np.ones(len(bus), dtype=np.int64)
    new_index[bus_on] = np.arange(int(bus_on.sum()))
    b = bus[bus_on]
    bus_params = matpower_bus_params(b, types[bus_on], tuple(int(x) for x in b[:, BUS_I]))
    g = gen[gen_order]
    keep_pos = -np.ones(len(gen), dtype=np.int64)
    keep_pos[np.flatnonzero(gen_on)] = np.arange(int(gen_on.sum()))
    perm = keep_pos[gen_order]  # position in the in-service list of each ordered generator
    poly = poly[perm]
    if pwl is not None:  # segments point at the new generator positions
        inverse = np.empty_like(perm)
        inverse[perm] = np.arange(len(perm))
        pwl = dataclasses.replace(pwl, gen=torch.as_tensor(inverse[pwl.gen.numpy()]))
    if qcost is not None:
        qcost = ReactiveCost(*(torch.as_tensor(getattr(qcost, f.name).numpy()[perm]) for f in dataclasses.fields(qcost)))
    gen_params = matpower_gen_params(g, new_index[gen_bus_pos[gen_order]], poly[:, 0], poly[:, 1], poly[:, 2],
                                     tuple(gen_labels[i] for i in gen_order))
    r = br[br_order]
    ncol = br.shape[1]
    tap = np.where(r[:, TAP] == 0, 1.0, r[:, TAP])
    rate = np.where(r[:, RATE_A] == 0, np.inf, r[:, RATE_A])
    if ncol > ANGMAX:
        amin_deg, amax_deg = r[:, ANGMIN], r[:, ANGMAX]
        # makeAang: a limit is enforced where it is nonzero and within +-360 degrees.
        amin = np.where((amin_deg == 0) | (amin_deg <= -NO_ANGLE_LIMIT_DEG), -np.inf, np.deg2rad(amin_deg))
        amax = np.where((amax_deg == 0) | (amax_deg >= NO_ANGLE_LIMIT_DEG), np.inf, np.deg2rad(amax_deg))
    else:
        amin, amax = np.full(len(r), -np.inf), np.full(len(r), np.inf)
    branch_params = matpower_branch_params(r, new_index[fpos[br_order]], new_index[tpos[br_order]], np.zeros(len(r)),
                                           tap, rate, amin, amax, tuple(br_labels[i] for i in br_order))
    network = Network(base_mva=float(case.base_mva), bus=bus_params, gen=gen_params, branch=branch_params,
                      name=name, pwl_cost=pwl, reactive_cost=qcost)
    check_network(network)
    return network


__all__ = ["network_from_matpower"]
