"""Study: network-aware task-based forecasting (bus loads trained through a multi-period DC-OPF).

The model (day-ahead DC-OPF on forecast bus loads with ramp and line limits; real-time
settlement of the system imbalance at gamma_under / gamma_over plus a quadratic term, and
of real-time line overloads) is stated in `gridlearn.forecast.network_aware`; the bus-level
data (SimBench profiles spread round robin over the load buses, seeded per-bus noise) in
`gridlearn.forecast.bus_loads`.

Scenario: the grid's ``n_tight_lines`` busiest branches (largest |flow| in a DC-OPF without
line limits over the training days) are limited to ``rating_factor`` × that flow, so
congestion binds in peak hours; every generator ramps at most ``ramp_fraction`` · pmax per
hour. For each seed: an RMSE net (MSE in MW), then a task net initialised from it and
trained on the realised cost through the DC-OPF layer; both are evaluated on the test days
(RMSE in MW over all day-hour-buses; mean daily realised cost in $).

``--physics ac`` dispatches every hour by AC-OPF instead (`gridlearn.forecast.ac_scheduler`:
single-period, so no ramp limits; case power factor per bus; imbalance net of the scheduled
losses). Both physics face the same ratings (the DC rule above); the AC-OPF reads them as
|S| limits, so the reactive flow makes AC congestion tighter.
AC day-hours that failed or are weakly active are left out of training steps alone (the other
hours of their day stay; metrics ``train_hours_left_out``); days with a failed AC hour are left
out of the test costs, and counted (metrics ``n_failed_test_days``).

    python studies/task_forecasting_network.py --seeds 2
    python studies/task_forecasting_network.py --seeds 1 --physics ac
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from gridlearn.errors import ConfigError  # noqa: E402
from gridlearn.forecast.ac_scheduler import ACNetworkScheduler  # noqa: E402
from gridlearn.forecast.bus_loads import DEFAULT_PROFILES, BusLoadData, bus_load_data  # noqa: E402
from gridlearn.forecast.figures import cost_vs_rmse_figure  # noqa: E402
from gridlearn.forecast.network_aware import (  # noqa: E402
    BusLoadForecaster,
    NetworkScheduler,
    NetworkTaskParams,
    evaluate_network,
    tighten_busiest_lines,
    train_rmse_bus,
    train_task_network,
)
from gridlearn.forecast.training import TrainSettings  # noqa: E402
from gridlearn.grid.cases import load_case  # noqa: E402
from gridlearn.results import start_run  # noqa: E402
from gridlearn.study import study_app  # noqa: E402

log = logging.getLogger("gridlearn.studies.task_forecasting_network")

STUDY = "task_forecasting_network"
METHODS = ("rmse", "task")
PHYSICS = ("dc", "ac")


@dataclass(frozen=True, kw_only=True)
class Config:
    case: str = "case14"
    physics: str = "dc"  # day-ahead dispatch: multi-period DC-OPF or hourly AC-OPF (module docstring)
    profiles: tuple[str, ...] = DEFAULT_PROFILES
    noise: float = 0.05  # std of the multiplicative per-bus, per-hour noise
    load_scale: float = 1.0  # bus planning peak = load_scale · the case's pd_mw
    data_seed: int = 0
    n_tight_lines: int = 4
    rating_factor: float = 0.7
    ramp_fraction: float = 0.15  # ramp limit per hour, fraction of pmax
    gamma_under: float = 300.0  # $/MWh
    gamma_over: float = 15.0  # $/MWh
    quad: float = 1.0  # $/MW²h
    overload: float = 100.0  # $/MWh
    seeds: int = 2  # seeds 0 .. seeds-1 (net init, dropout, task minibatches)
    methods: tuple[str, ...] = METHODS
    hidden: tuple[int, ...] = (128,)
    rmse_epochs: int = 1000
    rmse_lr: float = 1e-3
    rmse_patience: int = 20
    task_epochs: int = 100
    task_lr: float = 5e-4  # 5e-3 drove forecasts to infeasible days within a few steps
    batch_days: int = 32
    eval_every: int = 5
    patience: int = 6
    val_fraction: float = 0.2
    max_train_days: int | None = None  # use only the first days (quick runs, tests)
    max_test_days: int | None = None
    results_dir: str | None = None
    threads: int = 1
    progress: bool = False

    def __post_init__(self):
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"unknown methods {bad}; choose from {METHODS}")
        if self.physics not in PHYSICS:
            raise ConfigError(f"physics must be one of {PHYSICS}, got {self.physics!r}")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if not 0 < self.val_fraction < 0.5:
            raise ConfigError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.ramp_fraction <= 0:
            raise ConfigError(f"ramp_fraction must be > 0, got {self.ramp_fraction}")


def _data(cfg: Config, pd_mw: np.ndarray) -> BusLoadData:
    data = bus_load_data(pd_mw, profiles=tuple(cfg.profiles), noise=cfg.noise, load_scale=cfg.load_scale,
                         seed=cfg.data_seed)
    if cfg.max_train_days or cfg.max_test_days:
        data = data.first_days(cfg.max_train_days or len(data.x_train), cfg.max_test_days or len(data.x_test))
    return data


def _split(data: BusLoadData, val_fraction: float) -> dict[str, torch.Tensor]:
    n_fit = int(len(data.x_train) * (1 - val_fraction))
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return {"x_fit": t(data.x_train[:n_fit]), "y_fit": t(data.y_train[:n_fit]),
            "x_val": t(data.x_train[n_fit:]), "y_val": t(data.y_train[n_fit:]),
            "x_test": t(data.x_test), "y_test": t(data.y_test)}


def _train_seed(cfg, data, d, seed, scheduler, params) -> dict[str, dict]:
    settings = TrainSettings(rmse_epochs=cfg.rmse_epochs, rmse_lr=cfg.rmse_lr, rmse_patience=cfg.rmse_patience,
                             task_epochs=cfg.task_epochs, task_lr=cfg.task_lr, eval_every=cfg.eval_every,
                             patience=cfg.patience, progress=cfg.progress)
    fit = (d["x_fit"], d["y_fit"], d["x_val"], d["y_val"])
    n_fit = len(d["x_fit"])
    out = {}
    with torch.random.fork_rng():  # seeds init and dropout without touching the caller's RNG
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        rmse_net = BusLoadForecaster(data.x_train[:n_fit], data.y_train[:n_fit], data.base_mw, hidden=cfg.hidden).double()
        train_rmse_bus(rmse_net, *fit, settings)
        out["rmse"] = {"model": rmse_net, "train_s": time.perf_counter() - t0}
        if "task" in cfg.methods:
            t0 = time.perf_counter()
            task_net = copy.deepcopy(rmse_net)
            counts = getattr(scheduler, "hours_left_out", None)  # the AC scheduler's training-path tally
            before = dict(counts) if counts is not None else None
            hist = train_task_network(task_net, scheduler, params, *fit, settings, batch_days=cfg.batch_days, seed=seed)
            out["task"] = {"model": task_net, "train_s": time.perf_counter() - t0, "best_epoch": hist.best_epoch,
                           "epochs": hist.val[-1][0]}
            if counts is not None:
                out["task"]["train_hours_left_out"] = {k: counts[k] - before[k] for k in counts}
                log.info("seed %d task training: day-hours left out of their step %s", seed,
                         out["task"]["train_hours_left_out"])
    for method in list(out):
        if method not in cfg.methods:
            del out[method]
            continue
        out[method].update(evaluate_network(out[method]["model"], scheduler, params, d["x_test"], d["y_test"]))
        r = out[method]
        log.info("seed %d %s: test rmse %.3f MW  task cost %.1f $/day (dispatch %.1f, imbalance %.1f, overload %.1f; "
                 "bias %+.2f MW; %d failed test days; %.1f s)", seed, method, r["rmse_mw"], r["task_cost"], r["dispatch"], r["imbalance"],
                 r["overload"], r["system_bias_mw"], r["n_failed_days"], r["train_s"])
    # the AC scheduler leaves out days with a failed hour, per method: compare on the days every method kept
    common = torch.stack([r["ok"] for r in out.values()]).all(0)
    for r in out.values():
        r["task_cost_common_days"] = float(r["daily_cost"][common[r["ok"]]].mean()) if bool(common.any()) else float("nan")
        r["n_common_days"] = int(common.sum())
    return out


def _figures(summary: pd.DataFrame, per_hour: pd.DataFrame, oracle_cost: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig1 = cost_vs_rmse_figure(summary, "test RMSE of bus loads (MW)", "test task cost ($ per day)", oracle_cost)
    fig2, ax = plt.subplots(figsize=(6, 3.5))
    for method, g in per_hour.groupby("method"):
        m = g.groupby("hour").task_cost.mean()
        ax.plot(m.index, m.values, label=method)
    ax.set_xlabel("hour of day")
    ax.set_ylabel("mean test cost ($ per hour)")
    ax.legend()
    fig2.tight_layout()
    return {"cost_vs_rmse": fig1, "per_hour_cost": fig2}


def main(cfg: Config) -> Path:
    """Run the study; returns the run directory."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t_start = time.perf_counter()
    network = load_case(cfg.case)
    data = _data(cfg, network.bus.pd_mw.numpy())
    d = _split(data, cfg.val_fraction)
    ramp = network.gen.pmax_mw * cfg.ramp_fraction
    # the busiest lines are found on the training days only (fit + hold-out): no test leakage
    network, tight = tighten_busiest_lines(network, torch.cat([d["y_fit"], d["y_val"]]), data.load_bus,
                                           cfg.n_tight_lines, cfg.rating_factor, ramp)
    if cfg.physics == "ac":
        scheduler = ACNetworkScheduler(network, data.load_bus)
    else:
        scheduler = NetworkScheduler(network, data.load_bus, ramp)
    params = NetworkTaskParams(gamma_under_usd_per_mwh=cfg.gamma_under, gamma_over_usd_per_mwh=cfg.gamma_over,
                               quad_usd_per_mw2h=cfg.quad, overload_usd_per_mwh=cfg.overload)
    with start_run(STUDY, cfg, root=cfg.results_dir) as run:
        log.info("%s: %d load buses, %d train / %d test days; tightened branches %s", network.name, data.n_load,
                 len(data.x_train), len(data.x_test), tight.tolist())
        with torch.no_grad():  # reference: the cost of scheduling on the realised loads themselves
            perfect, oracle, oracle_ok = scheduler.settle(d["y_test"], d["y_test"], params)
            oracle_cost = float(oracle["total"].sum(-1).mean())
            limited = network.branch.rate_a_mva[tight]
            # a line binds at its rating: |P| for DC; |S| for AC, within the interior point's tolerance
            loading, rtol = ((perfect.s_max_mva, 1e-4) if cfg.physics == "ac" else (perfect.p_from_mw.abs(), 1e-6))
            congested = float((loading[..., tight] >= limited * (1 - rtol)).any(-1).double().mean())
            losses = float(perfect.losses_mw.mean()) if cfg.physics == "ac" else 0.0
        summary, terms, per_hour, timing, failed, epochs, hours_left_out = [], [], [], {}, {}, {}, {}
        for seed in range(cfg.seeds):
            for method, r in _train_seed(cfg, data, d, seed, scheduler, params).items():
                summary.append({"method": method, "seed": seed, "rmse": r["rmse_mw"], "task_cost": r["task_cost"]})
                terms.append({"method": method, "seed": seed, "dispatch": r["dispatch"], "imbalance": r["imbalance"],
                              "overload": r["overload"], "system_bias_mw": r["system_bias_mw"],
                              "failed_days": r["n_failed_days"], "task_cost_common_days": r["task_cost_common_days"],
                              "n_common_days": r["n_common_days"]})
                per_hour += [{"method": method, "seed": seed, "hour": h, "task_cost": float(c)}
                             for h, c in enumerate(r["per_hour_cost"])]
                timing[f"{method}/{seed}"] = r["train_s"]
                failed[f"{method}/{seed}"] = r["n_failed_days"]
                epochs[f"{method}/{seed}"] = r.get("epochs", 0)
                if "train_hours_left_out" in r:
                    hours_left_out[f"{method}/{seed}"] = r["train_hours_left_out"]
        summary_df = pd.DataFrame(summary, columns=["method", "seed", "rmse", "task_cost"])
        per_hour_df = pd.DataFrame(per_hour, columns=["method", "seed", "hour", "task_cost"])
        run.write_table("summary", summary_df)
        run.write_table("cost_terms", pd.DataFrame(terms))
        run.write_table("per_hour_cost", per_hour_df)
        br = network.branch
        run.write_table("tightened_lines", pd.DataFrame({
            "branch": tight.tolist(), "from_bus": br.from_bus[tight].tolist(), "to_bus": br.to_bus[tight].tolist(),
            "rate_mw": br.rate_a_mva[tight].tolist()}))
        g = summary_df.groupby("method")
        methods = {m: {"rmse_mw_mean": g.rmse.mean()[m], "rmse_mw_std": g.rmse.std(ddof=1).fillna(0)[m],
                       "task_cost_mean": g.task_cost.mean()[m], "task_cost_std": g.task_cost.std(ddof=1).fillna(0)[m],
                       "n_seeds": int(g.size()[m])} for m in g.groups}
        extra = {}
        if {"rmse", "task"} <= set(methods):
            extra["task_cost_reduction_vs_rmse"] = 1 - methods["task"]["task_cost_mean"] / methods["rmse"]["task_cost_mean"]
        run.log_metrics(methods=methods, case=cfg.case, n_load_buses=data.n_load, n_test_days=len(data.x_test),
                        n_train_days=len(data.x_train), oracle_task_cost=oracle_cost,
                        test_congested_hour_fraction=congested, train_seconds=timing,
                        total_seconds=time.perf_counter() - t_start, physics=cfg.physics,
                        oracle_mean_losses_mw=losses, n_failed_oracle_test_days=int((~oracle_ok).sum()),
                        n_failed_test_days=failed, task_epochs_run=epochs, train_hours_left_out=hours_left_out, **extra)
        for name, fig in _figures(summary_df, per_hour_df, oracle_cost).items():
            run.save_figure(name, fig)
        table = g[["rmse", "task_cost"]].agg(["mean", "std"])
        log.info("test RMSE (MW) and task cost ($/day), over seeds:\n%s", table.to_string())
    print(f"\n{cfg.case} ({cfg.physics.upper()}-OPF): test RMSE (MW) and task cost ($/day) over {cfg.seeds} seed(s); perfect forecast "
          f"{oracle_cost:.1f} $/day\n{table.to_string()}\nrun directory: {run.dir}")
    return run.dir


app = study_app(Config, main, help="Network-aware task-based forecasting through a multi-period DC-OPF (or hourly AC-OPF: --physics ac).")


if __name__ == "__main__":
    app()
