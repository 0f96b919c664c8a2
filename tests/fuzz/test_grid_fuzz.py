"""Power flow and DC-OPF on random load perturbations: agree with pandapower, or come back
with a non-converged status (never a CONVERGED answer that pandapower contradicts)."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gridlearn.grid import DCOPFLayer, Network, network_from_pandapower, PowerFlowLayer
from gridlearn.grid.cases import load_pandapower_net
from gridlearn.implicit.solution import Status
from tests.fuzz._budget import examples

pp = pytest.importorskip("pandapower")


@functools.lru_cache(maxsize=None)
def _network(case: str) -> Network:
    return network_from_pandapower(load_pandapower_net(case))


def _demand(net, network, factors):
    pos = {b: i for i, b in enumerate(network.bus.labels)}
    to_bus = np.zeros((len(net.load), network.n_bus))
    for k, b in enumerate(net.load.bus.values):
        to_bus[k, pos[int(b)]] = 1.0
    live = net.load.in_service.values.astype(float) * net.load.scaling.values
    dp = (factors - 1) * net.load.p_mw.values * live
    dq = (factors - 1) * net.load.q_mvar.values * live
    return (torch.from_numpy(network.bus.pd_mw.numpy() + dp @ to_bus),
            torch.from_numpy(network.bus.qd_mvar.numpy() + dq @ to_bus))


def _scenario(case: str, data, low: float, high: float):
    """A fresh pandapower net of ``case``, its Network, drawn load factors in [low, high] and the
    resulting (pd, qd) per bus."""
    net = load_pandapower_net(case)
    network = _network(case)
    factors = data.draw(factors_for(len(net.load), low, high))
    return (net, network, factors, *_demand(net, network, factors))


def _succeeds(run, failure: type[Exception]) -> bool:
    """Whether pandapower's ``run()`` finishes (False when it raises ``failure``); its warnings are muted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run()
        return True
    except failure:
        return False


def factors_for(n_loads: int, low: float, high: float):
    return st.lists(st.floats(low, high), min_size=n_loads, max_size=n_loads).map(np.array)


@settings(max_examples=examples(0.5))
@given(st.sampled_from(["case9", "case30"]), st.data())
def test_power_flow_agrees_with_runpp_or_reports_failure(case, data):
    net, network, factors, pd, qd = _scenario(case, data, 0.3, 2.5)
    sol = PowerFlowLayer().solve(network, pd_mw=pd.unsqueeze(0), qd_mvar=qd.unsqueeze(0))
    status = sol.statuses[0]
    net.load["p_mw"] = net.load.p_mw.values * factors
    net.load["q_mvar"] = net.load.q_mvar.values * factors
    pp_ok = _succeeds(lambda: pp.runpp(net, calculate_voltage_angles=True, init="flat", tolerance_mva=1e-10),
                      pp.powerflow.LoadflowNotConverged)
    event(f"{case}: ours {status.name}, pandapower {'converged' if pp_ok else 'not converged'}")
    if status is not Status.CONVERGED:
        return
    if not pp_ok:  # only the retry (line search, other starts, continuation) may solve what runpp does not
        assert bool(sol.extras["retried"][0]), "CONVERGED by plain Newton where pandapower's does not converge"
        assert float(sol.value.vm_pu[0].min()) >= 0.5  # and not to a collapsed-voltage root
        return
    labels = list(network.bus.labels)
    np.testing.assert_allclose(sol.value.vm_pu[0].numpy(), net.res_bus.vm_pu.loc[labels].values, atol=1e-6, rtol=0)
    np.testing.assert_allclose(sol.value.va_rad[0].numpy(), np.deg2rad(net.res_bus.va_degree.loc[labels].values),
                               atol=1e-6, rtol=0)


@settings(max_examples=examples(0.5))
@given(st.sampled_from(["case9", "case30"]), st.data())
def test_dcopf_agrees_with_rundcopp_or_reports_failure(case, data):
    net, network, factors, pd, _ = _scenario(case, data, 0.2, 2.0)
    sol = DCOPFLayer().solve(network, pd.unsqueeze(0))
    status = sol.statuses[0]
    net.load["p_mw"] = net.load.p_mw.values * factors
    pp_ok = _succeeds(lambda: pp.rundcopp(net), pp.optimal_powerflow.OPFNotConverged)
    event(f"{case}: ours {status.name}, pandapower {'optimal' if pp_ok else 'failed'}")
    if status is not Status.CONVERGED:
        assert status is not Status.INFEASIBLE or not pp_ok, "INFEASIBLE where pandapower finds an optimum"
        return
    assert pp_ok, "CONVERGED where pandapower's DC-OPF finds no optimum"
    res = sol.value
    assert float(res.cost_usd_per_h[0]) == pytest.approx(float(net.res_cost), rel=1e-6)
    pg = [net["res_" + table].p_mw.at[idx] for table, idx in network.gen.labels]
    np.testing.assert_allclose(res.pg_mw[0].numpy(), pg, atol=1e-4, rtol=0)
