"""The AC polar formulation: analytic derivatives against torch.func, batched evaluation,
and the numpy / torch / Pyomo backends evaluating the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError
from gridlearn.grid import load_case
from gridlearn.grid.acphysics import APPARENT_POWER, CURRENT, ACPolar, BranchLimit, pi_admittance_parts
from gridlearn.grid.formulations import MATPOWER, PANDAPOWER, Convention

F64 = torch.float64


class QuarticLimit(BranchLimit):
    """Test-only kind (w = vm^4): a new limit is one class, and every derivative follows from it."""

    name = "quartic"

    def weight(self, vm):
        return vm * vm * vm * vm

    def weight_d1(self, vm):
        return 4 * vm * vm * vm

    def weight_d2(self, vm):
        return 12 * vm * vm


@pytest.fixture(scope="module")
def case30():
    return load_case("case30")


def torch_form(net, limit, adm=None, rng=None):
    """ACPolar of ``net`` with every branch limited (rates near the flows) and angle-constrained."""
    br, bus = net.branch, net.bus
    base = float(net.base_mva)
    if adm is None:
        adm = pi_admittance_parts(br.r_pu, br.x_pu, br.g_pu, br.b_pu, br.tap, br.shift_rad, torch.cos, torch.sin)
    rate = torch.full((net.n_branch,), 0.3, dtype=F64) if rng is None else torch.as_tensor(
        rng.uniform(0.1, 0.5, net.n_branch), dtype=F64)
    every = torch.arange(net.n_branch)
    return ACPolar.from_branches(adm, br.from_bus, br.to_bus, net.gen.bus, bus.gs_mw / base, bus.bs_mvar / base, limit,
                                 n_bus=net.n_bus, limited=every, rate_pu=rate, angle_branches=every[::3])


def random_point(net, rng, batch=()):
    nb, ng = net.n_bus, net.n_gen
    z = np.concatenate([rng.normal(0, 0.2, batch + (nb,)), rng.uniform(0.9, 1.1, batch + (nb,)),
                        rng.uniform(0, 2, batch + (ng,)), rng.uniform(-1, 1, batch + (ng,))], axis=-1)
    pd = rng.uniform(0, 0.5, batch + (nb,))
    qd = rng.uniform(-0.1, 0.2, batch + (nb,))
    return (torch.as_tensor(v, dtype=F64) for v in (z, pd, qd))


def dense(rows, cols, vals, shape, symmetric=False):
    """A dense matrix from (rows, cols, values) entries (duplicates summed; symmetric: both triangles)."""
    r, c = torch.as_tensor(rows), torch.as_tensor(cols)
    out = torch.zeros(shape, dtype=F64).index_put((r, c), vals, accumulate=True)
    if symmetric:
        off = r != c
        out = out.index_put((c[off], r[off]), vals[off], accumulate=True)
    return out


def analytic(form, z, lam):
    va, vm, _, _ = form.split(z)
    s = form.end_state(va, vm)
    jac = form.end_jacobian(s)
    return form.jacobian_values(s, jac, vm), form.hessian_values(s, jac, lam)


@pytest.mark.parametrize("limit", [APPARENT_POWER, CURRENT, QuarticLimit()], ids=repr)
def test_jacobian_and_lagrangian_hessian_match_torch_func(case30, limit):
    rng = np.random.default_rng(0)
    form = torch_form(case30, limit, rng=rng)
    z, pd, qd = random_point(case30, rng)
    m, nz = form.n_constraints, form.n_z
    lam = torch.as_tensor(rng.normal(0, 10, m), dtype=F64)
    jv, hv = analytic(form, z, lam)
    j_ref = torch.func.jacfwd(form.constraints)(z, pd, qd)
    h_ref = torch.func.hessian(lambda zz: lam @ form.constraints(zz, pd, qd))(z)
    jr, jc = form.jacobian_pattern()
    hr, hc = form.hessian_pattern()
    assert j_ref.shape == (m, nz) and form.n_lim == 2 * case30.n_branch
    torch.testing.assert_close(dense(jr, jc, jv, (m, nz)), j_ref, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(dense(hr, hc, hv, (nz, nz), symmetric=True), h_ref, rtol=1e-12, atol=1e-9)
    # The limit rows are not trivially zero: the strategy's own terms are exercised.
    assert j_ref[2 * case30.n_bus : 2 * case30.n_bus + form.n_lim].abs().max() > 1e-2


def test_batched_scenarios_with_their_own_admittances_match_one_at_a_time(case30):
    """B scenarios at once (admittances, loads, multipliers per scenario), as the batched IPM calls it."""
    rng = np.random.default_rng(1)
    batch = 4
    br = case30.branch
    scale = torch.as_tensor(rng.uniform(0.8, 1.2, (batch, case30.n_branch)), dtype=F64)
    adm_b = pi_admittance_parts(br.r_pu * scale, br.x_pu * scale, br.g_pu, br.b_pu, br.tap, br.shift_rad,
                                torch.cos, torch.sin)
    form_b = torch_form(case30, CURRENT, adm=adm_b)
    z, pd, qd = random_point(case30, rng, (batch,))
    lam = torch.as_tensor(rng.normal(0, 10, (batch, form_b.n_constraints)), dtype=F64)
    c_b = form_b.constraints(z, pd, qd)
    jv_b, hv_b = analytic(form_b, z, lam)
    for k in range(batch):
        form_k = torch_form(case30, CURRENT, adm={n: v[k] for n, v in adm_b.items()})
        jv_k, hv_k = analytic(form_k, z[k], lam[k])
        torch.testing.assert_close(c_b[k], form_k.constraints(z[k], pd[k], qd[k]), rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(jv_b[k], jv_k, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(hv_b[k], hv_k, rtol=1e-14, atol=1e-14)
    # ... and the batched values are the per-scenario Jacobians torch.func gives under vmap.
    j_ref = torch.func.vmap(torch.func.jacfwd(lambda zz, p, q, y: _with_adm(form_b, y).constraints(zz, p, q)))(
        z, pd, qd, adm_b)
    jr, jc = form_b.jacobian_pattern()
    for k in range(batch):
        torch.testing.assert_close(dense(jr, jc, jv_b[k], j_ref.shape[1:]), j_ref[k], rtol=1e-12, atol=1e-10)


def _with_adm(form, adm):
    """``form`` with one scenario's admittances (inside vmap)."""
    import dataclasses

    return dataclasses.replace(form, g_self=torch.cat([adm["g_ff"], adm["g_tt"]], -1),
                               b_self=torch.cat([adm["b_ff"], adm["b_tt"]], -1),
                               g_mut=torch.cat([adm["g_ft"], adm["g_tf"]], -1),
                               b_mut=torch.cat([adm["b_ft"], adm["b_tf"]], -1))


@pytest.mark.parametrize("convention", [MATPOWER, PANDAPOWER], ids=lambda c: c.name)
def test_pyomo_numpy_and_torch_backends_evaluate_the_same_constraints(shared_data, convention):
    """The Pyomo model's constraint bodies, the Ipopt callbacks and the KKT residual agree at a point."""
    import pyomo.environ as pyo

    from gridlearn.grid.acopf_kkt import ActiveSet, KKTSystem
    from gridlearn.grid.acopf_model import acopf_arrays, build_acopf_model
    from gridlearn.grid.acopf_nlp import ACOPFNLP

    net = load_case(shared_data / "pglib-opf" / "pglib_opf_case5_pjm.m")  # every branch rated, angle limits
    d = acopf_arrays(net, convention)
    rng = np.random.default_rng(2)
    nb, ng = net.n_bus, net.n_gen
    start = {"va": rng.normal(0, 0.2, nb), "vm": rng.uniform(0.9, 1.1, nb), "pg": rng.uniform(0, 2, ng),
             "qg": rng.uniform(-1, 1, ng)}
    for i, v in d.va_fixed.items():
        start["va"][i] = v
    for i, v in d.vm_fixed.items():
        start["vm"][i] = v
    z = np.concatenate([start["va"], start["vm"], start["pg"], start["qg"]])
    nlp = ACOPFNLP(d, convention)
    g = nlp.constraints(nlp.to_x(z))
    assert nlp.n_lim == 2 * d.limited.size > 0

    m = build_acopf_model(d, convention, start)
    lim = d.limited.tolist()
    pyomo_g = np.concatenate([
        [pyo.value(m.p_balance[i].body) for i in range(nb)], [pyo.value(m.q_balance[i].body) for i in range(nb)],
        [pyo.value(m.flow_f[l].body) for l in lim], [pyo.value(m.flow_t[l].body) for l in lim],
        [pyo.value(m.angle[l].body) for l in d.angle_limited.tolist()]])
    np.testing.assert_allclose(g, pyomo_g, rtol=1e-12, atol=1e-12)
    assert np.abs(g[2 * nb : 2 * nb + nlp.n_lim]).max() > 1e-3

    every = torch.as_tensor(d.limited)
    act = ActiveSet(free=torch.arange(z.size), flow_f=every, flow_t=every, angle=torch.as_tensor(d.angle_limited))
    zt = torch.as_tensor(z)
    kkt = KKTSystem(net, convention, zt, act, torch.zeros(net.n_branch, dtype=F64))
    th = {"pd_mw": net.bus.pd_mw, "qd_mvar": net.bus.qd_mvar, **{n: getattr(net.branch, n) for n in
                                                                   ("r_pu", "x_pu", "g_pu", "b_pu")}}
    c, h = kkt.constraints(zt, th)
    np.testing.assert_allclose(torch.cat([c, h]).numpy(), g, rtol=1e-12, atol=1e-12)


def test_limit_kind_is_a_strategy_and_names_are_accepted():
    assert Convention("x", branch_limit="current", fix_ext_grid_voltage=False, angle_limits=True).branch_limit is CURRENT
    assert MATPOWER.branch_limit is APPARENT_POWER and PANDAPOWER.branch_limit is CURRENT
    custom = Convention("x", branch_limit=QuarticLimit(), fix_ext_grid_voltage=False, angle_limits=True)
    assert isinstance(custom.branch_limit, QuarticLimit)
    with pytest.raises(ConfigError, match="branch_limit"):
        Convention("x", branch_limit="thermal", fix_ext_grid_voltage=False, angle_limits=True)
    with pytest.raises(ConfigError, match="BranchLimit"):
        Convention("x", branch_limit=3, fix_ext_grid_voltage=False, angle_limits=True)


@pytest.mark.parametrize("limit", [APPARENT_POWER, CURRENT], ids=repr)
def test_limit_magnitude_and_residual_describe_the_same_set(limit):
    rng = np.random.default_rng(3)
    p, q = rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    vm = rng.uniform(0.9, 1.1, 200)
    rate = rng.uniform(0.2, 2.0, 200)
    mag = limit.magnitude(p, q, vm)
    expected = np.hypot(p, q) / (vm if limit is CURRENT else 1.0)
    np.testing.assert_allclose(mag, expected, rtol=1e-14)
    h = limit.residual(p, q, vm, rate)
    assert ((mag <= rate) == (h <= 0)).all() and (h > 0).any() and (h < 0).any()


def test_quadratic_cost_derivatives_match_torch_func_in_batch():
    from gridlearn.grid.acphysics import QuadraticCost

    g = torch.Generator().manual_seed(4)
    c2, c1, c0 = (torch.rand(3, 5, generator=g, dtype=F64) * s for s in (0.1, 30.0, 100.0))  # 3 scenarios
    cost = QuadraticCost(c2, c1, c0, base_mva=100.0)
    pg = torch.rand(3, 5, generator=g, dtype=F64)
    for k in range(3):
        one = QuadraticCost(c2[k], c1[k], c0[k], base_mva=100.0)
        torch.testing.assert_close(cost.gradient(pg)[k], torch.func.grad(lambda p: one.per_generator(p).sum())(pg[k]))
        torch.testing.assert_close(torch.diag(cost.hessian_diagonal(pg)[k]),
                                   torch.func.hessian(lambda p: one.per_generator(p).sum())(pg[k]))
    p_mw = pg * 100.0
    torch.testing.assert_close(cost.per_generator(pg), c2 * p_mw**2 + c1 * p_mw + c0)
