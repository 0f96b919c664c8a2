"""AC-OPF variant of the network-aware task: hourly AC-OPF agrees with Ipopt, gradients, failures, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.errors import SolverFailure
from gridlearn.forecast.ac_scheduler import ACNetworkScheduler, realised_cost_ac
from gridlearn.forecast.network_aware import NetworkTaskParams, evaluate_network
from gridlearn.grid.acopf import solve_acopf
from gridlearn.grid.acopf_ipm import IPMOptions
from gridlearn.grid.cases import load_case
from gridlearn.implicit.solution import Status
from tests.forecast._network_helpers import assert_task_gradient_matches_fd, rmse_then_task_training, toy_day_loads

pytestmark = pytest.mark.usefixtures("single_thread")

LOAD_BUS = [4, 6, 8]  # case9's load buses
TIGHT = IPMOptions(tol=1e-10)


def _case9():
    """case9 with branch 2 limited to 60 MVA: it binds in the peak hours (asserted below)."""
    net = load_case("case9")
    rate = net.branch.rate_a_mva.clone()
    rate[2] = 60.0
    return net.with_(rate_a_mva=rate)


def _loads(n_days=2, seed=0):
    """Forecast and realised loads (n_days, 4, 3) MW (`toy_day_loads`): a a rise to 1.3 x the case's loads."""
    return toy_day_loads(n_days, seed)


def test_hourly_schedule_matches_ipopt_per_hour():
    net = _case9()
    sch = ACNetworkScheduler(net, LOAD_BUS, TIGHT)
    mu, _ = _loads()
    s = sch(mu)
    assert (s.status == Status.CONVERGED.code).all() and s.ok.all()
    assert (s.s_max_mva[..., 2] > 60 * (1 - 1e-4)).any()  # the limit binds somewhere: not a free dispatch
    q_case = net.bus.qd_mvar[LOAD_BUS] / net.bus.pd_mw[LOAD_BUS]
    for d in range(mu.shape[0]):
        for h in range(mu.shape[1]):
            pd = torch.zeros(net.n_bus, dtype=torch.float64)
            qd = torch.zeros(net.n_bus, dtype=torch.float64)
            pd[LOAD_BUS] = mu[d, h]
            qd[LOAD_BUS] = mu[d, h] * q_case  # the case's power factor per bus (module docstring)
            ref = solve_acopf(net.with_(pd_mw=pd, qd_mvar=qd), backend="direct", strict=True)
            assert ref.cost_usd_per_h == pytest.approx(float(s.cost_usd_per_h[d, h]), rel=1e-6)
            np.testing.assert_allclose(s.pg_mw[d, h].numpy(), ref.pg_mw.numpy(), atol=1e-3)
            # losses: generation beyond the demand; positive and a few % of it
            assert 0 < float(s.losses_mw[d, h]) < 0.1 * float(mu[d, h].sum())


def test_realised_cost_settles_demand_net_of_scheduled_losses():
    net = _case9()
    sch = ACNetworkScheduler(net, LOAD_BUS, TIGHT)
    mu, y = _loads()
    params = NetworkTaskParams()
    s = sch(mu)
    cost = realised_cost_ac(sch, s, mu, y, params)
    # the schedule's losses are consumption, not over-scheduling: Δ = Σ y − Σ mu exactly
    torch.testing.assert_close(cost["imbalance_mw"], y.sum(-1) - mu.sum(-1))
    perfect = realised_cost_ac(sch, sch(y), y, y, params)
    assert perfect["imbalance"].abs().max() == 0
    # scheduled on the realised loads, real-time flows are the AC-OPF's: no overload beyond |P| <= |S| <= rate
    assert perfect["overload"].max() < 1e-3
    assert perfect["total"].sum() < cost["total"].sum()
    torch.testing.assert_close(cost["total"], cost["dispatch"] + cost["imbalance"] + cost["overload"])


def test_task_loss_gradient_matches_central_differences():
    net = _case9()
    sch = ACNetworkScheduler(net, LOAD_BUS, TIGHT)
    params = NetworkTaskParams()
    mu, y = _loads()
    assert_task_gradient_matches_fd(sch, mu, y, params, rtol=1e-4, atol=1e-3)


def test_failed_hour_drops_its_day_and_its_gradient():
    net = _case9()
    sch = ACNetworkScheduler(net, LOAD_BUS, TIGHT)
    params = NetworkTaskParams()
    mu, y = _loads(n_days=3)
    mu[1, 2] = torch.tensor([400.0, 400.0, 400.0])  # beyond the case's 820 MW of generation: infeasible
    with pytest.raises(SolverFailure) as err:
        sch(mu)
    assert 1 * 4 + 2 in err.value.indices
    m = mu.clone().requires_grad_()
    sched, cost, ok = sch.settle(m, y, params)
    assert ok.tolist() == [True, False, True] and cost["total"].shape == (2, 4)
    assert sched.status[1, 2] != Status.CONVERGED.code and (sched.status[[0, 2]] == Status.CONVERGED.code).all()
    (grad,) = torch.autograd.grad(cost["total"].sum(-1).mean(), m)
    assert torch.isfinite(grad).all() and (grad[1] == 0).all() and (grad[[0, 2]].abs() > 0).any()
    # the kept days' costs are those of solving them alone
    alone = realised_cost_ac(sch, sch(mu[[0, 2]]), mu[[0, 2]], y[[0, 2]], params)
    torch.testing.assert_close(cost["total"], alone["total"], rtol=1e-6, atol=1e-6)
    bad = mu.clone()
    bad[:, 0] = 400.0
    with pytest.raises(SolverFailure):  # every day failed: nothing to train on, loudly
        sch.settle(bad, y, params)


def test_task_training_through_ac_opf_runs_end_to_end():
    """RMSE net, then a few full-batch task steps through the AC-OPF: finite gradients, lower train cost."""
    net = _case9()
    sch = ACNetworkScheduler(net, LOAD_BUS)
    model, hist, before, after, x_test, y_test = rmse_then_task_training(sch, check_gradients=True)
    assert hist.best_epoch > 0 and after < 0.99 * before
    ev = evaluate_network(model, sch, NetworkTaskParams(), x_test, y_test)
    assert ev["n_failed_days"] == 0 and ev["pg_mw"].shape == (6, 4, 3) and np.isfinite(ev["task_cost"])
