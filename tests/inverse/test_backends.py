"""InverseSolver(backend="torch"): every sample in one batched interior point, against the Ipopt path.

Tolerances: the torch interior point stops at a scaled optimality error of 1e-9 with its barrier
parameter ~1e-9 left in the complementarity, Ipopt at 1e-9 after its own last barrier update, so
the two optima differ by O(1e-9) relative and their derivatives by O(1e-7) relative
(benchmarks/results/inverse_backends.json: Jacobians at the truth within 4e-7 of the largest
entry on case14); recovered coefficients within 1e-6 relative and residual Jacobians within 1e-5
of the largest entry are asserted here.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.grid import load_case
from gridlearn.inverse import FitStatus, InverseSolver, Unknown, recover, simulate_market
from gridlearn.inverse import batched
from gridlearn.inverse.params import cost_unknowns, current_values
from gridlearn.inverse.recovery import InverseProblem

BACKENDS = ("ipopt", "torch")


@pytest.fixture(scope="module")
def case9():
    return load_case("case9")


@pytest.fixture(scope="module")
def obs9(case9):
    return simulate_market(case9, 3, seed=0, ipopt_tol=1e-9)


def _prior(truth):
    return truth.with_(cost_c2_usd_per_mw2h=0.7 * truth.gen.cost_c2_usd_per_mw2h,
                       cost_c1_usd_per_mwh=1.3 * truth.gen.cost_c1_usd_per_mwh)


def test_torch_backend_recovers_what_ipopt_recovers(case9, obs9):
    # the gradient method alone (init="prior"), so every iteration goes through the backend
    fits = {b: recover(_prior(case9), obs9, "costs", truth=case9,
                       solver=InverseSolver(init="prior", n_starts=1, backend=b)) for b in BACKENDS}
    ip, tr = fits["ipopt"], fits["torch"]
    assert ip.status is tr.status is FitStatus.CONVERGED
    assert abs(ip.iterations - tr.iterations) <= 1
    rel = ((tr.parameters["value"] - ip.parameters["value"]).abs() / ip.parameters["true"].abs()).max()
    assert rel < 1e-6, (ip.parameters, tr.parameters)
    assert (tr.parameters["identifiable"] == ip.parameters["identifiable"]).all()
    assert tr.loss_history[0] == pytest.approx(ip.loss_history[0], rel=1e-6)


def test_torch_jacobian_and_gradient_match_ipopt_and_finite_differences(case9, obs9):
    unknowns = [Unknown("c1", 1), Unknown("x", 4)]
    theta = current_values(case9, unknowns) * torch.tensor([1.1, 1.05], dtype=torch.float64)
    solvers = {"ipopt": InverseSolver(), "kkt": InverseSolver(backend="torch"),
               "reverse": InverseSolver(backend="torch", torch_jacobian="reverse")}
    problems = {k: InverseProblem(case9, obs9, unknowns, (1.0, 100.0), s) for k, s in solvers.items()}
    jac, grad = {}, {}
    for k, p in problems.items():
        _, _, _, results = p.loss(theta, grad=False)
        jac[k] = p.jacobian(theta, results)
        grad[k] = p.loss(theta, grad=True)[1]
    scale = jac["ipopt"].abs().max()
    for k in ("kkt", "reverse"):
        assert torch.isfinite(jac[k]).all()
        assert float((jac[k] - jac["ipopt"]).abs().max() / scale) < 1e-5, k
        assert torch.allclose(grad[k], grad["ipopt"], rtol=1e-5)
    # and against central differences of re-solves on the torch backend itself (warm-started at theta)
    p = problems["kkt"]
    p.accept(p.loss(theta, grad=False)[3])
    for k in range(len(unknowns)):
        h = 1e-5 * float(theta[k].abs())
        e = torch.zeros_like(theta)
        e[k] = h
        fd = (p.loss(theta + e, grad=False)[2] - p.loss(theta - e, grad=False)[2]) / (2 * h)
        assert float((fd - jac["kkt"][:, :, k]).abs().max()) < 1e-4 * float(fd.abs().max()), k


def test_torch_backend_warm_starts_from_the_accepted_batched_result(case9, obs9):
    unknowns = cost_unknowns(case9)
    p = InverseProblem(case9, obs9, unknowns, (1.0, 100.0), InverseSolver(backend="torch"))
    theta = current_values(case9, unknowns)
    _, _, _, cold = p.loss(theta, grad=False)
    p.accept(cold)
    assert p.warm is cold.solution  # the layer's own BatchedACOPFResult, as its ConfigError asks
    _, _, _, warm = p.loss(theta * 1.01, grad=False)
    assert int(warm.solution.iterations.max()) < int(cold.solution.iterations.min())


def test_a_weakly_active_sample_gets_nan_jacobian_rows(case9, obs9):
    unknowns = cost_unknowns(case9)
    p = InverseProblem(case9, obs9, unknowns, (1.0, 100.0), InverseSolver(backend="torch", torch_jacobian="reverse"))
    _, _, _, point = p.loss(current_values(case9, unknowns), grad=False)
    full = batched.reverse_jacobian(point, p.entry_weights())
    weak = torch.tensor([False, True, False])
    marked = dataclasses.replace(point, solution=dataclasses.replace(point.solution, weakly_active=weak))
    jac = batched.reverse_jacobian(marked, p.entry_weights())
    assert torch.isnan(jac[1]).all()  # left out, as observation_jacobian(skip_failed=True) does
    assert torch.equal(jac[[0, 2]], full[[0, 2]])


def test_a_sample_that_fails_is_left_out_as_the_ipopt_path_leaves_it_out(case9):
    # sample 2's load is three times the base: more than case9's 820 MW of capacity, infeasible at any cost
    obs = simulate_market(case9, 4, seed=0, ipopt_tol=1e-9)
    pd = obs.pd_mw.clone()
    pd[2] *= 3.0
    bad = dataclasses.replace(obs, pd_mw=pd)
    fits = {}
    for b in BACKENDS:
        p = InverseProblem(case9, bad, cost_unknowns(case9), (1.0, 100.0), InverseSolver(backend=b))
        theta = current_values(case9, p.unknowns)
        assert p.solve_outputs(theta)[2] == [2]
        with pytest.raises(SolverFailure) as err:  # a trial point with a failed sample: a loud error naming it
            p.loss(theta, grad=False)
        assert list(err.value.indices) == [2]
        fits[b] = recover(_prior(case9), bad, "costs", truth=case9, solver=InverseSolver(backend=b, init="baseline"))
    for res in fits.values():  # the start fails at hour 2: it is left out, the other three are fitted
        assert res.converged and res.hours_left_out == [2], res.message
        assert "fails at hours [2]" in res.message
        assert set(res.starts.query("hours == 'all'")["stop"]) == {"start_failed"}
    rel = ((fits["torch"].parameters["value"] - fits["ipopt"].parameters["value"]).abs()
           / fits["ipopt"].parameters["true"].abs()).max()
    assert rel < 1e-6


def test_backend_is_checked():
    with pytest.raises(ConfigError, match="backend must be one of"):
        InverseSolver(backend="cuda")
    with pytest.raises(ConfigError, match="ipm_tol"):
        InverseSolver(backend="torch", ipm_tol=0.0)
    with pytest.raises(ConfigError, match="torch_jacobian must be one of"):
        InverseSolver(backend="torch", torch_jacobian="forward")


def test_torch_layer_backward_matches_ipopt_on_case118_at_110_percent_load():
    """PGLib case118 at 110% of base load: the torch layer's d(pg, lmp)/d c1 vector-Jacobian product is
    the Ipopt layer's to 1e-5 of its largest entry. The barrier backward was 2.2e-4 off here (gen 0:
    99.80 vs 99.77; central differences of Ipopt re-solves give 99.771); the active-set backward solves
    the Ipopt layer's KKT system."""
    from gridlearn.grid.acopf_layer import ACOPFLayer

    net = load_case("pglib_opf_case118_ieee")
    pd, qd = 1.1 * net.bus.pd_mw[None], 1.1 * net.bus.qd_mvar[None]
    g = torch.Generator().manual_seed(0)
    v_pg = torch.randn(1, net.n_gen, generator=g, dtype=torch.float64)
    v_lmp = torch.randn(1, net.n_bus, generator=g, dtype=torch.float64)
    grads = {}
    for b in BACKENDS:
        c1 = net.gen.cost_c1_usd_per_mwh[None].clone().requires_grad_()
        out, sol = ACOPFLayer(net, backend=b).forward_with_solution(pd, qd, cost_c1_usd_per_mwh=c1)
        if b == "torch":
            assert not bool(sol.extras["results"].weakly_active.any())
        loss = (out.pg_mw * v_pg).sum() + (out.lmp_usd_per_mwh * v_lmp).sum()
        grads[b] = torch.autograd.grad(loss, c1)[0]
    diff = (grads["torch"] - grads["ipopt"]).abs().max() / grads["ipopt"].abs().max()
    assert float(diff) < 1e-5
