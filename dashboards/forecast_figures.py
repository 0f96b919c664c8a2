"""Plotly figures of the task-forecasting page; pure functions of `ForecastRun` data.

Arrays go into traces as Python lists: Plotly ≥6 would otherwise base64-encode numpy
arrays, and the browser test reads plotted values back from the page.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from dashboards.common import config_hover_text
from dashboards.forecast_data import ForecastRun

_SEED_SYMBOLS = ["circle", "x"]  # run A, run B in a comparison
_MEAN_SYMBOLS = ["diamond", "square"]


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method name (sorted), so all charts and runs agree."""
    palette = qualitative.Plotly
    return {m: palette[i % len(palette)] for i, m in enumerate(sorted(set(methods)))}


def cost_vs_rmse_figure(runs: Sequence[ForecastRun]) -> go.Figure:
    """Dispatch (task) cost against RMSE: one point per method and seed, and per method a
    mean ± std marker with error bars in both directions. Two runs overlay with different
    symbols (comparison)."""
    colors = method_colors([m for r in runs for m in r.methods])
    fig = go.Figure()
    for k, run in enumerate(runs):
        tag = f" [{'AB'[k]}]" if len(runs) > 1 else ""
        config_text = config_hover_text(run.record.config)
        for method, rows in run.summary.groupby("method", sort=True):
            fig.add_trace(
                go.Scatter(
                    x=rows["rmse"].tolist(),
                    y=rows["task_cost"].tolist(),
                    mode="markers",
                    name=f"{method}{tag}",
                    legendgroup=f"{method}{tag}",
                    marker=dict(color=colors[method], symbol=_SEED_SYMBOLS[k % 2], size=8, opacity=0.6),
                    customdata=[[run.run_id, int(s)] for s in rows["seed"]],
                    hovertemplate=(
                        f"<b>{method}</b><br>run %{{customdata[0]}}<br>seed %{{customdata[1]}}"
                        "<br>RMSE %{x:.4g}<br>task cost %{y:.4g}"
                        f"<br><br>{config_text}<extra></extra>"
                    ),
                )
            )
        stats = run.stats.sort_values("method")
        for _, row in stats.iterrows():
            method = row["method"]
            fig.add_trace(
                go.Scatter(
                    x=[row["rmse_mean"]],
                    y=[row["task_cost_mean"]],
                    mode="markers",
                    name=f"{method} mean ± std{tag}",
                    legendgroup=f"{method}{tag}",
                    showlegend=False,
                    marker=dict(color=colors[method], symbol=_MEAN_SYMBOLS[k % 2], size=14, line=dict(width=1, color="black")),
                    error_x=dict(type="data", array=[row["rmse_std"]], visible=True),
                    error_y=dict(type="data", array=[row["task_cost_std"]], visible=True),
                    hovertemplate=(
                        f"<b>{method}</b> mean ± std over {row['n_seeds']:.0f} seeds<br>run {run.run_id}"
                        f"<br>RMSE {row['rmse_mean']:.4g} ± {row['rmse_std']:.3g}"
                        f"<br>task cost {row['task_cost_mean']:.4g} ± {row['task_cost_std']:.3g}<extra></extra>"
                    ),
                )
            )
    fig.update_layout(
        xaxis_title="RMSE of the forecast",
        yaxis_title="task (dispatch) cost",
        legend_title="method (dots: seeds; ◆: mean ± std)",
        margin=dict(t=30),
    )
    return fig


def per_hour_figure(run: ForecastRun) -> go.Figure:
    """Mean test task cost in each hour of the day, averaged over seeds, one line per method;
    the shaded band spans the seeds' minimum to maximum."""
    colors = method_colors(run.methods)
    agg = run.per_hour.groupby(["method", "hour"], sort=True)["task_cost"].agg(["mean", "min", "max", "count"]).reset_index()
    fig = go.Figure()
    for method, rows in agg.groupby("method", sort=True):
        hours = rows["hour"].tolist()
        if (rows["count"] > 1).any():
            fig.add_trace(
                go.Scatter(
                    x=hours + hours[::-1],
                    y=rows["max"].tolist() + rows["min"].tolist()[::-1],
                    fill="toself",
                    fillcolor=colors[method],
                    opacity=0.15,
                    line=dict(width=0),
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=method,
                    name=f"{method} seed range",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=hours,
                y=rows["mean"].tolist(),
                mode="lines+markers",
                name=method,
                legendgroup=method,
                line=dict(color=colors[method]),
                customdata=rows["count"].tolist(),
                hovertemplate=f"<b>{method}</b><br>hour %{{x}}<br>task cost %{{y:.4g}} (mean of %{{customdata}} seeds)<extra></extra>",
            )
        )
    fig.update_layout(xaxis_title="hour of day", yaxis_title="mean task cost", margin=dict(t=30))
    return fig


def forecast_day_figure(day_rows: pd.DataFrame, method: str, seed: int, day: str, color: str | None = None) -> go.Figure:
    """Actual load, forecast mean μ with the predictive band μ ± 2σ, and the schedule the
    forecast led to, over the hours of one test day (rows of one method and seed)."""
    rows = day_rows.sort_values("hour")
    hours = rows["hour"].tolist()
    upper = (rows["mu"] + 2 * rows["sigma"]).tolist()
    lower = (rows["mu"] - 2 * rows["sigma"]).tolist()
    color = color or method_colors([method])[method]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=hours, y=upper, mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip", name="μ + 2σ"))
    fig.add_trace(
        go.Scatter(x=hours, y=lower, mode="lines", line=dict(width=0), fill="tonexty", fillcolor="rgba(99,110,250,0.2)", name="μ ± 2σ", hoverinfo="skip")
    )
    fig.add_trace(go.Scatter(x=hours, y=rows["mu"].tolist(), mode="lines", name="forecast μ", line=dict(color=color)))
    fig.add_trace(go.Scatter(x=hours, y=rows["actual"].tolist(), mode="lines+markers", name="actual", line=dict(color="black")))
    fig.add_trace(go.Scatter(x=hours, y=rows["schedule"].tolist(), mode="lines", name="schedule", line=dict(color="#EF553B", dash="dash", shape="hv")))
    fig.update_layout(
        title=f"{method}, seed {seed}, test day {day}",
        xaxis_title="hour of day",
        yaxis_title="load / schedule",
        hovermode="x unified",
        margin=dict(t=40),
    )
    return fig
