"""MATPOWER's case-array layout (0-based columns of bus, gen, branch), written once.

Both network builders read MATPOWER-form arrays: `from_matpower` a case file's own tables,
`from_pandapower` the ``ppc`` pandapower's converter produces.
"""

from __future__ import annotations

import numpy as np
import torch

from gridlearn.grid.params import BusParams, as_tensor

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
