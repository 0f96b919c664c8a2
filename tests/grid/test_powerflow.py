"""AC power flow layer: against pandapower's runpp, gradients, failure reporting."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError, DataError, SolverFailure
from gridlearn.grid import Network, network_from_pandapower, PowerFlowLayer
from gridlearn.grid.cases import load_pandapower_net
from gridlearn.grid.pf_newton import NewtonRaphson
from gridlearn.implicit.solution import Status


# Small dense batched kernels: extra OpenMP threads only contend on a shared runner.
pytestmark = pytest.mark.usefixtures("single_thread")


def _runpp(net):
    import pandapower as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, calculate_voltage_angles=True, init="flat", tolerance_mva=1e-10)


def _pp_voltages(net, network):
    labels = list(network.bus.labels)
    return net.res_bus.vm_pu.loc[labels].values, np.deg2rad(net.res_bus.va_degree.loc[labels].values)


def _pp_gen(net, network):
    pg = [net["res_" + table].p_mw.at[idx] for table, idx in network.gen.labels]
    qg = [net["res_" + table].q_mvar.at[idx] for table, idx in network.gen.labels]
    return np.array(pg), np.array(qg)


def _load_scenarios(net, network, n, seed, spread=0.2):
    """Per-load factors in [1 - spread/2, 1 + spread/2] (p and q scaled together), and the
    bus demand (n, n_bus) they give in the Network's bus order."""
    rng = np.random.default_rng(seed)
    factors = 1 + spread * (rng.random((n, len(net.load))) - 0.5)
    pos = {b: i for i, b in enumerate(network.bus.labels)}
    to_bus = np.zeros((len(net.load), network.n_bus))
    for k, b in enumerate(net.load.bus.values):
        to_bus[k, pos[int(b)]] = 1.0
    in_service = net.load.in_service.values.astype(float)
    dp = (factors - 1) * (net.load.p_mw.values * net.load.scaling.values * in_service)
    dq = (factors - 1) * (net.load.q_mvar.values * net.load.scaling.values * in_service)
    pd = network.bus.pd_mw.numpy() + dp @ to_bus
    qd = network.bus.qd_mvar.numpy() + dq @ to_bus
    return factors, torch.from_numpy(pd), torch.from_numpy(qd)


@pytest.mark.parametrize("case", ["case9", "case30", "case118", "case300"])
def test_matches_runpp(case):
    net = load_pandapower_net(case)
    network = network_from_pandapower(net)
    res = PowerFlowLayer()(network)
    _runpp(net)
    vm, va = _pp_voltages(net, network)
    np.testing.assert_allclose(res.vm_pu.numpy(), vm, atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.va_rad.numpy(), va, atol=1e-6, rtol=0)
    pg, qg = _pp_gen(net, network)
    np.testing.assert_allclose(res.pg_mw.numpy(), pg, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.qg_mvar.numpy(), qg, atol=1e-5, rtol=0)
    lines = [(k, i) for k, (t, i) in enumerate(network.branch.labels) if t == "line"]
    k, idx = (list(x) for x in zip(*lines))
    for ours, theirs in ((res.p_from_mw, "p_from_mw"), (res.q_from_mvar, "q_from_mvar"),
                         (res.p_to_mw, "p_to_mw"), (res.q_to_mvar, "q_to_mvar")):
        np.testing.assert_allclose(ours.numpy()[k], net.res_line[theirs].loc[idx].values, atol=1e-5, rtol=0)


def _check_batch(case, n, seed, solver=NewtonRaphson()):
    net = load_pandapower_net(case)
    network = network_from_pandapower(net)
    factors, pd, qd = _load_scenarios(net, network, n, seed)
    sol = PowerFlowLayer(solver=solver).solve(network, pd_mw=pd, qd_mvar=qd)
    assert sol.ok, sol.statuses
    p0, q0 = net.load.p_mw.values.copy(), net.load.q_mvar.values.copy()
    for s in range(n):
        net.load["p_mw"] = p0 * factors[s]
        net.load["q_mvar"] = q0 * factors[s]
        _runpp(net)
        vm, va = _pp_voltages(net, network)
        np.testing.assert_allclose(sol.value.vm_pu[s].numpy(), vm, atol=1e-6, rtol=0)
        np.testing.assert_allclose(sol.value.va_rad[s].numpy(), va, atol=1e-6, rtol=0)
    return sol


@pytest.mark.parametrize("jacobian", ["shared", "per_scenario"])
def test_batched_scenarios_each_match_runpp(jacobian):
    sol = _check_batch("case30", 8, seed=1, solver=NewtonRaphson(jacobian=jacobian))
    if jacobian == "per_scenario":
        assert bool(sol.extras["full_newton"].all())


@pytest.mark.slow
def test_100_scenarios_case118_each_match_runpp():
    _check_batch("case118", 100, seed=2)


@functools.lru_cache(maxsize=1)
def _network9() -> Network:
    return network_from_pandapower(load_pandapower_net("case9"))  # immutable, so safe to share


def _case9(tol=1e-11):
    return _network9(), PowerFlowLayer(solver=NewtonRaphson(tol_mva=tol))


def _outputs(r):
    return r.vm_pu, r.va_rad, r.p_from_mw, r.q_to_mvar, r.pg_mw, r.qg_mvar


def test_gradcheck_loads_and_reactance():
    network, layer = _case9()
    g = torch.Generator().manual_seed(0)
    pd = (network.bus.pd_mw * (1 + 0.1 * torch.rand(2, network.n_bus, generator=g, dtype=torch.float64))).requires_grad_()
    qd = network.bus.qd_mvar.clone().requires_grad_()
    x = network.branch.x_pu.clone().requires_grad_()

    def f(pd, qd, x):
        return _outputs(layer(network.with_(x_pu=x), pd_mw=pd, qd_mvar=qd))

    assert torch.autograd.gradcheck(f, (pd, qd, x), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_scale_setpoints_and_distributed_slack():
    network, layer = _case9()
    scale = torch.tensor([[1.0] * 9, [1.0, 0.7, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.9]], dtype=torch.float64, requires_grad=True)
    vg = network.gen.vg_pu.clone().requires_grad_()
    part = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)

    def f(scale, vg, part):
        return _outputs(layer(network, scale=scale, vg_pu=vg, participation=part)) + (
            layer(network, scale=scale, vg_pu=vg, participation=part).slack_mw,)

    assert torch.autograd.gradcheck(f, (scale, vg, part), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradient_matches_pandapower_finite_difference():
    """d(Σ w·vm)/d(load P) from the IFT vs central differences of pandapower's runpp."""
    net = load_pandapower_net("case30")
    network = network_from_pandapower(net)
    w = torch.linspace(-1.0, 1.0, network.n_bus, dtype=torch.float64)
    pd = network.bus.pd_mw.clone().requires_grad_()
    res = PowerFlowLayer()(network, pd_mw=pd)
    ((res.vm_pu * w).sum() + res.va_rad.sum()).backward()
    h = 1e-3
    for load in (0, 7):
        bus = network.bus.labels.index(int(net.load.bus.at[load]))
        vals = []
        for sign in (1, -1):
            net.load.loc[load, "p_mw"] += sign * h
            _runpp(net)
            vm, va = _pp_voltages(net, network)
            vals.append(float(vm @ w.numpy() + va.sum()))
            net.load.loc[load, "p_mw"] -= sign * h
        fd = (vals[0] - vals[1]) / (2 * h)
        assert float(pd.grad[bus]) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_branch_outage_by_scale_matches_runpp_with_line_out():
    net = load_pandapower_net("case30")
    network = network_from_pandapower(net)
    k = network.branch.labels.index(("line", 5))
    scale = torch.ones(network.n_branch, dtype=torch.float64)
    scale[k] = 0.0
    res = PowerFlowLayer()(network, scale=scale)
    net.line.loc[5, "in_service"] = False
    _runpp(net)
    vm, va = _pp_voltages(net, network)
    np.testing.assert_allclose(res.vm_pu.numpy(), vm, atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.va_rad.numpy(), va, atol=1e-6, rtol=0)
    assert float(res.p_from_mw[k].abs()) < 1e-12


def test_distributed_slack_invariants():
    network, layer = _case9(tol=1e-9)
    single = layer(network)
    one_hot = torch.zeros(network.n_gen, dtype=torch.float64)
    one_hot[0] = 1.0  # all on the reference generator: the single-slack power flow
    same = layer(network, participation=one_hot)
    torch.testing.assert_close(same.vm_pu, single.vm_pu, atol=1e-9, rtol=0)
    torch.testing.assert_close(same.pg_mw, single.pg_mw, atol=1e-7, rtol=0)
    part = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    res = layer(network, participation=part)
    change = res.pg_mw - network.gen.p_mw
    torch.testing.assert_close(change, part / part.sum() * res.slack_mw, atol=1e-9, rtol=0)
    losses = (res.p_from_mw + res.p_to_mw).sum()
    assert float((res.pg_mw.sum() - network.bus.pd_mw.sum() - losses).abs()) < 1e-6
    # the reference generator no longer takes the whole mismatch
    assert float((res.pg_mw[0] - single.pg_mw[0]).abs()) > 1.0


@pytest.mark.parametrize("retry", [False, True])
def test_nonconverged_scenario_is_reported_not_returned(retry):
    network, _ = _case9(tol=1e-8)
    layer = PowerFlowLayer(solver=NewtonRaphson(max_steps=15, retry=retry))
    pd = network.bus.pd_mw.expand(3, -1).clone()
    pd[1] = pd[1] * 20.0  # far beyond the voltage-stability limit: no solution
    sol = layer.solve(network, pd_mw=pd)
    assert sol.statuses[0] is Status.CONVERGED and sol.statuses[2] is Status.CONVERGED
    if retry:  # the continuation says why: the set-points are beyond the loadability limit
        assert sol.statuses[1] is Status.INFEASIBLE
        assert 0 < float(sol.extras["loadability"][1]) < 1
        # the Jacobian loses rank towards the fold (the bracket test below checks λ* itself)
        assert float(sol.extras["sigma_ratio"][1]) < 0.5
    else:
        assert sol.statuses[1] in (Status.MAX_STEPS, Status.DIVERGED, Status.NONFINITE, Status.NUMERICAL)
    assert bool(torch.isnan(sol.value.vm_pu[1]).all())
    torch.testing.assert_close(sol.value.vm_pu[0], layer(network).vm_pu)
    with pytest.raises(SolverFailure, match="#1") as info:
        layer(network, pd_mw=pd)
    assert info.value.indices == [1]
    if retry:
        assert "loadability" in str(info.value)


def test_loadability_is_the_limit_the_set_points_can_be_scaled_to():
    """λ* from the continuation brackets the real limit: every injection scaled by 0.97·λ*
    solves (plain Newton from the DC start, no retry), by 1.03·λ* it is INFEASIBLE too."""
    network, _ = _case9(tol=1e-8)
    pd, qd, pg = network.bus.pd_mw * 20.0, network.bus.qd_mvar * 20.0, network.gen.p_mw * 20.0
    lam = float(PowerFlowLayer().solve(network, pd_mw=pd, qd_mvar=qd, pg_mw=pg).extras["loadability"][0])
    assert 0 < lam < 1
    below = PowerFlowLayer(solver=NewtonRaphson(retry=False, jacobian="per_scenario", max_steps=50)).solve(
        network, pd_mw=0.97 * lam * pd, qd_mvar=0.97 * lam * qd, pg_mw=0.97 * lam * pg)
    assert below.statuses[0] is Status.CONVERGED
    above = PowerFlowLayer().solve(network, pd_mw=1.03 * lam * pd, qd_mvar=1.03 * lam * qd, pg_mw=1.03 * lam * pg)
    assert above.statuses[0] is Status.INFEASIBLE


def test_nan_load_raises_data_error():
    network, layer = _case9()
    pd = network.bus.pd_mw.clone()
    pd[4] = float("nan")
    with pytest.raises(DataError, match="pd_mw"):
        layer(network, pd_mw=pd)


def test_float32_converges_and_agrees():
    network, _ = _case9()
    r64 = PowerFlowLayer()(network)
    r32 = PowerFlowLayer(solver=NewtonRaphson(tol_mva=1e-3))(network.to(dtype=torch.float32))
    assert r32.vm_pu.dtype == torch.float32
    torch.testing.assert_close(r32.vm_pu.double(), r64.vm_pu, atol=1e-5, rtol=0)


def test_solver_settings_are_validated():
    with pytest.raises(ConfigError):
        NewtonRaphson(init="warm")
    with pytest.raises(ConfigError):
        NewtonRaphson(max_steps=0)
    with pytest.raises(ConfigError):
        PowerFlowLayer(solver="newton")
