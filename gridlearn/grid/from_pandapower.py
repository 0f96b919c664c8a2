"""pandapower net -> `Network`: the conversion, in its own module (issue 17 step 7).

The conversion goes through pandapower's own ``to_ppc`` (the MATPOWER-form case its power
flow and OPF run on), so transformer models, shunts, static generators and switches are
treated exactly as pandapower treats them. Out-of-service elements are dropped; labels
keep every element traceable to its pandapower table and index. The built network is
checked (`checks.check_network`) before it is returned.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from gridlearn.errors import DataError
from gridlearn.grid.checks import check_network
from gridlearn.grid.matpower_columns import (ANGMAX, ANGMIN, BR_STATUS, BUS_TYPE, F_BUS, GEN_BUS, GEN_STATUS,
                                             NO_ANGLE_LIMIT_DEG, NONE, RATE_A, T_BUS, TAP)
from gridlearn.grid.matpower_columns import branch_params as matpower_branch_params
from gridlearn.grid.matpower_columns import bus_params as matpower_bus_params
from gridlearn.grid.matpower_columns import gen_params as matpower_gen_params
from gridlearn.grid.network import Network
from gridlearn.grid.params import Label

# Optional pandapower columns (on net.line / net.trafo / net.impedance) that carry the
# MATPOWER angle-difference limits, which pandapower's converter drops; `load_case`
# fills them for .m files.
ANGMIN_COLUMN = "gridlearn_angmin_deg"
ANGMAX_COLUMN = "gridlearn_angmax_deg"


def network_from_pandapower(net: Any, name: str = "") -> Network:
    """Convert a pandapower net (it is not modified) into a checked `Network`.

    >>> import pandapower.networks as pn
    >>> network_from_pandapower(pn.case9(), name="case9").n_bus
    9
    """
    import copy

    from pandapower.converter.pypower.to_ppc import to_ppc

    from pandapower.toolbox import drop_out_of_service_elements

    from pandapower.topology import unsupplied_buses

    unsupplied = sorted(int(b) for b in unsupplied_buses(net) if net.bus.in_service.at[b])
    if unsupplied:
        raise DataError(
            f"{len(unsupplied)} bus(es) have no path to a reference bus (an island), pandapower buses "
            f"{unsupplied[:10]}: connect them, add a slack, or set them out of service"
        )
    net = copy.deepcopy(net)  # to_ppc writes lookups into the net
    # to_ppc returns pandapower's *internal* case, which omits out-of-service rows;
    # dropping them first keeps pandapower's element lookups aligned with its rows.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drop_out_of_service_elements(net)
    has_costs = len(net.poly_cost) > 0 or len(net.pwl_cost) > 0
    if len(net.pwl_cost) > 0:
        raise DataError(
            "piecewise-linear costs (net.pwl_cost) are not supported: convert them to "
            "polynomial costs in net.poly_cost"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # check_connectivity=False: pandapower would silently switch islanded buses off;
        # gridlearn's checks raise on them instead. take_slack_vm_limits=False keeps the
        # reference bus's own voltage limits (MATPOWER convention) rather than its setpoint.
        ppc = to_ppc(
            net,
            init="flat",
            calculate_voltage_angles=True,
            check_connectivity=False,
            mode="opf" if has_costs else "pf",
            take_slack_vm_limits=False,
        )
    lookups = net._pd2ppc_lookups
    return _from_ppc(ppc, lookups, net, name=name or str(getattr(net, "name", "") or ""))

def _from_ppc(ppc: dict, lookups: dict, net: Any, name: str) -> Network:
    bus, gen, branch = (np.asarray(ppc[k], dtype=float) for k in ("bus", "gen", "branch"))
    base_mva = float(ppc["baseMVA"])

    # --- labels (pandapower element per ppc row) ---
    bus_labels = np.full(bus.shape[0], -1, dtype=np.int64)
    for pp_idx, ppc_idx in zip(net.bus.index, lookups["bus"][net.bus.index.values]):
        if 0 <= ppc_idx < bus.shape[0] and bus_labels[ppc_idx] < 0:
            bus_labels[ppc_idx] = pp_idx
    gen_labels: list[Label | None] = [None] * gen.shape[0]
    for table in ("ext_grid", "gen", "sgen", "storage"):
        rows = lookups.get(table)
        if rows is None or len(rows) == 0:
            continue
        elements = net[table].index
        if len(elements) and len(rows) == int(elements.max()) + 1 > len(elements):
            # The lookup is indexed by element index; dropped (out-of-service) elements leave gaps.
            rows = np.asarray(rows)[elements.values]
        if len(rows) != len(elements):  # pandapower lists only the in-service/controllable ones
            mask = net[table].in_service.values.astype(bool)
            if "controllable" in net[table]:
                mask &= net[table].controllable.fillna(False).values.astype(bool)
            elements = net[table].index[mask]
        if len(rows) != len(elements):
            raise DataError(f"cannot match pandapower's {table} table to its generator rows")
        for el, row in zip(elements, rows):
            if 0 <= row < gen.shape[0]:
                gen_labels[row] = (table, int(el))
    # Controllable sgens/storage get generator rows after ext_grids and gens but no
    # lookup entry; pandapower appends them in table order, so label the rest in order.
    unlabeled = [row for row, lbl in enumerate(gen_labels) if lbl is None]
    if unlabeled:
        rest: list[Label] = []
        for table in ("sgen", "storage"):
            if table in lookups or table not in net or not len(net[table]):
                continue
            df = net[table]
            mask = df.in_service.values.astype(bool)
            if "controllable" in df:
                mask &= df.controllable.fillna(False).values.astype(bool)
            rest += [(table, int(i)) for i in df.index[mask]]
        if len(rest) == len(unlabeled):
            for row, lbl in zip(unlabeled, rest):
                gen_labels[row] = lbl
    branch_labels: list[Label | None] = [None] * branch.shape[0]
    for table, (start, stop) in lookups["branch"].items():
        count = stop - start
        if count == 0:
            continue
        idx = list(net[table].index)
        reps = count // max(len(idx), 1)
        if reps * len(idx) != count:
            raise DataError(f"cannot match pandapower's {table} table to its branch rows")
        # trafo3w: three branches per element, listed hv..., mv..., lv...
        for k, row in enumerate(range(start, stop)):
            branch_labels[row] = (table, int(idx[k % len(idx)]))

    # --- angle limits: pandapower drops them; use gridlearn's columns when present ---
    angmin = branch[:, ANGMIN].copy()
    angmax = branch[:, ANGMAX].copy()
    for table, (start, stop) in lookups["branch"].items():
        df = net[table]
        if ANGMIN_COLUMN in df and stop - start == len(df):
            angmin[start:stop] = df[ANGMIN_COLUMN].astype(float).fillna(-NO_ANGLE_LIMIT_DEG).values
            angmax[start:stop] = df[ANGMAX_COLUMN].astype(float).fillna(NO_ANGLE_LIMIT_DEG).values

    # to_ppc moves these pandapower-only columns out of the branch array.
    for key in ("branch_r_asym", "branch_x_asym", "branch_g_asym", "branch_b_asym"):
        if key in ppc and np.any(np.asarray(ppc[key]) != 0):
            raise DataError(f"branches with asymmetric parameters ({key}) are not supported")
    branch_g = np.asarray(ppc.get("branch_g", np.zeros(branch.shape[0])), dtype=float).real

    # --- keep in-service elements; re-index buses ---
    bus_keep = bus[:, BUS_TYPE] != NONE
    if not bus_keep.all():
        # Out-of-service buses were dropped above, so pandapower marked these isolated.
        orphan = [int(bus_labels[i]) for i in np.flatnonzero(~bus_keep)][:10]
        raise DataError(
            f"{int((~bus_keep).sum())} bus(es) have no path to a reference bus (an island), pandapower "
            f"buses {orphan}: connect them, add a slack, or set them out of service"
        )
    new_index = -np.ones(bus.shape[0], dtype=np.int64)
    new_index[bus_keep] = np.arange(int(bus_keep.sum()))
    gen_keep = (gen[:, GEN_STATUS] > 0) & bus_keep[gen[:, GEN_BUS].astype(int)]
    fb, tb = branch[:, F_BUS].astype(int), branch[:, T_BUS].astype(int)
    br_keep = (branch[:, BR_STATUS] > 0) & bus_keep[fb] & bus_keep[tb]

    b = bus[bus_keep]
    bus_params = matpower_bus_params(b, b[:, BUS_TYPE], tuple(int(x) for x in bus_labels[bus_keep]))

    g = gen[gen_keep]
    n_gen_all = gen.shape[0]
    c2 = np.full(n_gen_all, np.nan)
    c1 = np.full(n_gen_all, np.nan)
    c0 = np.full(n_gen_all, np.nan)
    gencost = ppc.get("gencost")
    if gencost is not None and len(gencost):
        gencost = np.asarray(gencost, dtype=float)
        for row in range(min(n_gen_all, gencost.shape[0])):
            model, ncost = int(gencost[row, 0]), int(gencost[row, 3])
            if model != 2:
                raise DataError(f"generator {gen_labels[row]}: piecewise-linear cost is not supported")
            coeffs = gencost[row, 4 : 4 + ncost][::-1]  # lowest order first
            if ncost > 3 and np.any(coeffs[3:] != 0):
                raise DataError(f"generator {gen_labels[row]}: cost of degree > 2 is not supported")
            padded = np.zeros(3)
            padded[: min(ncost, 3)] = coeffs[:3]
            c0[row], c1[row], c2[row] = padded
    # to_ppc gives a generator without a poly_cost row a zero cost; mark it missing.
    if gencost is not None and len(gencost):
        priced = {(str(et), int(el)) for et, el in zip(net.poly_cost.et, net.poly_cost.element)}
        for row, lbl in enumerate(gen_labels):
            if lbl is not None and lbl not in priced:
                c0[row] = c1[row] = c2[row] = np.nan
    gen_params = matpower_gen_params(g, new_index[g[:, GEN_BUS].astype(int)], c2[gen_keep], c1[gen_keep], c0[gen_keep],
                                     tuple(gen_labels[i] or ("unknown", int(i)) for i in np.flatnonzero(gen_keep)))

    br = branch[br_keep]
    tap = br[:, TAP].copy()
    tap[tap == 0] = 1.0  # MATPOWER: 0 means a line (ratio 1)
    rate = br[:, RATE_A].copy()
    rate[rate <= 0] = np.inf  # MATPOWER: RATE_A = 0 means unlimited
    amin, amax = angmin[br_keep], angmax[br_keep]
    amin = np.where(amin <= -NO_ANGLE_LIMIT_DEG, -np.inf, np.deg2rad(amin))
    amax = np.where(amax >= NO_ANGLE_LIMIT_DEG, np.inf, np.deg2rad(amax))
    g_pu = branch_g[br_keep]
    branch_params = matpower_branch_params(
        br, new_index[br[:, F_BUS].astype(int)], new_index[br[:, T_BUS].astype(int)], g_pu, tap, rate, amin, amax,
        tuple(branch_labels[i] or ("unknown", int(i)) for i in np.flatnonzero(br_keep)))
    network = Network(base_mva=base_mva, bus=bus_params, gen=gen_params, branch=branch_params, name=name)
    check_network(network)
    return network

