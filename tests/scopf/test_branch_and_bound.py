"""The LODF branch-and-bound certifier: every child bound is above the child's exact
score, the bound it returns is never below the enumerated worst, it names a better set
than the incumbent when there is one, and an early stop states a gap."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from gridlearn.scopf import attack_contingencies, enumerate_contingencies
from gridlearn.scopf.branch_and_bound import _node_bounds, certify_bnb
from gridlearn.scopf.common import members_tensor
from gridlearn.scopf.dc import DCContingencyModel
from gridlearn.scopf.dispatch import base_dispatch
from gridlearn.scopf.outages import ElementSpace


@pytest.fixture(scope="module")
def scenario14(pglib14):
    """PGLib case14 at a random load (every load x U(0.9, 1.15)) and its DC-OPF dispatch."""
    f = torch.as_tensor(np.random.default_rng(3).uniform(0.9, 1.15, pglib14.n_bus), dtype=pglib14.dtype)
    net = pglib14.with_(pd_mw=pglib14.bus.pd_mw * f, qd_mvar=pglib14.bus.qd_mvar * f)
    return net, base_dispatch(net)


@pytest.mark.parametrize("k", [2, 3])
def test_every_child_bound_is_above_its_exact_score(scenario14, k):
    # the knapsack bound must hold set by set, branches and generators alike
    net, pg = scenario14
    model = DCContingencyModel.build(net, ElementSpace.of(net, "all"))
    n = model.space.size
    nodes = list(itertools.combinations(range(n - 1), k - 1))
    with torch.no_grad():
        h = model.h.abs()
        bounds = _node_bounds(model, pg, members_tensor(nodes, net.device), h.sum(0), model.ptdf.abs().sum(0))
    sets = [s + (c,) for s in nodes for c in range(s[-1] + 1, n)]
    v, status, _ = model.score_sets(pg, members_tensor(sets, net.device))
    b = np.array([float(bounds[i, c]) for i, s in enumerate(nodes) for c in range(s[-1] + 1, n)])
    ok = np.array([st == "ok" for st in status])
    assert ok.sum() > 0.8 * len(sets)
    assert np.all(b[ok] >= v[ok] - 1e-9)
    finite = np.isfinite(b) & ok
    assert finite.mean() > 0.5  # most children get a finite (useful) bound
    assert np.median((b - v)[finite]) < 10 * max(float(np.median(v[ok])), 1.0)  # and not a vacuous one


@pytest.mark.parametrize("k,elements", [(2, "all"), (3, "branches"), (3, "all")])
def test_bound_is_the_enumerated_worst_when_complete(scenario14, k, elements):
    net, pg = scenario14
    enum = enumerate_contingencies(net, pg, k, elements=elements)
    ok = enum[enum["status"] == "ok"]
    worst = float(ok["violation_mw"].iloc[0])
    model = DCContingencyModel.build(net, ElementSpace.of(net, elements))
    for incumbent in (0.0, 0.8 * worst, worst):
        cert = certify_bnb(model, pg, k, incumbent, time_limit_s=120.0)
        assert cert.detail["complete"] and cert.upper_bound_mw >= worst - 1e-9
        assert cert.upper_bound_mw == pytest.approx(worst, abs=1e-6)
        assert cert.detail["n_power_flows"] < math.comb(model.space.size, k)  # it pruned something
        if incumbent < worst - 1e-6:  # it found the worst set itself and says the incumbent falls short
            named = model.space.set_labels(cert.detail["best_set"])  # a worst set (ties are common)
            assert float(ok.loc[ok["outage"] == named, "violation_mw"].iloc[0]) == pytest.approx(worst, abs=1e-6)
            assert cert.claim == f"best found, gap {worst - incumbent:.4g} MW"
        else:
            assert cert.claim == "certified worst"


def test_an_early_stop_states_a_gap_above_the_worst(scenario14):
    net, pg = scenario14
    enum = enumerate_contingencies(net, pg, 3, elements="all")
    worst = float(enum.loc[enum["status"] == "ok", "violation_mw"].max())
    model = DCContingencyModel.build(net, ElementSpace.of(net, "all"))
    nodes = math.comb(model.space.size - 1, 2)
    cert = certify_bnb(model, pg, 3, 0.0, max_power_flows=nodes - 1)  # fewer than the nodes: no bound
    assert cert.claim.startswith("best found, no bound") and cert.detail["n_power_flows"] == 0
    full = certify_bnb(model, pg, 3, 0.0)
    assert full.detail["complete"] and full.upper_bound_mw == pytest.approx(worst, abs=1e-6)
    for cap in (nodes + 10, nodes + 200, full.detail["n_power_flows"] - 1):
        cert = certify_bnb(model, pg, 3, 0.0, max_power_flows=cap)
        assert not cert.detail["complete"] and "power-flow allowance" in cert.status
        assert cert.detail["n_power_flows"] <= cap
        assert cert.upper_bound_mw >= worst - 1e-9
        # open sets without a finite bound (islanding ones, scored last) leave no bound; else a gap
        assert cert.claim.startswith("best found, no bound" if math.isinf(cert.upper_bound_mw) else "best found, gap")


def test_attack_certifies_by_branch_and_bound_by_default(scenario14):
    net, pg = scenario14
    res = attack_contingencies(net, pg, 3, elements="branches", exact="never", restarts=4, steps=10)
    assert res.certificate.method == "lodf branch-and-bound"
    enum = enumerate_contingencies(net, pg, 3, elements="branches")
    worst = float(enum.loc[enum["status"] == "ok", "violation_mw"].max())
    assert res.certificate.upper_bound_mw == pytest.approx(worst, abs=1e-6)
    found = float(res.ranking["violation_mw"].iloc[0])
    assert res.claim == ("certified worst" if found >= worst - 1e-4 else f"best found, gap {worst - found:.4g} MW")


def test_a_probe_stops_early_when_the_open_sets_cannot_fit(scenario14):
    # the exact-when-cheaper trial's probe: a run that cannot finish within its allowance
    # stops after a fraction of it, and still states a bound never below the worst
    net, pg = scenario14
    enum = enumerate_contingencies(net, pg, 3, elements="all")
    worst = float(enum.loc[enum["status"] == "ok", "violation_mw"].max())
    model = DCContingencyModel.build(net, ElementSpace.of(net, "all"))
    nodes = math.comb(model.space.size - 1, 2)
    need = certify_bnb(model, pg, 3, -math.inf, probe=8).detail["n_power_flows"]  # no cap: it finishes
    cap = nodes + (need - nodes) // 2
    cert = certify_bnb(model, pg, 3, -math.inf, max_power_flows=cap, probe=8)
    assert "open sets exceed" in cert.status and not cert.detail["complete"]
    assert cert.detail["n_power_flows"] < cap
    assert cert.upper_bound_mw >= worst - 1e-9
