"""The attack finds the enumeration's worst set; result tables; the defence secures the dispatch."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gridlearn.scopf import attack_contingencies, defend, enumerate_contingencies
from gridlearn.scopf.dispatch import base_dispatch, dispatch_series


@pytest.fixture(scope="module")
def pg14(pglib14):
    return base_dispatch(pglib14)


@pytest.mark.parametrize("k", [1, 2])
def test_attack_finds_enumeration_worst_set_case14(pglib14, pg14, k):
    enum = enumerate_contingencies(pglib14, pg14, k)
    ranked = enum[enum["status"] == "ok"]
    worst = float(ranked["violation_mw"].iloc[0])
    assert worst > 1.0  # the base DC-OPF dispatch is not N-k secure on PGLib case14
    res = attack_contingencies(pglib14, pg14, k, restarts=8, steps=30, seed=0)
    assert float(res.ranking["violation_mw"].iloc[0]) == pytest.approx(worst, abs=1e-6)
    # the set it names is one of the enumeration's worst (ties share the value)
    tied = set(ranked["outage"][np.isclose(ranked["violation_mw"], worst, atol=1e-6)])
    assert res.best in tied
    # every set the attack reports carries the enumeration's exact score
    lookup = dict(zip(enum["outage"], enum["violation_mw"]))
    for outage, v in zip(res.table["outage"], res.table["violation_mw"]):
        assert (math.isnan(v) and math.isnan(lookup[outage])) or v == pytest.approx(lookup[outage], abs=1e-8)
    assert res.n_power_flows == res.n_ascent_flows + res.n_exact_flows > 0
    assert res.wall_time_s > 0


def test_attack_table_columns_labels_and_islanding(pglib14, pg14):
    res = attack_contingencies(pglib14, dispatch_series(pglib14, pg14), 2, restarts=4, steps=10, seed=1,
                               elements="branches")
    assert list(res.table.columns) == ["outage", "violation_mw", "status", "load_lost_mw"]
    assert all(lbl in pglib14.branch.labels for o in res.table["outage"] for lbl in o)
    v = res.ranking["violation_mw"].to_numpy()
    assert np.all(np.diff(v) <= 1e-12) and np.isfinite(v).all()
    assert (res.ranking["status"] == "ok").all()
    enum = enumerate_contingencies(pglib14, pg14, 2, elements="branches")
    isl = enum[enum["status"] == "islanded"]
    assert len(isl) > 0 and isl["violation_mw"].isna().all()
    assert (isl["load_lost_mw"] >= 0).all() and (isl["load_lost_mw"] > 0).any()
    assert len(enum) == math.comb(pglib14.n_branch, 2) == enum.attrs["n_power_flows"]


def test_attack_is_reproducible_with_seed(pglib14, pg14):
    a = attack_contingencies(pglib14, pg14, 2, restarts=4, steps=8, seed=3)
    b = attack_contingencies(pglib14, pg14, 2, restarts=4, steps=8, seed=3)
    pd.testing.assert_frame_equal(a.table, b.table)


@pytest.mark.parametrize("method", ["constraint_generation", "adversarial"])
def test_defence_brings_worst_n1_violation_to_zero(pglib14, method):
    # At 60 % load preventive N-1 (branches) security is attainable on case14.
    net = pglib14.with_(pd_mw=pglib14.bus.pd_mw * 0.6, qd_mvar=pglib14.bus.qd_mvar * 0.6)
    res = defend(net, 1, method=method, max_steps=6, attack_options={"restarts": 4, "steps": 15})
    assert res.status == "secure"
    h = res.history
    assert h["worst_violation_mw"].iloc[0] > 1.0 and h["worst_violation_mw"].iloc[-1] <= 1e-3
    assert h["cost_usd_per_h"].iloc[-1] >= h["cost_usd_per_h"].iloc[0] - 1e-6  # security costs money
    enum = enumerate_contingencies(net, res.dispatch_mw, 1, elements="branches")
    assert float(enum.loc[enum["status"] == "ok", "violation_mw"].max()) <= 1e-3
    g = net.gen
    pg = res.dispatch_mw
    assert float(pg.sum()) == pytest.approx(float(net.bus.pd_mw.sum()), abs=1e-5)
    assert bool((pg >= g.pmin_mw - 1e-6).all() and (pg <= g.pmax_mw + 1e-6).all())


def test_defence_rejects_ac_and_unknown_method(pglib14):
    from gridlearn.errors import ConfigError

    with pytest.raises(ConfigError, match="dc"):
        defend(pglib14, 1, "ac")
    with pytest.raises(ConfigError, match="method"):
        defend(pglib14, 1, method="robust")
