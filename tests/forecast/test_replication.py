"""Replication tables from run directories: seeds gathered across runs, paired tests per seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gridlearn.errors import DataError
from gridlearn.forecast import schema
from gridlearn.forecast.replication import collect, markdown, paired
from gridlearn.results import start_run


def _run(root, seeds, protocol, rng, dataset="pjm"):
    rows = []
    for s in seeds:
        base = 0.09 + 0.002 * rng.standard_normal()
        rows += [{"method": "rmse", "seed": s, "rmse": base, "rmse_hourly": base - 0.01, "task_cost": 12 + rng.standard_normal()},
                 {"method": "task", "seed": s, "rmse": base + 0.003, "rmse_hourly": base - 0.007, "task_cost": 6 + rng.standard_normal()}]
    with start_run(schema.STUDY, {"dataset": dataset, "protocol": protocol}, root=root) as run:
        run.write_table(schema.SUMMARY.name, schema.SUMMARY.frame(rows))
    return pd.DataFrame(rows)


def test_seeds_of_several_runs_are_gathered_per_protocol_and_compared_in_pairs(tmp_path):
    rng = np.random.default_rng(0)
    a = _run(tmp_path, [0, 1], "reference", rng)
    b = _run(tmp_path, [2, 3, 4], "reference", rng)
    _run(tmp_path, [0, 1], "gridlearn", rng)  # another protocol: not mixed in
    _run(tmp_path, [5], "reference", rng, dataset="simbench")  # another dataset: not mixed in
    col = collect(tmp_path, protocol="reference")
    assert len(col.runs) == 2 and sorted(col.summary["seed"].unique()) == [0, 1, 2, 3, 4]
    both = pd.concat([a, b])
    r = paired(col.summary, "rmse", "task", "task_cost")
    x, y = (both[both.method == m].sort_values("seed")["task_cost"].to_numpy() for m in ("rmse", "task"))
    assert r["n"] == 5
    assert r["diff_mean"] == pytest.approx((y - x).mean()) and r["diff_std"] == pytest.approx((y - x).std(ddof=1))
    assert r["relative"] == pytest.approx(y.mean() / x.mean() - 1)
    assert r["t_p"] == pytest.approx(stats.ttest_rel(y, x).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(stats.wilcoxon(y, x).pvalue)
    text = markdown(col)
    assert "| task vs rmse | task_cost | 5 |" in text and text.count("\n| 4 |") == 1


def test_a_seed_in_two_runs_is_an_error(tmp_path):
    rng = np.random.default_rng(1)
    _run(tmp_path, [0, 1], "gridlearn", rng)
    _run(tmp_path, [1], "gridlearn", rng)
    with pytest.raises(DataError, match="seed 1 is in both"):
        collect(tmp_path, protocol="gridlearn")


def test_no_matching_run_says_so(tmp_path):
    with pytest.raises(DataError, match="no readable"):
        collect(tmp_path, protocol="reference")
