"""Run directories for the dashboard tests, written by the real `gridlearn.results.start_run`.

The data are synthetic but follow `gridlearn.forecast.schema` exactly, so the dashboard
reads them through the same code path as a real task-forecasting run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from gridlearn.forecast.schema import (
    FORECASTS_COLUMNS,
    FORECASTS_TABLE,
    PER_HOUR_COLUMNS,
    PER_HOUR_TABLE,
    STUDY,
    SUMMARY_COLUMNS,
    SUMMARY_TABLE,
)
from gridlearn.results import start_run

METHODS = ("mse_net", "task_net", "gaussian_mle")
OTHER_STUDY = "scopf_demo"


@dataclass
class ForecastFixture:
    """What one synthetic run holds, so tests can assert on the values the page must show."""

    path: Path
    dataset: str
    summary: pd.DataFrame
    per_hour: pd.DataFrame
    forecasts: pd.DataFrame
    methods_metrics: dict[str, dict[str, float]]
    config: dict = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.path.name


def write_forecast_run(
    root: Path, *, dataset: str, rng_seed: int, methods=METHODS, seeds=(0, 1, 2), n_days: int = 3, lr: float = 1e-3
) -> ForecastFixture:
    """Write one task-forecasting run with synthetic numbers in the schema's layout."""
    rng = np.random.default_rng(rng_seed)
    base_rmse = {m: 1.0 + 0.5 * i for i, m in enumerate(methods)}
    base_cost = {m: 10.0 - 2.0 * i for i, m in enumerate(methods)}
    summary = pd.DataFrame(
        [
            {
                "method": m,
                "seed": s,
                # Rounded so the browser test can find the exact number in the plotted data.
                "rmse": round(base_rmse[m] + 0.1 * rng.standard_normal(), 4),
                "task_cost": round(base_cost[m] + 0.3 * rng.standard_normal(), 4),
            }
            for m in methods
            for s in seeds
        ],
        columns=SUMMARY_COLUMNS,
    )
    hours = np.arange(24)
    per_hour = pd.DataFrame(
        [
            {"method": m, "seed": s, "hour": int(h), "task_cost": base_cost[m] * (1 + 0.3 * np.sin(h / 24 * 2 * np.pi)) + 0.1 * rng.standard_normal()}
            for m in methods
            for s in seeds
            for h in hours
        ],
        columns=PER_HOUR_COLUMNS,
    )
    rows = []
    for d in range(n_days):
        actual = 50 + 20 * np.sin((hours - 6) / 24 * 2 * np.pi) + rng.standard_normal(24)
        for m in methods:
            for s in seeds:
                mu = actual + base_rmse[m] * rng.standard_normal(24)
                sigma = 1.0 + 0.5 * rng.random(24)
                schedule = mu + 0.5 * sigma
                for h in hours:
                    rows.append([m, s, d, int(h), actual[h], mu[h], sigma[h], schedule[h]])
    forecasts = pd.DataFrame(rows, columns=FORECASTS_COLUMNS)
    grouped = summary.groupby("method")
    methods_metrics = {
        m: {
            "rmse_mean": float(g["rmse"].mean()),
            "rmse_std": float(g["rmse"].std(ddof=1)),
            "task_cost_mean": float(g["task_cost"].mean()),
            "task_cost_std": float(g["task_cost"].std(ddof=1)),
            "n_seeds": int(len(g)),
        }
        for m, g in grouped
    }
    config = {"dataset": dataset, "seeds": list(seeds), "train": {"lr": lr, "epochs": 5}, "methods": list(methods)}
    with start_run(STUDY, config, root=root) as run:
        run.write_table(SUMMARY_TABLE, summary)
        run.write_table(PER_HOUR_TABLE, per_hour)
        run.write_table(FORECASTS_TABLE, forecasts)
        run.log_metrics(methods=methods_metrics, dataset=dataset, n_test_days=n_days)
    return ForecastFixture(run.dir, dataset, summary, per_hour, forecasts, methods_metrics, config)


def write_other_run(root: Path) -> Path:
    """A run of another study, with a table and a figure, for the run browser."""
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1, 2], [1, 0, 2])
    with start_run(OTHER_STUDY, {"case": "case9", "contingencies": 4}, root=root) as run:
        run.write_table("violations", pd.DataFrame({"contingency": [1, 2], "max_overload_pct": [12.5, 3.25]}))
        run.save_figure("overloads", fig)
        run.log_metrics(worst_overload_pct=12.5)
    return run.dir


@pytest.fixture(scope="session")
def results_root(tmp_path_factory) -> dict:
    """Two readable task-forecasting runs (different datasets and configs) and one other study."""
    root = tmp_path_factory.mktemp("results")
    a = write_forecast_run(root, dataset="synthetic-a", rng_seed=1)
    b = write_forecast_run(root, dataset="synthetic-b", rng_seed=2, lr=3e-3)
    other = write_other_run(root)
    return {"root": root, "runs": [a, b], "other": other}


@pytest.fixture
def broken_root(tmp_path) -> dict:
    """One good forecasting run beside three broken ones, each broken a different way."""
    root = tmp_path / "results"
    good = write_forecast_run(root, dataset="synthetic-good", rng_seed=3)
    corrupt_metrics = write_forecast_run(root, dataset="corrupt-metrics", rng_seed=4)
    (corrupt_metrics.path / "metrics.json").write_text('{"methods": {')
    no_summary = write_forecast_run(root, dataset="no-summary", rng_seed=5)
    (no_summary.path / "tables" / f"{SUMMARY_TABLE}.csv").unlink()
    text_rmse = write_forecast_run(root, dataset="text-rmse", rng_seed=6)
    summary = text_rmse.summary.astype({"rmse": object})
    summary.loc[0, "rmse"] = "oops"
    summary.to_csv(text_rmse.path / "tables" / f"{SUMMARY_TABLE}.csv", index=False)
    return {
        "root": root,
        "good": good,
        "broken": {"corrupt": corrupt_metrics, "no_summary": no_summary, "text_rmse": text_rmse},
    }
