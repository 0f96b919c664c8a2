"""Study: task-based vs RMSE forecasting for day-ahead scheduling (Donti, Amos & Kolter 2017).

For each seed, trains the requested forecasters on the training days (the last
``val_fraction`` of them held out, chronologically, for early stopping), schedules the test
days by SQP on the forecast Gaussians, and records test RMSE and realised task cost. The
run directory follows `gridlearn.forecast.schema` exactly (the dashboard reads it).

    python studies/task_forecasting.py --dataset simbench --seeds 1 --demo
    python studies/task_forecasting.py --dataset pjm --seeds 5

Methods: rmse (paper's RMSE net), nll (input-dependent sigma, Gaussian NLL),
weighted_rmse (cost-weighted RMSE), task (task net, initialised from the RMSE net),
hybrid (task + mse_weight * MSE, initialised from the RMSE net).
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from gridlearn.data import DayAheadData, load_pjm, load_simbench  # noqa: E402
from gridlearn.errors import ConfigError  # noqa: E402
from gridlearn.forecast import schema  # noqa: E402
from gridlearn.forecast import reference_protocol as ref  # noqa: E402
from gridlearn.forecast.figures import cost_vs_rmse_figure  # noqa: E402
from gridlearn.forecast.models import GaussianNet, HeteroscedasticNet  # noqa: E402
from gridlearn.forecast.scheduling import SQP, SchedulingParams, StochasticScheduler  # noqa: E402
from gridlearn.forecast.training import (  # noqa: E402
    TrainSettings,
    evaluate,
    train_rmse,
    train_rmse_epochs,
    train_task,
    train_task_epochs,
    train_weighted_rmse,
)
from gridlearn.results import start_run  # noqa: E402
from gridlearn.study import study_app  # noqa: E402

log = logging.getLogger("gridlearn.studies.task_forecasting")

METHODS = ("rmse", "nll", "weighted_rmse", "task", "hybrid")
REFERENCE_METHODS = ("rmse", "weighted_rmse", "task")  # what power_sched/main.py trains


PROTOCOLS = ("gridlearn", "reference")


@dataclass(frozen=True, kw_only=True)
class Config:
    dataset: str = field(default="pjm", metadata={"help": "pjm | simbench"})
    protocol: str = field(default="gridlearn", metadata={"help": "gridlearn (train-only standardisation, chronological "
                          "validation split) | reference (locuslab/e2e-model-learning power_sched, exactly)"})
    seeds: int = field(default=1, metadata={"help": "number of seeds (0..seeds-1)"})
    first_seed: int = field(default=0, metadata={"help": "seeds are first_seed .. first_seed+seeds-1"})
    methods: tuple[str, ...] = field(default=("rmse", "weighted_rmse", "task"), metadata={"help": f"comma-separated, from {','.join(METHODS)}"})
    rmse_epochs: int = 1000
    task_epochs: int = 100
    weighted_rounds: int = 5
    weighted_epochs: int = 100
    eval_every: int = 5
    # task: 50 epochs without a better hold-out cost; 4 stopped some seeds at epoch 0
    patience: int = field(default=10, metadata={"help": "task/hybrid: evaluations without improvement before stopping"})
    rmse_patience: int = field(default=40, metadata={"help": "rmse/nll: the same (gridlearn protocol)"})
    refit: bool = field(default=True, metadata={"help": "gridlearn protocol: retrain the rmse/nll net on every training "
                        "day for the epoch count early stopping chose on the validation split"})
    mse_weight: float = 1.0
    val_fraction: float = 0.2
    gamma_under: float = 50.0
    gamma_over: float = 0.5
    c_ramp: float = 0.4
    data_dir: str | None = field(default=None, metadata={"help": "PJM directory (default: $GRIDLEARN_DATA_DIR/pjm or ../shared/data/pjm)"})
    results_dir: str | None = field(default=None, metadata={"help": "results root (default: $GRIDLEARN_RESULTS_DIR or ./results)"})
    threads: int = field(default=1, metadata={"help": "torch threads; 0 leaves torch's default (1 is faster for these small batches)"})
    progress: bool = True

    def __post_init__(self):
        if self.dataset not in ("pjm", "simbench"):
            raise ConfigError(f"dataset must be pjm or simbench, got {self.dataset!r}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"unknown methods {bad}; choose from {METHODS}")
        if self.protocol == "reference" and not set(self.methods) <= set(REFERENCE_METHODS):
            raise ConfigError(f"the reference protocol has methods {REFERENCE_METHODS} only, got {self.methods}")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if self.first_seed < 0:
            raise ConfigError(f"first_seed must be >= 0, got {self.first_seed}")
        if not 0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")


DEMO = dict(dataset="simbench", seeds=1, methods=("rmse", "weighted_rmse", "task"), rmse_epochs=400,
            task_epochs=40, weighted_rounds=3, weighted_epochs=100, eval_every=5, patience=4, rmse_patience=20)


def _tensors(data: DayAheadData, val_fraction: float) -> dict[str, torch.Tensor]:
    n_fit = int(len(data.x_train) * (1 - val_fraction))
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return {
        "x_fit": t(data.x_train[:n_fit]), "y_fit": t(data.y_train[:n_fit]),
        "x_val": t(data.x_train[n_fit:]), "y_val": t(data.y_train[n_fit:]),
        "x_test": t(data.x_test), "y_test": t(data.y_test),
    }


def _train_seed(cfg: Config, data: DayAheadData, seed: int, scheduler: StochasticScheduler) -> dict[str, dict[str, Any]]:
    d = _tensors(data, cfg.val_fraction)
    settings = TrainSettings(
        rmse_epochs=cfg.rmse_epochs, task_epochs=cfg.task_epochs, eval_every=cfg.eval_every, patience=cfg.patience, rmse_patience=cfg.rmse_patience,
        mse_weight=cfg.mse_weight, weighted_rounds=cfg.weighted_rounds, weighted_epochs=cfg.weighted_epochs,
        progress=cfg.progress,
    )
    fit = (d["x_fit"], d["y_fit"], d["x_val"], d["y_val"])
    xf, yf = data.x_train[: len(d["x_fit"])], data.y_train[: len(d["y_fit"])]
    x_all, y_all = torch.cat([d["x_fit"], d["x_val"]]), torch.cat([d["y_fit"], d["y_val"]])

    def fitted(make, nll=False):
        """(net trained on the fit days, early-stopped on the validation days; the net to report).

        Early stopping on the validation days chooses the epoch count; with `refit` the net
        is then trained again, from a fresh start, on every training day for that many
        epochs. Without the refit the net never sees the last 20% of the training period,
        the months just before the test days, and its PJM test RMSE is ~25% worse.
        """
        model = make(xf, yf)
        hist = train_rmse(model, *fit, settings, nll=nll)
        if not cfg.refit:
            return model, model
        full = make(data.x_train, data.y_train)
        train_rmse_epochs(full, x_all, y_all, max(hist.best_epoch, 1), settings.rmse_lr, nll=nll, progress=cfg.progress)
        log.info("seed %d %s: refit on all %d training days for the %d epochs validation chose", seed,
                 "nll" if nll else "rmse", len(x_all), max(hist.best_epoch, 1))
        return model, full

    out: dict[str, dict[str, Any]] = {}
    with torch.random.fork_rng():  # seeds init and dropout without touching the caller's RNG
        torch.manual_seed(seed)
        rmse_fit = rmse_net = None
        if {"rmse", "task", "hybrid"} & set(cfg.methods):
            t0 = time.perf_counter()
            rmse_fit, rmse_net = fitted(lambda x, y: GaussianNet(x, y).double())
            out["rmse"] = {"model": rmse_net, "train_s": time.perf_counter() - t0}
        for method in cfg.methods:
            t0 = time.perf_counter()
            if method == "rmse":
                continue
            if method == "nll":
                model = fitted(lambda x, y: HeteroscedasticNet(x, y).double(), nll=True)[1]
            elif method == "weighted_rmse":
                model = GaussianNet(xf, yf).double()
                hist = train_weighted_rmse(model, scheduler, *fit, settings)
                if cfg.refit:
                    model = GaussianNet(data.x_train, data.y_train).double()
                    train_weighted_rmse(model, scheduler, x_all, y_all, None, None, settings, keep_round=hist.best_epoch)
            else:  # task, hybrid: start from the RMSE net
                # Task training steps on the fit days from the RMSE net trained on the fit days,
                # and stops early on the validation days, which neither net has seen. With
                # `refit`, the refit RMSE net is then task-trained on every training day for
                # the epoch count that chose (0: it stays the refit RMSE net).
                weight = cfg.mse_weight if method == "hybrid" else 0.0
                model = copy.deepcopy(rmse_fit)
                hist = train_task(model, scheduler, *fit, settings, mse_weight=weight)
                if cfg.refit:
                    model = copy.deepcopy(rmse_net)
                    if hist.best_epoch > 0:
                        train_task_epochs(model, scheduler, x_all, y_all, hist.best_epoch, settings, mse_weight=weight)
                    log.info("seed %d %s: refit on all %d training days for the %d epochs validation chose", seed,
                             method, len(x_all), hist.best_epoch)
            out[method] = {"model": model, "train_s": time.perf_counter() - t0}
    return _evaluate_all(cfg, out, scheduler, d["x_test"], d["y_test"], seed)


def _train_seed_reference(cfg: Config, data: DayAheadData, seed: int, scheduler: StochasticScheduler) -> dict[str, dict[str, Any]]:
    """One seed of the reference protocol (`gridlearn.forecast.reference_protocol`); ``data`` is whole-data standardised."""
    settings = ref.ReferenceSettings(progress=cfg.progress)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    x_tr, y_tr = t(data.x_train), t(data.y_train)
    out: dict[str, dict[str, Any]] = {}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if "rmse" in cfg.methods:
            t0 = time.perf_counter()
            model = GaussianNet(data.x_train, data.y_train).double()
            ref.train_rmse_fixed(model, x_tr, y_tr, settings)
            out["rmse"] = {"model": model, "train_s": time.perf_counter() - t0}
        if "weighted_rmse" in cfg.methods:
            t0 = time.perf_counter()
            model = ref.train_weighted_rmse_reference(lambda: GaussianNet(data.x_train, data.y_train).double(), scheduler, x_tr, y_tr, settings)
            out["weighted_rmse"] = {"model": model, "train_s": time.perf_counter() - t0}
        if "task" in cfg.methods:
            t0 = time.perf_counter()
            fit, hold = ref.random_holdout(len(data.x_train), settings.holdout_fraction, seed)
            model = GaussianNet(data.x_train[fit], data.y_train[fit]).double()
            ref.train_rmse_fixed(model, x_tr[fit], y_tr[fit], settings)
            hist = ref.train_task_reference(model, scheduler, x_tr[fit], y_tr[fit], x_tr[hold], y_tr[hold], settings)
            log.info("seed %d task (reference): best hold-out step %d of %d", seed, hist.best_epoch, len(hist.val))
            out["task"] = {"model": model, "train_s": time.perf_counter() - t0}
    return _evaluate_all(cfg, out, scheduler, t(data.x_test), t(data.y_test), seed)


def _evaluate_all(cfg: Config, out: dict[str, dict[str, Any]], scheduler, x_test, y_test, seed: int) -> dict[str, dict[str, Any]]:
    for method in list(out):
        if method not in cfg.methods:
            del out[method]
            continue
        out[method].update(evaluate(out[method]["model"], scheduler, x_test, y_test))
        log.info("seed %d %s: test rmse %.4f (mean hourly %.4f)  task cost %.4f  (%.1f s)", seed, method, out[method]["rmse"],
                 out[method]["rmse_hourly"], out[method]["task_cost"], out[method]["train_s"])
    return out


def _figures(summary: pd.DataFrame, per_hour: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig1 = cost_vs_rmse_figure(summary, "test RMSE", "test task cost (mean daily)")
    fig2, ax = plt.subplots(figsize=(6, 3.5))
    for method, g in per_hour.groupby("method"):
        m = g.groupby("hour").task_cost.agg(["mean", "std"]).fillna(0.0)
        ax.plot(m.index, m["mean"], label=method)
        ax.fill_between(m.index, m["mean"] - m["std"], m["mean"] + m["std"], alpha=0.2)
    ax.set_xlabel("hour of day")
    ax.set_ylabel("mean test task cost")
    ax.legend()
    fig2.tight_layout()
    return {"cost_vs_rmse": fig1, "per_hour_cost": fig2}


def cost_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (over seeds) of test RMSE and task cost per method."""
    g = summary.groupby("method", sort=False)
    return pd.DataFrame({
        "rmse": g.rmse.mean().map("{:.4f}".format) + " ± " + g.rmse.std(ddof=1).fillna(0).map("{:.4f}".format),
        "task_cost": g.task_cost.mean().map("{:.3f}".format) + " ± " + g.task_cost.std(ddof=1).fillna(0).map("{:.3f}".format),
        "n_seeds": g.size(),
    })


def main(cfg: Config) -> Path:
    """Run the study; returns the run directory."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    data = load_pjm(cfg.data_dir) if cfg.dataset == "pjm" else load_simbench()
    train_seed = _train_seed
    if cfg.protocol == "reference":
        data, train_seed = ref.whole_data_standardised(data), _train_seed_reference
    load_s = time.perf_counter() - t0
    params = SchedulingParams(gamma_under=cfg.gamma_under, gamma_over=cfg.gamma_over, c_ramp=cfg.c_ramp)
    scheduler = StochasticScheduler(params, SQP())
    with start_run(schema.STUDY, cfg, root=cfg.results_dir) as run:
        log.info("data %s: %d train, %d test days, %d features (%.1f s to load)", data.name, len(data.x_train),
                 len(data.x_test), data.n_features, load_s)
        summary, per_hour, forecasts, timing = [], [], [], {}
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            for method, r in train_seed(cfg, data, seed, scheduler).items():
                summary.append({"method": method, "seed": seed, "rmse": r["rmse"], "rmse_hourly": r["rmse_hourly"],
                                "task_cost": r["task_cost"]})
                timing[f"{method}/{seed}"] = r["train_s"]
                per_hour += [{"method": method, "seed": seed, "hour": h, "task_cost": float(c)}
                             for h, c in enumerate(r["per_hour_cost"])]
                n = len(data.x_test)
                forecasts.append(pd.DataFrame({
                    "method": method, "seed": seed,
                    "day": np.repeat(data.days_test.astype(str), 24), "hour": np.tile(np.arange(24), n),
                    "actual": data.y_test.reshape(-1), "mu": r["mu"].reshape(-1).numpy(),
                    "sigma": r["sigma"].reshape(-1).numpy(), "schedule": r["schedule"].reshape(-1).numpy(),
                }))
        summary_df = schema.SUMMARY.frame(summary)
        per_hour_df = schema.PER_HOUR.frame(per_hour)
        run.write_table(schema.SUMMARY.name, summary_df)
        run.write_table(schema.PER_HOUR.name, per_hour_df)
        run.write_table(schema.FORECASTS.name, schema.FORECASTS.frame(pd.concat(forecasts, ignore_index=True)))
        g = summary_df.groupby("method")
        methods = {m: {"rmse_mean": g.rmse.mean()[m], "rmse_std": g.rmse.std(ddof=1).fillna(0)[m],
                       "rmse_hourly_mean": g.rmse_hourly.mean()[m], "rmse_hourly_std": g.rmse_hourly.std(ddof=1).fillna(0)[m],
                       "task_cost_mean": g.task_cost.mean()[m], "task_cost_std": g.task_cost.std(ddof=1).fillna(0)[m],
                       "n_seeds": int(g.size()[m])} for m in g.groups}
        extra = {}
        if "rmse" in methods and "task" in methods:
            extra[schema.HEADLINE_KEY] = 1 - methods["task"]["task_cost_mean"] / methods["rmse"]["task_cost_mean"]
        run.log_metrics(**{schema.METRICS_METHODS_KEY: methods}, dataset=data.name, protocol=cfg.protocol, n_test_days=len(data.x_test),
                        n_train_days=len(data.x_train), n_features=data.n_features, train_seconds=timing,
                        total_seconds=time.perf_counter() - t0, **extra)
        for name, fig in _figures(summary_df, per_hour_df).items():
            run.save_figure(name, fig)
        table = cost_table(summary_df)
        log.info("cost vs RMSE (test, mean ± std over seeds):\n%s", table.to_string())
    print(f"\n{data.name}: test RMSE and task cost, mean ± std over {cfg.seeds} seed(s)\n{table.to_string()}\n"
          f"run directory: {run.dir}")
    return run.dir


app = study_app(Config, main, demo=DEMO, help="Task-based vs RMSE day-ahead forecasting (Donti et al. 2017).")


if __name__ == "__main__":
    app()
