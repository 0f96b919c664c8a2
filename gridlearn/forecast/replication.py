"""Per-seed replication tables of the task-forecasting study, read from its run directories.

`collect` gathers the summary tables of any number of runs (one seed each, or several) of
one protocol, `paired` compares two methods seed by seed (mean ± std of the per-seed
difference, a paired t-test and a Wilcoxon signed-rank test), and `markdown` writes the
tables that studies/README.md shows. Nothing is re-run: every number comes from the runs'
``tables/summary.csv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from gridlearn.errors import DataError
from gridlearn.forecast import schema
from gridlearn.results import list_runs

METRICS = ("rmse", "rmse_hourly", "task_cost")


@dataclass(frozen=True)
class Collected:
    """One row per (method, seed) over the runs read, and the run ids each seed came from."""

    summary: pd.DataFrame
    runs: tuple[str, ...]
    protocol: str


def collect(root: str | Path, protocol: str | None = None, dataset: str = "pjm") -> Collected:
    """Summary rows of every readable run under ``root`` with that dataset (and protocol: runs
    from before the protocol option count as ``gridlearn``). A seed seen in two runs is an error."""
    rows, ids, seen = [], [], {}
    for rec in list_runs(root, schema.STUDY):
        if not rec.readable or rec.config.get("dataset") != dataset:
            continue
        if protocol is not None and rec.config.get("protocol", "gridlearn") != protocol:
            continue
        df = schema.SUMMARY.check(rec.table(schema.SUMMARY.name))
        for seed in df["seed"].unique():
            if int(seed) in seen:
                raise DataError(f"seed {int(seed)} is in both run {seen[int(seed)]} and run {rec.run_id}")
            seen[int(seed)] = rec.run_id
        rows.append(df)
        ids.append(rec.run_id)
    if not rows:
        raise DataError(f"no readable {schema.STUDY} run of dataset {dataset!r}, protocol {protocol!r} under {root}")
    summary = pd.concat(rows, ignore_index=True).sort_values(["method", "seed"], kind="stable").reset_index(drop=True)
    return Collected(summary, tuple(sorted(ids)), protocol or "any")


def paired(summary: pd.DataFrame, a: str, b: str, metric: str) -> dict[str, float]:
    """``b`` against ``a`` on the seeds both have: mean and std of (b - a), b/a - 1 of the
    means, the paired t-test and Wilcoxon signed-rank p-values (NaN below 2 seeds)."""
    wide = summary.pivot(index="seed", columns="method", values=metric)
    if a not in wide or b not in wide:
        raise DataError(f"methods {a!r} and {b!r} are not both in the summary (has {list(wide.columns)})")
    both = wide[[a, b]].dropna()
    d = (both[b] - both[a]).to_numpy()
    n = len(d)
    out = {"n": n, "mean_a": float(both[a].mean()), "mean_b": float(both[b].mean()),
           "diff_mean": float(d.mean()) if n else math.nan, "diff_std": float(d.std(ddof=1)) if n > 1 else math.nan,
           "relative": float(both[b].mean() / both[a].mean() - 1) if n else math.nan,
           "t_p": math.nan, "wilcoxon_p": math.nan}
    if n >= 2 and np.any(d != 0):
        out["t_p"] = float(stats.ttest_rel(both[b], both[a]).pvalue)
        out["wilcoxon_p"] = float(stats.wilcoxon(both[b], both[a]).pvalue)
    return out


def _pm(values: pd.Series, digits: int) -> str:
    std = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.{digits}f} ± {std:.{digits}f}" if std == std else f"{values.mean():.{digits}f}"


def _p(value: float) -> str:
    return "—" if value != value else (f"{value:.1e}" if value < 1e-3 else f"{value:.3f}")


def markdown(col: Collected, methods: Iterable[str] = ("rmse", "weighted_rmse", "task"),
             pairs: Iterable[tuple[str, str]] = (("rmse", "task"), ("weighted_rmse", "task"), ("rmse", "weighted_rmse"))) -> str:
    """Three tables: per seed, mean ± std per method, and the paired comparisons."""
    s = col.summary
    methods = [m for m in methods if m in set(s["method"])]
    has_hourly = "rmse_hourly" in s and s["rmse_hourly"].notna().all()
    lines = ["| seed | " + " | ".join(f"{m}: RMSE{' / hourly' if has_hourly else ''} / task cost" for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for seed, g in s.groupby("seed"):
        cells = []
        for m in methods:
            r = g[g["method"] == m]
            if r.empty:
                cells.append("—")
                continue
            r = r.iloc[0]
            cells.append(f"{r.rmse:.4f}" + (f" / {r.rmse_hourly:.4f}" if has_hourly else "") + f" / {r.task_cost:.3f}")
        lines.append(f"| {int(seed)} | " + " | ".join(cells) + " |")
    lines += ["", "| method | seeds | test RMSE | mean hourly RMSE | test task cost |", "|---|---|---|---|---|"]
    for m in methods:
        g = s[s["method"] == m]
        hourly = _pm(g["rmse_hourly"], 4) if has_hourly else "—"
        lines.append(f"| {m} | {len(g)} | {_pm(g['rmse'], 4)} | {hourly} | {_pm(g['task_cost'], 3)} |")
    comparisons: list[str] = []
    for a, b in pairs:
        if a not in methods or b not in methods:
            continue
        for metric in METRICS:
            if metric == "rmse_hourly" and not has_hourly:
                continue
            r = paired(s, a, b, metric)
            digits = 3 if metric == "task_cost" else 4
            spread = f" ± {r['diff_std']:.{digits}f}" if r["diff_std"] == r["diff_std"] else ""
            comparisons.append(f"| {b} vs {a} | {metric} | {r['n']} | {r['diff_mean']:+.{digits}f}{spread} | {r['relative']:+.1%} | "
                               f"{_p(r['t_p'])} | {_p(r['wilcoxon_p'])} |")
    if comparisons:  # none when a single method was run
        lines += ["", "| comparison (B vs A, per seed) | metric | seeds | mean of B − A ± std | B/A − 1 | paired t p | Wilcoxon p |",
                  "|---|---|---|---|---|---|---|", *comparisons]
    return "\n".join(lines)
