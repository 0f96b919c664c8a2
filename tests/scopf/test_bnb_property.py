"""Property tests of the LODF branch-and-bound on random small grids (hypothesis): run to
completion it finds the enumeration's worst value, never certifies below it, scores
every child it scores exactly as `score_sets` does, and excludes only sets the
enumeration does not rank; plus the attack's exact-when-cheaper switch to it."""

from __future__ import annotations

import itertools
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridlearn.scopf import attack_contingencies, enumerate_contingencies
from gridlearn.scopf.branch_and_bound import _dead_end_table, _node_state, _score_children, certify_bnb
from gridlearn.scopf.common import members_tensor
from gridlearn.scopf.dc import DCContingencyModel
from gridlearn.scopf.outages import ElementSpace

from .conftest import write_matpower


def random_grid(seed: int):
    """A ring of 6-10 buses with random chords, a radial load bus and a radial
    generator-only bus (so load-cutting and dead-end sets occur), random reactances,
    ratings, loads and 3 units; the dispatch is pmax-proportional (balanced)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 11))
    branches = [(i, (i + 1) % n, float(rng.uniform(0.05, 0.3)), float(rng.uniform(20, 120))) for i in range(n)]
    for _ in range(int(rng.integers(1, 4))):
        a, b = rng.choice(n, 2, replace=False)
        branches.append((int(a), int(b), float(rng.uniform(0.05, 0.3)), float(rng.uniform(20, 120))))
    branches.append((int(rng.integers(n)), n, float(rng.uniform(0.05, 0.3)), float(rng.uniform(20, 80))))  # load spur
    branches.append((int(rng.integers(n)), n + 1, float(rng.uniform(0.05, 0.3)), float(rng.uniform(20, 80))))  # unit spur
    loads = [float(x) for x in rng.uniform(0, 60, n)]
    loads[0] = 0.0
    buses = [(loads[0], 3)] + [(p, 1) for p in loads[1:]] + [(float(rng.uniform(10, 40)), 1), (0.0, 2)]
    total = sum(p for p, _ in buses)
    gbus = [0, int(rng.integers(1, n)), n + 1]
    pmax = [float(x) for x in rng.uniform(0.5, 1.5, 3) * total]
    pg = [total * p / sum(pmax) for p in pmax]
    with tempfile.TemporaryDirectory() as d:
        net = write_matpower(Path(d) / "grid.m", buses, gens=[(b, g, p) for b, g, p in zip(gbus, pg, pmax)],
                             branches=branches)
    return net, torch.tensor(pg, dtype=torch.float64)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.sampled_from([2, 3]), elements=st.sampled_from(["branches", "all"]))
def test_branch_and_bound_equals_enumeration(seed, k, elements):
    net, pg = random_grid(seed)
    enum = enumerate_contingencies(net, pg, k, elements=elements)
    ok = enum[enum["status"] == "ok"]
    model = DCContingencyModel.build(net, ElementSpace.of(net, elements))
    cert = certify_bnb(model, pg, k, -math.inf)
    assert cert.detail["complete"]
    if not len(ok):
        return
    worst = float(ok["violation_mw"].iloc[0])
    assert cert.detail["best_mw"] == pytest.approx(worst, rel=1e-9, abs=1e-7)
    assert cert.upper_bound_mw >= worst - 1e-7
    named = model.space.set_labels(cert.detail["best_set"])
    assert float(ok.loc[ok["outage"] == named, "violation_mw"].iloc[0]) == pytest.approx(worst, abs=1e-6)
    # from the true worst as incumbent, it certifies it
    again = certify_bnb(model, pg, k, worst)
    assert again.claim == "certified worst" and again.upper_bound_mw >= worst - 1e-7


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.sampled_from([2, 3]))
def test_children_scored_from_the_node_state_are_exact(seed, k):
    # kind 1 (rank-1 LODF) and kind 2 (pick-up through PTDF^S) against score_sets, every
    # bound above its exact score, and kind 0 (excluded) only for sets the enumeration skips
    net, pg = random_grid(seed)
    model = DCContingencyModel.build(net, ElementSpace.of(net, "all"))
    n = model.space.size
    nodes = list(itertools.combinations(range(n - 1), k - 1))
    with torch.no_grad():
        state = _node_state(model, pg, members_tensor(nodes, net.device), model.h.abs().sum(0), model.ptdf.abs().sum(0))
    sets = [s + (c,) for s in nodes for c in range(s[-1] + 1, n)]
    v, status, _ = model.score_sets(pg, members_tensor(sets, net.device))
    status = np.array(status)
    p_i = torch.as_tensor([i for i, s in enumerate(nodes) for c in range(s[-1] + 1, n)])
    c_i = torch.as_tensor([c for s in nodes for c in range(s[-1] + 1, n)])
    kind = state.kind[p_i, c_i].numpy()
    assert np.all(status[kind == 0] != "ok")
    exact = (kind == 1) | (kind == 2)
    with torch.no_grad():
        got = _score_children(model, pg, state, p_i[exact], c_i[exact], _dead_end_table(model)[1]).numpy()
    assert np.all(status[exact] == "ok")
    np.testing.assert_allclose(got, v[exact], rtol=1e-9, atol=1e-7)
    b = state.bound[p_i, c_i].numpy()
    scored = status == "ok"
    assert np.all(b[scored] >= v[scored] - 1e-9)


def test_exact_when_cheaper_by_branch_and_bound(pglib14):
    from gridlearn.scopf.dispatch import base_dispatch

    pg = base_dispatch(pglib14)
    n = ElementSpace.of(pglib14, "all").size
    total = math.comb(n, 2)
    enum = enumerate_contingencies(pglib14, pg, 2, elements="all")
    worst = float(enum.loc[enum["status"] == "ok", "violation_mw"].max())
    # budget below C(n, 2), allowance min(budget, C - budget) >= 4 n nodes: the trial runs and finishes
    res = attack_contingencies(pglib14, pg, 2, elements="all", max_power_flows=total // 2, restarts=4, steps=10)
    assert res.method == "branch-and-bound" and res.claim == "certified worst"
    assert float(res.ranking["violation_mw"].iloc[0]) == pytest.approx(worst, abs=1e-9)
    assert res.n_power_flows <= min(total // 2, total - total // 2) < total
    # its table: every set it scored, with the enumeration's value (a defence reads them all)
    truth = dict(zip(enum["outage"], enum["violation_mw"]))
    assert len(res.ranking) > 1
    for o, v in zip(res.ranking["outage"], res.ranking["violation_mw"]):
        assert v == pytest.approx(truth[o], abs=1e-7)
    # an allowance too small for the nodes: no trial, the search
    tight = attack_contingencies(pglib14, pg, 2, elements="all", max_power_flows=total - 10, restarts=4, steps=10)
    assert tight.method == "search" and tight.n_power_flows <= total - 10
