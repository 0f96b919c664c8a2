"""AC-OPF (Pyomo + Ipopt): published objectives, pandapower runopp, LMP sign, invariants, failures."""

from __future__ import annotations

import warnings
from collections import defaultdict

import numpy as np
import pytest
import torch

from gridlearn.errors import InfeasibleError
from gridlearn.grid import load_case
from gridlearn.grid.acopf import solve_acopf
from gridlearn.grid.formulations import pi_admittance_parts
from gridlearn.grid.matrices import branch_admittances

# MATPOWER's published AC-OPF objectives ($/h), shared/data/README.md.
MATPOWER_AC = {"case9": 5296.69, "case30": 576.89, "case39": 41864.18, "case57": 41737.79, "case118": 129660.70}
# PGLib-OPF v23.07 BASELINE.md AC objectives ($/h), shared/data/README.md.
PGLIB_AC = {
    "pglib_opf_case3_lmbd": 5812.64, "pglib_opf_case5_pjm": 17551.89, "pglib_opf_case14_ieee": 2178.08,
    "pglib_opf_case24_ieee_rts": 63352.20, "pglib_opf_case30_ieee": 8208.52, "pglib_opf_case39_epri": 138415.56,
    "pglib_opf_case57_ieee": 37589.34, "pglib_opf_case118_ieee": 97213.61,
}


def with_matpower_branches(network, ref_rows):
    """Replace every branch's r, x, g, b, tap, shift and orientation by MATPOWER's.

    ``ref_rows``: (from_label, to_label, r, x, b, tap, shift_rad) per MATPOWER branch, matched
    to the network's branches by bus pair (parallel branches by reactance). Needed because
    pandapower's MATPOWER converter (a) turns a branch between buses of different nominal
    voltage into a transformer with the HV bus as "from" and keeps the tap ratio there even
    when MATPOWER's tap sits on the other (from) bus -- case57 (pandapower's JSON) and
    pglib case24 -- and (b) turns line charging B of such branches into transformer
    magnetising admittance (sign flipped, T model) -- the 4 branches 65-68, 68-81, 68-116,
    86-87 of case118, the cause of its +0.015% objective.
    """
    groups = defaultdict(list)
    lab = network.bus.labels
    for k in range(network.n_branch):
        f, t = lab[int(network.branch.from_bus[k])], lab[int(network.branch.to_bus[k])]
        groups[(min(f, t), max(f, t))].append(k)
    ref = defaultdict(list)
    for row in ref_rows:
        ref[(min(row[0], row[1]), max(row[0], row[1]))].append(row)
    pos = {b: i for i, b in enumerate(lab)}
    names = ("from_bus", "to_bus", "r_pu", "x_pu", "g_pu", "b_pu", "tap", "shift_rad")
    new = {n: getattr(network.branch, n).clone() for n in names}
    for key, rows in groups.items():
        rows = sorted(rows, key=lambda k: float(network.branch.x_pu[k]))
        refs = sorted(ref[key], key=lambda r: r[3])
        assert len(refs) == len(rows), key  # test-data sanity, not a library check
        for k, (f, t, r, x, b, tap, shift) in zip(rows, refs):
            for name, v in zip(names, (pos[f], pos[t], r, x, 0.0, b, tap, shift)):
                new[name][k] = v
    return network.with_(**new)


def matpower_rows(path):
    from pandapower.converter.matpower.from_mpc import _m2ppc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppc = _m2ppc(str(path))
    pos = {int(b): i for i, b in enumerate(ppc["bus"][:, 0])}
    return [(pos[int(r[0])], pos[int(r[1])], r[2], r[3], r[4], r[8] if r[8] != 0 else 1.0, np.deg2rad(r[9]))
            for r in ppc["branch"] if r[10] > 0]


def check_invariants(net, res, tol=1e-6, balance_mva=1e-3):
    """Power balance at every bus (within Ipopt's default constr_viol_tol) and every limit."""
    p_inj = torch.zeros(net.n_bus, dtype=torch.float64).index_add(0, net.gen.bus, res.pg_mw)
    q_inj = torch.zeros(net.n_bus, dtype=torch.float64).index_add(0, net.gen.bus, res.qg_mvar)
    p_out = torch.zeros(net.n_bus, dtype=torch.float64).index_add(0, net.branch.from_bus, res.p_from_mw).index_add(
        0, net.branch.to_bus, res.p_to_mw)
    q_out = torch.zeros(net.n_bus, dtype=torch.float64).index_add(0, net.branch.from_bus, res.q_from_mvar).index_add(
        0, net.branch.to_bus, res.q_to_mvar)
    vm2 = res.vm_pu**2
    assert torch.allclose(p_inj - net.bus.pd_mw - net.bus.gs_mw * vm2, p_out, atol=balance_mva)
    assert torch.allclose(q_inj - net.bus.qd_mvar + net.bus.bs_mvar * vm2, q_out, atol=balance_mva)
    assert (res.vm_pu <= net.bus.vmax_pu + tol).all() and (res.vm_pu >= net.bus.vmin_pu - tol).all()
    assert (res.pg_mw <= net.gen.pmax_mw + tol).all() and (res.pg_mw >= net.gen.pmin_mw - tol).all()
    assert (res.qg_mvar <= net.gen.qmax_mvar + tol).all() and (res.qg_mvar >= net.gen.qmin_mvar - tol).all()
    if res.convention == "matpower":
        s = torch.maximum(torch.hypot(res.p_from_mw, res.q_from_mvar), torch.hypot(res.p_to_mw, res.q_to_mvar))
        assert (s <= net.branch.rate_a_mva * (1 + 1e-6) + 1e-6).all()


def test_pi_admittances_match_matrices():
    net = load_case("case30")
    br = net.branch
    y = pi_admittance_parts(br.r_pu, br.x_pu, br.g_pu + 0.01, br.b_pu, br.tap, br.shift_rad + 0.1, torch.cos, torch.sin)
    ref = branch_admittances(net.with_(g_pu=br.g_pu + 0.01, shift_rad=br.shift_rad + 0.1))
    for (gk, bk), r in zip((("g_ff", "b_ff"), ("g_ft", "b_ft"), ("g_tf", "b_tf"), ("g_tt", "b_tt")), ref):
        assert torch.allclose(torch.complex(y[gk], y[bk]), r, atol=1e-12)


@pytest.mark.parametrize("case", ["case9", "case30", "case39"])
def test_matpower_objective_on_pandapower_case(case):
    net = load_case(case)
    res = solve_acopf(net, convention="matpower")
    assert res.convention == "matpower" and res.status == "Solve_Succeeded"
    assert res.cost_usd_per_h == pytest.approx(MATPOWER_AC[case], rel=1e-4)
    check_invariants(net, res)


@pytest.mark.parametrize("case", ["case57", "case118"])
def test_matpower_objective_with_matpower_branch_data(case, shared_data):
    # PGLib's IEEE cases keep MATPOWER's branch impedances, taps and orientation.
    rows = matpower_rows(shared_data / "pglib-opf" / f"pglib_opf_{case}_ieee.m")
    net = load_case(f"pandapower:{case}")  # pandapower's bundled copy ("case57" is MATPOWER's own file now)
    fixed = with_matpower_branches(net, rows)
    res = solve_acopf(fixed)
    assert res.cost_usd_per_h == pytest.approx(MATPOWER_AC[case], rel=1e-4)
    check_invariants(fixed, res)


def test_case118_pandapower_conversion_is_the_cause_of_the_offset(shared_data):
    net = load_case("pandapower:case118")
    raw = solve_acopf(net).cost_usd_per_h / MATPOWER_AC["case118"] - 1
    rows = matpower_rows(shared_data / "pglib-opf" / "pglib_opf_case118_ieee.m")
    fixed = solve_acopf(with_matpower_branches(net, rows)).cost_usd_per_h / MATPOWER_AC["case118"] - 1
    assert raw > 3e-5  # pandapower's 4 line->transformer conversions cost +0.006% here
    assert abs(fixed) < 1e-6  # ... and MATPOWER's branch data removes all of it


@pytest.mark.parametrize("case", sorted(PGLIB_AC))
def test_pglib_objective(case, shared_data):
    # load_case takes a .m file's branch physics from its own rows (cases.with_matpower_branches)
    net = load_case(shared_data / "pglib-opf" / f"{case}.m")
    res = solve_acopf(net)
    assert res.cost_usd_per_h == pytest.approx(PGLIB_AC[case], rel=1e-4)
    check_invariants(net, res)


@pytest.mark.parametrize("case", ["case30", "case118"])
def test_pandapower_convention_matches_runopp(case):
    import pandapower as pp

    from gridlearn.grid.cases import load_pandapower_net
    from gridlearn.grid.from_pandapower import network_from_pandapower

    pp_net = load_pandapower_net(f"pandapower:{case}")  # pandapower's bundled copy (runopp's published values)
    tight = dict(PDIPM_GRADTOL=1e-10, PDIPM_COMPTOL=1e-10, PDIPM_COSTTOL=1e-10, PDIPM_FEASTOL=1e-10)
    pp.runopp(pp_net, init="flat", calculate_voltage_angles=True, **tight)
    net = network_from_pandapower(pp_net)
    res = solve_acopf(net, convention="pandapower", tol=1e-10)
    assert res.convention == "pandapower"
    assert res.cost_usd_per_h == pytest.approx(float(pp_net.res_cost), rel=1e-5)
    assert res.cost_usd_per_h == pytest.approx({"case30": 578.486, "case118": 129704.74}[case], rel=1e-5)
    pg_pp = np.concatenate([pp_net.res_ext_grid.p_mw.values, pp_net.res_gen.p_mw.values])
    assert [lbl[0] for lbl in net.gen.labels] == ["ext_grid"] * len(pp_net.ext_grid) + ["gen"] * len(pp_net.gen)
    np.testing.assert_allclose(res.pg_mw.numpy(), pg_pp, atol=1e-3)
    np.testing.assert_allclose(res.lmp_usd_per_mwh.numpy(), pp_net.res_bus.lam_p.values, atol=1e-3)
    ext = [int(net.gen.bus[k]) for k, lbl in enumerate(net.gen.labels) if lbl[0] == "ext_grid"]
    assert torch.allclose(res.vm_pu[ext], torch.as_tensor(pp_net.ext_grid.vm_pu.values, dtype=torch.float64))


def test_lmp_is_derivative_of_objective_wrt_load():
    net = load_case("case30")
    res = solve_acopf(net, tol=1e-10)
    h = 1e-3
    for i in (4, 7, 29):
        up, down = net.bus.pd_mw.clone(), net.bus.pd_mw.clone()
        up[i] += h
        down[i] -= h
        fd = (solve_acopf(net.with_(pd_mw=up), tol=1e-10, warm_start=res).cost_usd_per_h
              - solve_acopf(net.with_(pd_mw=down), tol=1e-10, warm_start=res).cost_usd_per_h) / (2 * h)
        assert float(res.lmp_usd_per_mwh[i]) == pytest.approx(fd, rel=1e-5)
        assert fd > 0  # more load costs more here: catches a flipped sign


def test_warm_start_reproduces_solution():
    net = load_case("case9")
    first = solve_acopf(net, tol=1e-10)
    again = solve_acopf(net, warm_start=first, tol=1e-10)
    assert again.cost_usd_per_h == pytest.approx(first.cost_usd_per_h, rel=1e-9)
    assert torch.allclose(again.pg_mw, first.pg_mw, atol=1e-5)


def test_overloaded_case_raises_infeasible():
    net = load_case("case9")
    with pytest.raises(InfeasibleError, match="Infeasible_Problem_Detected"):
        solve_acopf(net.with_(pd_mw=net.bus.pd_mw * 5))


def test_unknown_convention_is_config_error():
    from gridlearn.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown AC-OPF convention"):
        solve_acopf(load_case("case9"), convention="powermodels")


def test_iteration_limit_is_solver_failure():
    from gridlearn.errors import SolverFailure

    with pytest.raises(SolverFailure, match="Maximum_Iterations_Exceeded") as info:
        solve_acopf(load_case("case30"), max_iter=2)
    assert not isinstance(info.value, InfeasibleError)


# ------------------------------------------------------------------ the vectorised NLP (default path)
def _dense_derivatives(nlp, x, lam, sigma, h=1e-6):
    """Central finite differences of g(x) (Jacobian) and of grad f + J^T lam (Hessian)."""
    n = x.size

    def grad_lag(xx):
        jac = np.zeros((nlp.m, n))
        jac[nlp.jac_rows, nlp.jac_cols] = nlp.jacobian(xx)
        return sigma * nlp.gradient(xx) + jac.T @ lam

    jac_fd, hes_fd = np.zeros((nlp.m, n)), np.zeros((n, n))
    for k in range(n):
        e = np.zeros(n)
        e[k] = h
        jac_fd[:, k] = (nlp.constraints(x + e) - nlp.constraints(x - e)) / (2 * h)
        hes_fd[:, k] = (grad_lag(x + e) - grad_lag(x - e)) / (2 * h)
    return jac_fd, hes_fd


@pytest.mark.parametrize("convention", ["matpower", "pandapower"])
def test_nlp_derivatives_match_finite_differences(convention, shared_data):
    from gridlearn.grid.acopf_model import acopf_arrays
    from gridlearn.grid.acopf_nlp import ACOPFNLP
    from gridlearn.grid.formulations import get_convention

    # pglib case5: rate limits on every branch and angle limits; pandapower: fixed ext_grid voltage.
    net = load_case(shared_data / "pglib-opf" / "pglib_opf_case5_pjm.m")
    conv = get_convention(convention)
    nlp = ACOPFNLP(acopf_arrays(net, conv), conv)
    assert nlp.n_lim > 0 and (convention == "pandapower" or nlp.ang.size > 0)
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 0.2, net.n_bus), rng.uniform(0.9, 1.1, net.n_bus),
                        rng.uniform(0, 2, net.n_gen), rng.uniform(-1, 1, net.n_gen)])
    x = nlp.to_x(z)
    lam = rng.normal(0, 10, nlp.m)
    sigma = 0.7
    jac_fd, hes_fd = _dense_derivatives(nlp, x, lam, sigma)
    jac = np.zeros_like(jac_fd)
    np.add.at(jac, (nlp.jac_rows, nlp.jac_cols), nlp.jacobian(x))
    hes = np.zeros_like(hes_fd)
    np.add.at(hes, (nlp.hes_rows, nlp.hes_cols), nlp.hessian(x, lam, sigma))
    assert (nlp.hes_rows >= nlp.hes_cols).all()  # Ipopt wants the lower triangle
    hes = hes + hes.T - np.diag(np.diag(hes))
    np.testing.assert_allclose(jac, jac_fd, atol=1e-6 * np.abs(jac_fd).max())
    np.testing.assert_allclose(hes, hes_fd, atol=1e-6 * np.abs(hes_fd).max())
    # The objective and constraints are the formulation's: the torch KKT residual agrees at z.
    assert nlp.objective(x) == pytest.approx(
        float(((nlp.cost2 * z[2 * net.n_bus:2 * net.n_bus + net.n_gen] + nlp.cost1)
               * z[2 * net.n_bus:2 * net.n_bus + net.n_gen] + nlp.d.c0).sum()), rel=1e-14)


@pytest.mark.parametrize("case,convention", [("case30", "matpower"), ("case30", "pandapower"), ("pglib5", "matpower")])
def test_nlp_path_matches_pyomo_reference(case, convention, shared_data):
    from gridlearn.grid.acopf import solve_acopf_status

    net = load_case(shared_data / "pglib-opf" / "pglib_opf_case5_pjm.m" if case == "pglib5" else case)
    sol_ref = solve_acopf_status(net, convention)  # the default backend: Pyomo, as solve_acopf's
    sol_new = solve_acopf_status(net, convention, backend="direct")
    assert sol_ref.extras["ipopt_status"] == sol_new.extras["ipopt_status"] == "Solve_Succeeded"
    assert sol_ref.ok and sol_new.ok
    ref, new = sol_ref.value, sol_new.value
    # Same problem, start and options; only the variable/constraint order differs (MUMPS
    # rounding), so both stop within Ipopt's tol=1e-8 of the same optimum.
    assert new.cost_usd_per_h == pytest.approx(ref.cost_usd_per_h, rel=1e-8)
    for name in ("pg_mw", "qg_mvar", "vm_pu", "va_rad", "p_from_mw", "q_to_mvar", "lmp_usd_per_mwh", "lmp_q_usd_per_mvarh"):
        a, b = getattr(new, name), getattr(ref, name)
        assert torch.allclose(a, b, atol=1e-6 * max(1.0, float(b.abs().max()))), name
    flow_scale = max(1.0, float(ref.duals["flow_f"].abs().max()), float(ref.duals["flow_t"].abs().max()))
    for key in ref.duals:  # same multipliers, same sign convention, same zeros for fixed variables
        a, b = new.duals[key], ref.duals[key]
        # Both ends of case30's branch 9 bind (nearly dependent): their split is set only to ~1e-6.
        scale = flow_scale if key.startswith("flow") else max(1.0, float(b.abs().max()))
        assert torch.allclose(a, b, atol=1e-5 * scale), key
    assert torch.allclose(new.duals["flow_f"] + new.duals["flow_t"], ref.duals["flow_f"] + ref.duals["flow_t"],
                          atol=1e-7 * flow_scale)
    assert all(torch.equal(new.fixed[k], ref.fixed[k]) for k in ref.fixed)


def test_pyomo_and_direct_backends_agree_and_bad_backend_is_config_error():
    from gridlearn.errors import ConfigError

    net = load_case("case30")
    via_pyomo = solve_acopf(net, backend="pyomo", tol=1e-10)
    direct = solve_acopf(net, backend="direct", tol=1e-10)
    assert via_pyomo.cost_usd_per_h == pytest.approx(direct.cost_usd_per_h, rel=1e-8)
    assert torch.allclose(via_pyomo.lmp_usd_per_mwh, direct.lmp_usd_per_mwh, atol=1e-5)
    with pytest.raises(ConfigError, match="backend"):
        solve_acopf(net, backend="gams")


def test_old_flow_names_warn_and_bad_ipopt_option_is_config_error():
    from gridlearn.errors import ConfigError

    net = load_case("case9")
    res = solve_acopf(net, backend="direct")
    for old, new in (("pf_mw", "p_from_mw"), ("qf_mvar", "q_from_mvar"), ("pt_mw", "p_to_mw"), ("qt_mvar", "q_to_mvar")):
        with pytest.warns(DeprecationWarning, match=new):
            assert torch.equal(getattr(res, old), getattr(res, new))
    for bad in ({"tol": -1.0}, {"no_such_option": 1}, {"mu_strategy": "bogus"}):
        with pytest.raises(ConfigError, match=f"Ipopt rejected (the )?option '?{next(iter(bad))}"):
            solve_acopf(net, backend="direct", **bad)
