"""The figure both forecasting studies draw: test task cost against test RMSE, per method."""

from __future__ import annotations

import pandas as pd


def cost_vs_rmse_figure(summary: pd.DataFrame, xlabel: str, ylabel: str, oracle_cost: float | None = None):
    """Mean ± std (error bars) and every seed (dots) of ``summary``'s rmse and task_cost per method.

    ``summary``: one row per (method, seed) with columns method, rmse, task_cost.
    ``oracle_cost``: the cost of the perfect forecast, drawn as a dashed line when given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for method, g in summary.groupby("method"):
        ax.errorbar(g.rmse.mean(), g.task_cost.mean(), xerr=g.rmse.std(ddof=0), yerr=g.task_cost.std(ddof=0),
                    fmt="o", capsize=3, label=method)
        ax.scatter(g.rmse, g.task_cost, s=8, alpha=0.4)
    if oracle_cost is not None:
        ax.axhline(oracle_cost, color="grey", ls="--", lw=1, label="perfect forecast")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    return fig
