"""The adaptive load design (`simulate_market(design="adaptive")`, `gridlearn.inverse.design`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError
from gridlearn.grid import load_case
from gridlearn.inverse import simulate_market
from gridlearn.inverse.baseline import _separable
from gridlearn.inverse.design import AdaptiveDesign, bisection_levels, select_hours


@pytest.fixture(scope="module")
def linear_case9():
    """case9 with linear costs and a merit order that the load walks through: unit 0 (10 $/MWh,
    150 MW) is marginal below ~48% of base load, unit 1 (20 $/MWh, 200 MW) up to ~110%, unit 2
    (30 $/MWh) only above. Around base load only unit 1 is off its limits."""
    net = load_case("case9")
    f64 = dict(dtype=torch.float64)
    return net.with_(cost_c2_usd_per_mw2h=torch.zeros(3, **f64), cost_c1_usd_per_mwh=torch.tensor([10.0, 20.0, 30.0], **f64),
                     pmax_mw=torch.tensor([150.0, 200.0, 270.0], **f64))


def moved(obs) -> np.ndarray:
    return _separable(obs.pg_mw.double().numpy(), (obs.at_pmin | obs.at_pmax).numpy())


def test_adaptive_design_moves_more_units_off_their_limits_than_the_stratified_one(linear_case9):
    """Same number of hours: the stratified 90-110% design sees only the marginal unit move; the
    adaptive one finds the hours where each of the three units is marginal, twice each."""
    for seed in (0, 1):
        plain = simulate_market(linear_case9, 6, seed=seed, ipopt_tol=1e-9, level_range=(0.9, 1.1))
        adaptive = simulate_market(linear_case9, 6, seed=seed, ipopt_tol=1e-9, design="adaptive")
        assert adaptive.n_samples == plain.n_samples == 6
        assert adaptive.n_candidates >= 12  # chosen out of 2 n candidates (plus bisections)
        assert moved(adaptive).sum() > moved(plain).sum(), (moved(adaptive), moved(plain))
        assert moved(adaptive).all()


def test_failed_scenarios_are_replaced_up_to_the_requested_count(linear_case9):
    """Above ~1.9x base load case9 cannot be served (620 MW of capacity): the stratified design
    drops those scenarios, the adaptive one replaces them and still returns the count asked for."""
    plain = simulate_market(linear_case9, 6, seed=0, ipopt_tol=1e-9, level_range=(0.5, 2.6))
    adaptive = simulate_market(linear_case9, 6, seed=0, ipopt_tol=1e-9, level_range=(0.5, 2.6), design="adaptive")
    assert plain.n_dropped > 0 and plain.n_samples == 6 - plain.n_dropped
    assert adaptive.n_dropped > 0 and adaptive.n_samples == 6
    level = (adaptive.pd_mw.sum(1) / linear_case9.bus.pd_mw.sum()).numpy()
    assert (level < 2.0).all()  # only hours that solved are kept
    adaptive.validate(linear_case9)


def test_bisection_targets_gaps_where_a_rarely_free_unit_changes_state():
    levels = np.array([0.1, 0.5, 0.9, 1.3])
    free = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 1]], dtype=bool)
    # unit 0 free once (at 0.1): the gap 0.1-0.5 is split; unit 1 changes between 0.5 and 0.9 and
    # is free twice already, so that gap is left; unit 2 never changes
    assert bisection_levels(levels, free) == [pytest.approx(0.3)]
    assert bisection_levels(levels, free, min_gap=0.5) == []


def test_selection_covers_each_unit_twice_before_spreading():
    levels = np.linspace(0.1, 1.0, 10)
    pg = np.tile(np.linspace(10.0, 100.0, 10)[:, None], (1, 3))
    free = np.zeros((10, 3), dtype=bool)
    free[[0, 1], 0] = True  # unit 0 free only in the two lowest hours
    free[[8, 9], 1] = True  # unit 1 only in the two highest
    free[:, 2] = True  # unit 2 always
    span = np.full(3, 200.0)
    chosen = select_hours(levels, pg, free, span, 4)
    assert sorted(chosen) == [0, 1, 8, 9]
    assert select_hours(levels, pg, free, span, 20) == list(range(10))
    # a second free hour at (nearly) the same dispatch does not count: 1% of the range is required
    pg_same = pg.copy()
    pg_same[1, 0] = pg_same[0, 0] + 0.5
    assert 1 not in select_hours(levels, pg_same, free, span, 4)[:3]


def test_bad_design_settings_raise(linear_case9):
    with pytest.raises(ConfigError):
        simulate_market(linear_case9, 2, design="random")
    with pytest.raises(ConfigError):
        AdaptiveDesign(refine=-1)
    with pytest.raises(ConfigError):
        simulate_market(linear_case9, 2, design=object())
