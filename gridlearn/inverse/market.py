"""`simulate_market`: what a market operator publishes, simulated with AC-OPF under true parameters.

Each scenario scales the base demand bus by bus (a common level times a per-bus factor,
reactive demand scaled with its active demand, so power factors are kept), solves the
AC-OPF with `solve_acopf_status`, and records the dispatch ``p_g``, the LMPs
(``lmp_i = d objective / d pd_i``, $/MWh) and which generator limits bind. Scenarios where
Ipopt does not converge (infeasible load, iteration limit) are dropped and counted: they
never enter the observations. Noise, when asked, is multiplicative Gaussian:
``y_obs = y (1 + noise * N(0, 1))`` on ``p_g`` and on the published LMPs.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from gridlearn.errors import ConfigError, DataError
from gridlearn.inverse.design import AdaptiveDesign, adaptive_hours

log = logging.getLogger(__name__)

#: The observation settings `simulate_market` knows (or give a sequence of bus positions).
OBSERVE = {
    "pg+lmp": "p_g and the LMPs of every bus",
    "pg+lmp_gen": "p_g and the LMPs of generator buses only",
    "pg": "p_g alone (no prices published)",
}
# A generator within this many MW of a limit counts as sitting at it (Ipopt's interior
# point stops ~1e-8 pu inside a bound; 1e-3 MW is far above that and far below any ramp).
LIMIT_TOL_MW = 1e-3
#: Load designs `simulate_market` knows.
DESIGNS = {
    "stratified": "levels drawn (or stratified over level_range); failed scenarios dropped",
    "adaptive": "hours chosen from candidates to move the most units off their limits (gridlearn.inverse.design)",
}
#: The adaptive design's load range when none is given (fraction of base load): wide, because with
#: linear costs some units are marginal only near 10% or above 100% of load (PGLib case57, case118).
ADAPTIVE_RANGE = (0.1, 1.3)


@dataclass(frozen=True)
class Observations:
    """Published market data for ``n_samples`` load scenarios of one network.

    Attributes (S = n_samples):
        pd_mw, qd_mvar: (S, n_bus) demand of each scenario (known to the inverse problem).
        pg_mw: (S, n_gen) published dispatch (with noise if any).
        lmp_usd_per_mwh: (S, n_lmp) published LMPs at ``lmp_buses`` (n_lmp may be 0).
        lmp_buses: long (n_lmp,) bus positions (in the `Network`) whose LMP is published.
        at_pmin, at_pmax: bool (S, n_gen) generator at its lower / upper limit in the
            true solution (public: the limits are known and the dispatch is published).
        noise: the relative standard deviation used (0 = exact).
        observe: the observation setting's name.
        n_requested, n_dropped: scenarios asked for, and dropped because the AC-OPF failed.
        n_candidates: hours solved to choose from (the adaptive design; = n_samples otherwise).
        pg_true_mw, lmp_true_usd_per_mwh: (S, n_gen), (S, n_bus) noise-free truth, for
            evaluation only (the inverse methods never read them).

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.inverse import simulate_market
    >>> truth = load_case("case9")
    >>> obs = simulate_market(truth, 3, seed=0)                 # 3 load scenarios, prices at every bus
    >>> obs.n_samples, tuple(obs.pg_mw.shape), tuple(obs.lmp_usd_per_mwh.shape), obs.has_lmp, obs.observe
    (3, (3, 3), (3, 9), True, 'pg+lmp')
    >>> obs.subset(2).n_samples, simulate_market(truth, 2, observe="pg").has_lmp
    (2, False)
    >>> obs.subset(1).validate(load_case("case14"))
    Traceback (most recent call last):
    ...
    gridlearn.errors.DataError: observations.pd_mw has shape (1, 9) but network case14 needs (1, 14) (n_samples, n_bus)
    """

    pd_mw: Tensor
    qd_mvar: Tensor
    pg_mw: Tensor
    lmp_usd_per_mwh: Tensor
    lmp_buses: Tensor
    at_pmin: Tensor
    at_pmax: Tensor
    noise: float = 0.0
    observe: str = "pg+lmp"
    n_requested: int = 0
    n_dropped: int = 0
    n_candidates: int = 0
    pg_true_mw: Tensor | None = None
    lmp_true_usd_per_mwh: Tensor | None = None

    @property
    def n_samples(self) -> int:
        return int(self.pg_mw.shape[0])

    @property
    def has_lmp(self) -> bool:
        return int(self.lmp_buses.numel()) > 0

    def subset(self, n: int) -> "Observations":
        """The first ``n`` scenarios (for error-versus-samples curves)."""
        if not 1 <= n <= self.n_samples:
            raise ValueError(f"n must be in 1..{self.n_samples}, got {n}")

        def cut(t):
            return None if t is None else t[:n]

        return Observations(
            pd_mw=self.pd_mw[:n], qd_mvar=self.qd_mvar[:n], pg_mw=self.pg_mw[:n],
            lmp_usd_per_mwh=self.lmp_usd_per_mwh[:n], lmp_buses=self.lmp_buses, at_pmin=self.at_pmin[:n],
            at_pmax=self.at_pmax[:n], noise=self.noise, observe=self.observe, n_requested=self.n_requested,
            n_dropped=self.n_dropped, n_candidates=self.n_candidates, pg_true_mw=cut(self.pg_true_mw), lmp_true_usd_per_mwh=cut(self.lmp_true_usd_per_mwh),
        )

    def select(self, samples: Sequence[int]) -> "Observations":
        """The scenarios at positions ``samples``, in that order."""
        idx = torch.as_tensor(list(samples), dtype=torch.long)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.n_samples:
            raise ValueError(f"samples must be positions in 0..{self.n_samples - 1}, got {list(samples)}")

        def cut(t):
            return None if t is None else t[idx]

        return dataclasses.replace(
            self, pd_mw=self.pd_mw[idx], qd_mvar=self.qd_mvar[idx], pg_mw=self.pg_mw[idx],
            lmp_usd_per_mwh=self.lmp_usd_per_mwh[idx], at_pmin=self.at_pmin[idx], at_pmax=self.at_pmax[idx],
            pg_true_mw=cut(self.pg_true_mw), lmp_true_usd_per_mwh=cut(self.lmp_true_usd_per_mwh))

    def validate(self, network) -> None:
        """Raise `DataError` unless the shapes match ``network`` and every value is finite."""
        s = self.pg_mw.shape[0] if self.pg_mw.dim() == 2 else -1
        if s == 0:
            raise DataError("observations hold zero samples: simulate or load at least one scenario")
        expected = {
            "pd_mw": (s, network.n_bus),
            "qd_mvar": (s, network.n_bus),
            "pg_mw": (s, network.n_gen),
            "lmp_usd_per_mwh": (s, int(self.lmp_buses.numel())),
            "at_pmin": (s, network.n_gen),
            "at_pmax": (s, network.n_gen),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise DataError(
                    f"observations.{name} has shape {got} but network {network.name or ''} needs {shape} "
                    f"(n_samples, {'n_gen' if 'pg' in name or 'at_' in name else 'n_bus' if 'd_' in name else 'n_lmp'})"
                )
        if self.lmp_buses.numel() and (int(self.lmp_buses.min()) < 0 or int(self.lmp_buses.max()) >= network.n_bus):
            raise DataError(f"observations.lmp_buses must lie in 0..{network.n_bus - 1}, got {self.lmp_buses.tolist()}")
        for name in ("pd_mw", "qd_mvar", "pg_mw", "lmp_usd_per_mwh"):
            v = getattr(self, name)
            bad = ~torch.isfinite(v)
            if bad.any():
                i, j = (int(k) for k in torch.nonzero(bad)[0])
                raise DataError(f"observations.{name} has a non-finite value {float(v[i, j])} at sample {i}, column {j}")


def lmp_buses_for(network, observe: str | Sequence[int]) -> tuple[str, Tensor]:
    """(name, bus positions) of the LMPs published under ``observe``."""
    if isinstance(observe, str):
        if observe == "pg+lmp":
            return observe, torch.arange(network.n_bus)
        if observe == "pg+lmp_gen":
            return observe, torch.unique(network.gen.bus.cpu())
        if observe == "pg":
            return observe, torch.zeros(0, dtype=torch.long)
        raise ConfigError(f"unknown observe setting {observe!r}; choose one of {sorted(OBSERVE)} or give bus positions")
    buses = torch.as_tensor(list(observe), dtype=torch.long)
    if buses.numel() and (int(buses.min()) < 0 or int(buses.max()) >= network.n_bus):
        raise ConfigError(f"observe: bus positions must lie in 0..{network.n_bus - 1}, got {buses.tolist()}")
    return "pg+lmp_subset", buses


def _level_ranges(level_range) -> list[tuple[float, float]] | None:
    """``level_range`` as a list of (lo, hi); raises `ConfigError` unless each has 0 < lo <= hi < inf."""
    if level_range is None:
        return None
    items = list(level_range)
    ranges = [tuple(items)] if items and np.isscalar(items[0]) else [tuple(r) for r in items]
    for r in ranges:
        if len(r) != 2 or not (0 < float(r[0]) <= float(r[1]) < np.inf):
            raise ConfigError(f"level_range must be (lo, hi) or a sequence of them, with 0 < lo <= hi, got {level_range}")
    return [(float(lo), float(hi)) for lo, hi in ranges]


def _stratified_levels(rng, n: int, ranges: list[tuple[float, float]]) -> np.ndarray:
    """(n,) system levels: n split evenly between ``ranges``, stratified within each, randomly ordered."""
    counts = [n // len(ranges) + (k < n % len(ranges)) for k in range(len(ranges))]
    parts = [lo + (hi - lo) * (np.arange(m) + rng.uniform(size=m)) / m for (lo, hi), m in zip(ranges, counts) if m]
    return rng.permutation(np.concatenate(parts))


def simulate_market(
    network,
    n_samples: int,
    *,
    load_spread: float = 0.1,
    level_spread: float = 0.1,
    level_range: Sequence[float] | Sequence[Sequence[float]] | None = None,
    noise: float = 0.0,
    observe: str | Sequence[int] = "pg+lmp",
    seed: int = 0,
    convention: str = "matpower",
    ipopt_tol: float = 1e-10,
    design: str | AdaptiveDesign = "stratified",
) -> Observations:
    """Simulate ``n_samples`` published market outcomes of ``network`` (its parameters are the truth).

    Demand of scenario ``s`` at bus ``i``: ``pd_i * level_s * f_si`` (and ``qd`` alike) with
    ``level_s ~ U(1 - level_spread, 1 + level_spread)`` and ``f_si ~ U(1 - load_spread,
    1 + load_spread)``. With ``level_range=(lo, hi)`` the levels are stratified over that
    range instead (``level_s = lo + (hi - lo) (k_s + U(0, 1)) / n`` for a random permutation
    ``k`` of ``0..n-1``); with several ranges ``((lo1, hi1), (lo2, hi2), ...)`` the samples are
    split evenly between them (the first ranges take the remainder), stratified within each, in
    a random order: a sweep of the system load that walks the marginal unit through the merit order. With linear costs that is what identifies them: a unit with
    ``c2 = 0`` sets its bus price only while marginal, and +-10% of load keeps the same one or
    two units marginal in every sample (PGLib case57/case118). ``noise`` is the relative standard deviation of the Gaussian noise
    put on ``p_g`` and the published LMPs (0.01 = 1%). ``observe``: one of `OBSERVE`, or a
    sequence of bus positions whose LMPs are published beside ``p_g``.

    ``design="adaptive"`` (or an `AdaptiveDesign` with its settings; see `gridlearn.inverse.design`)
    chooses the ``n_samples`` hours out of ``2 n_samples`` candidates stratified over
    ``level_range`` (its overall span; default `ADAPTIVE_RANGE`) plus rounds of bisection where the
    set of units at their limits changes, picking those that move the most units off their limits
    twice; failed candidates are replaced, and ``n_dropped`` counts them.

    With the stratified design, scenarios whose AC-OPF fails are dropped and counted in
    ``n_dropped``. Raises `DataError` when every scenario failed.

    case9, 3 scenarios within +-10 % of its load: the dispatch covers demand plus losses,
    no unit sits at a limit, and prices are about 26-27 $/MWh; with 1 % noise the
    published values move and the truth is kept for evaluation:

    >>> from gridlearn.grid import load_case
    >>> truth = load_case("case9")
    >>> obs = simulate_market(truth, 3, seed=0)
    >>> losses_mw = obs.pg_mw.sum(1) - obs.pd_mw.sum(1)
    >>> [round(float(v), 2) for v in losses_mw], bool(obs.at_pmin.any() or obs.at_pmax.any()), obs.n_dropped
    ([4.12, 3.48, 2.77], False, 0)
    >>> [round(float(v), 2) for v in obs.lmp_usd_per_mwh[0, :3]]
    [27.14, 26.25, 26.3]
    >>> noisy = simulate_market(truth, 3, seed=0, noise=0.01)
    >>> bool(torch.equal(noisy.pg_true_mw, obs.pg_true_mw)), round(float((noisy.pg_mw / obs.pg_mw - 1).std()), 3)
    (True, 0.01)
    """
    from gridlearn.grid.acopf import solve_acopf, solve_acopf_status

    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    if not (0 <= load_spread < 1 and 0 <= level_spread < 1):
        raise ConfigError(f"load_spread and level_spread must be in [0, 1), got {load_spread}, {level_spread}")
    ranges = _level_ranges(level_range)
    if isinstance(design, str) and design not in DESIGNS:
        raise ConfigError(f"unknown design {design!r}; choose one of {sorted(DESIGNS)} or give an AdaptiveDesign")
    if design == "adaptive":
        design = AdaptiveDesign()
    elif not isinstance(design, (str, AdaptiveDesign)):
        raise ConfigError(f"design must be a name in {sorted(DESIGNS)} or an AdaptiveDesign, got {type(design).__name__}")
    if not noise >= 0:
        raise ConfigError(f"noise must be >= 0 (a relative standard deviation), got {noise}")
    name, lmp_buses = lmp_buses_for(network, observe)
    rng = np.random.default_rng(seed)
    base_pd = network.bus.pd_mw.detach().cpu().double()
    base_qd = network.bus.qd_mvar.detach().cpu().double()
    base = solve_acopf(network, convention=convention, backend="direct", tol=ipopt_tol)
    pmin = network.gen.pmin_mw.detach().cpu().double()
    pmax = network.gen.pmax_mw.detach().cpu().double()

    rows: dict[str, list[Tensor]] = {k: [] for k in ("pd", "qd", "pg", "lmp", "lo", "hi")}

    def solve(level: float) -> Tensor | None:
        """One scenario at system ``level``: append its row and return p_g, or None when Ipopt failed."""
        factor = torch.as_tensor(level * rng.uniform(1 - load_spread, 1 + load_spread, network.n_bus))
        pd, qd = base_pd * factor, base_qd * factor
        sol = solve_acopf_status(network.with_(pd_mw=pd, qd_mvar=qd), convention, warm_start=base, backend="direct",
                                 tol=ipopt_tol)
        res = sol.value
        if res is None:
            log.info("scenario at level %.3f failed: Ipopt returned %s (%s)", level, sol.extras["ipopt_status"],
                     sol.statuses[0].name)
            return None
        for key, value in zip(rows, (pd, qd, res.pg_mw, res.lmp_usd_per_mwh, res.pg_mw <= pmin + LIMIT_TOL_MW,
                                     res.pg_mw >= pmax - LIMIT_TOL_MW)):
            rows[key].append(value)
        return res.pg_mw

    if isinstance(design, AdaptiveDesign):
        span = ADAPTIVE_RANGE if ranges is None else (min(r[0] for r in ranges), max(r[1] for r in ranges))
        keep, solved, dropped = adaptive_hours(
            lambda level: None if (pg := solve(level)) is None else pg.numpy(), n_samples, span, rng,
            pmin_mw=pmin.numpy(), pmax_mw=pmax.numpy(), tol_mw=LIMIT_TOL_MW, settings=design)
        rows = {k: [v[i] for i in keep] for k, v in rows.items()}
        n_candidates = len(solved)
    else:
        dropped = 0
        levels = None if ranges is None else _stratified_levels(rng, n_samples, ranges)
        for s in range(n_samples):
            level = rng.uniform(1 - level_spread, 1 + level_spread) if levels is None else float(levels[s])
            dropped += solve(level) is None
        n_candidates = len(rows["pg"])
    if not rows["pg"]:
        raise DataError(f"all {n_samples} scenarios of {network.name} failed to solve; lower load_spread/level_spread/level_range")
    if dropped:
        log.warning("%d scenarios dropped (AC-OPF did not converge); %d of %d requested kept", dropped,
                    len(rows["pg"]), n_samples)
    pg_true = torch.stack(rows["pg"])
    lmp_true = torch.stack(rows["lmp"])
    pg_obs, lmp_obs = pg_true.clone(), lmp_true[:, lmp_buses].clone()
    if noise > 0:
        pg_obs = pg_obs * (1 + noise * torch.as_tensor(rng.standard_normal(pg_obs.shape)))
        lmp_obs = lmp_obs * (1 + noise * torch.as_tensor(rng.standard_normal(lmp_obs.shape)))
    return Observations(
        pd_mw=torch.stack(rows["pd"]),
        qd_mvar=torch.stack(rows["qd"]),
        pg_mw=pg_obs,
        lmp_usd_per_mwh=lmp_obs,
        lmp_buses=lmp_buses,
        at_pmin=torch.stack(rows["lo"]),
        at_pmax=torch.stack(rows["hi"]),
        noise=float(noise),
        observe=name,
        n_requested=n_samples,
        n_dropped=dropped,
        n_candidates=n_candidates,
        pg_true_mw=pg_true,
        lmp_true_usd_per_mwh=lmp_true,
    )
