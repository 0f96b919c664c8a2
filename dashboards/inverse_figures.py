"""Figures and table styling of the inverse AC-OPF page: recovery error against number of
samples, and the shading of unidentifiable parameters.

Arrays go into traces as Python lists (Plotly ≥6 would otherwise base64-encode numpy
arrays, and tests read the plotted values back).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from dashboards.inverse_data import ERROR_MEASURES

_METHOD_DASH = {"gradient": "solid", "kkt_baseline": "dash"}
_NOT_IDENTIFIABLE_BG = "background-color: rgba(255, 75, 75, 0.18)"


def trace_name(method: str, noise: float) -> str:
    return f"{method}, noise {noise:g}"


def error_vs_samples_figure(rows: pd.DataFrame, measure: str, observes: list[str]) -> go.Figure:
    """One panel per observation setting; per (method, noise) the error ``measure`` against the
    number of samples, log scale. ``rows`` come from `inverse_data.curves`. Colour = noise,
    line style = method (solid: gradient, dashed: KKT-residual baseline)."""
    fig = make_subplots(rows=1, cols=max(len(observes), 1), shared_yaxes=True,
                        subplot_titles=[f"observe {o}" for o in observes])
    noises = sorted(rows["noise"].unique())
    colors = {n: qualitative.Plotly[i % len(qualitative.Plotly)] for i, n in enumerate(noises)}
    shown: set[str] = set()
    for col, observe in enumerate(observes, start=1):
        of_obs = rows[rows["observe"] == observe]
        for (method, noise), grp in of_obs.groupby(["method", "noise"], sort=True):
            name = trace_name(method, float(noise))
            fig.add_trace(
                go.Scatter(
                    x=grp["n_samples"].tolist(),
                    y=grp[measure].tolist(),
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=name not in shown,
                    line=dict(color=colors[noise], dash=_METHOD_DASH.get(method, "dot")),
                    customdata=[[observe, method]] * len(grp),
                    hovertemplate=(
                        f"<b>{method}</b>, observe {observe}, noise {noise:g}<br>samples %{{x}}"
                        "<br>error %{y:.3e}<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
            shown.add(name)
    fig.update_yaxes(type="log", exponentformat="e")
    fig.update_yaxes(title_text=ERROR_MEASURES[measure], row=1, col=1)
    fig.update_xaxes(title_text="samples")
    fig.update_layout(margin=dict(t=40), legend_title="method, noise")
    return fig


def highlight_unidentifiable(table: pd.DataFrame) -> "pd.io.formats.style.Styler":
    """A Styler that shades the rows whose parameter is not identifiable."""

    def row_style(row: pd.Series) -> list[str]:
        flag = row.get("identifiable")
        # Only an explicit False shades; an empty flag (the row failed) is shown by its error column.
        shade = isinstance(flag, (bool, np.bool_)) and not flag
        return [_NOT_IDENTIFIABLE_BG if shade else ""] * len(row)

    # 4 significant digits: cost coefficients are ~1e-4 and errors ~1e-7, which a fixed
    # number of decimals would show as 0.
    floats = [c for c in table.columns if pd.api.types.is_float_dtype(table[c])]
    return table.style.apply(row_style, axis=1).format({c: "{:.4g}" for c in floats}, na_rep="")
