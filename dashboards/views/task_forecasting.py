"""Task-based forecasting: dispatch cost against RMSE, per-hour cost, one test day, run comparison."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboards.common import config_differences, csv_bytes, run_label, show_unreadable
from dashboards.forecast_data import ForecastRun, compare_stats, read_forecasts, split_forecast_runs, stats_table
from dashboards.forecast_figures import cost_vs_rmse_figure, forecast_day_figure, method_colors, per_hour_figure
from gridlearn.errors import DataError
from gridlearn.forecast.schema import STUDY
from gridlearn.results import RunRecord

TITLE = "Task-based forecasting"
ORDER = 10
ICON = ":material/bolt:"

_NO_COMPARISON = "(none)"


def _run_caption(run: ForecastRun) -> str:
    rec = run.record
    n_days = rec.metrics.get("n_test_days", "?")
    return f"{run_label(rec)} · {n_days} test days · `{rec.path}`"


def _cost_table_section(run: ForecastRun) -> None:
    table = stats_table(run)
    st.dataframe(table, hide_index=True, key="tf_stats_table")
    left, right = st.columns(2)
    left.download_button(
        "Download cost/RMSE table (CSV)",
        data=csv_bytes(table),
        file_name=f"{run.run_id}-cost_rmse.csv",
        mime="text/csv",
        on_click="ignore",
        key="tf_dl_stats",
    )
    right.download_button(
        "Download per-seed summary (CSV)",
        data=csv_bytes(run.summary),
        file_name=f"{run.run_id}-summary.csv",
        mime="text/csv",
        on_click="ignore",
        key="tf_dl_summary",
    )


def _forecast_day_section(run: ForecastRun) -> None:
    try:
        forecasts = read_forecasts(run)
    except DataError as exc:
        st.error(f"Cannot show forecasts of run {run.run_id}: {exc}")
        return
    if forecasts.empty:
        st.info(f"Run {run.run_id} has no forecast rows.")
        return
    c1, c2, c3 = st.columns(3)
    method = c1.selectbox("Method", sorted(forecasts["method"].unique()), key=f"tf_fc_method_{run.run_id}")
    of_method = forecasts[forecasts["method"] == method]
    seed = c2.selectbox("Seed", sorted(int(s) for s in of_method["seed"].unique()), key=f"tf_fc_seed_{run.run_id}")
    of_seed = of_method[of_method["seed"] == seed]
    day = c3.selectbox("Test day", sorted(of_seed["day"].unique()), key=f"tf_fc_day_{run.run_id}")
    rows = of_seed[of_seed["day"] == day]
    color = method_colors(run.methods).get(method)  # the method's colour in the other charts
    st.plotly_chart(forecast_day_figure(rows, method, seed, day, color=color), key="tf_fig_day")


def _comparison_section(run: ForecastRun, runs: list[ForecastRun]) -> None:
    others = [r.run_id for r in runs if r.run_id != run.run_id]
    if not others:
        st.caption("Only one readable run: nothing to compare with.")
        return
    by_id = {r.run_id: r for r in runs}
    choice = st.selectbox(
        "Compare with run",
        [_NO_COMPARISON, *others],
        format_func=lambda rid: rid if rid == _NO_COMPARISON else run_label(by_id[rid].record),
        key="tf_compare",
    )
    if choice == _NO_COMPARISON:
        return
    other = by_id[choice]
    left, right = st.columns(2)
    for col, tag, r in [(left, "A", run), (right, "B", other)]:
        col.markdown(f"**{tag}: {r.run_id}**")
        col.caption(_run_caption(r))
        col.dataframe(stats_table(r), hide_index=True, key=f"tf_cmp_table_{tag}")
    st.plotly_chart(cost_vs_rmse_figure([run, other]), key="tf_fig_compare")
    st.markdown("**Change per method (B − A)**")
    st.dataframe(compare_stats(run, other), hide_index=True, key="tf_cmp_delta")
    diff = config_differences(run.record.config, other.record.config)
    st.markdown("**Config differences**")
    if diff.empty:
        st.caption("The two runs have the same config.")
    else:
        st.dataframe(diff.rename(columns={"a": f"A ({run.run_id})", "b": f"B ({other.run_id})"}), hide_index=True, key="tf_cmp_config")


def render(runs: list[RunRecord], results_dir: Path) -> None:
    st.title(TITLE)
    good, bad = split_forecast_runs(runs)
    show_unreadable(bad)
    if not good:
        st.info(f"No readable `{STUDY}` run in `{results_dir}`. Produce one with `make demo`, then reload this page.")
        return
    by_id = {r.run_id: r for r in good}
    run_id = st.selectbox("Run", list(by_id), format_func=lambda rid: run_label(by_id[rid].record), key="tf_run")
    run = by_id[run_id]
    st.caption(_run_caption(run))

    st.subheader("Dispatch cost vs RMSE")
    st.plotly_chart(cost_vs_rmse_figure([run]), key="tf_fig_scatter")
    st.subheader("Cost and RMSE by method")
    _cost_table_section(run)
    st.subheader("Task cost by hour of day")
    st.plotly_chart(per_hour_figure(run), key="tf_fig_per_hour")
    st.subheader("Forecast vs actual on one test day")
    _forecast_day_section(run)
    st.subheader("Compare two runs")
    _comparison_section(run, good)
