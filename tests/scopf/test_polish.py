"""The exact full-neighbourhood polish of the attack, random-sample references, and the
AC N-2 case the polish was added for (a partner the relaxation's gradient ranks last)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError
from gridlearn.scopf import attack_contingencies, enumerate_contingencies
from gridlearn.scopf.attack import _polish, _Scorer
from gridlearn.scopf.dispatch import base_dispatch
from gridlearn.scopf.enumeration import sample_contingencies


def _fake_scorer(values: dict[tuple[int, ...], float]):
    """A scorer over a synthetic landscape: listed sets score their value, all others 0."""
    calls: list[int] = []

    def score_fn(members: torch.Tensor):
        rows = [tuple(int(i) for i in r) for r in members.tolist()]
        calls.append(len(rows))
        return np.array([values.get(r, 0.0) for r in rows]), ["ok"] * len(rows), np.zeros(len(rows))

    return _Scorer(score_fn, torch.device("cpu"), batch=7), calls


def test_polish_climbs_to_a_partner_outside_every_pool():
    # (0, 1) is the best set the ascent found; the best pair (1, 7) is one exact swap away
    # and (7, 8) two swaps away via (1, 7) -> (7, 8).
    landscape = {(0, 1): 5.0, (2, 3): 4.0, (1, 7): 10.0, (7, 8): 12.0}
    scorer, calls = _fake_scorer(landscape)
    scorer([(0, 1), (2, 3)])
    _polish(scorer, k=2, n=10, polish=1, max_rounds=10, singles=[])
    best = max(scorer.cache, key=lambda s: scorer.cache[s][0])
    assert best == (7, 8)
    assert all(c <= 7 for c in calls)  # the scorer's batch bounds every call
    # nothing climbs without the polish
    scorer0, _ = _fake_scorer(landscape)
    scorer0([(0, 1), (2, 3)])
    _polish(scorer0, k=2, n=10, polish=0, max_rounds=10, singles=[])
    assert set(scorer0.cache) == {(0, 1), (2, 3)}


def test_polish_starts_from_the_best_set_holding_a_worst_single():
    # The two best sets found sit on a local optimum; (4, 9) is reachable only from (4, 5),
    # a weak set, which the polish starts from because element 4 is the worst single.
    landscape = {(0, 1): 5.0, (0, 2): 4.5, (4, 5): 1.0, (4, 9): 20.0}
    scorer, _ = _fake_scorer(landscape)
    scorer([(0, 1), (0, 2), (4, 5)])
    # extra_starts=0: no budget-driven starts, so only the singles decide (those would reach it too)
    _polish(scorer, k=2, n=10, polish=2, max_rounds=10, singles=[3], extra_starts=0)
    assert (4, 9) not in scorer.cache
    _polish(scorer, k=2, n=10, polish=2, max_rounds=10, singles=[4], extra_starts=0)
    assert scorer.cache[(4, 9)][0] == 20.0


def test_attack_rejects_a_bad_polish(pglib14):
    with pytest.raises(ConfigError, match="polish"):
        attack_contingencies(pglib14, None, 2, polish=-1)


def test_sample_scores_distinct_sets_exactly_as_the_enumeration(pglib14):
    pg = base_dispatch(pglib14)
    enum = enumerate_contingencies(pglib14, pg, 3)
    sample = sample_contingencies(pglib14, pg, 3, n_samples=200, seed=4)
    assert len(sample) == 200 == sample["outage"].nunique() == sample.attrs["n_power_flows"]
    assert sample.attrs["n_sets_total"] == math.comb(25, 3) == len(enum)
    lookup = dict(zip(enum["outage"], enum["violation_mw"]))
    for o, v in zip(sample["outage"], sample["violation_mw"]):
        assert (math.isnan(v) and math.isnan(lookup[o])) or v == pytest.approx(lookup[o], abs=1e-9)
    again = sample_contingencies(pglib14, pg, 3, n_samples=200, seed=4)
    assert list(again["outage"]) == list(sample["outage"])
    # asking for more sets than exist gives every set once
    assert len(sample_contingencies(pglib14, pg, 1, n_samples=100)) == 25


def test_enumeration_rejects_malformed_sets(pglib14):
    pg = base_dispatch(pglib14)
    with pytest.raises(ConfigError, match="distinct"):
        enumerate_contingencies(pglib14, pg, 2, sets=[(0, 0)])
    with pytest.raises(ConfigError, match="distinct"):
        enumerate_contingencies(pglib14, pg, 2, sets=[(0, 99)])


@pytest.mark.slow
def test_ac_n2_worst_pair_needs_the_polish_case30(shared_data):
    """PGLib case30, the study's load scenario 2 (per-bus factors from default_rng(0), second
    draw), AC-OPF dispatch: the worst AC N-2 set is (line 0, line 6). After the line-0
    outage line 6 is a near-bridge whose removal acts only near alpha = 1, so the gradient
    ranks it last; the pool-restricted swaps miss it and the polish finds it."""
    from gridlearn.grid import load_case
    from gridlearn.scopf.ac import ACContingencyModel
    from gridlearn.scopf.outages import ElementSpace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = load_case(shared_data / "pglib-opf" / "pglib_opf_case30_ieee.m")
    rng = np.random.default_rng(0)
    rng.uniform(0.9, 1.1, base.n_bus)
    f = torch.as_tensor(rng.uniform(0.9, 1.1, base.n_bus), dtype=base.dtype)
    net = base.with_(pd_mw=base.bus.pd_mw * f, qd_mvar=base.bus.qd_mvar * f)
    pg = base_dispatch(net, "ac")
    enum = enumerate_contingencies(net, pg, 2, "ac")
    ok = enum[enum["status"] == "ok"]
    worst = float(ok["violation_mw"].iloc[0])
    assert ok["outage"].iloc[0] == (("line", 0), ("line", 6))
    space = ElementSpace.of(net)
    model = ACContingencyModel.build(net, space)
    alpha = torch.zeros(1, space.size, dtype=net.dtype)
    alpha[0, space.indices_of([("line", 0)])] = 1.0
    alpha.requires_grad_(True)
    (grad,) = torch.autograd.grad(model.violation(pg, alpha, 0.33).sum(), alpha)
    line6 = space.indices_of([("line", 6)])[0]
    assert float(grad[0, line6]) < float(grad[0].median())  # the gradient points away from it
    # exact="never", candidates=0: the search as this test was written for (C(47, 2) is within
    # its budget, so by default it would enumerate; the near-cut candidates are a second route)
    kw = dict(restarts=16, steps=30, seed=2, exact="never", candidates=0, certify="none")
    without = attack_contingencies(net, pg, 2, "ac", polish=0, **kw)
    assert float(without.ranking["violation_mw"].iloc[0]) < worst - 1.0
    res = attack_contingencies(net, pg, 2, "ac", max_power_flows=len(enum) - 1, **kw)
    assert float(res.ranking["violation_mw"].iloc[0]) == pytest.approx(worst, abs=1e-6)
    assert res.n_power_flows < len(enum)


def test_polish_spends_the_remaining_budget_on_further_starts():
    # (4, 5) is only the third best set; its neighbour (4, 9) is the worst. With budget
    # left after the first starts converge, the polish starts from it too; with none, not.
    landscape = {(0, 1): 5.0, (0, 2): 4.5, (4, 5): 1.0, (4, 9): 20.0}
    scorer, _ = _fake_scorer(landscape)
    scorer([(0, 1), (0, 2), (4, 5)])
    _polish(scorer, k=2, n=10, polish=1, max_rounds=10, singles=[])
    assert scorer.cache[(4, 9)][0] == 20.0
    tight, _ = _fake_scorer(landscape)
    tight([(0, 1), (0, 2), (4, 5)])
    tight.cap = len(tight.cache) + 2 * 8  # room for the first start's neighbourhood and one more round
    _polish(tight, k=2, n=10, polish=1, max_rounds=10, singles=[])
    assert (4, 9) not in tight.cache and len(tight.cache) <= tight.cap
