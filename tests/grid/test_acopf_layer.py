"""ACOPFLayer: KKT backward against central finite differences of Ipopt re-solves, gradcheck, failures."""

from __future__ import annotations

import pytest
import torch

from gridlearn.errors import InfeasibleError
from gridlearn.grid import ACOPFLayer, load_case
from gridlearn.grid.acopf import solve_acopf
from gridlearn.implicit.solution import Status

TOL = dict(tol=1e-10)


@pytest.fixture(scope="module")
def case30():
    return load_case("case30")


def fd(net, field, idx, out, h):
    up, down = getattr_field(net, field).clone(), getattr_field(net, field).clone()
    up[idx] += h
    down[idx] -= h
    return (out(solve_acopf(net.with_(**{field: up}), **TOL)) - out(solve_acopf(net.with_(**{field: down}), **TOL))) / (2 * h)


def getattr_field(net, field):
    for table in (net.bus, net.gen, net.branch):
        if hasattr(table, field):
            return getattr(table, field)
    raise AttributeError(field)


def test_dispatch_wrt_load_matches_finite_differences(case30):
    layer = ACOPFLayer(case30)
    pd = case30.bus.pd_mw.clone()[None].requires_grad_()
    out = layer(pd)
    for g, bus in ((1, 7), (3, 29)):
        (grad,) = torch.autograd.grad(out.pg_mw[0, g], pd, retain_graph=True)
        ref = fd(case30, "pd_mw", bus, lambda r: float(r.pg_mw[g]), 1e-4)
        assert float(grad[0, bus]) == pytest.approx(ref, rel=1e-4, abs=1e-6)


def test_objective_wrt_cost_is_envelope_exact(case30):
    layer = ACOPFLayer(case30)
    c1 = case30.gen.cost_c1_usd_per_mwh.clone().requires_grad_()
    c2 = case30.gen.cost_c2_usd_per_mw2h.clone().requires_grad_()
    out = layer(case30.bus.pd_mw[None], cost_c1_usd_per_mwh=c1, cost_c2_usd_per_mw2h=c2)
    g1, g2 = torch.autograd.grad(out.objective_usd_per_h.sum(), (c1, c2))
    # Envelope theorem: d cost*/d c1_g = pg_g, d cost*/d c2_g = pg_g^2.
    assert torch.allclose(g1, out.pg_mw[0].detach(), atol=1e-9)
    assert torch.allclose(g2, out.pg_mw[0].detach() ** 2, atol=1e-7)
    ref = fd(case30, "cost_c1_usd_per_mwh", 2, lambda r: r.objective, 1e-4)
    assert float(g1[2]) == pytest.approx(ref, rel=1e-6)


def test_lmp_wrt_reactance_matches_finite_differences(case30):
    layer = ACOPFLayer(case30)
    x = case30.branch.x_pu.clone().requires_grad_()
    out = layer(case30.bus.pd_mw[None], x_pu=x)
    (grad,) = torch.autograd.grad(out.lmp_usd_per_mwh[0, 3], x)
    for branch in (0, 3, 10):
        ref = fd(case30, "x_pu", branch, lambda r: float(r.lmp_usd_per_mwh[3]), 1e-6)
        assert float(grad[branch]) == pytest.approx(ref, rel=1e-3, abs=1e-5)


def test_gradcheck_case9_loads_and_resistance():
    net = load_case("case9")
    layer = ACOPFLayer(net)
    loads = [4, 6, 8]

    def f(p_sub, r):
        pd = net.bus.pd_mw.clone()[None].expand(1, -1).clone()
        pd[0, loads] = p_sub
        out = layer(pd, r_pu=r)
        return out.pg_mw, out.lmp_usd_per_mwh[:, :4], out.objective_usd_per_h

    p = net.bus.pd_mw[loads].clone().requires_grad_()
    r = net.branch.r_pu.clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (p, r), eps=1e-5, atol=1e-3, rtol=1e-3)


def test_batch_of_scenarios_matches_single_solves(case30):
    layer = ACOPFLayer(case30, convention="pandapower")
    gen = torch.Generator().manual_seed(0)
    scale = 0.95 + 0.05 * torch.rand(3, 1, generator=gen, dtype=torch.float64)
    pd = case30.bus.pd_mw[None] * scale
    out = layer(pd, case30.bus.qd_mvar[None] * scale)
    for b in range(3):
        single = solve_acopf(case30.with_(pd_mw=pd[b], qd_mvar=case30.bus.qd_mvar * scale[b]), "pandapower", **TOL)
        assert torch.allclose(out.pg_mw[b], single.pg_mw, atol=1e-4)
        assert torch.allclose(out.lmp_usd_per_mwh[b], single.lmp_usd_per_mwh, atol=1e-4)


def test_infeasible_sample_is_reported_and_raises(case30):
    layer = ACOPFLayer(case30)
    pd = torch.stack([case30.bus.pd_mw, case30.bus.pd_mw * 6])
    sol = layer.solve(pd)
    assert sol.statuses == [Status.CONVERGED, Status.INFEASIBLE]
    assert torch.isnan(sol.value.pg_mw[1]).all() and torch.isfinite(sol.value.pg_mw[0]).all()
    with pytest.raises(InfeasibleError, match="#1: INFEASIBLE"):
        layer(pd.requires_grad_())
