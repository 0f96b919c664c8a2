"""AC-OPF variant of the network-aware task: hourly AC-OPF agrees with Ipopt, gradients, failures, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.errors import SolverFailure
from gridlearn.forecast.ac_scheduler import ACNetworkScheduler, realised_cost_ac
from gridlearn.forecast.network_aware import NetworkTaskParams, evaluate_network, task_loss
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


def _drops_only_the_hour(sch, mu, y, d, h, params):
    """Training path with hour (d, h) left out: the other hours of day d keep their cost and
    gradient (those of solving them alone: the AC-OPF is single-period), (d, h) gets exactly
    zero, and the task loss is T × the mean cost of a kept day-hour."""
    m = mu.clone().requires_grad_()
    sched, cost, ok = sch.settle(m, y, params)
    n_days, n_hours = mu.shape[:2]
    assert ok.all() and cost["total"].shape == (n_days, n_hours)
    expected = torch.ones(n_days, n_hours, dtype=torch.bool)
    expected[d, h] = False
    assert torch.equal(sched.hour_ok, expected) and torch.equal(cost["hour_kept"], expected)
    for term in ("dispatch", "imbalance", "overload", "total"):
        assert cost[term][d, h] == 0
    (grad,) = torch.autograd.grad(cost["total"].sum(), m)
    assert torch.isfinite(grad).all() and (grad[d, h] == 0).all()
    others = [t for t in range(n_hours) if t != h]
    assert (grad[d, others].abs().amax(-1) > 0).all()  # every other hour of the day keeps a gradient
    # the day's other hours, solved alone, have the same costs and gradients
    m_alone = mu[d:d + 1, others].clone().requires_grad_()
    _, alone, _ = sch.settle(m_alone, y[d:d + 1, others], params)
    (grad_alone,) = torch.autograd.grad(alone["total"].sum(), m_alone)
    torch.testing.assert_close(cost["total"][d, others], alone["total"][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad[d, others], grad_alone[0], rtol=1e-5, atol=1e-4)
    # the task loss divides by the hours kept
    loss = task_loss(sch, mu.clone().requires_grad_(), y, params)
    torch.testing.assert_close(loss, cost["total"].sum() * n_hours / (n_days * n_hours - 1))
    return grad


def test_failed_hour_drops_only_itself_in_training_and_its_day_in_evaluation():
    net = _case9()
    sch = ACNetworkScheduler(net, LOAD_BUS, TIGHT)
    params = NetworkTaskParams()
    mu, y = _loads(n_days=3)
    mu[1, 2] = torch.tensor([400.0, 400.0, 400.0])  # beyond the case's 820 MW of generation: infeasible
    with pytest.raises(SolverFailure) as err:
        sch(mu)
    assert 1 * 4 + 2 in err.value.indices
    _drops_only_the_hour(sch, mu, y, 1, 2, params)
    assert sch.hours_left_out["failed"] >= 1  # counted (task_loss above solved once more)
    # evaluation (no gradient): a daily cost needs all its hours, so the day is left out whole
    with torch.no_grad():
        sched, cost, ok = sch.settle(mu, y, params)
    assert ok.tolist() == [True, False, True] and cost["total"].shape == (2, 4) and cost["hour_kept"].all()
    assert sched.status[1, 2] != Status.CONVERGED.code and (sched.status[[0, 2]] == Status.CONVERGED.code).all()
    alone = realised_cost_ac(sch, sch(mu[[0, 2]]), mu[[0, 2]], y[[0, 2]], params)
    torch.testing.assert_close(cost["total"], alone["total"], rtol=1e-6, atol=1e-6)
    bad = mu.clone()
    bad[:, :] = 400.0
    with pytest.raises(SolverFailure):  # every hour failed: nothing to train on, loudly
        sch.settle(bad.requires_grad_(), y, params)
    with pytest.raises(SolverFailure):
        with torch.no_grad():
            sch.settle(bad, y, params)


def test_weakly_active_hour_drops_only_itself():
    """Generator 1's pmax set to its optimal output in hour (1, 1): there the limit is active
    with a zero multiplier (no derivative); at higher loads it binds strongly, at lower ones not."""
    net = _case9()
    mu, y = _loads()
    pg = ACNetworkScheduler(net, LOAD_BUS, TIGHT)(mu).pg_mw
    pmax = net.gen.pmax_mw.clone()
    pmax[1] = pg[1, 1, 1]
    sch = ACNetworkScheduler(net.with_(pmax_mw=pmax), LOAD_BUS, TIGHT)
    s = sch(mu)  # converges everywhere; without a gradient nothing is left out
    assert (s.status == Status.CONVERGED.code).all() and s.hour_ok.all()
    assert (s.pg_mw[..., 1] > pmax[1] * (1 - 1e-6)).sum() > 1  # the limit binds in other hours too
    _drops_only_the_hour(sch, mu, y, 1, 1, NetworkTaskParams())
    assert sch.hours_left_out["weakly_active"] >= 1 and sch.hours_left_out["failed"] == 0


def test_task_training_through_ac_opf_runs_end_to_end():
    """RMSE net, then a few full-batch task steps through the AC-OPF: finite gradients, lower train cost."""
    net = _case9()
    sch = ACNetworkScheduler(net, LOAD_BUS)
    model, hist, before, after, x_test, y_test = rmse_then_task_training(sch, check_gradients=True)
    assert hist.best_epoch > 0 and after < 0.99 * before
    ev = evaluate_network(model, sch, NetworkTaskParams(), x_test, y_test)
    assert ev["n_failed_days"] == 0 and ev["pg_mw"].shape == (6, 4, 3) and np.isfinite(ev["task_cost"])
