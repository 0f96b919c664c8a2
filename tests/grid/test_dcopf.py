"""DC-OPF layer: against pandapower's rundcopp, LMPs, gradients, ramping, failures."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError, DataError, InfeasibleError
from gridlearn.grid import DCOPFLayer, Network, network_from_pandapower
from gridlearn.grid.cases import load_pandapower_net
from gridlearn.implicit.solution import Status


# Small dense batched kernels: extra OpenMP threads only contend on a shared runner.
pytestmark = pytest.mark.usefixtures("single_thread")


def _rundcopp(net):
    import pandapower as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.rundcopp(net)


def _compare(net, network, res):
    _rundcopp(net)
    assert float(res.cost_usd_per_h) == pytest.approx(net.res_cost, rel=1e-6)
    pg = [net["res_" + table].p_mw.at[idx] for table, idx in network.gen.labels]
    np.testing.assert_allclose(res.pg_mw.numpy(), pg, atol=1e-5, rtol=0)
    labels = list(network.bus.labels)
    np.testing.assert_allclose(res.lmp_usd_per_mwh.numpy(), net.res_bus.lam_p.loc[labels].values, atol=1e-5, rtol=0)
    np.testing.assert_allclose(res.va_rad.numpy(), np.deg2rad(net.res_bus.va_degree.loc[labels].values), atol=1e-6, rtol=0)


def _invariants(network, res, pd=None):
    """Power balance, generator and line limits, on a solved single-period result."""
    pd = network.bus.pd_mw if pd is None else pd
    gen, br = network.gen, network.branch
    balance = res.pg_mw.sum(-1) - (pd + network.bus.gs_mw).sum(-1)
    assert float(balance.abs().max()) < 1e-6
    assert bool((res.pg_mw <= gen.pmax_mw + 1e-6).all() and (res.pg_mw >= gen.pmin_mw - 1e-6).all())
    assert bool((res.p_from_mw.abs() <= br.rate_a_mva + 1e-6).all())


@pytest.mark.parametrize("case", ["case9", "case30", "case118", "case300"])
def test_matches_rundcopp(case):
    net = load_pandapower_net(f"pandapower:{case}")  # pandapower's bundled copy, as rundcopp's reference
    network = network_from_pandapower(net)
    res = DCOPFLayer()(network)
    _invariants(network, res)
    _compare(net, network, res)


def _congested_case9():
    """case9 with its most loaded line derated to 70% of its optimal flow."""
    net = load_pandapower_net("case9")
    _rundcopp(net)
    line = int(net.res_line.loading_percent.idxmax())
    net.line.loc[line, "max_i_ka"] *= 0.7 * net.res_line.loading_percent.at[line] / 100.0
    return net, line


@functools.lru_cache(maxsize=1)
def _congested_network():
    net, line = _congested_case9()
    return network_from_pandapower(net), line


def test_congested_case_matches_rundcopp_and_prices_differ():
    net, line = _congested_case9()
    network = network_from_pandapower(net)
    res = DCOPFLayer()(network)
    _invariants(network, res)
    _compare(net, network, res)
    k = network.branch.labels.index(("line", line))
    assert float(res.p_from_mw[k].abs()) == pytest.approx(float(network.branch.rate_a_mva[k]), rel=1e-6)
    assert float(res.line_value_usd_per_mwh[k]) > 0.1
    assert float(res.lmp_usd_per_mwh.max() - res.lmp_usd_per_mwh.min()) > 0.1  # congestion splits prices


def test_linear_costs_match_rundcopp():
    net = load_pandapower_net("case30")
    net.poly_cost["cp2_eur_per_mw2"] = 0.0
    network = network_from_pandapower(net)
    assert bool((network.gen.cost_c2_usd_per_mw2h == 0).all())
    res = DCOPFLayer()(network)
    _invariants(network, res)
    _compare(net, network, res)


def test_pglib_objectives_match_rundcopp(shared_data, monkeypatch):
    monkeypatch.setenv("GRIDLEARN_DATA_DIR", str(shared_data))
    for name in ("pglib_opf_case3_lmbd", "pglib_opf_case30_ieee"):  # both congested
        net = load_pandapower_net(name)
        network = network_from_pandapower(net)
        res = DCOPFLayer()(network)
        _compare(net, network, res)
        assert float(res.lmp_usd_per_mwh.max() - res.lmp_usd_per_mwh.min()) > 1.0
    # 1/x susceptance (MATPOWER, pandapower): README gives 7504.4 for case30_ieee
    assert float(res.cost_usd_per_h) == pytest.approx(7504.4, abs=0.05)


def test_lmps_are_the_gradient_of_cost_wrt_load():
    """Envelope theorem: LMP_i = ∂cost*/∂pd_i, with congestion, in a batch."""
    network, _ = _congested_network()
    g = torch.Generator().manual_seed(3)
    pd = (network.bus.pd_mw * (1 + 0.05 * torch.rand(3, network.n_bus, generator=g, dtype=torch.float64))).requires_grad_()
    res = DCOPFLayer()(network, pd_mw=pd)
    (grad,) = torch.autograd.grad(res.cost_usd_per_h.sum(), pd)
    torch.testing.assert_close(grad, res.lmp_usd_per_mwh.detach(), atol=1e-5, rtol=1e-6)


def test_dispatch_gradient_matches_closed_form_when_uncongested():
    """No binding limits: 2 c2_g pg_g + c1_g = λ, Σ pg = D, so ∂pg_g/∂D = (1/c2_g) / Σ (1/c2)."""
    network = network_from_pandapower(load_pandapower_net("case9"))
    pd = network.bus.pd_mw.clone().requires_grad_()
    res = DCOPFLayer()(network, pd_mw=pd)
    gen = network.gen
    assert bool(((res.pg_mw > gen.pmin_mw + 1) & (res.pg_mw < gen.pmax_mw - 1)).all())
    inv = 1.0 / gen.cost_c2_usd_per_mw2h
    for j in range(network.n_gen):
        (grad,) = torch.autograd.grad(res.pg_mw[j], pd, retain_graph=True)
        torch.testing.assert_close(grad, (inv[j] / inv.sum()).expand_as(grad), atol=1e-7, rtol=1e-6)


def test_gradcheck_loads_and_costs():
    network, _ = _congested_network()
    layer = DCOPFLayer()
    pd = network.bus.pd_mw.expand(2, -1).clone().requires_grad_()
    c1 = network.gen.cost_c1_usd_per_mwh.clone().requires_grad_()
    c2 = network.gen.cost_c2_usd_per_mw2h.clone().requires_grad_()

    def f(pd, c2, c1):
        r = layer(network, pd_mw=pd, cost_c2_usd_per_mw2h=c2, cost_c1_usd_per_mwh=c1)
        return r.pg_mw, r.p_from_mw, r.lmp_usd_per_mwh, r.cost_usd_per_h

    assert torch.autograd.gradcheck(f, (pd, c2, c1), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_overloaded_case_raises_infeasible():
    network = network_from_pandapower(load_pandapower_net("case9"))
    pd = network.bus.pd_mw.expand(3, -1).clone()
    pd[1] *= 3.0  # 945 MW against 820 MW of generation
    sol = DCOPFLayer().solve(network, pd_mw=pd)
    assert sol.statuses == [Status.CONVERGED, Status.INFEASIBLE, Status.CONVERGED]
    assert bool(torch.isnan(sol.value.pg_mw[1]).all()) and bool(torch.isfinite(sol.value.pg_mw[0]).all())
    with pytest.raises(InfeasibleError, match="load exceeds") as info:
        DCOPFLayer()(network, pd_mw=pd)
    assert info.value.indices == [1]


def test_nan_load_raises_data_error():
    network = network_from_pandapower(load_pandapower_net("case9"))
    pd = network.bus.pd_mw.clone()
    pd[4] = float("nan")
    with pytest.raises(DataError, match="pd_mw"):
        DCOPFLayer()(network, pd_mw=pd)


def _horizon_loads(network, periods=6):
    shape = torch.tensor([0.6, 0.85, 1.0, 1.0, 0.75, 0.55], dtype=torch.float64)[:periods]
    return shape[:, None] * network.bus.pd_mw


def test_multi_period_without_ramps_equals_single_periods():
    network = network_from_pandapower(load_pandapower_net("case9"))
    pd = _horizon_loads(network)
    multi = DCOPFLayer(multi_period=True)(network, pd_mw=pd)
    single = DCOPFLayer()(network, pd_mw=pd)  # the periods as a batch
    torch.testing.assert_close(multi.pg_mw, single.pg_mw, atol=1e-6, rtol=0)
    torch.testing.assert_close(multi.lmp_usd_per_mwh, single.lmp_usd_per_mwh, atol=1e-6, rtol=0)


def test_ramping_is_respected_and_matches_cvxpy():
    cp = pytest.importorskip("cvxpy")
    network = network_from_pandapower(load_pandapower_net("case9"))
    pd = _horizon_loads(network).requires_grad_()
    ramp = torch.tensor([40.0, 20.0, 40.0], dtype=torch.float64)  # the horizon's 79 MW step needs all three
    p0 = torch.tensor([60.0, 90.0, 40.0], dtype=torch.float64)
    layer = DCOPFLayer(multi_period=True)
    res = layer(network, pd_mw=pd, ramp_mw_per_h=ramp, p0_mw=p0)
    free = layer(network, pd_mw=pd.detach())
    steps = torch.diff(torch.cat([p0[None], res.pg_mw]), dim=0)
    assert bool((steps.abs() <= ramp + 1e-6).all())
    assert bool((torch.diff(free.pg_mw, dim=0).abs() > ramp + 5.0).any())  # the limits do bind
    assert float(res.cost_usd_per_h.detach().sum()) > float(free.cost_usd_per_h.sum()) + 1.0
    # reference: the same problem written directly in cvxpy (angle form, no PTDF)
    gen, br = network.gen, network.branch
    base, T, ng, nb = network.base_mva, pd.shape[0], network.n_gen, network.n_bus
    dc = network.dc_matrices()
    cg, bbus, bf = network.gen_incidence().numpy(), dc.b_bus.numpy(), dc.b_f.numpy()
    pg, th = cp.Variable((T, ng)), cp.Variable((T, nb))
    ref = int(network.ref_buses[0])
    c2, c1 = gen.cost_c2_usd_per_mw2h.numpy(), gen.cost_c1_usd_per_mwh.numpy()
    cons = [th[:, ref] == 0, pg <= gen.pmax_mw.numpy(), pg >= gen.pmin_mw.numpy(),
            cp.abs(pg[0] - p0.numpy()) <= ramp.numpy(), cp.abs(pg[1:] - pg[:-1]) <= ramp.numpy()[None]]
    for t in range(T):
        cons += [cg @ pg[t] - pd.detach().numpy()[t] == base * (bbus @ th[t]),
                 cp.abs(base * (bf @ th[t])) <= br.rate_a_mva.numpy()]
    prob = cp.Problem(cp.Minimize(cp.sum(pg**2 @ c2 + pg @ c1)), cons)
    prob.solve()
    np.testing.assert_allclose(res.pg_mw.detach().numpy(), pg.value, atol=1e-3)
    total = float(res.cost_usd_per_h.detach().sum()) - network.gen.cost_c0_usd_per_h.sum().item() * T
    assert total == pytest.approx(prob.value, rel=1e-6)
    # LMPs stay the gradient of the total cost with ramping coupling the periods
    (grad,) = torch.autograd.grad(res.cost_usd_per_h.sum(), pd)
    torch.testing.assert_close(grad, res.lmp_usd_per_mwh.detach(), atol=1e-5, rtol=1e-6)


def test_arguments_are_validated():
    network = network_from_pandapower(load_pandapower_net("case9"))
    ramp = torch.full((network.n_gen,), 10.0, dtype=torch.float64)
    with pytest.raises(ConfigError, match="multi_period"):
        DCOPFLayer()(network, ramp_mw_per_h=ramp)
    with pytest.raises(DataError, match="pd_mw must have shape"):
        DCOPFLayer(multi_period=True)(network, pd_mw=network.bus.pd_mw)
    with pytest.raises(DataError, match="cost_c2"):
        DCOPFLayer()(network, cost_c2_usd_per_mw2h=-network.gen.cost_c2_usd_per_mw2h)


def test_screening_redundant_limits_changes_nothing():
    network, _ = _congested_network()
    g = torch.Generator().manual_seed(5)
    pd = (network.bus.pd_mw * (1 + 0.1 * torch.rand(4, network.n_bus, generator=g, dtype=torch.float64))).requires_grad_()
    a = DCOPFLayer(screen_limits=True)(network, pd_mw=pd)
    b = DCOPFLayer(screen_limits=False)(network, pd_mw=pd)
    for name in ("pg_mw", "p_from_mw", "lmp_usd_per_mwh", "line_value_usd_per_mwh"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=1e-6, rtol=0)
    (ga,) = torch.autograd.grad(a.pg_mw[:, 1].sum(), pd)
    (gb,) = torch.autograd.grad(b.pg_mw[:, 1].sum(), pd)
    torch.testing.assert_close(ga, gb, atol=1e-6, rtol=0)


def test_fixed_unit_matches_rundcopp_lmps_included():
    """A unit with pmin = pmax (held by an equality row, dcopf_problem.FIXED_MW): same
    dispatch, cost and LMPs as pandapower's rundcopp on the same net."""
    net = load_pandapower_net("case9")
    net.gen.loc[0, ["min_p_mw", "max_p_mw"]] = 100.0
    network = Network.from_pandapower(net)
    j = network.gen.labels.index(("gen", 0))
    res = DCOPFLayer()(network)
    assert float(res.pg_mw[j]) == pytest.approx(100.0, abs=1e-9)
    _invariants(network, res)
    _compare(net, network, res)


def test_rts_gmlc_zero_mw_units_solve_at_the_default_tolerance(monkeypatch):
    """case_RTS_GMLC has three units with Pmin = Pmax = 0 (and piecewise-linear costs):
    as two bound rows that meet, the feasible set has no interior and the interior point's
    bound duals diverged (MAX_STEPS at tol 1e-11, rescued only by the bordered-LU re-solve).
    Held as equalities it converges directly, to the optimum the two-bound form reaches at
    the looser 1e-9."""
    from gridlearn.grid import dcopf_problem, load_case
    from gridlearn.implicit.qp import QPSettings

    network = load_case("case_RTS_GMLC")
    fixed = ((network.gen.pmax_mw - network.gen.pmin_mw).abs() <= dcopf_problem.FIXED_MW).nonzero().flatten()
    assert len(fixed) == 3
    sol = DCOPFLayer().solve(network)
    assert sol.statuses[0] is Status.CONVERGED
    assert float(sol.value.pg_mw[fixed].abs().max()) < 1e-9
    _invariants(network, sol.value)
    monkeypatch.setattr(dcopf_problem, "FIXED_MW", -1.0)  # the two-bound form
    two = DCOPFLayer().solve(network)
    # the first solve runs out of its 60 iterations (MAX_STEPS); the interior point's
    # bordered-LU re-solve of failed elements (qp_backward._retry_bordered) then converges
    assert two.statuses[0] is Status.CONVERGED and int(two.steps[0]) > DCOPFLayer().settings.max_iter
    assert float(two.value.cost_usd_per_h) == pytest.approx(float(sol.value.cost_usd_per_h), rel=1e-8)
    loose = DCOPFLayer(settings=QPSettings(tol=1e-9)).solve(network)
    assert loose.statuses[0] is Status.CONVERGED
    assert float(sol.value.cost_usd_per_h) == pytest.approx(float(loose.value.cost_usd_per_h), rel=1e-8)
