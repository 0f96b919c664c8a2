"""MATPOWER's power-flow equations built from a case file's raw tables, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gridlearn.grid.matpower_file import read_m_file


def raw_mismatch_mva(path: Path, vm_pu: np.ndarray, va_rad: np.ndarray, labels) -> tuple[float, float]:
    """Max |dP| (PQ and PV buses) and |dQ| (PQ buses), MW/MVAr, of a voltage solution in
    MATPOWER's own power-flow equations built here from the raw file tables (makeYbus;
    every in-service unit injects its PG, and at a PQ bus its QG), independently of the loader."""
    import scipy.sparse as sp

    m = read_m_file(path)
    bus, gen, br = m.tables["bus"], m.tables["gen"], m.tables["branch"]
    keep = bus[:, 1] != 4
    num = bus[keep, 0].astype(int)
    idx = {int(b): k for k, b in enumerate(num)}
    n = len(num)
    br = br[(br[:, 10] > 0) & np.isin(br[:, 0], num) & np.isin(br[:, 1], num)]
    f = np.array([idx[int(b)] for b in br[:, 0]])
    t = np.array([idx[int(b)] for b in br[:, 1]])
    ys = 1 / (br[:, 2] + 1j * br[:, 3])
    tap = np.where(br[:, 8] == 0, 1.0, br[:, 8]) * np.exp(1j * np.deg2rad(br[:, 9]))
    ytt = ys + 1j * br[:, 4] / 2
    y = sp.coo_matrix((np.r_[ytt / (tap * np.conj(tap)), -ys / np.conj(tap), -ys / tap, ytt],
                       (np.r_[f, f, t, t], np.r_[f, t, f, t])), (n, n)).tocsr()
    y = y + sp.diags((bus[keep, 4] + 1j * bus[keep, 5]) / m.base_mva)
    v = np.zeros(n, complex)
    v[[idx[int(b)] for b in labels]] = vm_pu * np.exp(1j * va_rad)
    g = gen[(gen[:, 7] > 0) & np.isin(gen[:, 0], num)]
    s_gen = np.zeros(n, complex)
    np.add.at(s_gen, [idx[int(b)] for b in g[:, 0]], g[:, 1] + 1j * g[:, 2])
    mis = v * np.conj(y @ v) * m.base_mva - (s_gen - (bus[keep, 2] + 1j * bus[keep, 3]))
    kind = bus[keep, 1].astype(int)
    return float(np.abs(mis.real[kind != 3]).max()), float(np.abs(mis.imag[kind == 1]).max())
