"""The one islanding classifier: generator-only islands are scored with AGC pick-up,
load-cutting sets are reported apart with the MW lost, in enumeration and attack alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.scopf import attack_contingencies, enumerate_contingencies
from gridlearn.scopf.outages import classify_islands

from .conftest import write_matpower


@pytest.fixture(scope="module")
def triangle(tmp_path_factory):
    """Buses 0-1-2 a triangle of equal reactances (line 2, bus 0-2, rated 50 MW); bus 3 a
    generator-only bus hanging off bus 2 by line 3; 60 MW load at bus 1, 90 MW at bus 2."""
    path = tmp_path_factory.mktemp("islands") / "triangle.m"
    net = write_matpower(path, buses=[(0, 3), (60, 2), (90, 1), (0, 2)],
                         gens=[(0, 80, 200), (1, 40, 100), (3, 30, 50)],
                         branches=[(0, 1, 0.1, 999), (1, 2, 0.1, 999), (0, 2, 0.1, 50), (2, 3, 0.1, 999)])
    return net, torch.tensor([80.0, 40.0, 30.0], dtype=torch.float64)


def test_generator_only_island_is_scored_with_hand_computed_pick_up(triangle):
    net, pg = triangle
    split = classify_islands(net, np.array([False, False, False, True]))
    assert split.islanded and not split.cuts_load and split.load_lost_mw == 0.0
    assert split.stranded_gen.tolist() == [False, False, True]
    enum = enumerate_contingencies(net, pg, 1, elements="branches")
    row = enum[enum["outage"] == (("line", 3),)].iloc[0]
    # By hand: the stranded 30 MW is picked up in proportion to pmax (200 : 100), so the
    # slack unit makes 100 MW and bus 1's unit 50 MW. Injections (MW) 0: +100, 1: -10,
    # 2: -90; with equal reactances a withdrawal at bus j sends 2/3 of it along the direct
    # line 0-j and 1/3 round the triangle: flow 0-2 = 90 * 2/3 + 10 * 1/3 = 63.333 MW,
    # 13.333 MW above its 50 MW rating; the other lines and units are within limits.
    assert row["status"] == "ok"
    assert row["violation_mw"] == pytest.approx(40.0 / 3.0, abs=1e-9)
    # the attack scores the same set with the same definition
    res = attack_contingencies(net, pg, 1, elements="branches", exact="never", restarts=2, steps=5)
    att = res.table[res.table["outage"] == (("line", 3),)].iloc[0]
    assert att["status"] == "ok" and att["violation_mw"] == pytest.approx(40.0 / 3.0, abs=1e-9)


def test_load_cutting_set_reported_apart_with_mw_lost(triangle):
    net, pg = triangle
    # lines 1 and 2 out: bus 2 (90 MW) and the generator-only bus 3 are cut off together
    enum = enumerate_contingencies(net, pg, 2, elements="branches")
    row = enum[enum["outage"] == (("line", 1), ("line", 2))].iloc[0]
    assert row["status"] == "islanded" and np.isnan(row["violation_mw"])
    assert row["load_lost_mw"] == pytest.approx(90.0)


def test_preventive_scopf_names_a_set_that_splits_the_network(triangle):
    """The preventive SC-OPF's LODF update has no answer for a split: a named DataError (not a
    LinAlgError), `set_splits_network` says which sets to leave out, and the defence reports
    them in `unsecurable` instead of failing."""
    from gridlearn.errors import DataError
    from gridlearn.scopf.dc import DCContingencyModel
    from gridlearn.scopf.dispatch import solve_scopf
    from gridlearn.scopf.outages import ElementSpace, set_splits_network

    net, _ = triangle
    model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
    sets = [(m,) for m in range(model.space.size)]
    split = [s for s in sets if set_splits_network(net, model.space, s)]
    assert split == [(model.space.branch_pos.index(3),)]  # only line 3 strands bus 3's unit
    with pytest.raises(DataError, match="split the network"):
        solve_scopf(model, torch.as_tensor(sets))
    pg, cost = solve_scopf(model, torch.as_tensor([s for s in sets if s not in split]))
    assert torch.isfinite(pg).all() and np.isfinite(cost)


def test_batched_classifier_matches_scipy_and_the_single_set_one(case30):
    # the batched components (one scipy call on the block-diagonal graph) against scipy per set
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from gridlearn.scopf.outages import classify_islands_batch, components_batch

    rng = np.random.default_rng(11)
    out = rng.random((200, case30.n_branch)) < rng.uniform(0.0, 0.4, (200, 1))
    gen_out = rng.random((200, case30.n_gen)) < 0.2
    f, t = case30.branch.from_bus.numpy(), case30.branch.to_bus.numpy()
    comps = components_batch(case30, out)
    splits = classify_islands_batch(case30, out, gen_out)
    assert sum(s.islanded for s in splits) > 50 and sum(not s.islanded for s in splits) > 10
    for i in range(len(out)):
        keep = ~out[i]
        ref = connected_components(coo_matrix((np.ones(keep.sum()), (f[keep], t[keep])),
                                              shape=(case30.n_bus,) * 2), directed=False)[1]
        assert np.array_equal(comps[i], ref)
        one = classify_islands(case30, out[i], gen_out[i])
        assert one.islanded == splits[i].islanded and one.cuts_load == splits[i].cuts_load
        assert np.array_equal(one.main, splits[i].main) and one.load_lost_mw == splits[i].load_lost_mw
