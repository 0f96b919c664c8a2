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
    g1, g2 = torch.autograd.grad(out.cost_usd_per_h.sum(), (c1, c2))
    # Envelope theorem: d cost*/d c1_g = pg_g, d cost*/d c2_g = pg_g^2.
    assert torch.allclose(g1, out.pg_mw[0].detach(), atol=1e-9)
    assert torch.allclose(g2, out.pg_mw[0].detach() ** 2, atol=1e-7)
    ref = fd(case30, "cost_c1_usd_per_mwh", 2, lambda r: r.cost_usd_per_h, 1e-4)
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
        return out.pg_mw, out.lmp_usd_per_mwh[:, :4], out.cost_usd_per_h

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


@pytest.mark.parametrize("convention", ["matpower", "pandapower"])
def test_sparse_kkt_matrix_and_closed_forms_match_torch_reference(case30, convention):
    """The analytic sparse K and the closed-form load/cost VJPs against torch.func on the KKT residual."""
    import numpy as np

    from gridlearn.grid.acopf import solve_acopf_nlp
    from gridlearn.grid.acopf_kkt import THETA_FIELDS, KKTSystem, active_set, bus_gen_envelope, bus_gen_vjp, kkt_matrix
    from gridlearn.grid.formulations import get_convention

    conv = get_convention(convention)
    _, _, res, nlp = solve_acopf_nlp(case30, conv, None, dict(TOL))
    nb, ng, base = case30.n_bus, case30.n_gen, float(case30.base_mva)
    z0 = torch.cat([res.va_rad, res.vm_pu, res.pg_mw / base, res.qg_mvar / base])
    act = active_set(res, nb, ng, 1e-5)
    assert act.flow_f.numel() + act.flow_t.numel() > 0  # the test covers binding flow limits
    d = res.duals
    lam = torch.cat([d["p_balance"], d["q_balance"]])
    mu = torch.cat([d["flow_f"][act.flow_f], d["flow_t"][act.flow_t], d["angle"][act.angle]])
    y = torch.cat([z0[act.free], lam, mu])
    th = {n: getattr(t, n).double() for n in THETA_FIELDS for t in (case30.bus, case30.gen, case30.branch)
          if hasattr(t, n)}
    kkt = KKTSystem(case30, conv, z0, act, res.angle_bound_rad)
    k_ref = kkt.matrix(y, th)
    k = kkt_matrix(nlp, z0.numpy(), lam.numpy(), mu.numpy(), act).toarray()
    assert np.abs(k - k_ref.numpy()).max() <= 1e-9 * k_ref.abs().max()
    w = torch.randn(k.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = kkt.theta_vjp(y, th, w)
    mine = bus_gen_vjp(w.numpy(), z0.numpy(), act, nb, ng, base)
    env_ref = kkt.envelope((z0[act.free], lam, mu), th)
    env = bus_gen_envelope(lam.numpy(), z0.numpy(), nb, ng, base)
    for name in mine:
        scale = max(1.0, float(ref[name].abs().max()))
        np.testing.assert_allclose(mine[name], ref[name].numpy(), atol=1e-10 * scale, err_msg=name)
        np.testing.assert_allclose(env[name], env_ref[name].numpy(), atol=1e-10 * max(1.0, float(env_ref[name].abs().max())),
                                   err_msg=name)


def test_gradient_does_not_depend_on_which_inputs_need_it(case30):
    layer = ACOPFLayer(case30)
    pd = case30.bus.pd_mw.clone()[None].requires_grad_()
    x = case30.branch.x_pu.clone().requires_grad_()
    c1 = case30.gen.cost_c1_usd_per_mwh.clone().requires_grad_()

    def loss(out):
        return out.pg_mw.sum() + out.lmp_usd_per_mwh[:, 5].sum() + 1e-3 * out.cost_usd_per_h.sum()

    (g_pd_only,) = torch.autograd.grad(loss(layer(pd)), pd)
    g_pd, g_x, g_c1 = torch.autograd.grad(loss(layer(pd, x_pu=x, cost_c1_usd_per_mwh=c1)), (pd, x, c1))
    assert torch.allclose(g_pd, g_pd_only, rtol=1e-10, atol=1e-12)
    assert g_x.abs().max() > 0 and g_c1.abs().max() > 0


def test_new_parameters_each_call_match_fresh_solves(case30):
    """The inverse-OPF pattern: one layer, new costs and reactances every call."""
    layer = ACOPFLayer(case30, convention="pandapower")
    gen = torch.Generator().manual_seed(3)
    pd = case30.bus.pd_mw[None]
    for _ in range(2):
        c1 = case30.gen.cost_c1_usd_per_mwh * (0.8 + 0.4 * torch.rand(case30.n_gen, generator=gen, dtype=torch.float64))
        x = case30.branch.x_pu * (0.9 + 0.2 * torch.rand(case30.n_branch, generator=gen, dtype=torch.float64))
        out = layer(pd, cost_c1_usd_per_mwh=c1, x_pu=x)
        fresh = solve_acopf(case30.with_(cost_c1_usd_per_mwh=c1, x_pu=x), "pandapower", **TOL)
        assert float(out.cost_usd_per_h[0]) == pytest.approx(fresh.cost_usd_per_h, rel=1e-8)
        assert torch.allclose(out.pg_mw[0], fresh.pg_mw, atol=1e-6)
        assert torch.allclose(out.lmp_usd_per_mwh[0], fresh.lmp_usd_per_mwh, atol=1e-6)


# ---------------------------------------------------------------- active set, Ipopt tolerance, warm starts
def test_active_set_is_invariant_to_cost_scale(case30):
    """Multipliers scale with the costs, the optimum and its active set do not.

    An absolute threshold (1e-5 $/h per pu) called 25 bounds of case30 active at costs x1000
    instead of 1; the scale-aware test must give the same active set and the same gradient.
    """
    import numpy as np

    from gridlearn.grid.acopf import solve_acopf_nlp
    from gridlearn.grid.acopf_kkt import active_set
    from gridlearn.grid.formulations import get_convention

    conv = get_convention("matpower")
    sets, grads = [], []
    for scale in (1e-3, 1.0, 1e3):
        net = case30.with_(cost_c1_usd_per_mwh=case30.gen.cost_c1_usd_per_mwh * scale,
                           cost_c2_usd_per_mw2h=case30.gen.cost_c2_usd_per_mw2h * scale)
        _, _, res, nlp = solve_acopf_nlp(net, conv, None, {"tol": 1e-9})
        act = active_set(res, net.n_bus, net.n_gen, nlp=nlp)
        sets.append([a.tolist() for a in (act.free, act.flow_f, act.flow_t, act.angle)])
        pd = net.bus.pd_mw.clone()[None].requires_grad_()
        (g,) = torch.autograd.grad(ACOPFLayer(net)(pd).pg_mw[0, 1], pd)
        grads.append(g)
    assert sets[0] == sets[1] == sets[2]
    assert len(sets[1][0]) == 2 * case30.n_bus + 2 * case30.n_gen - 2  # reference angle fixed, one bound active
    for g in (grads[0], grads[2]):
        np.testing.assert_allclose(g.numpy(), grads[1].numpy(), rtol=1e-4, atol=1e-7 * float(grads[1].abs().max()))


def test_weakly_active_bound_raises_instead_of_a_one_sided_gradient():
    """pmax set exactly at the unconstrained optimum: slack and multiplier both ~0, no derivative."""
    from gridlearn.errors import SolverFailure

    net = load_case("case9")
    free = solve_acopf(net, backend="direct", tol=1e-9)
    pmax = net.gen.pmax_mw.clone()
    pmax[1] = free.pg_mw[1]
    tight = net.with_(pmax_mw=pmax)
    pd = tight.bus.pd_mw.clone()[None].requires_grad_()
    out = ACOPFLayer(tight)(pd)
    assert float(out.pg_mw[0, 1].detach()) == pytest.approx(float(free.pg_mw[1]), abs=1e-3)  # the solve itself is fine
    with pytest.raises(SolverFailure, match="pg\\[1\\] is weakly active"):
        torch.autograd.grad(out.pg_mw[0, 1], pd)
    # a bound moved 1 MW away is cleanly inactive again
    pmax[1] = free.pg_mw[1] + 1.0
    pd2 = pd.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(ACOPFLayer(net.with_(pmax_mw=pmax))(pd2).pg_mw[0, 1], pd2)
    assert torch.isfinite(g).all() and g.abs().max() > 0


def _case30_scenario_23(net):
    """The 24th draw of the load stream that made Ipopt stop at "acceptable" with tol=1e-10."""
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(24):
        level = rng.uniform(0.9, 1.1)
        factor = torch.as_tensor(level * rng.uniform(0.9, 1.1, net.n_bus))
    return net.bus.pd_mw * factor, net.bus.qd_mvar * factor


def test_default_tolerance_converges_where_1e10_stops_at_acceptable(case30):
    from gridlearn.errors import SolverFailure

    pd, qd = _case30_scenario_23(case30)
    strict = ACOPFLayer(case30, ipopt_options={"tol": 1e-10})
    sol = strict.solve(pd[None], qd[None])
    # Ipopt 3.14 (cyipopt wheel, MUMPS) ends this one "Solved_To_Acceptable_Level": reported, not accepted
    assert sol.statuses == [Status.ACCEPTABLE]
    with pytest.raises(SolverFailure, match="ACCEPTABLE"):
        strict(pd[None], qd[None])
    layer = ACOPFLayer(case30)
    assert layer.ipopt_options["tol"] == 1e-9
    out = layer(pd[None], qd[None])
    ref = solve_acopf(case30.with_(pd_mw=pd, qd_mvar=qd), backend="direct", tol=1e-8)
    assert torch.allclose(out.pg_mw[0], ref.pg_mw, atol=1e-4)


def test_warm_start_is_used_and_changes_nothing_but_the_start(case30, monkeypatch):
    import gridlearn.grid.acopf_layer as mod

    layer = ACOPFLayer(case30)
    gen = torch.Generator().manual_seed(7)
    pd = case30.bus.pd_mw[None] * (0.97 + 0.03 * torch.rand(2, 1, generator=gen, dtype=torch.float64))
    c1 = case30.gen.cost_c1_usd_per_mwh.clone().requires_grad_()
    cold, sol = layer.forward_with_solution(pd, cost_c1_usd_per_mwh=c1)
    results = sol.extras["results"]
    assert len(results) == 2 and all(r is not None for r in results)
    (g_cold,) = torch.autograd.grad(cold.lmp_usd_per_mwh.sum(), c1)

    starts, options = [], []
    real = mod.solve_acopf_nlp

    def spy(net, conv, warm, opts):
        starts.append(warm)
        options.append(opts)
        return real(net, conv, warm, opts)

    monkeypatch.setattr(mod, "solve_acopf_nlp", spy)
    c1b = (c1.detach() * 1.001).requires_grad_()
    warm = layer(pd, cost_c1_usd_per_mwh=c1b, warm_start=results)
    assert starts == results  # each sample started from its own previous solution
    (g_warm,) = torch.autograd.grad(warm.lmp_usd_per_mwh.sum(), c1b)
    fresh = layer(pd, cost_c1_usd_per_mwh=c1b.detach())
    assert torch.allclose(warm.pg_mw, fresh.pg_mw, atol=1e-6)
    assert torch.allclose(warm.lmp_usd_per_mwh, fresh.lmp_usd_per_mwh, atol=1e-6)
    assert torch.allclose(g_warm, g_cold, rtol=1e-2)  # 0.1% cost change: gradients nearly equal
    assert all(o["mu_init"] == mod.WARM_IPOPT_OPTIONS["mu_init"] for o in options[:2])  # the warm-started pair
    assert all("mu_init" not in o for o in options[2:])  # `fresh`: cold
    starts.clear()
    options.clear()
    layer.solve(pd, warm_start=[None, results[0]])
    assert starts[1] is results[0] and starts[0] is None
    assert "mu_init" not in options[0] and options[1]["mu_init"] == mod.WARM_IPOPT_OPTIONS["mu_init"]
    with pytest.raises(ValueError, match="warm_start has 1 entries"):
        layer.solve(pd, warm_start=results[:1])
    with pytest.raises(TypeError, match="unexpected parameters"):
        layer.solve(pd, cost_c1=c1)
