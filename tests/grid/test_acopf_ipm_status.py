"""The torch AC-OPF interior point's statuses are claims (issue 20): CONVERGED only where Ipopt's unscaled
termination test holds too, INFEASIBLE where the data prove it or the iterate is a stationary point of
infeasibility, and never INFEASIBLE for a scenario well inside the feasible region."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from gridlearn.errors import InfeasibleError
from gridlearn.grid import load_case
from gridlearn.grid.acopf import solve_acopf
from gridlearn.grid.acopf_ipm import IPMOptions, solve_acopf_batched
from gridlearn.grid.adequacy import active_power_shortfall_mw
from gridlearn.implicit.solution import Status


def test_a_violation_hidden_by_the_gradient_scaling_is_not_converged():
    """case16am's 6e-10 pu branch (MATPOWER: "original reactance of 0 set to 1e-8" ohm) gets its two
    balance rows scaled by 6e-8: at 10% load the iterate dispatched nothing, left the whole 0.29 pu
    load unserved on those rows, and met the scaled tolerance (8.97e-9 <= 1e-8): it was CONVERGED at
    cost 6e-9 $/h, where Ipopt's optimum is 57.5 $/h. Ipopt's unscaled test refuses that point."""
    net = load_case("case16am")
    pd, qd = net.bus.pd_mw * 0.1, net.bus.qd_mvar * 0.1
    ref = solve_acopf(net.with_(pd_mw=pd, qd_mvar=qd), backend="direct", tol=1e-9)
    opts = IPMOptions(retry_flat=False, linear_solver="dense", max_iter=30)
    r = solve_acopf_batched(net, pd[None], qd[None], options=opts)
    assert r.status[0] is not Status.CONVERGED
    assert r.residuals["error"][0] <= 1e-7  # the scaled error is (nearly) met: only the unscaled test refuses
    assert r.residuals["constraint_violation"][0] > 1e3 * opts.constr_viol_tol
    assert torch.isnan(r.cost_usd_per_h[0]) and ref.cost_usd_per_h > 50.0


def test_load_beyond_capacity_is_infeasible_without_iterating_and_other_infeasibility_is_still_detected():
    """case16am's corpus scenarios (26-32 MW of load, one 10 MW generator) are proven infeasible from the
    data (before: 600 iterations to MAX_STEPS each); in a case9 batch, a scenario with 3x the load is
    proven too, one with 2.5x (787 MW, below the 820 MW capacity: infeasible through losses and
    limits) is found by the iteration's own test, and the feasible one converges."""
    net = load_case("case16am")
    g = torch.Generator().manual_seed(0)
    pd = net.bus.pd_mw * (1 + 0.1 * (2 * torch.rand(4, net.n_bus, generator=g, dtype=torch.float64) - 1))
    r = solve_acopf_batched(net, pd, net.bus.qd_mvar.expand(4, -1))
    assert r.status == [Status.INFEASIBLE] * 4 and (r.iterations == 0).all()
    with pytest.raises(InfeasibleError, match="exceeds the generation capacity"):
        solve_acopf(net.with_(pd_mw=pd[0]), backend="direct")

    net = load_case("case9")
    pd = torch.stack([net.bus.pd_mw * k for k in (1.0, 3.0, 2.5)])
    r = solve_acopf_batched(net, pd, net.bus.qd_mvar.expand(3, -1))
    assert r.status == [Status.CONVERGED, Status.INFEASIBLE, Status.INFEASIBLE]
    assert int(r.iterations[1]) == 0 and int(r.iterations[2]) > 0
    assert float(active_power_shortfall_mw(net, pd[2])) < 0  # no proof there: the iteration decided
    for k in (1, 2):
        with pytest.raises(InfeasibleError):
            solve_acopf(net.with_(pd_mw=pd[k]), backend="direct")


def test_shortfall_counts_shunts_at_their_best_voltage_and_claims_nothing_for_an_active_branch():
    net = load_case("case9")
    cap = float(net.gen.pmax_mw.sum())
    assert float(active_power_shortfall_mw(net)) == pytest.approx(float(net.bus.pd_mw.sum()) - cap)
    gs = torch.zeros(net.n_bus, dtype=torch.float64)
    gs[4], gs[6] = 10.0, -20.0  # a 10 MW load shunt draws least at vmin, a 20 MW source gives most at vmax
    shunted = net.with_(gs_mw=gs)
    want = (float(net.bus.pd_mw.sum()) + 10.0 * float(net.bus.vmin_pu[4]) ** 2 - 20.0 * float(net.bus.vmax_pu[6]) ** 2
            - cap)
    assert float(active_power_shortfall_mw(shunted)) == pytest.approx(want)
    r = net.branch.r_pu.clone().expand(2, -1).clone()
    r[1, 3] = -1e-3  # a negative resistance can generate power: no proof
    short = active_power_shortfall_mw(net, net.bus.pd_mw.expand(2, -1) * 4, r_pu=r)
    assert short[0] > 0 and short[1] == -float("inf")


_CASES = {name: load_case(name) for name in ("case9", "case14", "case16am")}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=hst.sampled_from(["case9", "case14"]), inside=hst.floats(0.5, 0.9), beyond=hst.floats(1.05, 3.0),
       seed=hst.integers(0, 2**16))
def test_property_inside_is_never_infeasible_and_beyond_capacity_always_is(name, inside, beyond, seed):
    """A scenario scaled down to 50-90% of a feasible case's load (per-bus noise +-5%) never gets
    INFEASIBLE; one whose load exceeds the generation capacity by 5-200% always does."""
    net = _CASES[name]
    g = torch.Generator().manual_seed(seed)
    noise = 1 + 0.05 * (2 * torch.rand(2, net.n_bus, generator=g, dtype=torch.float64) - 1)
    cap = float(net.gen.pmax_mw.sum())
    over = beyond * cap / float(net.bus.pd_mw.sum())
    pd = net.bus.pd_mw * noise * torch.tensor([[inside], [over]], dtype=torch.float64)
    r = solve_acopf_batched(net, pd, net.bus.qd_mvar * noise)
    assert r.status[0] is not Status.INFEASIBLE
    assert r.status[1] is Status.INFEASIBLE


def test_case16am_well_inside_capacity_is_never_called_infeasible():
    """case16am at 20-30% of its load is feasible (Ipopt solves it); the torch iterate stalls there
    behind the scaled rows (MAX_STEPS, a failure it reports) but must not claim infeasibility."""
    net = _CASES["case16am"]
    k = torch.tensor([[0.2], [0.3]], dtype=torch.float64)
    opts = IPMOptions(retry_flat=False, linear_solver="dense", max_iter=40)
    r = solve_acopf_batched(net, net.bus.pd_mw * k, net.bus.qd_mvar * k, options=opts)
    assert all(s is not Status.INFEASIBLE for s in r.status)
    solve_acopf(net.with_(pd_mw=net.bus.pd_mw * 0.3, qd_mvar=net.bus.qd_mvar * 0.3), backend="direct")
