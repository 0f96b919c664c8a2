"""The torch AC-OPF interior point against Ipopt (`solve_acopf(backend="direct")`): optima, multipliers,
statuses of a mixed batch, warm starts, input errors, and the inertia count of its LDLᵀ."""

from __future__ import annotations

import pytest
import torch

from gridlearn.errors import ConfigError, DataError, InfeasibleError
from gridlearn.grid import load_case
from gridlearn.grid.acopf import solve_acopf
from gridlearn.grid.acopf_ipm import IPMOptions, solve_acopf_batched
from gridlearn.grid.acopf_ipm.kkt import inertia
from gridlearn.implicit.solution import Status


def random_loads(net, batch, seed, spread=0.1):
    g = torch.Generator().manual_seed(seed)
    def scale():
        return 1 + spread * (2 * torch.rand(batch, net.n_bus, generator=g, dtype=torch.float64) - 1)
    return net.bus.pd_mw * scale(), net.bus.qd_mvar * scale()


@pytest.mark.parametrize("name", ["case9", "case30"])
def test_matches_ipopt_on_random_loads(name):
    net = load_case(name)
    pd, qd = random_loads(net, 3, seed=1)
    res = solve_acopf_batched(net, pd, qd)
    solved = 0
    for b in range(3):
        try:
            ref = solve_acopf(net.with_(pd_mw=pd[b], qd_mvar=qd[b]), backend="direct", tol=1e-9)
        except InfeasibleError:  # case30 is tight: some +-10% scenarios have no feasible point
            assert res.status[b] is Status.INFEASIBLE
            continue
        solved += 1
        assert res.status[b] is Status.CONVERGED
        assert abs(res.cost_usd_per_h[b].item() - ref.cost_usd_per_h) <= 1e-6 * abs(ref.cost_usd_per_h)
        assert torch.allclose(res.pg_mw[b], ref.pg_mw, atol=1e-3)
        assert torch.allclose(res.vm_pu[b], ref.vm_pu, atol=1e-5)
        assert torch.allclose(res.lmp_usd_per_mwh[b], ref.lmp_usd_per_mwh, rtol=1e-4, atol=1e-3)
        assert torch.allclose(res.p_from_mw[b], ref.p_from_mw, atol=1e-3)
        for k in ("pg_upper", "pg_lower", "vm_upper", "flow_f", "flow_t"):
            assert torch.allclose(res.duals[k][b], ref.duals[k], rtol=1e-3, atol=1e-2 * max(1.0, ref.duals[k].abs().max().item())), k
        assert res.residuals["error"][b] <= 1e-8
    assert solved >= 2


def test_mixed_batch_reports_the_infeasible_scenario_and_solves_the_others():
    net = load_case("case9")
    pd, qd = random_loads(net, 3, seed=2)
    pd[1] = pd[1] * 3.0  # far beyond the 820 MW of capacity
    res = solve_acopf_batched(net, pd, qd)
    assert [s for s in res.status] == [Status.CONVERGED, Status.INFEASIBLE, Status.CONVERGED]
    with pytest.raises(InfeasibleError):
        solve_acopf(net.with_(pd_mw=pd[1], qd_mvar=qd[1]), backend="direct")
    assert torch.isnan(res.cost_usd_per_h[1]) and torch.isnan(res.pg_mw[1]).all()
    for b in (0, 2):
        ref = solve_acopf(net.with_(pd_mw=pd[b], qd_mvar=qd[b]), backend="direct", tol=1e-9)
        assert abs(res.cost_usd_per_h[b].item() - ref.cost_usd_per_h) <= 1e-6 * abs(ref.cost_usd_per_h)


def test_no_gradient_for_a_scenario_that_did_not_converge():
    net = load_case("case9")
    pd = net.bus.pd_mw.repeat(2, 1)
    pd[1] *= 3.0
    pd.requires_grad_()
    res = solve_acopf_batched(net, pd)
    (g,) = torch.autograd.grad(res.pg_mw[0].sum(), pd)
    assert torch.isfinite(g[0]).all() and g[0].abs().max() > 0
    assert torch.isnan(g[1]).all()


def test_warm_start_from_a_previous_batch_takes_fewer_iterations_to_the_same_optimum():
    net = load_case("case30")
    pd, qd = random_loads(net, 4, seed=3, spread=0.03)
    first = solve_acopf_batched(net, pd, qd)
    pd2, qd2 = pd * 0.99, qd * 0.99
    cold = solve_acopf_batched(net, pd2, qd2)
    warm = solve_acopf_batched(net, pd2, qd2, warm_start=first)
    assert all(s is Status.CONVERGED for s in warm.status + cold.status)
    assert torch.allclose(warm.cost_usd_per_h, cold.cost_usd_per_h, rtol=1e-7)
    assert (warm.iterations < cold.iterations).all()


def test_bad_input_raises_named_errors():
    net = load_case("case9")
    pd = net.bus.pd_mw.repeat(2, 1)
    pd[0, 4] = float("nan")
    with pytest.raises(DataError):
        solve_acopf_batched(net, pd)
    with pytest.raises(ConfigError):
        solve_acopf_batched(net, net.bus.pd_mw.repeat(2, 1), cost_c1_usd_per_mwh=torch.ones(3, net.n_gen))
    with pytest.raises(ConfigError):
        solve_acopf_batched(net, net.bus.pd_mw.repeat(2, 1), tap=torch.ones(net.n_branch))
    with pytest.raises(ConfigError):
        IPMOptions(tol=0.0)


def test_inertia_count_matches_eigenvalues():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 30, 30, generator=g, dtype=torch.float64)
    a = a + a.mT
    a[:, :5, :5] = 0.0  # zero diagonal blocks force 2x2 pivots
    ld, piv, info = torch.linalg.ldl_factor_ex(a)
    assert (info == 0).all() and (piv < 0).any()
    neg, zero = inertia(ld, piv, torch.ones(20, dtype=torch.float64))
    assert torch.equal(neg, (torch.linalg.eigvalsh(a) < 0).sum(-1))
    assert (zero == 0).all()
