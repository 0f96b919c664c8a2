"""DC post-contingency physics: pandapower agreement, LODF exactness, gradients, islanding."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from gridlearn.scopf.dc import DCContingencyModel
from gridlearn.scopf.dispatch import base_dispatch, contingency_affine
from gridlearn.scopf.outages import ElementSpace, components


@pytest.fixture(scope="module")
def model30(case30):
    return DCContingencyModel.build(case30, ElementSpace.of(case30, "all"))


@pytest.fixture(scope="module")
def pg30(case30):
    return base_dispatch(case30)


def _pandapower_dc_flows(network, members, space, pg_post):
    """rundcpp on the pandapower net with the set out of service and generators at p'."""
    import pandapower as pp

    from gridlearn.grid.cases import load_pandapower_net

    net = load_pandapower_net("case30")
    for m in members:
        table, idx = space.labels[m]
        net[table].at[idx, "in_service"] = False
    for (table, idx), p in zip(network.gen.labels, pg_post.tolist()):
        if table == "gen":
            net.gen.at[idx, "p_mw"] = p
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.rundcpp(net, numba=False)
    out = []
    for table, idx in network.branch.labels:
        col = "p_from_mw" if table == "line" else "p_hv_mw"
        out.append(float(net[f"res_{table}"].at[idx, col]) if net[table].at[idx, "in_service"] else 0.0)
    return np.array(out)


@pytest.mark.parametrize("outage", [[("line", 3)], [("line", 7), ("line", 30)], [("gen", 1)], [("line", 10), ("gen", 0)]],
                         ids=str)
def test_indicator_flows_match_pandapower_rundcpp(case30, model30, pg30, outage):
    sp = model30.space
    members = sp.indices_of(outage)
    alpha = torch.zeros(1, sp.size, dtype=torch.float64)
    alpha[0, list(members)] = 1.0
    flow, pg_post, _, _ = model30.flows(pg30, alpha, floor=0.0)
    ref = _pandapower_dc_flows(case30, members, sp, pg_post[0])
    np.testing.assert_allclose(flow[0].numpy(), ref, atol=1e-6)
    # the exact discrete path (LODF / Woodbury) gives the same state
    flow_w, pg_w, *_ = model30.set_flows(pg30, torch.tensor([members]))
    np.testing.assert_allclose(flow_w[0].numpy(), ref, atol=1e-6)
    torch.testing.assert_close(pg_w, pg_post)
    # lost generation is picked up in proportion to pmax by the remaining units
    assert float(pg_post.sum()) == pytest.approx(float(case30.bus.pd_mw.sum()), abs=1e-8)


def test_woodbury_equals_direct_solve_on_all_n2_sets(case30, model30, pg30):
    sets = torch.tensor(list(itertools.combinations(range(model30.space.size), 2)))
    v, status, lost = model30.score_sets(pg30, sets)
    # sets that split off only generators are scored too, but not by the Woodbury update
    singular = model30.set_flows(pg30, sets)[4]
    ok = torch.tensor([s == "ok" for s in status]) & ~singular
    alpha = torch.zeros(len(sets), model30.space.size, dtype=torch.float64).scatter_(1, sets, 1.0)
    direct, *_ = model30.flows(pg30, alpha[ok], floor=0.0)
    woodbury, *_ = model30.set_flows(pg30, sets[ok])
    torch.testing.assert_close(woodbury, direct, atol=1e-8, rtol=1e-9)
    # the SC-OPF's affine model of each set reproduces the same flows
    T, t, R, r, _, _ = contingency_affine(model30, sets[ok][:200])
    torch.testing.assert_close(T @ pg30 + t, woodbury[:200], atol=1e-8, rtol=1e-9)
    torch.testing.assert_close(R @ pg30 + r, model30.set_flows(pg30, sets[ok][:200])[1])


def test_islanding_sets_match_graph_check_and_are_never_scored(case30, model30, pg30):
    nb = case30.n_branch
    sets = torch.tensor(list(itertools.combinations(range(nb), 2)))
    v, status, lost = model30.score_sets(pg30, sets)
    demand = (case30.bus.pd_mw + case30.bus.gs_mw).numpy()
    n_gen_only = 0
    for (i, j), s, vi, lo in zip(sets.tolist(), status, v, lost):
        out = np.zeros(nb, dtype=bool)
        out[[i, j]] = True
        comp = components(case30, out)
        # demand in more than one component: load is cut off, the set is reported apart
        cuts_load = len({c for c, d in zip(comp, demand) if abs(d) > 1e-9}) > 1
        assert (s == "islanded") == cuts_load, (i, j)
        if cuts_load:
            assert np.isnan(vi) and lo > 0
        else:
            assert np.isfinite(vi) and lo == 0
            n_gen_only += comp.max() > 0
    assert status.count("islanded") > 0 and n_gen_only > 0
    # an island cutting off load reports that load
    assert max(lost) > 0


def test_smooth_violation_gradient_gradcheck(case30, model30, pg30):
    g = torch.Generator().manual_seed(0)
    alpha = (0.4 * torch.rand(1, model30.space.size, generator=g, dtype=torch.float64)).requires_grad_(True)
    # lower ratings so the softplus terms are active
    net = case30.with_(rate_a_mva=case30.branch.rate_a_mva * 0.4)
    m = DCContingencyModel.build(net, model30.space)
    assert torch.autograd.gradcheck(lambda a: m.violation(pg30, a, temperature=2.0), (alpha,), eps=1e-6, atol=1e-6)


def test_exact_violation_gradient_matches_finite_differences(case30, model30, pg30):
    net = case30.with_(rate_a_mva=case30.branch.rate_a_mva * 0.4)
    m = DCContingencyModel.build(net, model30.space)
    g = torch.Generator().manual_seed(1)
    alpha = (0.3 * torch.rand(1, m.space.size, generator=g, dtype=torch.float64)).requires_grad_(True)
    v = m.violation(pg30, alpha)
    assert float(v.detach()) > 0
    (grad,) = torch.autograd.grad(v.sum(), alpha)
    eps = 1e-6
    for e in [0, 5, 17, m.space.size - 2]:
        d = torch.zeros_like(alpha)
        d[0, e] = eps
        fd = (m.violation(pg30, alpha.detach() + d) - m.violation(pg30, alpha.detach() - d)) / (2 * eps)
        assert float(grad[0, e]) == pytest.approx(float(fd), rel=1e-5, abs=1e-5)


def test_generator_outage_scales_capacity_and_counts_limit_excess(case30, model30, pg30):
    sp = model30.space
    alpha = torch.zeros(1, sp.size, dtype=torch.float64)
    gi = sp.indices_of([case30.gen.labels[0]])[0]
    alpha[0, gi] = 0.5
    _, pg_post, pmin, pmax = model30.flows(pg30, alpha)
    assert float(pmax[0, 0]) == pytest.approx(0.5 * float(case30.gen.pmax_mw[0]))
    w = case30.gen.pmax_mw.clone()
    w[0] *= 0.5
    expected = pg30 * torch.tensor([0.5] + [1.0] * (case30.n_gen - 1), dtype=torch.float64)
    expected = expected + w / w.sum() * 0.5 * pg30[0]
    torch.testing.assert_close(pg_post[0], expected)
