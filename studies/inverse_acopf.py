"""Inverse AC-OPF study: recover costs and line reactances from published dispatch and prices.

Part A follows Donti, Azevedo & Kolter (2018) as far as the paper states it: IEEE 14-bus
with three priced generators, f1 = 2p^2 + 5p, f2 = 4p^2 + 2p, f8 = 5p^2 + p. Choices the
paper leaves open, made here: p in per unit on the 100 MVA base (so c2 [$/MW^2h] = c2_paper / 100^2 and
c1 [$/MWh] = c1_paper / 100; with p in MW the linear terms are ~1% of the marginal cost and c1 is barely
determined by 10% load variation); pandapower's case14 has five
generators, those at buses 1, 2 and 8 (1-indexed) keep the paper's costs and their limits
(pmin set to 0), the two at buses 3 and 6 become synchronous condensers (pmin = pmax = 0,
reactive range kept, zero known cost), as in the original IEEE data. Part B runs larger
cases (noise-free, full observation): case30, PGLib's case57 (``pglib_opf_case57_ieee``;
pandapower's own case57 converts to an infeasible OPF; needs ``GRIDLEARN_DATA_DIR``) and
case118, asking whether every cost coefficient flagged identifiable is recovered within 1%
relative. Part C tries line reactances one at a time beside their identifiability flags. Methods: the gradient method (`recover`, Levenberg-Marquardt
on the KKT sensitivities) and the convex KKT-residual baseline (only where LMPs at
generator buses are published).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Sequence

import numpy as np
import pandas as pd
import torch
import typer

from gridlearn.errors import ConfigError, GridlearnError
from gridlearn.grid import load_case
from gridlearn.inverse import AdaptiveDesign, InverseSolver, Unknown, kkt_residual_costs, recover, simulate_market
from gridlearn.inverse.params import cost_unknowns, current_values, substitute
from gridlearn.inverse import schema
from gridlearn.results import start_run

log = logging.getLogger("gridlearn.studies.inverse_acopf")
app = typer.Typer(add_completion=False)


@dataclass(frozen=True)
class Config:
    paper_samples: Sequence[int] = (1, 2, 3, 5, 10, 20)
    noises: Sequence[float] = (0.0, 0.01, 0.05)
    observes: Sequence[str] = ("pg+lmp", "pg+lmp_gen", "pg")
    large_cases: Sequence[str] = ("case30", "pglib_opf_case57_ieee", "case118")
    large_samples: int = 20
    branches_tried: int = 4  # part C: first lines of case14, reactance unknown
    max_iter: int = 20
    # Loss weights (w_pg, w_lmp) or "variance" (each channel over its observed variance). The
    # paper's 1:100 ignores prices here: with costs per unit (LMPs ~0.1 $/MWh) a 1% price error
    # weighs 1e-4 against 1 MW^2, so with noise the fit is p_g alone (case14, 1%, 20 samples: max
    # error 690% vs 44% with "variance").
    weights: str | tuple = "variance"
    prior_spread: float = 0.3  # prior = truth * U(1 - spread, 1 + spread)
    # part D: randomised-prior sweep (noise-free, p_g + all LMPs), `sweep_draws` priors per case at
    # +-`sweep_spread`, with the default start (init="auto"); `sweep_prior_init_cases` also run the
    # gradient method alone from the prior (init="prior", one start) to show what the contract reports
    sweep_cases: Sequence[str] = ("case14", "case30", "pglib_opf_case57_ieee", "pglib_opf_case118_ieee")
    sweep_draws: int = 10
    sweep_spread: float = 0.5
    sweep_samples: int = 20
    sweep_prior_init_cases: Sequence[str] = ("case14",)
    # Load scenarios of parts D-F (`simulate_market`'s ``level_range``; per-bus factors +-10% on
    # top): half the system levels stratified over 90-110% of the base load (the +-10% of the
    # earlier design), half over 60-100%. PGLib case57/case118 have linear costs: a unit prices its
    # bus only while marginal, and +-10% keeps the same units marginal in every sample (case57: 2 of
    # its 4 units with capacity, case118: 5 of 19); the low-load half walks the marginal unit down
    # the merit order (3 of 4, 9 of 19), while the high half keeps the units that are marginal only
    # near peak (MATPOWER case14's bus-6 unit, at pmin below ~105%). Chosen from the simulated
    # dispatch alone (which units leave their limits), never from the inverse fits.
    level_range: tuple | None = ((0.9, 1.1), (0.6, 1.0))
    # Load design of parts D and E (`simulate_market`'s ``design``): "adaptive" chooses the
    # `sweep_samples` hours out of 2x as many candidates over `sweep_level_range` (None: 10-130% of
    # base load), bisecting where the set of units at their limits changes, and picks the hours that
    # move the most units off their limits twice (it reads the published dispatch only). Over
    # 60-110% the stratified design moved 9 of PGLib case118's 19 units and 3 of case57's 4; the
    # adaptive one 17-18 and 4 (seeds 0-2). "stratified" uses `level_range` as before.
    sweep_design: str = "adaptive"
    sweep_level_range: tuple | None = None
    sweep_cover: int = 2  # adaptive design: distinct off-limit hours wanted per unit (`AdaptiveDesign.cover`)
    # part E: partial observations on `partial_case`: p_g alone, LMPs at generator buses, LMPs at a
    # random half of the generator buses; each with init="auto" and init="prior", `partial_draws` priors
    partial_case: str = "case14"
    partial_draws: int = 3
    # part F: noise. One set of `noise_samples` scenarios per case, `noise_replicates` noise draws
    # per level on it (multiplicative, as simulate_market), default start; coverage of +-2 std_err
    noise_cases: Sequence[str] = ("case9", "case14", "case30")
    noise_levels: Sequence[float] = (0.01, 0.05)
    noise_replicates: int = 10
    noise_samples: int = 10
    parts: Sequence[str] = ("paper", "large", "admittance", "sweep", "partial", "noise")
    large_prior_spreads: Sequence[float] = (0.1, 0.3)  # part B: the larger cases, each prior spread
    seed: int = 0
    # How every fit solves its samples' AC-OPFs (`InverseSolver.backend`): "ipopt" (one solve per
    # sample, the reference) or "torch" (all samples in one batched interior point); compared in
    # benchmarks/bench_inverse_backends.py. The market data are simulated with Ipopt either way.
    backend: str = "ipopt"

    def __post_init__(self):
        from gridlearn.inverse.recovery import BACKENDS

        if self.backend not in BACKENDS:  # here, not in each fit: a fit's error is a table row, not a stop
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")


def paper_case14():
    """pandapower case14 with the paper's three priced generators (see module docstring).

    pandapower's copy, by name: its bus labels are 0-based (MATPOWER's own file, which
    `load_case("case14")` reads, labels buses by their 1-based MATPOWER numbers)."""
    net = load_case("pandapower:case14")
    bus_1idx = [int(net.bus.labels[int(b)]) + 1 for b in net.gen.bus]
    costs = {1: (2.0, 5.0), 2: (4.0, 2.0), 8: (5.0, 1.0)}
    c2, c1, c0 = (torch.zeros(net.n_gen, dtype=torch.float64) for _ in range(3))
    pmin, pmax = net.gen.pmin_mw.clone(), net.gen.pmax_mw.clone()
    for g, b in enumerate(bus_1idx):
        if b in costs:
            c2[g], c1[g] = costs[b][0] / net.base_mva**2, costs[b][1] / net.base_mva
            pmin[g] = 0.0
        else:
            pmin[g] = pmax[g] = 0.0
    if sorted(b for b in bus_1idx if b in costs) != [1, 2, 8]:
        raise ConfigError(f"pandapower case14 generators sit at buses {bus_1idx}, expected 1, 2, 8 among them")
    net = net.with_(cost_c2_usd_per_mw2h=c2, cost_c1_usd_per_mwh=c1, cost_c0_usd_per_h=c0, pmin_mw=pmin, pmax_mw=pmax)
    priced = [g for g, b in enumerate(bus_1idx) if b in costs]
    return net, priced


def _design(cfg: Config) -> dict:
    """`simulate_market` keywords of the sweep's load design (parts D and E)."""
    if cfg.sweep_design == "adaptive":
        return {"design": AdaptiveDesign(cover=cfg.sweep_cover), "level_range": cfg.sweep_level_range}
    return {"design": cfg.sweep_design, "level_range": cfg.level_range}


def _prior(net, unknowns, spread, seed):
    th = current_values(net, unknowns)
    g = torch.Generator().manual_seed(seed)
    return substitute(net, unknowns, th * (1 - spread + 2 * spread * torch.rand(th.shape, generator=g, dtype=torch.float64)))


def _errors(df) -> dict:
    # A coefficient whose true value is 0 (PGLib case57's linear costs: c2 = 0) has no relative
    # error: those are left out of the relative errors and reported as an absolute error.
    zero = df["true"].abs().to_numpy() == 0
    err = (df["value"] - df["true"]).abs()
    rel = err[~zero] / df["true"].abs()[~zero]
    ident = df["identifiable"].astype(bool) if "identifiable" in df else pd.Series(True, index=df.index)
    ident_rel = ident[~zero]
    worst = float(rel[ident_rel].max()) if ident_rel.any() else np.nan
    return {"max_rel_err": float(rel.max()) if len(rel) else np.nan, "max_rel_err_identifiable": worst,
            "max_abs_err_true_zero": float(err[zero].max()) if zero.any() else np.nan,
            "median_rel_err_identifiable": float(rel[ident_rel].median()) if ident_rel.any() else np.nan,
            "n_identifiable": int(ident.sum()), "n_params": len(df),
            "identifiable_within_1pct": bool(ident_rel.any() and worst < 0.01)}


def _gradient_row(prior, obs, unknown, truth, cfg):
    t0 = time.perf_counter()
    try:
        res = recover(prior, obs, unknown, weights=cfg.weights, truth=truth,
                      solver=InverseSolver(method="lm", max_iter=cfg.max_iter, backend=cfg.backend))
    except GridlearnError as exc:
        log.warning("gradient method failed: %s", exc)
        return {"method": "gradient", "error": str(exc)[:200]}, None
    t = res.timings
    iters = max(res.iterations, 1)
    row = {"method": "gradient", "status": res.status.value, "start": res.start, "n_starts": len(res.starts),
           "time_s": time.perf_counter() - t0, "iterations": res.iterations,
           "rejected_steps": res.n_rejected_steps, "final_loss": res.loss_history[-1], **_errors(res.parameters),
           "forward_s": t["forward_s"], "jacobian_s": t["jacobian_s"], "n_forward": t["n_forward"],
           "time_per_iter_s": (t["forward_s"] + t["jacobian_s"]) / iters,
           "report_rank": res.report.rank if res.report is not None else np.nan}
    return row, res


def _baseline_row(net, obs, gens, truth):
    try:
        b = kkt_residual_costs(net, obs, gens=gens, truth=truth)
    except ConfigError as exc:
        return {"method": "kkt_baseline", "error": "not applicable: " + str(exc)[:120]}
    except GridlearnError as exc:
        return {"method": "kkt_baseline", "error": str(exc)[:200]}
    return {"method": "kkt_baseline", "time_s": b.solve_time_s, **_errors(b.parameters)}


def _draw_row(res, truth, units: set[int] | None = None) -> dict:
    """One draw of the sweep: status, start, what is flagged and how wrong the flagged values are.
    ``units``: the generators with capacity (pmax > pmin); the others' costs change nothing."""
    df = res.parameters
    e = _errors(df)
    flagged = df["identifiable"].to_numpy(dtype=bool)
    gens = {u.position for u, f in zip(res.unknowns, flagged) if f and u.kind == "c1"}
    return {"status": res.status.value, "converged": res.converged, "start": res.start, "n_starts": len(res.starts),
            "iterations": res.iterations, "final_loss": res.final_loss, "n_flagged": int(flagged.sum()),
            "n_params": len(df), "n_gen": truth.n_gen, "n_gen_identifiable": len(gens),
            "n_units": len(units) if units is not None else np.nan,
            "n_units_identifiable": len(gens & units) if units is not None else np.nan,
            "worst_rel_err_flagged": e["max_rel_err_identifiable"],
            "worst_abs_err_flagged_true_zero": _flagged_zero_abs(df),
            "flagged_within_1pct": bool(not flagged.any() or not e["max_rel_err_identifiable"] >= 0.01),
            "time_s": res.timings.get("total_s", np.nan), "hours_left_out": str(res.hours_left_out),
            "message": res.message[:300]}


def _flagged_zero_abs(df) -> float:
    zero = (df["true"].abs() == 0) & df["identifiable"].astype(bool)
    return float((df["value"] - df["true"]).abs()[zero].max()) if zero.any() else np.nan


def _generator_evidence(case, net, obs) -> list[dict]:
    """Per generator: how often it sits at each limit in the simulated data, and whether the data
    can separate its c2 from its c1 (off its limits in two samples with different dispatch)."""
    from gridlearn.inverse.baseline import _separable

    lo, hi = obs.at_pmin.numpy(), obs.at_pmax.numpy()
    pg = obs.pg_mw.detach().double().numpy()
    sep = _separable(pg, lo | hi)
    rows = []
    for g in range(net.n_gen):
        free = ~(lo[:, g] | hi[:, g])
        pmin, pmax = float(net.gen.pmin_mw[g]), float(net.gen.pmax_mw[g])
        rows.append({"case": case, "gen": g, "element": str(net.gen.labels[g]), "bus": int(net.gen.bus[g]),
                     "pmin_mw": pmin, "pmax_mw": pmax, "has_capacity": pmax - pmin > 1e-6,
                     "c2_true": float(net.gen.cost_c2_usd_per_mw2h[g]), "c1_true": float(net.gen.cost_c1_usd_per_mwh[g]),
                     "n_at_pmin": int(lo[:, g].sum()), "n_at_pmax": int(hi[:, g].sum()), "n_free": int(free.sum()),
                     "free_dispatch_spread_mw": float(np.ptp(pg[free, g])) if free.any() else 0.0,
                     "separable_in_data": bool(sep[g])})
    return rows


def _generator_verdicts(gen_rows: list[dict], results: list) -> None:
    """Add, per generator, the fraction of draws flagging its c1 and c2 and the reasons given (converged draws)."""
    for row in gen_rows:
        flags = {"c1": [], "c2": []}
        reasons = {"c1": [], "c2": []}
        for res in results:
            for u, (_, r) in zip(res.unknowns, res.parameters.iterrows()):
                if u.position == row["gen"] and u.kind in flags:
                    flags[u.kind].append(bool(r["identifiable"]))
                    reasons[u.kind].append(r["reason"] or "identifiable")
        for kind in ("c1", "c2"):
            row[f"fraction_draws_{kind}_flagged"] = float(np.mean(flags[kind])) if flags[kind] else np.nan
            row[f"{kind}_reasons"] = ",".join(f"{k}:{v}" for k, v in pd.Series(reasons[kind]).value_counts().items())


def sweep(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Part D: (per-draw rows, per-case summary, per-generator evidence) of the randomised-prior
    sweep (see `Config`). The evidence says, per generator, how often the simulated data hold it at
    each limit and how often the fits flag its costs, with the reasons."""
    rows, gen_rows = [], []
    for case in cfg.sweep_cases:
        try:
            net = load_case(case)
            obs = simulate_market(net, cfg.sweep_samples, seed=cfg.seed, ipopt_tol=1e-9, **_design(cfg))
        except GridlearnError as exc:
            log.warning("sweep: case %s skipped: %s", case, exc)
            rows.append({"case": case, "init": "auto", "error": str(exc)[:200]})
            continue
        unk = cost_unknowns(net)
        evidence = _generator_evidence(case, net, obs)
        units = {r["gen"] for r in evidence if r["has_capacity"]}
        inits = ("auto", "prior") if case in cfg.sweep_prior_init_cases else ("auto",)
        for init in inits:
            solver = InverseSolver(init=init, n_starts=1 if init == "prior" else InverseSolver().n_starts,
                                   max_iter=cfg.max_iter, backend=cfg.backend)
            fits = []
            for d in range(cfg.sweep_draws):
                prior = _prior(net, unk, cfg.sweep_spread, cfg.seed + 1000 + d)
                common = {"case": case, "init": init, "draw": d, "n_samples": obs.n_samples, "n_dropped": obs.n_dropped,
                          "n_candidates": obs.n_candidates, "design": cfg.sweep_design}
                try:
                    res = recover(prior, obs, "costs", weights=(1.0, 100.0), solver=solver, truth=net)
                except GridlearnError as exc:
                    rows.append({**common, "error": str(exc)[:200]})
                    continue
                fits.append(res)
                rows.append({**common, **_draw_row(res, net, units)})
                log.info("D %s %s draw %d: %s", case, init, d,
                         {k: rows[-1][k] for k in ("status", "n_flagged", "n_gen_identifiable", "worst_rel_err_flagged")})
            if init == "auto":
                _generator_verdicts(evidence, fits)
        gen_rows += evidence
    draws = pd.DataFrame(rows)
    return draws, _summary(draws, ["case", "init"]), pd.DataFrame(gen_rows)


def _summary(draws: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    ok = draws[draws["status"].notna()] if "status" in draws else draws.iloc[:0]
    if ok.empty:
        return pd.DataFrame(columns=keys)
    g = ok.groupby(keys, sort=False)
    return pd.DataFrame({
        "draws": g.size(), "fraction_converged": g["converged"].mean(),
        "worst_rel_err_flagged": g["worst_rel_err_flagged"].max(),
        "worst_abs_err_flagged_true_zero": g["worst_abs_err_flagged_true_zero"].max(),
        "every_flagged_within_1pct": g["flagged_within_1pct"].all(),
        "min_flagged": g["n_flagged"].min(), "max_flagged": g["n_flagged"].max(), "n_params": g["n_params"].first(),
        "min_gen_identifiable": g["n_gen_identifiable"].min(), "max_gen_identifiable": g["n_gen_identifiable"].max(),
        "n_gen": g["n_gen"].first(), "n_units": g["n_units"].first(),
        "median_time_s": g["time_s"].median(),
    }).reset_index()


def partial_observations(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Part E: what reaches the basin, and what is flagged, with p_g alone or prices at some buses only."""
    net = load_case(cfg.partial_case)
    gen_buses = sorted(set(net.gen.bus.tolist()))
    rng = np.random.default_rng(cfg.seed)
    half = sorted(rng.choice(gen_buses, size=max(1, len(gen_buses) // 2), replace=False).tolist())
    settings = {"pg": "pg", "pg+lmp_gen": "pg+lmp_gen", "pg+lmp_half_gen_buses": half}
    unk = cost_unknowns(net)
    rows = []
    for name, observe in settings.items():
        obs = simulate_market(net, cfg.sweep_samples, seed=cfg.seed, ipopt_tol=1e-9, observe=observe, **_design(cfg))
        for init in ("auto", "prior"):
            solver = InverseSolver(init=init, n_starts=1 if init == "prior" else InverseSolver().n_starts,
                                   max_iter=cfg.max_iter, backend=cfg.backend)
            for d in range(cfg.partial_draws):
                prior = _prior(net, unk, cfg.sweep_spread, cfg.seed + 1000 + d)
                common = {"case": cfg.partial_case, "observe": name, "lmp_buses": str(list(obs.lmp_buses.tolist())),
                          "init": init, "draw": d}
                try:
                    res = recover(prior, obs, "costs", solver=solver, truth=net)
                except GridlearnError as exc:
                    rows.append({**common, "error": str(exc)[:200]})
                    continue
                e = _errors(res.parameters)
                rows.append({**common, **_draw_row(res, net), "max_rel_err_all": e["max_rel_err"],
                             "max_rel_err_up_to_scale": _error_up_to_scale(res.parameters)})
                log.info("E %s %s draw %d: %s", name, init, d, rows[-1]["status"])
    draws = pd.DataFrame(rows)
    summ = _summary(draws, ["observe", "init"])
    if not summ.empty:
        g = draws.groupby(["observe", "init"], sort=False)
        summ["median_max_rel_err_all"] = g["max_rel_err_all"].median().values
        summ["median_max_rel_err_up_to_scale"] = g["max_rel_err_up_to_scale"].median().values
    return draws, summ


def _error_up_to_scale(df) -> float:
    """Max relative error of every coefficient after dividing out one common factor (the median of
    value / true): what p_g alone can determine, since scaling every cost leaves the dispatch unchanged."""
    nz = df["true"].abs().to_numpy() > 0
    value, true = df["value"].to_numpy()[nz], df["true"].to_numpy()[nz]
    if not nz.any():
        return np.nan
    alpha = float(np.median(value / true))
    return float(np.max(np.abs(value / alpha - true) / np.abs(true))) if alpha > 0 else np.nan


def noise_coverage(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Part F: (per-coefficient rows, per case and noise level summary): errors, standard errors, coverage."""
    import dataclasses

    rows = []
    for case in cfg.noise_cases:
        net = load_case(case)
        base = simulate_market(net, cfg.noise_samples, seed=cfg.seed, ipopt_tol=1e-9, level_range=cfg.level_range)
        lmp_true = base.lmp_true_usd_per_mwh[:, base.lmp_buses]
        for noise in cfg.noise_levels:
            rng = np.random.default_rng(cfg.seed + 7)
            for rep in range(cfg.noise_replicates):
                pg = base.pg_true_mw * (1 + noise * torch.as_tensor(rng.standard_normal(base.pg_mw.shape)))
                lmp = lmp_true * (1 + noise * torch.as_tensor(rng.standard_normal(lmp_true.shape)))
                obs = dataclasses.replace(base, pg_mw=pg, lmp_usd_per_mwh=lmp, noise=noise)
                res = recover(net, obs, "costs", solver=InverseSolver(max_iter=cfg.max_iter, backend=cfg.backend),
                              truth=net)
                df = res.parameters.reset_index()
                df["element"] = df["element"].astype(str)
                df = df.assign(case=case, noise=noise, replicate=rep, status=res.status.value,
                               t_stat=res.fit.t_stat if res.fit else np.nan, dof=res.fit.dof if res.fit else np.nan)
                rows.append(df)
                log.info("F %s noise %g rep %d: %s", case, noise, rep, res.status.value)
    coef = pd.concat(rows, ignore_index=True)
    coef["rel_err"] = (coef["value"] - coef["true"]).abs() / coef["true"].abs()
    coef["z"] = (coef["value"] - coef["true"]) / coef["std_err"]
    coef["rel_std_err"] = coef["std_err"] / coef["true"].abs()
    flagged = coef[coef["identifiable"].astype(bool)]
    g = flagged.groupby(["case", "noise"], sort=False)
    summary = pd.DataFrame({
        "intervals": g.size(), "coverage_2se": g["z"].apply(lambda z: float((z.abs() <= 2).mean())),
        "mean_z2": g["z"].apply(lambda z: float((z**2).mean())),
        "median_rel_err_flagged": g["rel_err"].median(), "max_rel_err_flagged": g["rel_err"].max(),
        "median_rel_std_err": g["rel_std_err"].median(),
    }).reset_index()
    conv = coef.drop_duplicates(["case", "noise", "replicate"]).groupby(["case", "noise"], sort=False)["status"]
    summary["fraction_converged"] = conv.apply(lambda s: float((s == "converged").mean())).values
    return coef, summary


def main(cfg: Config, root=None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with start_run(schema.STUDY, asdict(cfg), root=root) as run:
        out: dict = {}
        if "sweep" in cfg.parts:  # part D first: the issue-22 targets
            draws, summary, generators = sweep(cfg)
            run.write_table(schema.SWEEP_DRAWS.name, schema.SWEEP_DRAWS.frame(draws))
            run.write_table(schema.SWEEP_GENERATORS.name, schema.SWEEP_GENERATORS.frame(generators))
            run.write_table(schema.SWEEP_SUMMARY.name, schema.SWEEP_SUMMARY.frame(summary))
            out["sweep_summary"] = summary
        if "partial" in cfg.parts:
            pdraws, psummary = partial_observations(cfg)
            run.write_table(schema.PARTIAL_DRAWS.name, schema.PARTIAL_DRAWS.frame(pdraws))
            run.write_table(schema.PARTIAL_SUMMARY.name, schema.PARTIAL_SUMMARY.frame(psummary))
            out["partial_summary"] = psummary
        if "noise" in cfg.parts:
            coef, nsummary = noise_coverage(cfg)
            run.write_table(schema.NOISE_COEFFICIENTS.name, schema.NOISE_COEFFICIENTS.frame(coef))
            run.write_table(schema.NOISE_SUMMARY.name, schema.NOISE_SUMMARY.frame(nsummary))
            out["noise_summary"] = nsummary
        if not {"paper", "large", "admittance"} & set(cfg.parts):
            run.log_metrics(**_sweep_metrics(out))
            return {"run_dir": str(run.final_dir), **out}
        # ---------------- part A: the paper's experiment
        truth, priced = paper_case14()
        unknowns = cost_unknowns(truth, priced)
        prior = _prior(truth, unknowns, cfg.prior_spread, cfg.seed)
        rows, ident_rows = [], []
        for observe in cfg.observes:
            for noise in cfg.noises:
                full = simulate_market(truth, max(cfg.paper_samples), noise=noise, observe=observe, seed=cfg.seed,
                                       ipopt_tol=1e-9)
                for n in cfg.paper_samples:
                    obs = full.subset(min(n, full.n_samples))
                    common = {"case": "case14-paper", "observe": observe, "noise": noise, "n_samples": obs.n_samples,
                              "n_dropped": full.n_dropped, "prior_spread": cfg.prior_spread}
                    row, res = _gradient_row(prior, obs, unknowns, truth, cfg)
                    rows.append({**common, **row})
                    rows.append({**common, **_baseline_row(truth, obs, priced, truth)})
                    if res is not None:
                        df = res.parameters.reset_index()
                        df["element"] = df["element"].astype(str)
                        ident_rows.append(df.assign(**common))
                    log.info("A %s noise=%g n=%d: %s", observe, noise, n, rows[-2])
        # ---------------- part B: larger cases, noise-free, full observation
        for case in cfg.large_cases:
            try:
                net = load_case(case)
                obs = simulate_market(net, cfg.large_samples, seed=cfg.seed, ipopt_tol=1e-9)
            except GridlearnError as exc:  # e.g. PGLib data not found: say so in the table, run the rest
                log.warning("case %s skipped: %s", case, exc)
                rows.append({"case": case, "observe": "pg+lmp", "noise": 0.0, "n_samples": 0, "method": "gradient",
                             "error": str(exc)[:200]})
                continue
            unk = cost_unknowns(net)
            common = {"case": case, "observe": "pg+lmp", "noise": 0.0, "n_samples": obs.n_samples,
                      "n_dropped": obs.n_dropped}
            for spread in cfg.large_prior_spreads:
                row, res = _gradient_row(_prior(net, unk, spread, cfg.seed), obs, "costs", net, cfg)
                rows.append({**common, "prior_spread": spread, **row})
                log.info("B %s spread %g: %s", case, spread, rows[-1])
                if res is not None:
                    df = res.parameters.reset_index()
                    df["element"] = df["element"].astype(str)
                    run.write_table(f"parameters_{case}_prior{spread:g}", df)
            rows.append({**common, **_baseline_row(net, obs, None, net)})
        results = pd.DataFrame(rows)
        run.write_table(schema.RECOVERY.name, schema.RECOVERY.frame(results))
        if ident_rows:
            run.write_table(schema.PARAMETERS.name, schema.PARAMETERS.frame(pd.concat(ident_rows, ignore_index=True)))

        # ---------------- part C: line reactances, one at a time, costs known
        obs = simulate_market(truth, 10, seed=cfg.seed, ipopt_tol=1e-9)
        adm_rows = []
        lines = [k for k, lbl in enumerate(truth.branch.labels) if lbl[0] == "line"][: cfg.branches_tried]
        for k in lines:
            unk = [Unknown("x", k)]
            row, res = _gradient_row(_prior(truth, unk, cfg.prior_spread, cfg.seed + k), obs, unk, truth, cfg)
            if res is not None:
                row.update(identifiable=bool(res.parameters["identifiable"].iloc[0]),
                           rel_std=float(res.parameters["rel_std"].iloc[0]))
            adm_rows.append({"branch": str(truth.branch.labels[k]), **row})
        adm = pd.DataFrame(adm_rows)
        run.write_table(schema.ADMITTANCE.name, schema.ADMITTANCE.frame(adm))

        # ---------------- plots
        ok = results[results.get("error").isna()] if "error" in results else results
        fig, axes = plt.subplots(1, len(cfg.observes), figsize=(5 * len(cfg.observes), 4), squeeze=False)
        for ax, observe in zip(axes[0], cfg.observes):
            for (method, noise), grp in ok[(ok.case == "case14-paper") & (ok.observe == observe)].groupby(["method", "noise"]):
                ax.semilogy(grp.n_samples, grp.max_rel_err_identifiable.clip(lower=1e-12), marker="o",
                            linestyle="-" if method == "gradient" else "--", label=f"{method}, noise {noise:g}")
            ax.set(title=f"case14 (paper), observe {observe}", xlabel="samples", ylabel="max rel. error (identifiable)")
            ax.legend(fontsize=7)
        run.save_figure("error_vs_samples.png", fig)
        metrics = {"n_runs": len(results), "paper_noise_free_full_max_rel_err": float(
            ok[(ok.case == "case14-paper") & (ok.observe == "pg+lmp") & (ok.noise == 0) & (ok.method == "gradient")]
            .max_rel_err_identifiable.min()) if len(ok) else float("nan")}
        metrics.update(_sweep_metrics(out))
        run.log_metrics(**metrics)
        return {"run_dir": str(run.final_dir), "recovery": results, "admittance": adm, **metrics, **out}


def _sweep_metrics(out: dict) -> dict:
    summ = out.get("sweep_summary")
    if summ is None or summ.empty:
        return {}
    auto = summ[summ["init"] == "auto"]
    return {"sweep_min_fraction_converged": float(auto["fraction_converged"].min()),
            "sweep_worst_rel_err_flagged": float(auto["worst_rel_err_flagged"].max()),
            "sweep_every_flagged_within_1pct": bool(auto["every_flagged_within_1pct"].all())}


@app.command()
def run(quick: bool = typer.Option(False, help="a tiny configuration (seconds), for smoke tests"),
        backend: Annotated[str, typer.Option(help="AC-OPF of the fits: 'ipopt' (one solve per sample) or 'torch' (one "
                                             "batched interior point; single-threaded runs want NUMBA_NUM_THREADS=1)")
                           ] = "ipopt") -> None:
    """Run the inverse AC-OPF study and print the run directory."""
    logging.basicConfig(level=logging.WARNING)  # INFO on the root would echo cyipopt's per-callback log lines
    logging.getLogger("gridlearn").setLevel(logging.INFO)
    cfg = Config(paper_samples=(2, 5), noises=(0.0,), observes=("pg+lmp", "pg"), large_cases=(), branches_tried=1,
                 max_iter=8, sweep_cases=("case14",), sweep_draws=2, sweep_samples=5, sweep_prior_init_cases=(),
                 parts=("paper", "large", "admittance", "sweep"), backend=backend) if quick else Config(backend=backend)
    out = main(cfg)
    typer.echo(out["run_dir"])


if __name__ == "__main__":
    app()
