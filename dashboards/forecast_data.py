"""Reading task-forecasting runs, checked against `gridlearn.forecast.schema`.

A run that lacks a table, or whose table or metrics are malformed, is reported as
unreadable with the reason; the others are still shown. Nothing is recomputed: means
and standard deviations come from metrics.json, written by the study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from dashboards.common import LoadedRun, read_schema_table
from gridlearn.errors import DataError
from gridlearn.forecast.schema import FORECASTS, METHOD_STAT_KEYS, METRICS_METHODS_KEY, PER_HOUR, SUMMARY
from gridlearn.results import RunRecord

STAT_KEYS = list(METHOD_STAT_KEYS)


@dataclass(frozen=True)
class ForecastRun(LoadedRun):
    """A readable task-forecasting run.

    ``summary``: one row per (method, seed); ``per_hour``: one row per (method, seed, hour);
    ``stats``: one row per method with the columns of `STAT_KEYS` (from metrics.json).
    The forecasts table can be large and is read on demand by `read_forecasts`.
    """

    summary: pd.DataFrame
    per_hour: pd.DataFrame
    stats: pd.DataFrame


    @property
    def methods(self) -> list[str]:
        return list(self.stats["method"])


def _method_stats(rec: RunRecord, summary_methods: Sequence[str]) -> pd.DataFrame:
    methods = rec.metrics.get(METRICS_METHODS_KEY)
    if not isinstance(methods, dict) or not methods:
        raise DataError(f"metrics.json has no {METRICS_METHODS_KEY!r} mapping of method -> statistics")
    missing = sorted(set(summary_methods) - set(methods))
    if missing:
        raise DataError(f"metrics.json lacks statistics for methods {missing} that the summary table has")
    rows = []
    for method, stats in methods.items():
        if not isinstance(stats, dict):
            raise DataError(f"metrics.json: methods[{method!r}] is not a mapping")
        row: dict[str, object] = {"method": str(method)}
        for key in STAT_KEYS:
            value = stats.get(key)
            # JSON null is how results.py writes a NaN (e.g. the std of a single seed).
            if value is None:
                value = math.nan
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DataError(f"metrics.json: methods[{method!r}][{key!r}] is {value!r}, not a number")
            row[key] = value
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", *STAT_KEYS])


def load_forecast_run(rec: RunRecord) -> ForecastRun:
    """Read and check one run's summary, per-hour table and metrics; DataError says what is wrong."""
    if not rec.readable:
        raise DataError(rec.error or "unreadable")
    summary = read_schema_table(rec, SUMMARY)
    if summary.empty:
        raise DataError(f"table {SUMMARY.name}.csv has no rows")
    summary = summary.assign(method=summary["method"].astype(str))
    per_hour = read_schema_table(rec, PER_HOUR)
    per_hour = per_hour.assign(method=per_hour["method"].astype(str))
    # Columns only: the forecasts table is checked in full when a day is shown.
    read_schema_table(rec, FORECASTS, check_values=False)
    stats = _method_stats(rec, summary["method"].unique())
    return ForecastRun(record=rec, summary=summary, per_hour=per_hour, stats=stats)


def split_forecast_runs(runs: Sequence[RunRecord]) -> tuple[list[ForecastRun], list[tuple[RunRecord, str]]]:
    """(readable runs, [(unreadable run, reason)]), both in the order given."""
    good: list[ForecastRun] = []
    bad: list[tuple[RunRecord, str]] = []
    for rec in runs:
        try:
            good.append(load_forecast_run(rec))
        except DataError as exc:
            bad.append((rec, str(exc)))
    return good, bad


def read_forecasts(run: ForecastRun) -> pd.DataFrame:
    """The run's forecasts table (`gridlearn.forecast.schema.FORECASTS`), checked."""
    table = read_schema_table(run.record, FORECASTS)
    # day is an ISO date (schema kind "date"): kept as text, which sorts chronologically.
    return table.assign(method=table["method"].astype(str), day=table["day"].astype(str))


def stats_table(run: ForecastRun) -> pd.DataFrame:
    """The cost/RMSE table shown and offered as CSV: one row per method, best task cost first."""
    return run.stats.sort_values("task_cost_mean", kind="stable").reset_index(drop=True)


def compare_stats(a: ForecastRun, b: ForecastRun) -> pd.DataFrame:
    """Per method in both runs: each run's means and the change b − a."""
    merged = a.stats.merge(b.stats, on="method", suffixes=("_a", "_b"))
    out = pd.DataFrame({"method": merged["method"]})
    for key in ["rmse_mean", "task_cost_mean"]:
        out[f"{key} (A)"] = merged[f"{key}_a"]
        out[f"{key} (B)"] = merged[f"{key}_b"]
        out[f"Δ {key} (B − A)"] = merged[f"{key}_b"] - merged[f"{key}_a"]
    return out
