"""The search's guarantees: near-islanding sets found, exact enumeration when it is
cheaper, never more power flows than enumeration, and a bound never below the truth."""

from __future__ import annotations

import math

import pytest
import torch

from gridlearn.errors import ConfigError
from gridlearn.scopf import attack_contingencies, enumerate_contingencies
from gridlearn.scopf.attack import planned_power_flows
from gridlearn.scopf.candidates import near_cut_sets
from gridlearn.scopf.certificate import certify_worst
from gridlearn.scopf.dc import DCContingencyModel
from gridlearn.scopf.dispatch import base_dispatch
from gridlearn.scopf.outages import ElementSpace

from .conftest import write_matpower

N_RING = 36


@pytest.fixture(scope="module")
def pocket(tmp_path_factory):
    """A ring of 36 buses (x 0.1, 1000 MW) with units at buses 0 and 18 and 25 MW at every
    other ring bus; a load pocket (bus 36, 150 MW) fed by a corridor of two parallel lines
    from bus 3 (x 0.05, 160 MW each: N-1 secure) and a weak tie beside it (x 2, 20 MW).
    Removing both corridor lines sends the whole 150 MW over the tie: 130 MW of overload.
    Removing them gradually changes nothing until ~93 % (the tie's share is
    0.5 / (0.5 + 40 (1 - alpha))), so the relaxation's gradient cannot see the pair."""
    buses = [(0, 3)] + [(25, 1)] * 17 + [(0, 2)] + [(25, 1)] * 17 + [(150, 1)]
    ring = [(i, (i + 1) % N_RING, 0.1, 1000) for i in range(N_RING)]
    corridor = [(3, N_RING, 0.05, 160), (3, N_RING, 0.05, 160)]
    tie = [(3, N_RING, 2.0, 20)]
    net = write_matpower(tmp_path_factory.mktemp("pocket") / "pocket.m", buses,
                         gens=[(0, 500, 1200), (18, 500, 1200)], branches=ring + corridor + tie)
    return net, torch.tensor([500.0, 500.0], dtype=torch.float64)


CORRIDOR = (("line", N_RING), ("line", N_RING + 1))


def test_near_islanding_corridor_is_the_worst_pair_and_the_search_finds_it(pocket):
    net, pg = pocket
    enum = enumerate_contingencies(net, pg, 2, elements="branches")
    ok = enum[enum["status"] == "ok"]
    assert ok["outage"].iloc[0] == CORRIDOR
    assert ok["violation_mw"].iloc[0] == pytest.approx(130.0, abs=1e-6)
    assert ok["violation_mw"].iloc[1] < 130.0 - 1.0  # a clear worst
    # the LODF near-cut screen puts the corridor first
    model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
    assert model.space.set_labels(near_cut_sets(model, pg, 2, limit=4)[0]) == CORRIDOR
    kw = dict(elements="branches", exact="never", certify="none", restarts=4, steps=20, seed=0)
    res = attack_contingencies(net, pg, 2, **kw)
    assert res.method == "search" and res.best == CORRIDOR
    assert float(res.ranking["violation_mw"].iloc[0]) == pytest.approx(130.0, abs=1e-6)
    # without the topology-aware candidates and the polish, the gradient's sets miss it
    blind = attack_contingencies(net, pg, 2, candidates=0, polish=0, screen=False, **kw)
    assert float(blind.ranking["violation_mw"].iloc[0]) < 130.0 - 1.0


def test_exact_when_cheaper_switch(pocket, pglib14):
    net, pg = pocket
    n = ElementSpace.of(net, "branches").size
    kw = dict(elements="branches", restarts=4, steps=10, certify="none")
    budget = planned_power_flows(n, 2, restarts=4, steps=10, max_swap_rounds=10, screen=True, candidates=256,
                                 polish=2)
    assert math.comb(n, 2) <= budget
    res = attack_contingencies(net, pg, 2, **kw)
    assert res.method == "enumeration" and res.claim == "certified worst"
    assert res.n_power_flows == math.comb(n, 2) and res.max_power_flows == budget
    enum = enumerate_contingencies(net, pg, 2, elements="branches")
    got = dict(zip(res.table["outage"], res.table["violation_mw"]))
    for o, v in zip(enum["outage"], enum["violation_mw"]):
        assert (math.isnan(v) and math.isnan(got[o])) or got[o] == pytest.approx(v, abs=1e-9)
    # a budget below C(n, k) makes it search, within that budget
    small = math.comb(n, 2) - 1
    res = attack_contingencies(net, pg, 2, max_power_flows=small, **kw)
    assert res.method == "search" and res.n_power_flows <= small
    # and "never" searches even when enumeration is cheaper
    assert attack_contingencies(net, pg, 2, exact="never", **kw).method == "search"
    with pytest.raises(ConfigError, match="exact"):
        attack_contingencies(net, pg, 2, exact="sometimes")


def test_search_never_spends_more_power_flows_than_enumeration(pglib14):
    pg = base_dispatch(pglib14)
    for k in (2, 3):
        res = attack_contingencies(pglib14, pg, k, restarts=4, steps=10, certify="none", seed=1)
        assert res.n_power_flows <= math.comb(ElementSpace.of(pglib14).size, k)
        assert res.n_power_flows <= res.max_power_flows


@pytest.mark.parametrize("k", [1, 2])
def test_certificate_never_below_enumerated_worst(pocket, k):
    net, pg = pocket
    enum = enumerate_contingencies(net, pg, k)
    worst = float(enum.loc[enum["status"] == "ok", "violation_mw"].max())
    model = DCContingencyModel.build(net, ElementSpace.of(net))
    cert = certify_worst(model, pg, k, worst - 10.0, time_limit_s=30.0)
    assert cert.upper_bound_mw >= worst - 1e-6
    # solved to optimality, the MILP's bound is the enumeration's worst: the gap is the 10 MW left
    assert cert.status == "Optimal"
    assert cert.upper_bound_mw == pytest.approx(worst, abs=1e-4)
    assert cert.claim == "best found, gap 10 MW"
    assert certify_worst(model, pg, k, worst, time_limit_s=30.0).claim == "certified worst"


def test_fallback_flow_bound_is_valid_and_says_so(pocket):
    # with no room for the island list, the MILP is not built: the loose flow bound stands in
    net, pg = pocket
    enum = enumerate_contingencies(net, pg, 2)
    worst = float(enum.loc[enum["status"] == "ok", "violation_mw"].max())
    model = DCContingencyModel.build(net, ElementSpace.of(net))
    cert = certify_worst(model, pg, 2, worst, max_islands=0)
    assert cert.method == "flow bound" and "flow bound only" in cert.status
    assert cert.upper_bound_mw >= worst and cert.claim.startswith("best found, gap")


def test_attack_result_carries_a_certificate(pocket):
    net, pg = pocket
    res = attack_contingencies(net, pg, 2, elements="branches", exact="never", restarts=4, steps=10,
                               certify_time_limit_s=20.0)
    assert res.certificate is not None and res.certificate.upper_bound_mw >= res.ranking["violation_mw"].iloc[0]
    assert res.claim == res.certificate.claim
    assert res.claim == "certified worst" or res.claim.startswith("best found, gap")
