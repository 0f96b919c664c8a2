"""Which market hours to include: an adaptive load design for `simulate_market(design="adaptive")`.

A cost coefficient is revealed only by a sample where its unit is off its limits (its bus
price then equals its marginal cost), and a (c2, c1) pair needs two such samples with
different dispatch. With linear costs (PGLib) a unit is off its limits only while it is the
marginal unit, often over a narrow band of system load, so a plain stratified design over a
range keeps most units at a limit in every sample (PGLib case118: 9 of its 19 units with
capacity move over 60-110% of load).

The design frames this as an analyst choosing ``n`` market hours out of many candidates:

1. candidate hours at ``pool * n`` levels stratified over the load range;
2. ``refine`` rounds of bisection: between two neighbouring candidate levels whose sets of
   units off their limits differ, and where a unit that changes state is off its limits in
   fewer than ``cover`` candidates, add the midpoint (a unit free in one hour only gets a second,
   nearby hour before anything else);
3. a greedy selection of ``n`` candidates: each pick adds the most units still short of ``cover``
   distinct off-limit dispatches; the remaining picks spread the load levels (farthest first).

It reads only what is published (the dispatch and the known limits, i.e. which units sit at
a limit), never the costs or any fit. Candidates whose AC-OPF fails are never selected, so
failed scenarios are replaced as long as enough candidates solve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gridlearn.errors import ConfigError

#: Two bisection candidates closer than this (fraction of base load) are not split further.
MIN_GAP = 0.005
#: A second off-limit dispatch counts as distinct from the first when it differs by at least
#: this fraction of the unit's range (or 1e-3 MW): a pair 1e-3 MW apart separates c2 from c1 only in exact arithmetic.
DISTINCT_FRACTION = 0.01


@dataclass(frozen=True)
class AdaptiveDesign:
    """Settings of the adaptive design (`simulate_market(design=AdaptiveDesign(...))`; ``"adaptive"`` = the defaults).

    ``pool``: candidate hours per requested hour before refinement; ``refine``: rounds of
    bisection; ``cover``: off-limit hours with distinct dispatch wanted per unit before the
    selection turns to spreading the load levels (2 pins a (c2, c1) pair; a third keeps it
    pinned when the fit must leave out one hour whose AC-OPF has no derivative, e.g. a weakly
    active reactive limit, which the published data cannot show in advance).

    case9, 4 hours picked from 8 solved candidates stratified over 10-130 % of its load:

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.inverse import simulate_market
    >>> obs = simulate_market(load_case("case9"), 4, seed=0, design=AdaptiveDesign(refine=1))
    >>> obs.n_samples, obs.n_candidates, obs.n_dropped
    (4, 8, 0)
    >>> sorted(round(float(level), 2) for level in obs.pd_mw.sum(1) / 315.0)   # share of the case's load
    [0.28, 0.53, 0.95, 1.29]
    >>> AdaptiveDesign(cover=0)
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: AdaptiveDesign needs pool >= 1, refine >= 0, cover >= 1; got AdaptiveDesign(pool=2, refine=2, cover=0)
    """

    pool: int = 2
    refine: int = 2
    cover: int = 2

    def __post_init__(self):
        if self.pool < 1 or self.refine < 0 or self.cover < 1:
            raise ConfigError(f"AdaptiveDesign needs pool >= 1, refine >= 0, cover >= 1; got {self}")


def off_limits(pg_mw: np.ndarray, pmin_mw: np.ndarray, pmax_mw: np.ndarray, tol_mw: float) -> np.ndarray:
    """bool (S, G): unit with capacity (pmax > pmin) and off both limits by more than ``tol_mw``."""
    capacity = (pmax_mw - pmin_mw) > tol_mw
    return (pg_mw > pmin_mw + tol_mw) & (pg_mw < pmax_mw - tol_mw) & capacity


def bisection_levels(levels: np.ndarray, free: np.ndarray, min_gap: float = MIN_GAP, cover: int = 2) -> list[float]:
    """Midpoints of neighbouring ``levels`` whose off-limit sets differ in a unit free fewer than ``cover`` times.

    ``levels``: (C,) load levels of the solved candidates; ``free``: bool (C, G) from `off_limits`.
    """
    order = np.argsort(levels)
    lv, fr = levels[order], free[order]
    short = fr.sum(0) < cover  # units not yet seen off their limits often enough
    out = []
    for k in range(len(lv) - 1):
        changed = fr[k] ^ fr[k + 1]
        if lv[k + 1] - lv[k] > min_gap and (changed & short).any():
            out.append(float(0.5 * (lv[k] + lv[k + 1])))
    return out


def select_hours(levels: np.ndarray, pg_mw: np.ndarray, free: np.ndarray, span_mw: np.ndarray, n: int,
                 cover: int = 2) -> list[int]:
    """Indices of ``n`` candidates (all if fewer): greedy cover of '``cover`` distinct off-limit dispatches per unit', then spread.

    ``span_mw``: (G,) pmax - pmin; a second free dispatch of unit g counts when it differs from every
    chosen one by more than ``max(1e-3, DISTINCT_FRACTION * span_mw[g])``.
    """
    c, g = free.shape
    if c <= n:
        return list(range(c))
    distinct = np.maximum(1e-3, DISTINCT_FRACTION * span_mw)
    chosen: list[int] = []
    seen: list[list[float]] = [[] for _ in range(g)]

    def gain(i: int) -> int:
        units = np.flatnonzero(free[i])
        return sum(1 for u in units if len(seen[u]) < cover and all(abs(pg_mw[i, u] - p) > distinct[u] for p in seen[u]))

    def spread(i: int) -> float:
        return float(np.min(np.abs(levels[chosen] - levels[i]))) if chosen else -abs(levels[i] - 1.0)

    while len(chosen) < n:
        rest = [i for i in range(c) if i not in chosen]
        # most new evidence first; ties (and, once every unit is covered, all picks) by spread of the load levels
        best = max(rest, key=lambda i: (gain(i), spread(i)))
        chosen.append(best)
        for u in np.flatnonzero(free[best]):  # only a distinct dispatch adds evidence (as in gain)
            if len(seen[u]) < cover and all(abs(pg_mw[best, u] - p) > distinct[u] for p in seen[u]):
                seen[u].append(float(pg_mw[best, u]))
    return chosen


def adaptive_hours(solve: Callable[[float], np.ndarray | None], n: int, level_range: tuple[float, float],
                   rng: np.random.Generator, *, pmin_mw: np.ndarray, pmax_mw: np.ndarray, tol_mw: float,
                   settings: AdaptiveDesign = AdaptiveDesign()) -> tuple[list[int], list[float], int]:
    """Run the design; returns (indices into the solved candidates to keep, every solved level, n failed).

    ``solve(level)``: the dispatch (G,) of one candidate hour at that system level, or None when its
    AC-OPF failed. Candidates are numbered in the order they solved (the caller keeps them in that order).
    """
    lo, hi = level_range
    n_pool = settings.pool * n
    levels: list[float] = []
    pgs: list[np.ndarray] = []
    failed = 0

    def attempt(level: float) -> None:
        nonlocal failed
        pg = solve(level)
        if pg is None:
            failed += 1
        else:
            levels.append(level)
            pgs.append(np.asarray(pg, dtype=float))

    for level in lo + (hi - lo) * (np.arange(n_pool) + rng.uniform(size=n_pool)) / n_pool:
        attempt(float(level))
    for _ in range(settings.refine):
        if not pgs:
            break
        new = bisection_levels(np.array(levels), off_limits(np.array(pgs), pmin_mw, pmax_mw, tol_mw), cover=settings.cover)
        for level in new[: n]:  # at most n new candidates per round bounds the solves at n_pool + refine * n
            attempt(level)
        if not new:
            break
    # Too few candidates solved (load beyond what the network can carry): replace the failed ones
    # by levels inside the span that did solve, so the design still returns n hours.
    tries = 0
    while pgs and len(pgs) < n and tries < 2 * n:
        a, b = min(levels), max(levels)
        attempt(float(a + (b - a) * rng.uniform()))
        tries += 1
    if not pgs:
        return [], [], failed
    pg = np.array(pgs)
    keep = select_hours(np.array(levels), pg, off_limits(pg, pmin_mw, pmax_mw, tol_mw), pmax_mw - pmin_mw, n,
                        cover=settings.cover)
    return keep, levels, failed
