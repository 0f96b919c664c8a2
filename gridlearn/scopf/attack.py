"""`attack_contingencies`: worst N-k outage sets by projected gradient ascent, then rounding.

    max_alpha  V_smooth(alpha)   s.t.  alpha in [0, 1]^n,  sum alpha <= k

with V_smooth the softplus total overload (`violation.smooth_violation`) of the
post-contingency power flow (`dc.DCContingencyModel.flows`, or `ac` for physics="ac").
Restarts are the batch dimension: one batched power flow per ascent step serves all of
them. Each step is alpha <- Proj(alpha + eta_t * grad / max|grad|) (normalised so the step
size is in alpha units), with `outages.project_capped_simplex` as the exact projection,
eta_t decaying linearly and the temperature annealed geometrically from 10x to 1x the
stated one (large early so that lines far from their limits still give a gradient).

Rounding: each restart's top-k entries of alpha form a discrete set, scored exactly;
then a local swap search replaces one member by one of the restart's most promising
other elements (the ``swap_pool`` next-largest entries of alpha, and the ``swap_pool``
with the largest gradient of V_smooth at the current discrete set) while that raises
the exact score. With ``screen`` (default), every single-element outage is first scored
exactly (n power flows) and the ``swap_pool`` worst single elements join every pool.
Islanding sets are never scored (they rank below
every scored set), and the search moves away from them.

Polish (``polish`` > 0): the ``polish`` best distinct sets found so far, and the best set
found containing each of the ``polish`` worst single elements (screen), are improved by
exact best-improvement local search over their *whole* 1-swap neighbourhood (k (n - k)
sets each per round, scored exactly) until no swap helps. Why it is needed: the
relaxation's gradient misses partners whose effect is strongly nonlinear in alpha. After
one outage a second branch can become a near-bridge (its self-LODF H_ll -> 1); its
removal redistributes f_l / (1 - alpha H_ll), flat until alpha ~ 1 and then large, while
at small alpha removing it mostly lowers its *own* overload, so the gradient ranks it
last (observed on PGLib case30 AC: the worst pair (line 0, line 6) has line 6 ranked 44
of 45 by the gradient at the line-0 outage). The swap pools never contain it; the full
neighbourhood does.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gridlearn.errors import ConfigError
from gridlearn.grid.network import Network
from gridlearn.scopf.common import members_tensor, result_table, scored, setup
from gridlearn.scopf.outages import project_capped_simplex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttackResult:
    """Distinct discrete outage sets the attack scored.

    table: DataFrame best first, columns ``outage``, ``violation_mw`` (exact; MVA-equivalent
    for AC; NaN when not scored), ``status``, ``load_lost_mw``. islanded: the rows with
    status "islanded" (load that loses supply), kept out of the ranking. wall_time_s;
    n_power_flows = n_ascent_flows (batched gradient evaluations x restarts) + n_exact_flows (sets scored).
    alpha: (restarts, n_elements) final continuous outage vectors.
    """

    table: pd.DataFrame
    wall_time_s: float
    n_ascent_flows: int
    n_exact_flows: int
    alpha: Tensor
    dispatch_mw: Tensor
    trace: list[float] = field(default_factory=list)  # best smooth violation per ascent step

    @property
    def n_power_flows(self) -> int:
        return self.n_ascent_flows + self.n_exact_flows

    @property
    def islanded(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "islanded"].reset_index(drop=True)

    @property
    def ranking(self) -> pd.DataFrame:
        return scored(self.table)

    @property
    def best(self) -> tuple | None:
        r = self.ranking
        return r["outage"].iloc[0] if len(r) else None


def default_temperature(network: Network) -> float:
    """1% of the median finite branch rating (MW), at least 0.1 MW."""
    rate = network.branch.rate_a_mva
    finite = rate[torch.isfinite(rate)]
    return max(0.01 * float(finite.median()) if len(finite) else 1.0, 0.1)


class _Scorer:
    """Exact scores with a cache: each distinct set costs one power flow, once."""

    def __init__(self, score_fn, device, batch: int):
        self.score_fn = score_fn
        self.device = device
        self.batch = batch  # sets per call of score_fn: bounds the memory of a batched Newton solve
        self.cache: dict[tuple[int, ...], tuple[float, str, float]] = {}

    def __call__(self, sets: list[tuple[int, ...]]) -> list[float]:
        new = sorted({s for s in sets if s not in self.cache})
        for lo_i in range(0, len(new), self.batch):
            block = new[lo_i:lo_i + self.batch]
            v, status, lost = self.score_fn(members_tensor(block, self.device))
            for s, vi, st, lo in zip(block, v, status, lost):
                self.cache[s] = (float(vi), st, float(lo))
        # Unscored (islanded, non-converged) sets rank below every scored one.
        return [self.cache[s][0] if self.cache[s][1] == "ok" else -math.inf for s in sets]


def attack_contingencies(
    network: Network,
    dispatch: Any = None,
    k: int = 1,
    physics: str = "dc",
    *,
    elements: str = "all",
    restarts: int = 16,
    steps: int = 60,
    seed: int = 0,
    step_size: float = 0.3,
    temperature_mw: float | None = None,
    swap_pool: int = 8,
    max_swap_rounds: int = 10,
    screen: bool = True,
    polish: int = 2,
    participation: Tensor | None = None,
) -> AttackResult:
    """Search for the worst N-k outage sets (see module docstring).

    network: the grid; dispatch: MW per generator, a (n_gen,) tensor in Network order or a
    pandas Series indexed by generator labels; None = base DC-OPF dispatch (AC-OPF for
    physics="ac"). k: outages per set. elements: "all", "branches" or "generators".
    polish: how many of the best distinct sets get the exact full-neighbourhood local
    search (0 = off; each costs k (n - k) exact power flows per round).
    participation: AGC pick-up weights (n_gen,), default pmax.
    """
    for name, v in (("restarts", restarts), ("steps", steps), ("swap_pool", swap_pool)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
            raise ConfigError(f"{name} must be a positive int, got {v!r}")
    if isinstance(polish, bool) or not isinstance(polish, int) or polish < 0:
        raise ConfigError(f"polish must be an int >= 0, got {polish!r}")
    if not (isinstance(max_swap_rounds, int) and max_swap_rounds >= 0):
        raise ConfigError(f"max_swap_rounds must be an int >= 0, got {max_swap_rounds!r}")
    if not step_size > 0:
        raise ConfigError(f"step_size must be > 0, got {step_size}")
    t0 = time.perf_counter()
    space, pg, dc_model = setup(network, dispatch, k, physics, elements, participation)
    temperature = default_temperature(network) if temperature_mw is None else float(temperature_mw)
    if not temperature > 0:
        raise ConfigError(f"temperature_mw must be > 0, got {temperature}")
    if physics == "ac":
        from gridlearn.scopf.ac import ACContingencyModel, score_sets_ac

        ac_model = ACContingencyModel.build(network, space, participation)
        violation_fn = lambda a, tau: ac_model.violation(pg, a, tau)  # noqa: E731
        score_fn = lambda m: score_sets_ac(ac_model, pg, m)  # noqa: E731
    else:
        violation_fn = lambda a, tau: dc_model.violation(pg, a, tau)  # noqa: E731
        score_fn = lambda m: dc_model.score_sets(pg, m)  # noqa: E731

    gen = torch.Generator(device="cpu").manual_seed(seed)
    n = space.size
    # Half the restarts start near a random k-set, half spread out; restart 0 at the centre.
    # Why: the relaxation has many local maxima and diverse starts reach different ones.
    start = torch.rand(restarts, n, generator=gen, dtype=network.dtype)
    hot = torch.rand(restarts, n, generator=gen, dtype=network.dtype).argsort(-1)[:, :k]
    start[1::2] *= 0.5
    start[1::2].scatter_(1, hot[1::2], 1.0)
    start = start.to(network.device)
    start[0] = 0.5  # one deterministic restart from the centre (projected to k/n each)
    alpha = project_capped_simplex(start, k)
    trace: list[float] = []
    grad = torch.zeros_like(alpha)
    for t in range(steps):
        frac = t / max(steps - 1, 1)
        tau = temperature * 10.0 ** (1.0 - frac)
        eta = step_size * (1.0 - 0.9 * frac)
        a = alpha.detach().requires_grad_(True)
        v = violation_fn(a, tau)
        (grad,) = torch.autograd.grad(v.sum(), a)
        grad = torch.nan_to_num(grad, nan=0.0)
        trace.append(float(torch.nan_to_num(v.detach(), nan=-math.inf).max()))
        scale = grad.abs().amax(-1, keepdim=True).clamp_min(1e-30)
        alpha = project_capped_simplex(alpha + eta * grad / scale, k)

    # ---- rounding: top-k per restart, then swaps within each restart's promising pool
    scorer = _Scorer(score_fn, network.device, batch=256 if physics == "ac" else 8192)
    rank_key = alpha + 1e-6 * grad / grad.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    order = torch.argsort(rank_key, dim=-1, descending=True).cpu().numpy()
    current = [tuple(sorted(int(i) for i in order[r, :k])) for r in range(restarts)]
    pools = [[int(i) for i in order[r, : k + swap_pool]] for r in range(restarts)]
    n_screen_flows = 0
    singles: list[int] = []
    if screen:
        # Exact N-1 screen: each element's own outage is one power flow; the worst few
        # join every restart's swap pool (the relaxation alone can settle on a
        # combination that a single strong element would beat).
        v1, st1, lost1 = score_fn(members_tensor([(i,) for i in range(n)], network.device))
        n_screen_flows = n
        v1 = np.where(np.asarray(st1) == "ok", np.nan_to_num(v1, nan=-np.inf), -np.inf)
        screen_pool = [int(i) for i in np.argsort(-v1, kind="stable")[:swap_pool]]
        singles = screen_pool
        pools = [p + screen_pool for p in pools]
        if k == 1:
            scorer.cache.update({(i,): (float(v1[i]) if st1[i] == "ok" else float("nan"), st1[i], float(lost1[i]))
                                 for i in range(n)})
            n_screen_flows = 0  # counted as scored sets below
    values = scorer(current)
    n_grad_flows = restarts * steps
    for _ in range(max_swap_rounds):
        # Gradient at each current discrete set: which other element, partly removed on
        # top of it, raises the overload fastest (a first-order guess at the best swap).
        ind = torch.zeros_like(alpha)
        ind[torch.arange(restarts)[:, None], torch.as_tensor(current, device=alpha.device)] = 1.0
        ind.requires_grad_(True)
        (g_set,) = torch.autograd.grad(violation_fn(ind, temperature).sum(), ind)
        n_grad_flows += restarts
        g_set = torch.nan_to_num(g_set, nan=0.0).masked_fill(ind.detach() > 0, -math.inf)
        g_order = torch.argsort(g_set, dim=-1, descending=True).cpu().numpy()
        cands = []
        for r in range(restarts):
            s = current[r]
            pool = dict.fromkeys(pools[r] + [int(i) for i in g_order[r, :swap_pool]])
            cands.append([tuple(sorted(set(s) - {i} | {j})) for i in s for j in pool if j not in s])
        flat = [c for cs in cands for c in cs]
        if not flat:
            break
        flat_values = dict(zip(flat, scorer(flat)))
        moved = False
        for r in range(restarts):
            if not cands[r]:
                continue
            best = max(cands[r], key=lambda c: flat_values[c])
            if flat_values[best] > values[r] + 1e-9:
                current[r], values[r], moved = best, flat_values[best], True
        if not moved:
            break
    _polish(scorer, k, n, polish, max_swap_rounds, singles)

    sets = list(scorer.cache)
    table = result_table(space, sets, np.array([scorer.cache[s][0] for s in sets]),
                         [scorer.cache[s][1] for s in sets], np.array([scorer.cache[s][2] for s in sets]))
    wall = time.perf_counter() - t0
    log.info("attack N-%d %s: %d sets scored, best %.3f MW, %.2f s", k, physics, len(sets),
             float(table["violation_mw"].iloc[0]) if len(table) else float("nan"), wall)
    return AttackResult(table=table, wall_time_s=wall, n_ascent_flows=n_grad_flows, n_exact_flows=len(sets) + n_screen_flows,
                        alpha=alpha.detach(), dispatch_mw=pg, trace=trace)


def _polish(scorer: _Scorer, k: int, n: int, polish: int, max_rounds: int, singles: list[int]) -> None:
    """Exact best-improvement 1-swap local search (see the module docstring) from the
    ``polish`` best distinct k-sets in ``scorer``'s cache, and from the best cached set
    containing each of the ``polish`` worst single elements (``singles``, from the N-1
    screen; the greedy "worst element, best completion" start). Every set tried lands in
    the cache. Searches that reach the same set merge."""
    if polish == 0 or k == n:
        return
    ranked = sorted(((v, s) for s, (v, st, _) in scorer.cache.items() if st == "ok" and len(s) == k), reverse=True)
    current = [s for _, s in ranked[:polish]]
    for e in singles[:polish]:
        current += [s for _, s in ranked if e in s][:1]
    done: set[tuple[int, ...]] = set()  # sets whose whole neighbourhood is scored: local optima
    for _ in range(max(max_rounds, 1) * 4):  # each round climbs strictly; the cap only bounds the cost
        active = [s for s in dict.fromkeys(current) if s not in done]
        if not active:
            break
        hoods = [[tuple(sorted(set(s) - {i} | {j})) for i in s for j in range(n) if j not in s] for s in active]
        values = dict(zip((c for h in hoods for c in h), scorer([c for h in hoods for c in h])))
        current = []
        for s, hood in zip(active, hoods):
            best = max(hood, key=lambda c: values[c])
            if values[best] > scorer([s])[0] + 1e-9:
                current.append(best)
            else:
                done.add(s)


__all__ = ["AttackResult", "attack_contingencies", "default_temperature"]
