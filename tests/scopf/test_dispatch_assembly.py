"""The SC-OPF dispatch is the grid's DC-OPF assembly with extra rows (issue 17 step 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError
from gridlearn.grid import DCOPFLayer, load_case
from gridlearn.grid.dcopf_problem import DCStructure, assemble
from gridlearn.scopf.dc import DCContingencyModel
from gridlearn.scopf.dispatch import base_dispatch, solve_scopf
from gridlearn.scopf.enumeration import enumerate_contingencies
from gridlearn.scopf.outages import ElementSpace, set_splits_network


@pytest.fixture(scope="module")
def case39():
    return load_case("case39")


def test_base_dispatch_is_the_dc_opf(case39):
    # MATPOWER case39 has no angle limits, so the SC-OPF's base QP and DCOPFLayer's are the
    # same problem; only the cost unit and the ridge differ.
    pg, cost = solve_scopf(DCContingencyModel.build(case39, ElementSpace.of(case39, "branches")))
    ref = DCOPFLayer()(case39)
    assert torch.allclose(pg, ref.pg_mw, atol=1e-4)
    assert cost == pytest.approx(float(ref.cost_usd_per_h), rel=1e-8)
    assert torch.equal(base_dispatch(case39), pg)


def test_cost_unit_does_not_move_the_dispatch(case39):
    # Costs in cents instead of dollars: a pure change of unit, the same dispatch.
    space = ElementSpace.of(case39, "branches")
    pg, cost = solve_scopf(DCContingencyModel.build(case39, space))
    g = case39.gen
    cents = case39.with_(cost_c2_usd_per_mw2h=g.cost_c2_usd_per_mw2h * 100, cost_c1_usd_per_mwh=g.cost_c1_usd_per_mwh * 100,
                         cost_c0_usd_per_h=g.cost_c0_usd_per_h * 100)
    pg_c, cost_c = solve_scopf(DCContingencyModel.build(cents, space))
    assert torch.allclose(pg, pg_c, atol=1e-6)
    assert cost_c == pytest.approx(100 * cost, rel=1e-10)


def test_angle_rows_are_optional(shared_data):
    net = load_case(shared_data / "pglib-opf" / "pglib_opf_case14_ieee.m")
    st = DCStructure.build(net)
    g = net.gen
    args = (net, st, net.bus.pd_mw.reshape(1, 1, -1), g.cost_c2_usd_per_mw2h[None], g.cost_c1_usd_per_mwh[None],
            None, None, 1.0)
    with_angles = assemble(*args, screen=False)
    without = assemble(*args, screen=False, angle_limits=False)
    n_ang = len(st.ang_lines)
    assert n_ang > 0 and len(with_angles.rows["ang_up"]) == n_ang and len(without.rows["ang_up"]) == 0
    assert with_angles.G.shape[0] - without.G.shape[0] == 2 * n_ang


def test_secured_dispatch_meets_every_post_contingency_limit(case39):
    # A random load scenario (at the nominal load securing the worst three is infeasible).
    rng = np.random.default_rng(0)
    case39 = case39.with_(pd_mw=case39.bus.pd_mw * torch.as_tensor(rng.uniform(0.8, 1.1, case39.n_bus)))
    model = DCContingencyModel.build(case39, ElementSpace.of(case39, "branches"))
    pg0, cost0 = solve_scopf(model)
    enum = enumerate_contingencies(case39, pg0, 1, elements="branches")
    label = {model.space.set_labels((m,)): m for m in range(model.space.size)
             if not set_splits_network(case39, model.space, (m,))}
    worst = [label[o] for o in enum["outage"] if o in label][:3]
    sets = torch.as_tensor([[m] for m in worst])
    flows0 = model.set_flows(pg0, sets)[0]
    rate = case39.branch.rate_a_mva
    assert bool((flows0.abs() > rate + 1e-3).any())  # the base dispatch overloads after these outages
    pg, cost = solve_scopf(model, sets)
    flows, p_post, pmin, pmax = model.set_flows(pg, sets)[:4]
    assert bool((flows.abs() <= rate + 1e-4).all())
    assert bool((p_post >= pmin - 1e-6).all()) and bool((p_post <= pmax + 1e-6).all())
    assert float(pg.sum()) == pytest.approx(float((case39.bus.pd_mw + case39.bus.gs_mw).sum()), abs=1e-6)
    assert cost > cost0


def test_physics_is_chosen_by_the_contingency_model(case39):
    with pytest.raises(ConfigError, match="physics"):
        base_dispatch(case39, "dcx")
    assert np.isfinite(base_dispatch(case39, "dc").numpy()).all()
