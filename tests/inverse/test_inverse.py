"""gridlearn.inverse: recovery, gradients against re-solves, identifiability flags, baseline, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError, DataError
from gridlearn.grid import load_case
from gridlearn.inverse import InverseSolver, Unknown, kkt_residual_costs, recover, simulate_market
from gridlearn.inverse.params import cost_unknowns, current_values, substitute
from gridlearn.inverse.recovery import InverseProblem
from gridlearn.inverse.sensitivity import observation_jacobian


@pytest.fixture(scope="module")
def case9():
    return load_case("case9")


@pytest.fixture(scope="module")
def obs9(case9):
    return simulate_market(case9, 5, seed=0, ipopt_tol=1e-9)


def perturbed_prior(net, unknowns, seed=1):
    th = current_values(net, unknowns)
    g = torch.Generator().manual_seed(seed)
    return substitute(net, unknowns, th * (0.7 + 0.6 * torch.rand(th.shape, generator=g, dtype=torch.float64)))


def test_simulated_market_is_consistent(case9, obs9):
    assert obs9.n_samples == 5 and obs9.n_dropped == 0
    # noise-free: total generation covers total demand plus (positive) losses
    losses = obs9.pg_mw.sum(1) - obs9.pd_mw.sum(1)
    assert (losses > 0).all() and (losses < 0.05 * obs9.pd_mw.sum(1)).all()
    # off its limits, a generator's marginal cost equals the LMP at its bus (KKT stationarity)
    c2, c1 = case9.gen.cost_c2_usd_per_mw2h, case9.gen.cost_c1_usd_per_mwh
    mc = 2 * c2 * obs9.pg_mw + c1
    lmp_at_gen = obs9.lmp_usd_per_mwh[:, case9.gen.bus]
    free = ~(obs9.at_pmin | obs9.at_pmax)
    assert free.any()
    assert torch.allclose(mc[free], lmp_at_gen[free], rtol=1e-6)


@pytest.mark.slow
def test_recover_case9_costs_noise_free_within_one_percent(case9, obs9):
    unknowns = cost_unknowns(case9)
    prior = perturbed_prior(case9, unknowns)
    # init="prior": this tests the gradient method itself, not the baseline start
    res = recover(prior, obs9, "costs", solver=InverseSolver(method="lm", max_iter=10, init="prior"), truth=case9)
    df = res.parameters
    rel = ((df["value"] - df["true"]).abs() / df["true"].abs()).to_numpy()
    start = ((df["prior"] - df["true"]).abs() / df["true"].abs()).to_numpy()
    assert start.max() > 0.05  # the prior really was wrong
    assert rel.max() < 0.01, df
    assert df["identifiable"].all()
    assert res.loss_history[-1] < 1e-6 * res.loss_history[0]
    assert list(df.index.names) == ["element", "coefficient"]
    assert df.loc[[(("ext_grid", 0), "c2")], "unit"].iloc[0] == "cp2_eur_per_mw2"


def central_difference(f, theta, k, rel_step=1e-5):
    """(f(theta + h e_k) - f(theta - h e_k)) / 2h with h relative to |theta_k|: each call re-solves the AC-OPFs."""
    e = torch.zeros_like(theta)
    e[k] = rel_step * float(theta[k].abs())
    return (f(theta + e) - f(theta - e)) / (2 * float(e[k]))


def test_loss_gradient_matches_finite_differences_of_resolves(case9, obs9):
    unknowns = [Unknown("c1", 1), Unknown("x", 2)]
    theta = current_values(case9, unknowns) * torch.tensor([1.1, 0.9], dtype=torch.float64)
    problem = InverseProblem(case9, obs9.subset(3), unknowns, (1.0, 100.0), InverseSolver())
    _, grad, _, _ = problem.loss(theta, grad=True)
    for k in range(2):
        fd = central_difference(lambda th: problem.loss(th, grad=False)[0], theta, k)
        assert float(grad[k]) == pytest.approx(fd, rel=1e-4), (k, float(grad[k]), fd)


def test_observation_jacobian_matches_finite_differences(case9, obs9):
    obs = obs9.subset(2)
    unknowns = [Unknown("c2", 0), Unknown("x", 4)]
    theta = current_values(case9, unknowns)
    problem = InverseProblem(case9, obs, unknowns, (1.0, 1.0), InverseSolver())
    _, _, _, results = problem.loss(theta, grad=False)
    j_pg, j_lmp = observation_jacobian(case9, obs, unknowns, theta, results)
    for k in range(2):
        # weights 1: residual derivatives are observation derivatives
        fd = central_difference(lambda th: problem.loss(th, grad=False)[2], theta, k)
        assert torch.allclose(fd[:, : case9.n_gen], j_pg[:, :, k], rtol=1e-4, atol=1e-6 * fd.abs().max())
        assert torch.allclose(fd[:, case9.n_gen :], j_lmp[:, :, k], rtol=1e-4, atol=1e-6 * fd.abs().max())


def test_generator_at_its_limit_in_every_sample_is_not_identifiable(case9):
    # generator 1 (cheapest marginal cost) capped at 60 MW: it runs at pmax in every scenario
    pmax = case9.gen.pmax_mw.clone()
    pmax[1] = 60.0
    net = case9.with_(pmax_mw=pmax)
    obs = simulate_market(net, 3, seed=2, ipopt_tol=1e-9)
    assert obs.at_pmax[:, 1].all()
    res = recover(net, obs, "costs", solver=InverseSolver(max_iter=0))
    df = res.parameters
    pinned = df.loc[[(net.gen.labels[1], "c2"), (net.gen.labels[1], "c1")]]
    assert not pinned["identifiable"].any()
    assert (pinned["reason"] == "at_limit").all()
    # the Jacobian agrees: those columns are zero, so the rank is short by two
    assert res.report.rank == len(res.unknowns) - 2
    others = df.drop(index=pinned.index)
    assert others["identifiable"].all()


def test_pg_alone_common_cost_scale_is_not_identifiable(case9):
    obs = simulate_market(case9, 4, seed=3, observe="pg", ipopt_tol=1e-9)
    assert obs.lmp_usd_per_mwh.shape == (4, 0)
    res = recover(case9, obs, "costs", solver=InverseSolver(max_iter=0))
    assert "common_scale" in res.report.invariances
    assert not res.parameters["identifiable"].any()
    # the SVD sees it too: scaling theta is a null direction of the Jacobian
    assert res.report.rank < len(res.unknowns)
    # with one generator's costs known, the scale is pinned and the invariance is gone
    res2 = recover(case9, obs, {"costs": [1, 2]}, solver=InverseSolver(max_iter=0))
    assert "common_scale" not in res2.report.invariances


def test_c0_is_never_identifiable(case9, obs9):
    res = recover(case9, obs9.subset(2), {"costs": [0], "coefficients": ("c1", "c0")}, solver=InverseSolver(max_iter=0))
    assert res.parameters["identifiable"].tolist() == [True, False]
    assert res.parameters["reason"].tolist() == ["", "c0"]


def test_kkt_residual_baseline_recovers_costs_and_needs_gen_lmps(case9, obs9):
    b = kkt_residual_costs(case9, obs9, truth=case9)
    df = b.parameters
    assert np.allclose(df["value"], df["true"], rtol=1e-4)
    pg_only = simulate_market(case9, 2, seed=4, observe="pg", ipopt_tol=1e-9)
    with pytest.raises(ConfigError, match="needs the LMP"):
        kkt_residual_costs(case9, pg_only)


def test_noise_is_applied_and_seeded(case9):
    a = simulate_market(case9, 2, seed=5, noise=0.05, ipopt_tol=1e-9)
    b = simulate_market(case9, 2, seed=5, noise=0.05, ipopt_tol=1e-9)
    assert torch.equal(a.pg_mw, b.pg_mw)
    rel = (a.pg_mw / a.pg_true_mw - 1).abs()
    assert rel.max() > 1e-3 and rel.max() < 0.5


def test_bad_input_raises_clear_errors(case9, obs9):
    with pytest.raises(DataError, match="shape"):
        recover(case9, dataclasses.replace(obs9, pg_mw=obs9.pg_mw[:, :2]), "costs")
    lmp = obs9.lmp_usd_per_mwh.clone()
    lmp[1, 3] = float("nan")
    with pytest.raises(DataError, match="non-finite"):
        recover(case9, dataclasses.replace(obs9, lmp_usd_per_mwh=lmp), "costs")
    empty = dataclasses.replace(obs9, pd_mw=obs9.pd_mw[:0], qd_mvar=obs9.qd_mvar[:0], pg_mw=obs9.pg_mw[:0],
                                lmp_usd_per_mwh=obs9.lmp_usd_per_mwh[:0], at_pmin=obs9.at_pmin[:0],
                                at_pmax=obs9.at_pmax[:0])
    with pytest.raises(DataError, match="zero samples"):
        recover(case9, empty, "costs")
    with pytest.raises(ConfigError):
        simulate_market(case9, 0)
    with pytest.raises(ConfigError, match="observe"):
        simulate_market(case9, 1, observe="prices")
    with pytest.raises(ConfigError):
        InverseSolver(method="sgd")
    with pytest.raises(ConfigError, match="branch"):
        recover(case9, obs9, {"branches": [("line", 999)]})


def test_sparse_observation_jacobian_matches_dense_torch_reference():
    """The sparse-LU route (one factorisation, all unknowns) against K and dF/dtheta by torch.func.jacfwd."""
    from gridlearn.grid.acopf import solve_acopf_nlp
    from gridlearn.grid.acopf_kkt import KKTSystem, active_set
    from gridlearn.grid.formulations import get_convention
    from gridlearn.inverse.sensitivity import _theta_dict, sample_jacobian

    net = load_case("case30")
    conv = get_convention("matpower")
    _, _, res, nlp = solve_acopf_nlp(net, conv, None, {"tol": 1e-9})
    unknowns = [Unknown("c2", 0), Unknown("c1", 1), Unknown("c1", 3), Unknown("c0", 2), Unknown("x", 5), Unknown("r", 9)]
    d_pg, d_lmp = sample_jacobian(net, "matpower", res, unknowns)
    # reference: dense K and dF/dtheta by forward-mode autodiff of the KKT residual
    base, nb, ng = float(net.base_mva), net.n_bus, net.n_gen
    z0 = torch.cat([res.va_rad, res.vm_pu, res.pg_mw / base, res.qg_mvar / base])
    act = active_set(res, nb, ng, nlp=nlp)
    kkt = KKTSystem(net, conv, z0, act, res.angle_bound_rad)
    d = res.duals
    mu = torch.cat([d["flow_f"][act.flow_f], d["flow_t"][act.flow_t], d["angle"][act.angle]])
    y = torch.cat([z0[act.free], d["p_balance"], d["q_balance"], mu])
    th0 = _theta_dict(net)

    def residual_of(delta):
        th = dict(th0)
        for k, u in enumerate(unknowns):
            th[u.field] = th[u.field] + delta[k] * torch.nn.functional.one_hot(
                torch.tensor(u.position), th0[u.field].numel()).double()
        return kkt.residual(y, th)

    dy = -torch.linalg.solve(kkt.matrix(y, th0), torch.func.jacfwd(residual_of)(torch.zeros(len(unknowns), dtype=torch.float64)))
    nf = act.free.numel()
    dz = torch.zeros(z0.numel(), len(unknowns), dtype=torch.float64)
    dz[act.free] = dy[:nf]
    ref_pg, ref_lmp = dz[2 * nb : 2 * nb + ng] * base, -dy[nf : nf + nb] / base
    assert ref_lmp.abs().max() > 0 and ref_pg.abs().max() > 0
    assert torch.allclose(d_pg, ref_pg, rtol=1e-7, atol=1e-9 * float(ref_pg.abs().max()))
    assert torch.allclose(d_lmp, ref_lmp, rtol=1e-7, atol=1e-9 * float(ref_lmp.abs().max()))
    assert d_pg[:, 3].abs().max() == 0 and d_lmp[:, 3].abs().max() == 0  # c0 moves nothing


def test_recover_warm_started_matches_cold(case9, obs9):
    unknowns = cost_unknowns(case9)
    prior = perturbed_prior(case9, unknowns, seed=4)
    runs = {}
    for warm in (True, False):
        runs[warm] = recover(prior, obs9.subset(3), "costs", solver=InverseSolver(max_iter=3, warm_start=warm, init="prior", n_starts=1),
                             report=False)
    assert runs[True].iterations == runs[False].iterations == 3
    assert torch.allclose(runs[True].theta, runs[False].theta, rtol=1e-6)
    assert runs[True].loss_history[-1] < 1e-2 * runs[True].loss_history[0]


def test_recover_passes_previous_iterate_as_warm_start(case9, obs9, monkeypatch):
    from gridlearn.grid.acopf_layer import ACOPFLayer

    seen = []
    real = ACOPFLayer.solve

    def spy(self, *args, warm_start=None, **kw):
        seen.append(warm_start)
        return real(self, *args, warm_start=warm_start, **kw)

    monkeypatch.setattr(ACOPFLayer, "solve", spy)
    prior = perturbed_prior(case9, cost_unknowns(case9), seed=5)
    recover(prior, obs9.subset(2), "costs", solver=InverseSolver(max_iter=2, init="prior", n_starts=1), report=False)
    assert seen[0] is None  # the prior: cold
    assert all(w is not None and len(w) == 2 for w in seen[1:]) and len(seen) >= 3
    seen.clear()
    recover(prior, obs9.subset(2), "costs", solver=InverseSolver(max_iter=2, warm_start=False, init="prior", n_starts=1),
            report=False)
    assert all(w is None for w in seen)


def test_baseline_flags_one_sample_as_not_identifiable(case9, obs9):
    """One dispatch per generator: 2 c2 p + c1 = LMP is one equation in two unknowns."""
    b = kkt_residual_costs(case9, obs9.subset(1), truth=case9)
    assert not b.parameters["identifiable"].any()
    assert kkt_residual_costs(case9, obs9.subset(2)).parameters["identifiable"].all()


def test_sample_without_derivative_is_left_out_loudly(case9, obs9):
    """Sample 0's generator 1 sits exactly at its pmax (weakly active): no sensitivity exists there."""
    from gridlearn.errors import SolverFailure
    from gridlearn.grid.acopf_layer import ACOPFLayer

    obs = obs9.subset(2)
    pmax = case9.gen.pmax_mw.clone()
    pmax[1] = obs.pg_true_mw[0, 1]
    net = case9.with_(pmax_mw=pmax)
    unknowns = cost_unknowns(case9)
    theta = current_values(net, unknowns)
    sol = ACOPFLayer(net).solve(obs.pd_mw, obs.qd_mvar)
    results = sol.extras["results"]
    with pytest.raises(SolverFailure, match="sample 0.*weakly active"):
        observation_jacobian(net, obs, unknowns, theta, results)
    j_pg, j_lmp = observation_jacobian(net, obs, unknowns, theta, results, skip_failed=True)
    assert torch.isnan(j_pg[0]).all() and torch.isnan(j_lmp[0]).all()
    assert torch.isfinite(j_pg[1]).all() and torch.isfinite(j_lmp[1]).all()
    res = recover(net, obs, "costs", solver=InverseSolver(max_iter=0))
    assert res.report_skipped_samples == [0] and res.report is not None


@pytest.mark.parametrize("method", ["adam", "lbfgs"])
def test_gradient_methods_lower_the_loss_and_count_their_steps(case9, obs9, method):
    """The first-order optimisers (one shared loop, their own proposals) take accepted steps that
    lower the loss from a 30%-off prior, and report a stop reason the contract knows."""
    unknowns = cost_unknowns(case9)
    prior = perturbed_prior(case9, unknowns)
    res = recover(prior, obs9.subset(3), "costs", report=False,
                  solver=InverseSolver(method=method, max_iter=4, init="prior", n_starts=1))
    (row,) = res.starts.to_dict("records")
    assert row["stop"] in {"max_iter", "tolerance", "no_decrease", "settled"}
    assert 1 <= res.iterations <= 4 and len(res.loss_history) >= 2
    assert res.loss_history[-1] < res.loss_history[0]
    assert all(b <= a for a, b in zip(res.loss_history, res.loss_history[1:])) or method == "adam"


def test_level_range_stratifies_the_system_load(case9):
    """simulate_market(level_range=(lo, hi)): one scenario per stratum of the range, so the total
    demand spans it (per-bus factors of +-load_spread on top)."""
    n, lo, hi = 6, 0.6, 1.0
    obs = simulate_market(case9, n, seed=3, level_range=(lo, hi), load_spread=0.0, ipopt_tol=1e-9)
    level = (obs.pd_mw.sum(1) / case9.bus.pd_mw.sum()).numpy()
    strata = np.floor((level - lo) / (hi - lo) * n).astype(int)
    assert sorted(strata.tolist()) == list(range(n))
    # two ranges: the samples split evenly between them, one per stratum of each
    two = simulate_market(case9, 7, seed=3, level_range=((1.0, 1.1), (0.6, 0.8)), load_spread=0.0, ipopt_tol=1e-9)
    level = np.sort((two.pd_mw.sum(1) / case9.bus.pd_mw.sum()).numpy())
    low, high = level[level < 0.9], level[level >= 0.9]
    assert len(low) == 3 and len(high) == 4
    assert sorted(np.floor((low - 0.6) / 0.2 * 3).astype(int).tolist()) == [0, 1, 2]
    assert sorted(np.floor((high - 1.0) / 0.1 * 4).astype(int).tolist()) == [0, 1, 2, 3]
    for bad in ((0.0, 1.0), ((0.9, 1.1), (1.2, 1.0)), (1.0,)):
        with pytest.raises(ConfigError):
            simulate_market(case9, 2, level_range=bad)


def test_error_bound_of_a_linear_cost_c2_is_judged_against_c1_over_2_pmax(case9):
    """A c2 that is zero (PGLib's linear costs) has no relative error: its first-order bound is
    judged against c1 / (2 pmax), the c2 whose term matches c1 at full output; a c2 that matters
    keeps its own magnitude."""
    from gridlearn.inverse.recovery import _bound_reference

    unknowns = cost_unknowns(case9, [0])  # c2, c1 of generator 0
    c1, pmax = float(case9.gen.cost_c1_usd_per_mwh[0]), float(case9.gen.pmax_mw[0])
    linear = _bound_reference(case9, unknowns, torch.tensor([0.0, c1], dtype=torch.float64), rtol=1e-3)
    assert linear[0].item() == pytest.approx(c1 / (2 * pmax)) and linear[1].item() == pytest.approx(c1)
    quad = _bound_reference(case9, unknowns, torch.tensor([0.05, c1], dtype=torch.float64), rtol=1e-3)
    assert quad[0].item() == pytest.approx(0.05)
