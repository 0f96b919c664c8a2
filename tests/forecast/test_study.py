"""The task-forecasting study writes a run directory that follows the schema exactly."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from gridlearn.forecast import schema
from gridlearn.results import list_runs
from tests._studies import config_from_cli

pytest.importorskip("simbench")

REPO = Path(__file__).resolve().parents[2]


def _study():
    spec = importlib.util.spec_from_file_location("task_forecasting", REPO / "studies" / "task_forecasting.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["task_forecasting"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_tiny_study_writes_the_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDLEARN_CACHE_DIR", str(tmp_path / "cache"))
    study = _study()
    cfg = study.Config(dataset="simbench", seeds=2, methods=("nll", "task"), rmse_epochs=4, task_epochs=1,
                       eval_every=1, results_dir=str(tmp_path / "results"), progress=False)
    run_dir = study.main(cfg)
    (rec,) = list_runs(tmp_path / "results", schema.STUDY)
    assert rec.readable and rec.path == run_dir
    assert set(rec.tables) == {schema.SUMMARY_TABLE, schema.PER_HOUR_TABLE, schema.FORECASTS_TABLE}
    assert set(rec.figures) == set(schema.FIGURES)
    summary = rec.table(schema.SUMMARY_TABLE)
    assert list(summary.columns) == schema.SUMMARY_COLUMNS
    assert len(summary) == 2 * 2 and summary[["rmse", "task_cost"]].notna().all().all()
    per_hour = rec.table(schema.PER_HOUR_TABLE)
    assert list(per_hour.columns) == schema.PER_HOUR_COLUMNS and len(per_hour) == 2 * 2 * 24
    fc = rec.table(schema.FORECASTS_TABLE)
    assert list(fc.columns) == schema.FORECASTS_COLUMNS and len(fc) == 2 * 2 * 73 * 24
    # the per-hour table and the summary agree: daily cost = sum of per-hour mean costs
    daily = per_hour.groupby(["method", "seed"]).task_cost.sum()
    merged = summary.set_index(["method", "seed"]).task_cost
    pd.testing.assert_series_equal(daily.sort_index(), merged.sort_index(), check_names=False, rtol=1e-9)
    methods = rec.metrics[schema.METRICS_METHODS_KEY]
    assert set(methods) == {"nll", "task"}  # the rmse net trained for task is not reported
    assert set(methods["task"]) == {"rmse_mean", "rmse_std", "rmse_hourly_mean", "rmse_hourly_std", "task_cost_mean",
                                    "task_cost_std", "n_seeds"}
    # the reference code's RMSE (mean over hours of each hour's RMSE) is never above the overall RMSE
    assert (summary["rmse_hourly"] <= summary["rmse"] + 1e-12).all()
    assert rec.metrics["n_test_days"] == 73 and rec.config["dataset"] == "simbench"
    # schedules respect the ramp limit on every test day
    sched = fc.sort_values(["method", "seed", "day", "hour"]).groupby(["method", "seed", "day"]).schedule
    assert sched.apply(lambda s: s.diff().abs().max()).max() <= cfg.c_ramp + 1e-6


def test_cli_parses_options_into_the_config(monkeypatch):
    study = _study()
    cfg = config_from_cli(study, monkeypatch, ["--dataset", "simbench", "--seeds", "3", "--methods", "rmse,task",
                                               "--task-epochs", "7"])
    assert (cfg.dataset, cfg.seeds, cfg.methods, cfg.task_epochs) == ("simbench", 3, ("rmse", "task"), 7)


def test_bad_config_raises_config_error():
    from gridlearn.errors import ConfigError

    study = _study()
    with pytest.raises(ConfigError, match="unknown methods"):
        study.Config(methods=("rmse", "magic"))
