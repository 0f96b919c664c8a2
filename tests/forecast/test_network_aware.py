"""Network-aware task forecasting: gradients through the DC-OPF, limits, real-time physics, data, study."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gridlearn.errors import ConfigError, DataError, InfeasibleError
from gridlearn.forecast.network_aware import (
    NetworkScheduler,
    NetworkTaskParams,
    realised_cost,
    realised_flows_mw,
    tighten_busiest_lines,
)
from gridlearn.grid.cases import load_case
from gridlearn.implicit.qp import QPSettings
from gridlearn.implicit.solution import Status
from tests._studies import config_from_cli
from tests.forecast._network_helpers import assert_task_gradient_matches_fd, rmse_then_task_training, toy_day_loads, toy_training_days

REPO = Path(__file__).resolve().parents[2]
LOAD_BUS = [4, 6, 8]  # case9's load buses
TIGHT = QPSettings(tol=1e-11, max_iter=200)
# Batched LAPACK on tiny matrices is ~10x slower with 2 threads on a loaded 2-core box.
pytestmark = pytest.mark.usefixtures("single_thread")



def _case9():
    """case9 with gen 1's export line limited to 140 MW, line 4-5 to 60 MW, ramps 50 MW/h."""
    net = load_case("case9")
    rate = net.branch.rate_a_mva.clone()
    rate[6], rate[2] = 140.0, 60.0
    return net.with_(rate_a_mva=rate), torch.full((3,), 50.0, dtype=torch.float64)


def _loads(n_days=2, seed=0):
    """Forecast and realised loads (n_days, 4, 3) MW (`toy_day_loads`): a steep rise so ramps and line limits bind."""
    return toy_day_loads(n_days, seed)


@pytest.mark.slow  # 48 DC-OPF solves, ~10 s on a loaded 2-core machine
def test_task_loss_gradient_matches_central_differences():
    net, ramp = _case9()
    sch = NetworkScheduler(net, LOAD_BUS, ramp, TIGHT)
    params = NetworkTaskParams()
    mu, y = _loads()
    # the instance exercises every term: binding line and ramp limits, both imbalance signs, an overload
    res = sch(mu)
    cost = realised_cost(net, res, sch.bus_loads(y), params)
    assert (res.p_from_mw[..., 6].abs() > 140 - 1e-6).any() and (res.p_from_mw[..., 2].abs() > 60 - 1e-6).any()
    assert (res.pg_mw.diff(dim=1).abs() > 50 - 1e-6).any()
    assert (cost["imbalance_mw"] > 1).any() and (cost["imbalance_mw"] < -1).any() and (cost["overload"] > 1).any()

    assert_task_gradient_matches_fd(sch, mu, y, params, rtol=1e-6, atol=1e-4)


def test_dispatch_cost_gradient_is_the_lmp():
    """Envelope theorem: d(optimal dispatch cost)/d(load at bus i, hour t) = LMP_ti (ramp rows don't involve loads)."""
    net, ramp = _case9()
    sch = NetworkScheduler(net, LOAD_BUS, ramp, TIGHT)
    mu, _ = _loads(seed=1)
    m = mu.clone().requires_grad_()
    res = sch(m)
    (grad,) = torch.autograd.grad(res.cost_usd_per_h.sum(), m)
    lmp = res.lmp_usd_per_mwh[..., LOAD_BUS].detach()
    assert (lmp.amax(-1) - lmp.amin(-1)).max() > 1.0  # congestion separates the prices
    torch.testing.assert_close(grad, lmp, atol=1e-5, rtol=1e-6)


def test_schedule_respects_ramp_line_and_generator_limits():
    net, ramp = _case9()
    sch = NetworkScheduler(net, LOAD_BUS, ramp)
    mu, _ = _loads(n_days=6, seed=2)
    res = sch(mu)
    tol = 1e-5
    assert (res.pg_mw.diff(dim=1).abs() <= ramp + tol).all()
    assert (res.p_from_mw.abs() <= net.branch.rate_a_mva + tol).all()
    assert (res.pg_mw <= net.gen.pmax_mw + tol).all() and (res.pg_mw >= net.gen.pmin_mw - tol).all()
    torch.testing.assert_close(res.pg_mw.sum(-1), mu.sum(-1), atol=1e-6, rtol=0)
    # the limits are active, so the check above is not vacuous
    assert (res.pg_mw.diff(dim=1).abs() > 50 - 1e-4).any() and (res.p_from_mw[..., 2].abs() > 60 - 1e-4).any()


def test_realised_flows_match_the_schedule_and_obey_kirchhoff():
    net, ramp = _case9()
    sch = NetworkScheduler(net, LOAD_BUS, ramp, TIGHT)
    mu, y = _loads(seed=0)
    res = sch(mu)
    # realised loads equal to the forecast: the layer's own flows, no imbalance, no overload
    f_same = realised_flows_mw(net, res.pg_mw, sch.bus_loads(mu))
    torch.testing.assert_close(f_same, res.p_from_mw, atol=1e-8, rtol=0)
    same = realised_cost(net, res, sch.bus_loads(mu), NetworkTaskParams())
    assert same["imbalance_mw"].abs().max() < 1e-6 and same["overload"].max() < 1e-3
    # otherwise: flows balance every bus except the reference, which supplies the imbalance
    f = realised_flows_mw(net, res.pg_mw, sch.bus_loads(y))
    inc = torch.zeros(net.n_branch, net.n_bus, dtype=f.dtype)
    inc[torch.arange(net.n_branch), net.branch.from_bus] = 1.0
    inc[torch.arange(net.n_branch), net.branch.to_bus] = -1.0
    out_flow = f @ inc  # net flow leaving each bus (lossless DC, no shifters in case9)
    injection = res.pg_mw @ net.gen_incidence().T - sch.bus_loads(y)
    delta = realised_cost(net, res, sch.bus_loads(y), NetworkTaskParams())["imbalance_mw"]
    ref = int(net.ref_buses[0])
    injection[..., ref] += delta
    torch.testing.assert_close(out_flow, injection, atol=1e-8, rtol=0)


def test_task_training_lowers_the_task_loss_end_to_end():
    """RMSE net, then a few full-batch task steps through the DC-OPF lower the training task cost."""
    net, _ = _case9()
    # looser ramps than the other tests: a forecaster early in training makes jumpy
    # hourly profiles, and a schedule the ramps cannot follow is (loudly) infeasible
    sch = NetworkScheduler(net, LOAD_BUS, torch.full((3,), 120.0, dtype=torch.float64))
    model, hist, before, after, _, _ = rmse_then_task_training(sch)
    x, y, _ = toy_training_days()
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    assert hist.best_epoch > 0 and after < 0.99 * before
    # gamma_under >> gamma_over: the task net learns to over-forecast the system load
    with torch.no_grad():
        assert float((model.loads(t(x[:18])).sum(-1) - t(y[:18]).sum(-1)).mean()) > 0


def test_tighten_busiest_lines_makes_them_bind():
    net = load_case("case9")
    mu, _ = _loads(seed=4)
    tight_net, top = tighten_busiest_lines(net, mu, LOAD_BUS, n_lines=2, factor=0.8)
    free = NetworkScheduler(net.with_(rate_a_mva=torch.full((net.n_branch,), float("inf"), dtype=torch.float64)), LOAD_BUS)
    fmax = free(mu).p_from_mw.abs().amax((0, 1))
    assert set(top.tolist()) == set(torch.argsort(fmax, descending=True)[:2].tolist())
    torch.testing.assert_close(tight_net.branch.rate_a_mva[top], 0.8 * fmax[top])
    rest = [i for i in range(net.n_branch) if i not in top.tolist()]
    torch.testing.assert_close(tight_net.branch.rate_a_mva[rest], net.branch.rate_a_mva[rest])
    flows = NetworkScheduler(tight_net, LOAD_BUS)(mu).p_from_mw[..., top].abs()
    assert (flows > tight_net.branch.rate_a_mva[top] - 1e-5).any()  # congestion now binds


def test_failures_are_loud():
    net, ramp = _case9()
    sch = NetworkScheduler(net, LOAD_BUS, ramp)
    mu, _ = _loads()
    huge = mu.clone()
    huge[1] *= 4.0  # day 1 beyond what the generators and lines can serve
    sol = sch.solve(huge)
    assert sol.statuses[0] is Status.CONVERGED and sol.statuses[1] is Status.INFEASIBLE
    with pytest.raises(InfeasibleError, match="1 of 2 scenarios"):
        sch(huge)
    bad = mu.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(DataError):
        sch(bad)
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        sch(mu[..., :2])
    with pytest.raises(ConfigError, match="gamma_under"):
        NetworkTaskParams(gamma_under_usd_per_mwh=-1.0)
    with pytest.raises(ConfigError, match="load_bus"):
        NetworkScheduler(net, [4, 99], ramp)


def test_bus_load_data_mapping():
    pytest.importorskip("simbench")
    from gridlearn.forecast.bus_loads import bus_load_data, profile_days

    pd_mw = load_case("case9").bus.pd_mw.numpy()
    profiles = ("mv_urban_pload", "G0-A_pload")
    clean = bus_load_data(pd_mw, profiles=profiles, noise=0.0, load_scale=1.5)
    assert clean.y_train.shape == (292, 24, 3) and clean.y_test.shape == (73, 24, 3)
    assert clean.x_train.shape == (292, 2 * 24 + 10)
    np.testing.assert_array_equal(clean.load_bus, [4, 6, 8])
    assert clean.profile_of_bus == ("mv_urban_pload", "G0-A_pload", "mv_urban_pload")  # round robin
    np.testing.assert_allclose(clean.base_mw, 1.5 * np.array([90.0, 100.0, 125.0]))
    # without noise, bus j's load is its base times its profile scaled to peak 1 on the training days
    urban, _ = profile_days("mv_urban_pload")
    expect = urban[1:] / urban[:293].max()
    np.testing.assert_allclose(clean.y_train[:, :, 0] / clean.base_mw[0], expect[:292], rtol=1e-12)
    np.testing.assert_allclose(clean.y_test[:, :, 2] / clean.base_mw[2], expect[292:], rtol=1e-12)
    assert clean.y_train[:, :, 1].max() / clean.base_mw[1] <= 1.0 + 1e-12
    # seeded per-bus noise: reproducible, seed-dependent, of the requested size
    a = bus_load_data(pd_mw, profiles=profiles, noise=0.05, seed=3)
    b = bus_load_data(pd_mw, profiles=profiles, noise=0.05, seed=3)
    c = bus_load_data(pd_mw, profiles=profiles, noise=0.05, seed=4)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.allclose(a.y_train, c.y_train)
    rel = a.y_train * 1.5 / clean.y_train - 1
    assert 0.045 < rel.std() < 0.055
    assert np.abs(a.x_train.mean(0)).max() < 1e-8  # standardised on training days


def test_bus_load_data_with_fewer_load_buses_than_profiles_has_finite_features():
    """case9 has 3 load buses and the default lists 4 profiles: the unused fourth used to
    give 24 NaN 'yesterday' features (the mean over no buses) on every day, silently."""
    pytest.importorskip("simbench")
    from gridlearn.forecast.bus_loads import DEFAULT_PROFILES, bus_load_data

    data = bus_load_data(load_case("case9").bus.pd_mw.numpy())
    assert data.profile_of_bus == DEFAULT_PROFILES[:3]
    assert data.x_train.shape == (292, 3 * 24 + 10) and len(data.feature_names) == 3 * 24 + 10
    assert np.isfinite(data.x_train).all() and np.isfinite(data.x_test).all()
    assert not any(n.startswith(DEFAULT_PROFILES[3]) for n in data.feature_names)


def _study():
    spec = importlib.util.spec_from_file_location("task_forecasting_network", REPO / "studies" / "task_forecasting_network.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["task_forecasting_network"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_study_runs_end_to_end_on_case14(tmp_path):
    pytest.importorskip("simbench")
    from gridlearn.results import list_runs

    study = _study()
    cfg = study.Config(case="case14", seeds=1, rmse_epochs=200, task_epochs=4, batch_days=8, eval_every=2,
                       ramp_fraction=0.3, max_test_days=4, results_dir=str(tmp_path), threads=0)
    run_dir = study.main(cfg)
    (rec,) = list_runs(tmp_path, study.STUDY)
    assert rec.readable and rec.path == run_dir
    assert {"summary", "per_hour_cost", "cost_terms", "tightened_lines"} <= set(rec.tables)
    assert {"cost_vs_rmse", "per_hour_cost"} <= set(rec.figures)
    summary = rec.table("summary")
    assert list(summary.columns) == ["method", "seed", "rmse", "task_cost"] and len(summary) == 2
    assert np.isfinite(summary[["rmse", "task_cost"]].to_numpy()).all()
    per_hour = rec.table("per_hour_cost")
    daily = per_hour.groupby(["method", "seed"]).task_cost.sum()
    pd.testing.assert_series_equal(daily.sort_index(), summary.set_index(["method", "seed"]).task_cost.sort_index(),
                                   check_names=False, rtol=1e-9)
    terms = rec.table("cost_terms").set_index("method")
    total = terms[["dispatch", "imbalance", "overload"]].sum(1)
    np.testing.assert_allclose(total.sort_index(), summary.set_index("method").task_cost.sort_index(), rtol=1e-9)
    assert rec.metrics["oracle_task_cost"] <= summary.task_cost.min()
    assert len(rec.table("tightened_lines")) == cfg.n_tight_lines


def test_study_cli_and_config(monkeypatch):
    study = _study()
    cfg = config_from_cli(study, monkeypatch, ["--seeds", "3", "--methods", "task", "--task-epochs", "7", "--case", "case30"])
    assert (cfg.seeds, cfg.methods, cfg.task_epochs, cfg.case) == (3, ("task",), 7, "case30")
    assert cfg.physics == "dc"  # the default stays the DC-OPF study
    assert config_from_cli(study, monkeypatch, ["--physics", "ac"]).physics == "ac"
    with pytest.raises(ConfigError, match="physics"):
        study.Config(physics="dcac")
    with pytest.raises(ConfigError, match="unknown methods"):
        study.Config(methods=("rmse", "magic"))
