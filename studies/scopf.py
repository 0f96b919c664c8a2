"""Study: adversarial N-k contingency search vs exhaustive enumeration, and the defence trade-off.

Part 1, per case, k and load scenario (loads scaled per bus by U(1 - spread, 1 + spread),
dispatch = that scenario's DC-OPF, or AC-OPF with --physics ac): enumerate every N-k set (ground truth) and run the
attack; record whether the attack found a set as bad as the true worst (recall, ties
counted), the enumeration rank of its best set, and the power flows and wall time each
spent. Part 2, on one case: DC-OPF (insecure), a preventive N-1 DC SC-OPF with every
non-islanding N-1 branch outage as constraints (one QP), and the two defences step by
step; every dispatch's worst N-k violation scored by enumeration: a cost vs violation curve.

    python studies/scopf.py --cases pglib_opf_case14_ieee,pglib_opf_case30_ieee --scenarios 3
    gridlearn run scopf --scenarios 10

PGLib cases are read from $GRIDLEARN_DATA_DIR/pglib-opf (or downloaded once).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from gridlearn.errors import ConfigError, GridlearnError  # noqa: E402
from gridlearn.grid import load_case  # noqa: E402
from gridlearn.results import start_run  # noqa: E402
from gridlearn.study import study_app  # noqa: E402
from gridlearn.scopf import attack_contingencies, defend, enumerate_contingencies  # noqa: E402
from gridlearn.scopf import schema  # noqa: E402
from gridlearn.scopf.enumeration import sample_contingencies  # noqa: E402
from gridlearn.scopf.dc import DCContingencyModel  # noqa: E402
from gridlearn.scopf.dispatch import base_dispatch, dispatch_cost, solve_scopf  # noqa: E402
from gridlearn.scopf.outages import ElementSpace, set_splits_network  # noqa: E402

log = logging.getLogger("gridlearn.studies.scopf")


def summarise_attacks(table: pd.DataFrame) -> pd.DataFrame:
    """The summary table from the attack table: per (case, k) mean recall, rank, power flows and
    times of attack and enumeration, and enumeration / attack ratios of the last two."""
    summary = table.groupby(["case", "k"]).agg(
        recall=("recall", "mean"), mean_rank=("rank", "mean"), attack_pf=("attack_power_flows", "mean"),
        enum_pf=("enum_power_flows", "mean"), attack_s=("attack_time_s", "mean"), enum_s=("enum_time_s", "mean"),
    ).reset_index()
    summary["pf_ratio"] = summary["enum_pf"] / summary["attack_pf"]
    summary["time_ratio"] = summary["enum_s"] / summary["attack_s"]
    return summary


@dataclass(frozen=True, kw_only=True)
class Config:
    cases: tuple[str, ...] = ("pglib_opf_case14_ieee", "pglib_opf_case30_ieee", "pglib_opf_case57_ieee",
                              "pglib_opf_case118_ieee")
    ks: tuple[int, ...] = (1, 2)
    physics: str = "dc"
    elements: str = "all"
    scenarios: int = 5
    load_spread: float = 0.1
    restarts: int = 16
    steps: int = 30
    seed: int = 0
    defence_case: str = "pglib_opf_case30_ieee"
    defence_k: int = 1
    defence_load_scale: float = 0.6  # PGLib base loads are not preventively N-1 securable in DC
    defence_steps: int = 8
    threads: int = 1
    polish: int = 2
    executor: str = "serial"  # enumeration: serial | local | ray
    chunk_size: int = 16384
    # AC references: enumerate when C(n, k) <= ac_enum_limit, else the best of ac_samples random sets.
    ac_enum_limit: int = 20000
    ac_samples: int = 5000
    defence_cases: tuple[str, ...] = ()  # extra cases for the defence table (cost vs insecure and N-1)
    defence: bool = True  # False: attack-vs-enumeration only (the dashboard then has no defence table)
    results_dir: str | None = None  # results root (default: $GRIDLEARN_RESULTS_DIR or ./results)

    def __post_init__(self):
        if self.physics not in ("dc", "ac"):
            raise ConfigError(f"physics must be 'dc' or 'ac', got {self.physics!r}")
        if self.scenarios < 1 or not self.ks or min(self.ks) < 1:
            raise ConfigError("scenarios must be >= 1 and ks non-empty positive")


def _scenario(net, rng: np.random.Generator, spread: float):
    f = torch.as_tensor(rng.uniform(1 - spread, 1 + spread, net.n_bus), dtype=net.dtype)
    return net.with_(pd_mw=net.bus.pd_mw * f, qd_mvar=net.bus.qd_mvar * f)


def _worst(df: pd.DataFrame) -> float:
    ok = df[df["status"] == "ok"]
    return float(ok["violation_mw"].iloc[0]) if len(ok) else 0.0


def attack_vs_enumeration(cfg: Config) -> pd.DataFrame:
    rows = []
    for case in cfg.cases:
        base = load_case(case)
        rng = np.random.default_rng(cfg.seed)
        for s in range(cfg.scenarios):
            net = base if s == 0 else _scenario(base, rng, cfg.load_spread)
            try:
                pg = base_dispatch(net, cfg.physics)  # DC-OPF, or AC-OPF for physics="ac"
            except GridlearnError as exc:
                log.warning("%s scenario %d: base OPF failed (%s); skipped", case, s, exc)
                continue
            n_el = ElementSpace.of(net, cfg.elements).size
            for k in cfg.ks:
                total = math.comb(n_el, k)
                if cfg.physics == "ac" and total > cfg.ac_enum_limit:
                    enum = sample_contingencies(net, pg, k, cfg.physics, n_samples=cfg.ac_samples, seed=cfg.seed + s,
                                                elements=cfg.elements, executor=cfg.executor, chunk_size=cfg.chunk_size)
                    reference = f"best of {len(enum)} random sets (of {total})"
                else:
                    enum = enumerate_contingencies(net, pg, k, cfg.physics, elements=cfg.elements,
                                                   executor=cfg.executor, chunk_size=cfg.chunk_size)
                    reference = "enumeration"
                res = attack_contingencies(net, pg, k, cfg.physics, elements=cfg.elements, restarts=cfg.restarts,
                                           steps=cfg.steps, seed=cfg.seed + s, polish=cfg.polish)
                ok = enum[enum["status"] == "ok"].reset_index(drop=True)
                worst = _worst(enum)
                found = float(res.ranking["violation_mw"].iloc[0]) if len(res.ranking) else 0.0
                # rank = 1 + number of sets strictly worse than the best found (ties share a rank)
                rank = 1 + int((ok["violation_mw"] > found + 1e-6).sum())
                rows.append({
                    "case": case, "scenario": s, "k": k, "physics": cfg.physics, "reference": reference,
                    "worst_mw": worst, "found_mw": found, "recall": bool(found >= worst - 1e-6), "rank": rank,
                    "worst_outage": str(ok["outage"].iloc[0]) if len(ok) else "", "found_outage": str(res.best),
                    "enum_power_flows": enum.attrs["n_power_flows"], "enum_time_s": enum.attrs["wall_time_s"],
                    "attack_power_flows": res.n_power_flows, "attack_time_s": res.wall_time_s,
                    "attack_method": res.method, "claim": res.claim,
                    "islanded_sets": int((enum["status"] == "islanded").sum()),
                    "not_converged_sets": int((enum["status"] == "not_converged").sum()),
                })
                log.info("%s s%d N-%d: worst %.2f found %.2f rank %d; PF %d vs %d", case, s, k, worst, found, rank,
                         res.n_power_flows, enum.attrs["n_power_flows"])
    return pd.DataFrame(rows)


def _preventive_sets(net, model, n1: pd.DataFrame) -> list[tuple[int, ...]]:
    """The scored N-1 sets a preventive SC-OPF can constrain: those that keep the network in one
    piece. A generator-only island is scored (status "ok") but has no LODF post-outage flows."""
    sets = [model.space.indices_of(o) for o in n1.loc[n1["status"] == "ok", "outage"]]
    split = [s for s in sets if set_splits_network(net, model.space, s)]
    if split:
        log.warning("preventive N-1 SC-OPF: %d sets split the network and are left out: %s", len(split),
                    [model.space.set_labels(s) for s in split])
    return [s for s in sets if s not in split]


def defence_curve(cfg: Config) -> pd.DataFrame:
    net = load_case(cfg.defence_case)
    net = net.with_(pd_mw=net.bus.pd_mw * cfg.defence_load_scale, qd_mvar=net.bus.qd_mvar * cfg.defence_load_scale)
    k = cfg.defence_k
    rows = []

    def score(label, step, pg):
        worst = _worst(enumerate_contingencies(net, pg, k, elements="branches"))
        rows.append({"method": label, "step": step, "cost_usd_per_h": float(dispatch_cost(net, pg)),
                     "worst_violation_mw": worst})

    model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
    pg0, _ = solve_scopf(model)
    score("dcopf (insecure)", 0, pg0)
    n1 = enumerate_contingencies(net, pg0, 1, elements="branches")
    sets = _preventive_sets(net, model, n1)
    try:
        pg_n1, _ = solve_scopf(model, torch.as_tensor(sets))
        score("preventive N-1 SC-OPF (all sets, one QP)", 0, pg_n1)
    except GridlearnError as exc:
        log.warning("preventive N-1 SC-OPF failed: %s", exc)
    for method in ("constraint_generation", "adversarial"):
        t0 = time.perf_counter()
        res = defend(net, k, method=method, max_steps=cfg.defence_steps,
                     attack_options={"restarts": cfg.restarts, "steps": cfg.steps, "seed": cfg.seed})
        for _, r in res.history.iterrows():
            rows.append({"method": method + " (attack's view)", "step": int(r["step"]),
                         "cost_usd_per_h": r["cost_usd_per_h"], "worst_violation_mw": r["worst_violation_mw"]})
        score(method, len(res.history), res.dispatch_mw)
        log.info("defence %s: %s in %.1f s", method, res.status, time.perf_counter() - t0)
    return pd.DataFrame(rows)


def defence_table(cfg: Config) -> pd.DataFrame:
    """Per defence case and method: cost, its increase over the insecure DC-OPF and over the
    preventive N-1 SC-OPF ($/h), and the worst N-1 and N-2 branch violations by enumeration."""
    rows = []
    for case in dict.fromkeys((cfg.defence_case, *cfg.defence_cases)):
        net = load_case(case)
        net = net.with_(pd_mw=net.bus.pd_mw * cfg.defence_load_scale, qd_mvar=net.bus.qd_mvar * cfg.defence_load_scale)
        model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
        dispatches: list[tuple[str, int, str, object, float]] = []
        t0 = time.perf_counter()
        pg0, _ = solve_scopf(model)
        dispatches.append(("DC-OPF (insecure)", 0, "-", pg0, time.perf_counter() - t0))
        n1 = enumerate_contingencies(net, pg0, 1, elements="branches")
        sets = _preventive_sets(net, model, n1)
        t0 = time.perf_counter()
        try:
            pg_n1, _ = solve_scopf(model, torch.as_tensor(sets))
            dispatches.append(("N-1 SC-OPF (all non-islanding N-1 branch sets, one QP)", 1, "secure", pg_n1,
                               time.perf_counter() - t0))
        except GridlearnError as exc:
            log.warning("%s: preventive N-1 SC-OPF failed: %s", case, exc)
            pg_n1 = None
        for k in (1, 2):
            for method in ("constraint_generation", "adversarial"):
                res = defend(net, k, method=method, max_steps=cfg.defence_steps,
                             attack_options={"restarts": cfg.restarts, "steps": cfg.steps, "seed": cfg.seed})
                dispatches.append((f"defend {method}", k, res.status, res.dispatch_mw, res.wall_time_s))
        c0 = float(dispatch_cost(net, pg0))
        c1 = float(dispatch_cost(net, pg_n1)) if pg_n1 is not None else float("nan")
        for label, k, status, pg, wall in dispatches:
            cost = float(dispatch_cost(net, pg))
            w1 = _worst(enumerate_contingencies(net, pg, 1, elements="branches"))
            w2 = _worst(enumerate_contingencies(net, pg, 2, elements="branches"))
            rows.append({"case": case, "load_scale": cfg.defence_load_scale, "method": label, "k_defended": k,
                         "status": status, "cost_usd_per_h": cost, "d_cost_vs_insecure_usd_per_h": cost - c0,
                         "d_cost_vs_n1_scopf_usd_per_h": cost - c1, "worst_n1_violation_mw": w1,
                         "worst_n2_violation_mw": w2, "wall_time_s": wall})
            log.info("defence table %s %s N-%d: %s cost %.2f worst N-1 %.3f N-2 %.3f",
                     case, label, k, status, cost, w1, w2)
    return pd.DataFrame(rows)


def main(cfg: Config, results_dir: str | None = None) -> dict:
    torch.set_num_threads(cfg.threads)
    results_dir = results_dir if results_dir is not None else cfg.results_dir
    with start_run(schema.STUDY, cfg, root=results_dir) as run:
        table = attack_vs_enumeration(cfg)  # no cases (--cases ""): defence only
        if table.empty:
            table = pd.DataFrame(columns=["case", "k", "recall", "rank", "attack_power_flows", "enum_power_flows",
                                          "attack_time_s", "enum_time_s"])
        run.write_table(schema.ATTACK.name, schema.ATTACK.frame(table))
        summary = summarise_attacks(table)
        run.write_table(schema.SUMMARY.name, schema.SUMMARY.frame(summary))
        curve = defence_curve(cfg) if cfg.defence else pd.DataFrame(
            columns=["method", "step", "cost_usd_per_h", "worst_violation_mw"])
        run.write_table(schema.DEFENCE.name, schema.DEFENCE.frame(curve))
        dtable = defence_table(cfg) if cfg.defence else pd.DataFrame()
        if cfg.defence:
            run.write_table(schema.DEFENCE_SUMMARY_TABLE, dtable)
        metrics = {f"recall_{r.case}_k{r.k}": float(r.recall) for r in summary.itertuples()}
        metrics.update({f"pf_ratio_{r.case}_k{r.k}": float(r.pf_ratio) for r in summary.itertuples()})
        run.log_metrics(**metrics)

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        labels = [f"{c.replace('pglib_opf_', '')}\nN-{k}" for c, k in zip(summary["case"], summary["k"])]
        axes[0].bar(labels, summary["recall"])
        axes[0].set_ylabel("recall of the worst set")
        axes[0].set_ylim(0, 1.05)
        axes[1].bar(labels, summary["pf_ratio"])
        axes[1].set_yscale("log")
        axes[1].set_ylabel("power flows: enumeration / attack")
        fig.tight_layout()
        run.save_figure("attack_vs_enumeration", fig)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 4))
        for method, grp in curve.groupby("method"):
            ax.plot(grp["cost_usd_per_h"], grp["worst_violation_mw"], "o-", label=method)
        ax.set_xlabel("dispatch cost ($/h)")
        ax.set_ylabel(f"worst N-{cfg.defence_k} violation (MW)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        run.save_figure("defence_tradeoff", fig)
        plt.close(fig)
        out = {"summary": summary, "defence": curve, "defence_summary": dtable}
    out["run_dir"] = str(run.final_dir)
    log.info("run written to %s", run.final_dir)
    return out


def _cli_main(cfg: Config) -> None:
    """Run the SC-OPF study; print the per-case summary and the run directory."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = main(cfg)
    typer.echo(out["summary"].to_string(index=False))
    typer.echo(out["run_dir"])


# A quick attack-and-defence run on case14 (about a minute): what `make demo` runs.
DEMO = dict(cases=("pglib_opf_case14_ieee",), ks=(1, 2), scenarios=2, restarts=4, steps=10,
            defence_case="pglib_opf_case14_ieee", defence_steps=3)

app = study_app(Config, _cli_main, demo=DEMO, help="Adversarial N-k contingency search vs enumeration, and the defence.")


if __name__ == "__main__":
    app()
