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
from tests._studies import study_module

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


def day_iso(d: int) -> str:
    """Test day ``d`` (0, 1, ...) as the study writes it: an ISO date."""
    return str(np.datetime64("2016-10-20") + d)


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
                    rows.append([m, s, day_iso(d), int(h), actual[h], mu[h], sigma[h], schedule[h]])
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


# --------------------------------------------------------------------------- study pages
# Runs of the SC-OPF, inverse AC-OPF and SATNet studies, in the column layout those
# studies write (studies/scopf.py, studies/inverse_acopf.py, studies/satnet_*.py), with
# synthetic numbers. Written by the real start_run.

SCOPF_CASES = ("pglib_opf_case14_ieee", "pglib_opf_case30_ieee")
INVERSE_OBSERVES = ("pg+lmp", "pg")
KKT_NOT_APPLICABLE = "not applicable: the KKT-residual baseline needs the LMP at every unknown generator's bus"


def _small_figure() -> Figure:
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().plot([0, 1, 2], [1, 0, 2])
    return fig


def write_scopf_run(root: Path, *, rng_seed: int = 0, scenarios: int = 3) -> dict:
    """An SC-OPF run: attack_vs_enumeration, summary (the study's groupby), defence, two figures.
    Case 30 at k=2, scenario 1 is a miss (the attack's best set ranks 3rd)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for case in SCOPF_CASES:
        n_branch = 20 if case.endswith("14_ieee") else 41
        for s in range(scenarios):
            for k in (1, 2):
                worst = round(float(150 + 50 * rng.random()), 3)
                miss = case.endswith("30_ieee") and k == 2 and s == 1
                found = round(worst - 12.5, 3) if miss else worst
                enum_pf = n_branch if k == 1 else n_branch * (n_branch - 1) // 2
                attack_pf = int(150 + 100 * k + rng.integers(0, 50))
                rows.append({
                    "case": case, "scenario": s, "k": k, "physics": "dc", "worst_mw": worst, "found_mw": found,
                    "recall": not miss, "rank": 3 if miss else 1, "worst_outage": "(('line', 3),)",
                    "found_outage": "(('line', 5),)" if miss else "(('line', 3),)", "enum_power_flows": enum_pf,
                    "enum_time_s": round(enum_pf * 1e-4, 6), "attack_power_flows": attack_pf,
                    "attack_time_s": round(0.1 + 0.01 * k, 6), "islanded_sets": k - 1,
                })
    attack = pd.DataFrame(rows)
    with study_module("scopf") as study:  # the study's own summary of its attack table
        summary = study.summarise_attacks(attack)
    defence = pd.DataFrame(
        [
            ("dcopf (insecure)", 0, 3132.4, 51.64),
            ("preventive N-1 SC-OPF (all sets, one QP)", 0, 4266.76, 0.0),
            ("constraint_generation (attack's view)", 0, 3132.4, 51.64),
            ("constraint_generation (attack's view)", 1, 3900.5, 12.25),
            ("constraint_generation (attack's view)", 2, 4266.76, 0.0),
            ("constraint_generation", 3, 4266.76, 0.0),
            ("adversarial (attack's view)", 0, 3132.4, 51.64),
            ("adversarial (attack's view)", 1, 4290.13, 0.0),
            ("adversarial", 2, 4290.13, 0.0),
        ],
        columns=["method", "step", "cost_usd_per_h", "worst_violation_mw"],
    )
    config = {"cases": list(SCOPF_CASES), "ks": [1, 2], "physics": "dc", "scenarios": scenarios, "restarts": 8,
              "steps": 20, "defence_case": "pglib_opf_case30_ieee", "defence_k": 1, "defence_load_scale": 0.6}
    with start_run("scopf", config, root=root) as run:
        run.write_table("attack_vs_enumeration", attack)
        run.write_table("summary", summary)
        run.write_table("defence", defence)
        run.log_metrics(**{f"recall_{r.case}_k{r.k}": float(r.recall) for r in summary.itertuples()})
        run.save_figure("attack_vs_enumeration", _small_figure())
        run.save_figure("defence_tradeoff", _small_figure())
    return {"path": run.dir, "attack": attack, "summary": summary, "defence": defence, "config": config}


def write_inverse_run(root: Path, *, rng_seed: int = 0) -> dict:
    """An inverse AC-OPF run. Observing pg only: no identifiable parameter (errors empty on that
    measure) and the KKT baseline does not apply (an ``error`` row), as in the real study."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for observe in INVERSE_OBSERVES:
        for noise in (0.0, 0.01):
            for n in (2, 5, 20):
                common = {"case": "case14-paper", "observe": observe, "noise": noise, "n_samples": n, "n_dropped": 0}
                err = float(10 ** rng.uniform(-5, -2)) * (1 + 10 * noise)
                ident = observe == "pg+lmp"
                rows.append({**common, "method": "gradient", "time_s": 5.0, "iterations": 5.0, "final_loss": 1e-9,
                             "max_rel_err": err if ident else 0.3 / n, "max_rel_err_identifiable": err if ident else np.nan,
                             "n_identifiable": 6.0 if ident else 0.0, "n_params": 6.0})
                if ident:
                    rows.append({**common, "method": "kkt_baseline", "time_s": 0.02, "max_rel_err": err / 10,
                                 "max_rel_err_identifiable": err / 10, "n_identifiable": 6.0, "n_params": 6.0})
                else:
                    rows.append({**common, "method": "kkt_baseline", "error": KKT_NOT_APPLICABLE})
    recovery = pd.DataFrame(rows)
    params = []
    truth = {("ext_grid", 0): (2e-4, 0.05), ("gen", 0): (4e-4, 0.02), ("gen", 3): (5e-4, 0.01)}
    for observe in INVERSE_OBSERVES:
        for element, (c2, c1) in truth.items():
            for coef, true in (("c2", c2), ("c1", c1)):
                ident = observe == "pg+lmp"
                params.append({
                    "element": str(element), "coefficient": coef,
                    "value": round(true * (1 + (0.001 if ident else 0.08)), 9), "prior": round(true * 1.2, 9),
                    "true": true, "unit": f"cp{coef[1]}_eur_per_mw", "identifiable": ident,
                    "reason": "" if ident else "common_scale", "rel_std": 3.5 if ident else np.inf,
                    "case": "case14-paper", "observe": observe, "noise": 0.0, "n_samples": 20, "n_dropped": 0,
                })
    parameters = pd.DataFrame(params)
    admittance = pd.DataFrame([{
        "branch": "('line', 0)", "method": "gradient", "time_s": 17.8, "iterations": 4, "final_loss": 4.7e-15,
        "max_rel_err": 2.9e-07, "max_rel_err_identifiable": 2.9e-07, "n_identifiable": 1, "n_params": 1,
        "forward_s": 7.9, "jacobian_s": 6.6, "identifiable": True, "rel_std": 1.34,
    }])
    config = {"paper_samples": [2, 5, 20], "noises": [0.0, 0.01], "observes": list(INVERSE_OBSERVES),
              "large_cases": [], "max_iter": 8, "prior_spread": 0.3, "seed": 0}
    best = float(recovery.query("observe == 'pg+lmp' and noise == 0 and method == 'gradient'")["max_rel_err_identifiable"].min())
    with start_run("inverse_acopf", config, root=root) as run:
        run.write_table("recovery", recovery)
        run.write_table("parameters_paper", parameters)
        run.write_table("admittance", admittance)
        run.save_figure("error_vs_samples", _small_figure())
        run.log_metrics(n_runs=len(recovery), paper_noise_free_full_max_rel_err=best)
    return {"path": run.dir, "recovery": recovery, "parameters": parameters, "admittance": admittance, "best": best}


def write_parity_run(root: Path, *, epochs: int = 8, rng_seed: int = 0) -> dict:
    """A SATNet parity run: per-epoch training table with a curriculum that grows to L=6."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for e in range(epochs):
        acc = round(min(1.0, 0.6 + 0.08 * e), 4)
        rows.append({"epoch": e, "level": min(2 + e, 6), "train_loss": round(float(0.9 * 0.5**e), 6), "train_acc": acc,
                     "test_acc_full_length": round(min(1.0, 0.5 + 0.07 * e), 4),
                     "converged_train": round(float(rng.uniform(0.7, 1.0)), 4),
                     "converged_test": round(float(rng.uniform(0.7, 1.0)), 4), "epoch_s": 2.5})
    training = pd.DataFrame(rows)
    config = {"length": 6, "n_train": 100, "n_test": 100, "batch_size": 50, "m": 4, "aux": 1, "lr": 0.1,
              "max_epochs": epochs, "on_failure": "keep", "seed": 0}
    metrics = {"test_accuracy": rows[-1]["test_acc_full_length"], "epochs": epochs, "final_level": 6, "wall_s": 20.0,
               "mean_epoch_s": 2.5, "converged_fraction_last_epoch": rows[-1]["converged_train"]}
    with start_run("satnet_parity", config, root=root) as run:
        run.write_table("training", training)
        run.log_metrics(**metrics)
    return {"path": run.dir, "training": training, "config": config, "metrics": metrics}


def write_sudoku_run(root: Path, *, mode: str, loss_on: str = "all", epochs: int = 4) -> dict:
    """A SATNet Sudoku run; a plain run has no digit accuracy (empty column, JSON null metric)."""
    rows = []
    for e in range(epochs):
        rows.append({"epoch": e, "batches": 20, "train_loss": round(0.5 / (e + 1), 6), "train_converged": 0.0,
                     "test_board_acc": round(0.2 * e, 4), "test_blank_cell_acc": round(0.4 + 0.15 * e, 4),
                     "test_digit_acc_given_cells": round(0.5 + 0.1 * e, 4) if mode == "visual" else np.nan,
                     "test_converged": 0.0})
    training = pd.DataFrame(rows)
    last = rows[-1]
    metrics = {**{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in last.items()},
               "first_train_loss": rows[0]["train_loss"], "mean_givens": 7.0}
    config = {"mode": mode, "box": 2, "n_train": 800, "n_test": 200, "m": 100, "aux": 40, "lr": 0.01,
              "epochs": epochs, "max_train_batches": 0, "max_test": 0, "loss_on": loss_on, "seed": 0}
    with start_run("satnet_sudoku", config, root=root) as run:
        run.write_table("training", training)
        run.log_metrics(**metrics)
    return {"path": run.dir, "training": training, "config": config, "metrics": metrics}


@pytest.fixture(scope="session")
def study_root(tmp_path_factory) -> dict:
    """One SC-OPF, one inverse AC-OPF and one SATNet parity run, and two Sudoku runs (plain, visual)."""
    root = tmp_path_factory.mktemp("study_results")
    scopf = write_scopf_run(root)
    inverse = write_inverse_run(root)
    parity = write_parity_run(root)
    plain = write_sudoku_run(root, mode="plain")
    visual = write_sudoku_run(root, mode="visual", loss_on="blanks", epochs=5)
    return {"root": root, "scopf": scopf, "inverse": inverse, "parity": parity, "sudoku_plain": plain,
            "sudoku_visual": visual}


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest swaps ``sys.modules['__main__']`` for its temporary script and leaves
    it there; spawned process-pool workers later try to re-run that deleted script as their
    main module and die (BrokenProcessPool in tests/test_parallel.py). Put the real one back."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def real_forecast_root(tmp_path_factory) -> Path:
    """A results root holding one tiny but real task-forecasting run: `studies/task_forecasting.py`
    itself on SimBench, so the page reads exactly what the study writes (ISO dates included)."""
    pytest.importorskip("simbench")
    import importlib.util
    import os
    import sys

    root = tmp_path_factory.mktemp("real_results")
    path = Path(__file__).resolve().parents[2] / "studies" / "task_forecasting.py"
    spec = importlib.util.spec_from_file_location("task_forecasting_for_dashboards", path)
    study = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = study  # dataclasses look their module up there
    spec.loader.exec_module(study)
    old = os.environ.get("GRIDLEARN_CACHE_DIR")
    os.environ.setdefault("GRIDLEARN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    try:
        study.main(study.Config(dataset="simbench", seeds=1, methods=("rmse", "weighted_rmse", "task"), rmse_epochs=4,
                                task_epochs=1, weighted_rounds=1, weighted_epochs=1, eval_every=1, results_dir=str(root),
                                progress=False))
    finally:
        if old is None:
            os.environ.pop("GRIDLEARN_CACHE_DIR", None)
    return root
