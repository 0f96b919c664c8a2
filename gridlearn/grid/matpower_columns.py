"""MATPOWER's case-array layout (0-based columns of bus, gen, branch), written once.

Both network builders read MATPOWER-form arrays: `from_matpower` a case file's own tables,
`from_pandapower` the ``ppc`` pandapower's converter produces.
"""

from __future__ import annotations

import numpy as np
import torch

from gridlearn.grid.params import BranchParams, BusParams, GenParams, as_tensor

BUS_I, BUS_TYPE, PD, QD, GS, BS, VM, VA, BASE_KV, VMAX, VMIN = 0, 1, 2, 3, 4, 5, 7, 8, 9, 11, 12
GEN_BUS, PG, QG, QMAX, QMIN, VG, GEN_STATUS, PMAX, PMIN = 0, 1, 2, 3, 4, 5, 7, 8, 9
F_BUS, T_BUS, BR_R, BR_X, BR_B, RATE_A, TAP, SHIFT, BR_STATUS, ANGMIN, ANGMAX = 0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12
PQ, PV, REF, NONE = 1, 2, 3, 4  # bus types; NONE: isolated
# Angle limits at or beyond +-360 degrees mean "no limit" in MATPOWER.
NO_ANGLE_LIMIT_DEG = 360.0


def bus_params(b: np.ndarray, kind: np.ndarray, labels: tuple) -> BusParams:
    """`BusParams` from the kept rows ``b`` of a MATPOWER bus array, their bus types and labels."""
    return BusParams(
        kind=torch.as_tensor(kind.astype(np.int64)),
        base_kv=as_tensor(b[:, BASE_KV]),
        vmin_pu=as_tensor(b[:, VMIN]),
        vmax_pu=as_tensor(b[:, VMAX]),
        gs_mw=as_tensor(b[:, GS]),
        bs_mvar=as_tensor(b[:, BS]),
        pd_mw=as_tensor(b[:, PD]),
        qd_mvar=as_tensor(b[:, QD]),
        vm0_pu=as_tensor(b[:, VM]),
        va0_rad=as_tensor(np.deg2rad(b[:, VA])),
        labels=labels,
    )


def gen_params(g: np.ndarray, bus: np.ndarray, c2: np.ndarray, c1: np.ndarray, c0: np.ndarray,
               labels: tuple) -> GenParams:
    """`GenParams` from the kept rows ``g`` of a MATPOWER gen array; ``bus``: each unit's
    position in the kept buses; polynomial costs c2 ($/MW²h), c1 ($/MWh), c0 ($/h)."""
    return GenParams(
        bus=torch.as_tensor(bus), p_mw=as_tensor(g[:, PG]), vg_pu=as_tensor(g[:, VG]), q_mvar=as_tensor(g[:, QG]),
        pmin_mw=as_tensor(g[:, PMIN]), pmax_mw=as_tensor(g[:, PMAX]), qmin_mvar=as_tensor(g[:, QMIN]),
        qmax_mvar=as_tensor(g[:, QMAX]), cost_c2_usd_per_mw2h=as_tensor(c2), cost_c1_usd_per_mwh=as_tensor(c1),
        cost_c0_usd_per_h=as_tensor(c0), labels=labels,
    )


def branch_params(r: np.ndarray, from_bus: np.ndarray, to_bus: np.ndarray, g_pu: np.ndarray, tap: np.ndarray,
                  rate_mva: np.ndarray, angmin_rad: np.ndarray, angmax_rad: np.ndarray, labels: tuple) -> BranchParams:
    """`BranchParams` from the kept rows ``r`` of a MATPOWER branch array and the columns each
    builder derives its own way (ratio 1 for lines, inf for unlimited, radians or ±inf)."""
    return BranchParams(
        from_bus=torch.as_tensor(from_bus), to_bus=torch.as_tensor(to_bus), r_pu=as_tensor(r[:, BR_R]),
        x_pu=as_tensor(r[:, BR_X]), g_pu=as_tensor(g_pu), b_pu=as_tensor(r[:, BR_B]), tap=as_tensor(tap),
        shift_rad=as_tensor(np.deg2rad(r[:, SHIFT])), rate_a_mva=as_tensor(rate_mva), angmin_rad=as_tensor(angmin_rad),
        angmax_rad=as_tensor(angmax_rad), labels=labels,
    )
