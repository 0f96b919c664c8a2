"""Plotly figures of the SC-OPF page; pure functions of `ScopfRun` tables.

Arrays go into traces as Python lists (Plotly ≥6 would otherwise base64-encode numpy
arrays, and tests read the plotted values back).
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from dashboards.scopf_data import ScopfRun, short_case

_SEARCH_COLORS = {"attack": qualitative.Plotly[0], "enumeration": qualitative.Plotly[1]}


def _k_colors(ks) -> dict[int, str]:
    return {k: qualitative.Plotly[i % len(qualitative.Plotly)] for i, k in enumerate(sorted(set(ks)))}


def _bars_per_k(run: ScopfRun, value: str, customdata, hovertemplate: str) -> go.Figure:
    """One bar group per case and one bar per k of ``run.summary[value]``.

    ``customdata(rows)`` and ``hovertemplate`` (with ``{k}`` for the k) set each trace's hover.
    """
    colors = _k_colors(run.summary["k"])
    fig = go.Figure()
    for k, rows in run.summary.groupby("k", sort=True):
        fig.add_trace(go.Bar(x=[short_case(c) for c in rows["case"]], y=rows[value].tolist(), name=f"N-{k}",
                             marker_color=colors[k], customdata=customdata(rows),
                             hovertemplate=hovertemplate.replace("{k}", str(k))))
    return fig


def recall_figure(run: ScopfRun) -> go.Figure:
    """Recall of the worst N-k set per case, one bar group per case and one bar per k."""
    fig = _bars_per_k(run, "recall", lambda rows: rows["mean_rank"].tolist(),
                      "%{x} N-{k}<br>recall %{y:.3f}<br>mean rank %{customdata:.2f}<extra></extra>")
    fig.update_layout(
        barmode="group", yaxis=dict(title="recall of the worst set", range=[0, 1.05]), xaxis_title="case",
        legend_title="k", margin=dict(t=30),
    )
    return fig


def pf_ratio_figure(run: ScopfRun) -> go.Figure:
    """Power flows of enumeration / attack per case and k (log scale; above 1 the attack is cheaper)."""
    fig = _bars_per_k(run, "pf_ratio", lambda rows: list(zip(rows["enum_pf"].tolist(), rows["attack_pf"].tolist())),
                      "%{x} N-{k}<br>ratio %{y:.3g}<br>enumeration %{customdata[0]:.0f} PF"
                      "<br>attack %{customdata[1]:.1f} PF (mean)<extra></extra>")
    fig.add_hline(y=1.0, line_dash="dot", line_color="gray", annotation_text="break-even")
    fig.update_layout(barmode="group", yaxis=dict(title="power flows: enumeration / attack", type="log"),
                      xaxis_title="case", legend_title="k", margin=dict(t=30))
    return fig


def search_cost_figure(run: ScopfRun) -> go.Figure:
    """Mean power flows (left) and wall time (right) of attack and enumeration per case and k, log scale."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("power flows per search", "wall time per search (s)"))
    labels = [f"{short_case(c)} N-{k}" for c, k in zip(run.summary["case"], run.summary["k"])]
    for col, (attack_col, enum_col) in enumerate([("attack_pf", "enum_pf"), ("attack_s", "enum_s")], start=1):
        for search, column in [("attack", attack_col), ("enumeration", enum_col)]:
            fig.add_trace(
                go.Bar(
                    x=labels,
                    y=run.summary[column].tolist(),
                    name=search,
                    legendgroup=search,
                    showlegend=col == 1,
                    marker_color=_SEARCH_COLORS[search],
                    hovertemplate=f"%{{x}}<br>{search}: %{{y:.4g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(type="log")
    fig.update_layout(barmode="group", margin=dict(t=40))
    return fig


def found_vs_worst_figure(run: ScopfRun) -> go.Figure:
    """Per scenario, the attack's best violation against the true worst (on the diagonal = found)."""
    a = run.attack
    colors = _k_colors(a["k"])
    fig = go.Figure()
    for (case, k), rows in a.groupby(["case", "k"], sort=False):
        fig.add_trace(
            go.Scatter(
                x=rows["worst_mw"].tolist(),
                y=rows["found_mw"].tolist(),
                mode="markers",
                name=f"{short_case(case)} N-{k}",
                marker=dict(color=colors[k], size=9, symbol=["circle" if r else "x" for r in rows["recall"]]),
                customdata=list(zip(rows["scenario"].tolist(), rows["rank"].tolist())),
                hovertemplate=(
                    f"{short_case(case)} N-{k}<br>scenario %{{customdata[0]}}<br>worst %{{x:.2f}} MW"
                    "<br>found %{y:.2f} MW<br>rank %{customdata[1]}<extra></extra>"
                ),
            )
        )
    top = float(max(a["worst_mw"].max(), a["found_mw"].max(), 0.0))
    fig.add_trace(
        go.Scatter(x=[0.0, top], y=[0.0, top], mode="lines", name="found = worst",
                   line=dict(color="gray", dash="dot"), hoverinfo="skip")
    )
    fig.update_layout(xaxis_title="worst violation, enumeration (MW)", yaxis_title="attack's best violation (MW)",
                      margin=dict(t=30))
    return fig


def defence_figure(run: ScopfRun) -> go.Figure:
    """Dispatch cost against worst N-k violation, one line per defence method (steps in order)."""
    fig = go.Figure()
    for i, (method, rows) in enumerate(run.defence.groupby("method", sort=False)):
        rows = rows.sort_values("step", kind="stable")
        fig.add_trace(
            go.Scatter(
                x=rows["cost_usd_per_h"].tolist(),
                y=rows["worst_violation_mw"].tolist(),
                mode="lines+markers",
                name=method,
                line=dict(color=qualitative.Plotly[i % len(qualitative.Plotly)],
                          dash="dash" if "attack's view" in method else "solid"),
                marker=dict(size=12 if len(rows) == 1 else 7),  # a lone point must not hide under a line
                customdata=rows["step"].tolist(),
                hovertemplate=(
                    f"<b>{method}</b><br>step %{{customdata}}<br>cost %{{x:,.2f}} $/h"
                    "<br>worst violation %{y:.3f} MW<extra></extra>"
                ),
            )
        )
    k = run.record.config.get("defence_k", "k")
    fig.update_layout(xaxis_title="dispatch cost ($/h)", yaxis_title=f"worst N-{k} violation (MW)", margin=dict(t=30))
    return fig
