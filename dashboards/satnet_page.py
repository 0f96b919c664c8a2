"""The SATNet pages (parity and Sudoku): training curves, final accuracies, config.

One `render_satnet` serves both pages; a `SatnetLayout` says which columns and keys each
study writes. Figures are pure functions of the training tables; arrays go into traces
as Python lists (tests read the plotted values back).
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from dashboards.common import csv_bytes, run_label
from dashboards.page_parts import pick_run, readable_runs, show_figures
from dashboards.satnet_data import SatnetLayout, SatnetRun, final_table, legend_name, load_satnet_run
from gridlearn.results import RunRecord

_MAX_COMPARED = 6  # more overlaid runs than this are unreadable in one chart


def curves_figure(run: SatnetRun, columns: dict[str, str], y_title: str, right: dict[str, str] | None = None,
                  unit_range: bool = False) -> go.Figure:
    """``columns`` of the training table against epoch; ``right`` ones on a second y axis.
    Columns that are empty in every epoch (e.g. digit accuracy of a plain Sudoku run) are left out."""
    t = run.training
    fig = go.Figure()
    for i, (col, label) in enumerate(columns.items()):
        if t[col].isna().all():
            continue
        fig.add_trace(go.Scatter(x=t["epoch"].tolist(), y=t[col].tolist(), mode="lines+markers", name=label,
                                 line=dict(color=qualitative.Plotly[i % len(qualitative.Plotly)]),
                                 hovertemplate=f"{label}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>"))
    for col, label in (right or {}).items():
        fig.add_trace(go.Scatter(x=t["epoch"].tolist(), y=t[col].tolist(), mode="lines", name=label, yaxis="y2",
                                 line=dict(color="gray", dash="dot", shape="hv"),
                                 hovertemplate=f"{label}<br>epoch %{{x}}: %{{y}}<extra></extra>"))
    layout = dict(xaxis_title="epoch", yaxis=dict(title=y_title), margin=dict(t=30),
                  legend=dict(orientation="h", y=-0.25))
    if unit_range:
        layout["yaxis"]["range"] = [-0.02, 1.02]
    if right:
        # Same relative padding as the left axis so that its ticks fall on the left grid lines.
        top = max(float(t[col].max()) for col in right) or 1.0
        layout["yaxis2"] = dict(title=" / ".join(right.values()), overlaying="y", side="right", showgrid=False,
                              range=[-0.02 * top, 1.02 * top])
    fig.update_layout(**layout)
    return fig


def comparison_figure(runs: list[SatnetRun], layout: SatnetLayout, column: str, label: str) -> go.Figure:
    """One training column against epoch, one line per run (named by `legend_name`)."""
    fig = go.Figure()
    for i, run in enumerate(runs):
        t = run.training
        name = legend_name(run, layout)
        fig.add_trace(go.Scatter(x=t["epoch"].tolist(), y=t[column].tolist(), mode="lines+markers", name=name,
                                 line=dict(color=qualitative.Plotly[i % len(qualitative.Plotly)]),
                                 hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>"))
    fig.update_layout(xaxis_title="epoch", yaxis_title=label, margin=dict(t=30))
    return fig


def _comparison_section(good: list[SatnetRun], layout: SatnetLayout, prefix: str) -> None:
    if len(good) < 2:
        st.caption("Only one readable run: nothing to compare with.")
        return
    by_id = {r.run_id: r for r in good}
    chosen = st.multiselect("Runs", list(by_id), default=list(by_id)[:_MAX_COMPARED], max_selections=_MAX_COMPARED,
                            format_func=lambda rid: run_label(by_id[rid].record), key=f"{prefix}_compare_runs")
    options = {**layout.accuracy, **layout.loss, **layout.converged}
    column = st.selectbox("Curve", list(options), format_func=options.get, key=f"{prefix}_compare_curve")
    if chosen:
        st.plotly_chart(comparison_figure([by_id[r] for r in chosen], layout, column, options[column]),
                        key=f"{prefix}_fig_compare")


def render_satnet(title: str, layout: SatnetLayout, prefix: str, runs: list[RunRecord], results_dir: Path) -> None:
    """The whole page of one SATNet study; widget keys start with ``prefix``."""
    good = readable_runs(title, runs, lambda rec: load_satnet_run(rec, layout), layout.study, results_dir, layout.example)
    if not good:
        return

    st.subheader("Final accuracies")
    final = final_table(good, layout)
    st.dataframe(final.rename(columns=layout.final), hide_index=True, key=f"{prefix}_final")
    st.download_button("Download final accuracies (CSV)", data=csv_bytes(final), file_name=f"{layout.study}-final.csv",
                       mime="text/csv", on_click="ignore", key=f"{prefix}_dl_final")

    st.subheader("Compare runs")
    _comparison_section(good, layout, prefix)

    st.subheader("Training curves of one run")
    run = good[pick_run([r.record for r in good], key=f"{prefix}_run")]
    st.caption(f"{run_label(run.record)} · {len(run.training)} epochs · `{run.record.path}`")
    left, mid, right = st.columns(3)
    left.plotly_chart(curves_figure(run, layout.accuracy, "accuracy", right=layout.curriculum, unit_range=True),
                      key=f"{prefix}_fig_accuracy")
    mid.plotly_chart(curves_figure(run, layout.loss, "loss"), key=f"{prefix}_fig_loss")
    right.plotly_chart(curves_figure(run, layout.converged, "fraction of solves converged", unit_range=True),
                       key=f"{prefix}_fig_converged")
    with st.expander("Training table (training.csv)"):
        st.dataframe(run.training, hide_index=True, key=f"{prefix}_training")
    config_col, metrics_col = st.columns(2)
    with config_col:
        st.markdown("**Config**")
        st.json(run.record.config, expanded=True)
    with metrics_col:
        st.markdown("**Metrics**")
        st.json(run.record.metrics, expanded=True)
    if run.record.figures:
        st.subheader("Figures saved by the study")
        show_figures(run.record)


def satnet_render(title: str, layout: SatnetLayout, prefix: str):
    """The ``render(runs, results_dir)`` of a SATNet page module (dashboards/views/satnet_*.py)."""

    def render(runs: list[RunRecord], results_dir: Path) -> None:
        render_satnet(title, layout, prefix, runs, results_dir)

    return render
