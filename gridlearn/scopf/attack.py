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

Topology-aware candidates (``candidates`` > 0, any physics): the near-cut sets of
`candidates.near_cut_sets` (sets that nearly island part of the grid, found from the
DC LODF; the gradient ranks their members last) are scored exactly and join the polish
starts.

Exact when cheaper. The search has a hard power-flow budget (``max_power_flows``,
default `planned_power_flows`): ascent steps x restarts, the N-1 screen, the candidates
and the swaps and polish, which stop scoring when the budget is spent. When C(n, k) is
not above it (``exact="auto"``), every set is enumerated instead (exact, and never more
power flows than the search would use); ``AttackResult.method`` says which ran. Above it,
for the DC model, the LODF branch-and-bound (`branch_and_bound.certify_bnb`, exact when
it completes) is tried first when its C(n, k-1) node updates take at most a quarter of
its allowance, min(budget, C(n, k) - budget): it often costs far fewer power flows than
the search (PGLib case57 N-2 over branches: 136 against the search's 2,558; case118:
2,297 against 4,246; benchmarks/README.md). It probes first (`certify_bnb`'s ``probe``)
and gives up early when the sets left open cannot fit. When it completes, the result is the
certified worst (``method == "branch-and-bound"``; its table holds the sets it scored:
every set not pruned by its bound, but not the load-cutting ones, which it skips).
When it runs out of its allowance, its power flows count towards the result's and the
search runs as usual, so the total stays below C(n, k).
"""

from __future__ import annotations

import itertools
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
from gridlearn.scopf.branch_and_bound import certify_bnb
from gridlearn.scopf.candidates import near_cut_sets
from gridlearn.scopf.certificate import Certificate, certify_worst
from gridlearn.scopf.common import contingency_model, members_tensor, result_table, scored, setup
from gridlearn.scopf.outages import project_capped_simplex

EXACT_CHOICES = ("auto", "always", "never")
CERTIFY_CHOICES = ("auto", "bnb", "milp", "none")

log = logging.getLogger(__name__)
# children the exact-when-cheaper trial scores per block of nodes before it judges whether
# it can finish within its allowance (`certify_bnb`'s probe)
_TRIAL_PROBE = 64


@dataclass(frozen=True)
class AttackResult:
    """Distinct discrete outage sets the attack scored.

    table: DataFrame best first, columns ``outage``, ``violation_mw`` (exact; MVA-equivalent
    for AC; NaN when not scored), ``status``, ``load_lost_mw``. islanded: the rows with
    status "islanded" (load that loses supply), kept out of the ranking. wall_time_s;
    n_power_flows = n_ascent_flows (batched gradient evaluations x restarts) + n_exact_flows (sets scored).
    alpha: (restarts, n_elements) final continuous outage vectors.

    From `attack_contingencies` on case9 with its ratings at 60 % (N-1, searched, then
    bounded by the LODF branch-and-bound, which proves the search's best the worst):

    >>> from gridlearn.grid import load_case
    >>> net = load_case("case9")
    >>> net = net.with_(rate_a_mva=0.6 * net.branch.rate_a_mva)
    >>> res = attack_contingencies(net, k=1, elements="branches", exact="never", restarts=2, steps=10, seed=0)
    >>> res.method, res.claim, res.certificate.method, list(res.table.columns)
    ('search', 'certified worst', 'lodf branch-and-bound', ['outage', 'violation_mw', 'status', 'load_lost_mw'])
    >>> tuple(res.alpha.shape), res.n_power_flows == res.n_ascent_flows + res.n_exact_flows, len(res.islanded)
    ((2, 9), True, 0)
    """

    table: pd.DataFrame
    wall_time_s: float
    n_ascent_flows: int
    n_exact_flows: int
    alpha: Tensor
    dispatch_mw: Tensor
    trace: list[float] = field(default_factory=list)  # best smooth violation per ascent step
    method: str = "search"  # "search" (ascent, candidates, swaps, polish), "enumeration" (every set)
    # or "branch-and-bound" (exact LODF branch-and-bound: the table holds the sets it scored)
    max_power_flows: int = 0  # the budget the choice was made against
    certificate: "Certificate | None" = None  # upper bound on the worst violation, when asked for

    @property
    def claim(self) -> str:
        """"certified worst", "best found, gap X MW", or "best found, no bound"."""
        if self.method in ("enumeration", "branch-and-bound"):  # both exact when they finish
            return "certified worst"
        return self.certificate.claim if self.certificate is not None else "best found, no bound"

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

    def __init__(self, score_fn, device, batch: int, cap: int | None = None):
        self.score_fn = score_fn
        self.device = device
        self.batch = batch  # sets per call of score_fn: bounds the memory of a batched Newton solve
        self.cap = cap  # most sets ever scored (the search's remaining power-flow budget)
        self.cache: dict[tuple[int, ...], tuple[float, str, float]] = {}

    @property
    def left(self) -> float:
        return math.inf if self.cap is None else self.cap - len(self.cache)

    def __call__(self, sets: list[tuple[int, ...]]) -> list[float]:
        new = sorted({s for s in sets if s not in self.cache})
        if len(new) > self.left:  # budget spent: the sets beyond it stay unscored (rank last)
            new = new[:max(int(self.left), 0)]
        for lo_i in range(0, len(new), self.batch):
            block = new[lo_i:lo_i + self.batch]
            v, status, lost = self.score_fn(members_tensor(block, self.device))
            for s, vi, st, lo in zip(block, v, status, lost):
                self.cache[s] = (float(vi), st, float(lo))
        # Unscored (islanded, non-converged) sets rank below every scored one.
        return [self.cache[s][0] if s in self.cache and self.cache[s][1] == "ok" else -math.inf for s in sets]


def planned_power_flows(n: int, k: int, *, restarts: int, steps: int, max_swap_rounds: int, screen: bool,
                        candidates: int, polish: int) -> int:
    """The search's power-flow budget: each ascent step and swap round is one batched flow
    per restart, the N-1 screen n flows, the candidates one each, and the polish two full
    1-swap neighbourhoods (k (n - k) sets) from each of its 2 polish starts; the rounding
    swaps share the polish's allowance."""
    return (restarts * (steps + max_swap_rounds) + (n if screen and k > 1 else 0) + candidates
            + 4 * polish * k * max(n - k, 0))


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
    candidates: int = 256,
    exact: str = "auto",
    max_power_flows: int | None = None,
    certify: str = "auto",
    certify_time_limit_s: float = 60.0,
    participation: Tensor | None = None,
) -> AttackResult:
    """Search for the worst N-k outage sets (see module docstring).

    network: the grid; dispatch: MW per generator, a (n_gen,) tensor in Network order or a
    pandas Series indexed by generator labels; None = base DC-OPF dispatch (AC-OPF for
    physics="ac"). k: outages per set. elements: "all", "branches" or "generators".
    polish: how many of the best distinct sets get the exact full-neighbourhood local
    search (0 = off; each costs k (n - k) exact power flows per round).
    candidates: topology-aware near-cut sets scored exactly (0 = off).
    exact: "auto" enumerates every set when C(n, k) <= max_power_flows, "always" always,
    "never" never. max_power_flows: the search's hard budget (default `planned_power_flows`).
    certify: "auto" or "bnb" bounds a DC search's result by LODF branch-and-bound over the
    enumeration (`branch_and_bound.certify_bnb`, at most ``certify_time_limit_s``; it
    scales far better than the MILP, benchmarks/README.md); "milp" by the interdiction
    MILP (`certificate.certify_worst`, HiGHS); "none" skips it (the result then claims
    "best found, no bound"). A set the certifier scores above the search's best is named
    in ``certificate.detail["best_outage"]``.
    participation: AGC pick-up weights (n_gen,), default pmax.

    N-2 on case9 with its ratings at 60 %, searched (not enumerated) and then certified:

    >>> from gridlearn.grid import load_case
    >>> net = load_case("case9")
    >>> net = net.with_(rate_a_mva=0.6 * net.branch.rate_a_mva)
    >>> res = attack_contingencies(net, k=2, elements="branches", exact="never", restarts=4, steps=30)
    >>> res.table["outage"][0], round(float(res.table["violation_mw"][0]), 2), res.claim
    ((('line', 0), ('line', 6)), 315.0, 'certified worst')
    """
    for name, v in (("restarts", restarts), ("steps", steps), ("swap_pool", swap_pool)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
            raise ConfigError(f"{name} must be a positive int, got {v!r}")
    for name, v in (("polish", polish), ("candidates", candidates)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"{name} must be an int >= 0, got {v!r}")
    if not (isinstance(max_swap_rounds, int) and max_swap_rounds >= 0):
        raise ConfigError(f"max_swap_rounds must be an int >= 0, got {max_swap_rounds!r}")
    if not step_size > 0:
        raise ConfigError(f"step_size must be > 0, got {step_size}")
    if exact not in EXACT_CHOICES:
        raise ConfigError(f"exact must be one of {EXACT_CHOICES}, got {exact!r}")
    if certify not in CERTIFY_CHOICES:
        raise ConfigError(f"certify must be one of {CERTIFY_CHOICES}, got {certify!r}")
    if max_power_flows is not None and (isinstance(max_power_flows, bool) or not isinstance(max_power_flows, int)
                                        or max_power_flows < 1):
        raise ConfigError(f"max_power_flows must be a positive int, got {max_power_flows!r}")
    t0 = time.perf_counter()
    space, pg, dc_model = setup(network, dispatch, k, physics, elements, participation)
    temperature = default_temperature(network) if temperature_mw is None else float(temperature_mw)
    if not temperature > 0:
        raise ConfigError(f"temperature_mw must be > 0, got {temperature}")
    model = contingency_model(network, space, physics, participation, dc_model)
    violation_fn = lambda a, tau: model.violation(pg, a, tau)  # noqa: E731
    score_fn = lambda m: model.score_sets(pg, m)  # noqa: E731
    n = space.size
    batch = model.score_batch
    budget = max_power_flows if max_power_flows is not None else planned_power_flows(
        n, k, restarts=restarts, steps=steps, max_swap_rounds=max_swap_rounds, screen=screen,
        candidates=candidates, polish=polish)
    total = math.comb(n, k)
    if exact == "always" or (exact == "auto" and total <= budget):
        scorer = _Scorer(score_fn, network.device, batch=batch)
        combos = itertools.combinations(range(n), k)
        while block := list(itertools.islice(combos, batch)):
            scorer(block)
        return _result(space, scorer, t0, 0, 0, torch.zeros(0, n, dtype=network.dtype), pg, [], "enumeration",
                       budget, None, k, physics)

    n_bnb_flows = 0
    allowance = min(budget, total - budget)
    if exact == "auto" and physics == "dc" and k > 1 and 4 * math.comb(n - 1, k - 1) <= allowance:
        trial = certify_bnb(dc_model, pg, k, -math.inf, time_limit_s=certify_time_limit_s,
                            max_power_flows=allowance, probe=_TRIAL_PROBE, keep_scored=True)
        n_bnb_flows = int(trial.detail["n_power_flows"])
        scorer = _Scorer(score_fn, network.device, batch=batch)
        # every set it scored (exact), so a defence reads as many violating sets as from a search
        scorer.cache.update({s: (v, st, lost) for s, v, st, lost in trial.detail.pop("scored")})
        if trial.detail.get("best_set") is not None:
            best = trial.detail["best_set"]
            scorer.cache.pop(best, None)
            scorer([best])  # its score_sets value, as the enumeration's
        if trial.detail["complete"]:
            if trial.detail.get("best_set") is not None:
                trial.detail["best_outage"] = space.set_labels(trial.detail["best_set"])
            return _result(space, scorer, t0, 0, n_bnb_flows - len(scorer.cache), torch.zeros(0, n, dtype=network.dtype),
                           pg, [], "branch-and-bound", budget, trial, k, physics)

    gen = torch.Generator(device="cpu").manual_seed(seed)
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
    n_grad_flows = restarts * steps

    # ---- rounding: top-k per restart, then swaps within each restart's promising pool
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
    seeded = scorer.cache if n_bnb_flows else {}  # the sets the branch-and-bound trial scored
    # its sets come cached on top of the search's own budget (they are counted once, below)
    scorer = _Scorer(score_fn, network.device, batch=batch, cap=budget - n_grad_flows - n_screen_flows + len(seeded))
    scorer.cache.update(seeded)
    n_trial_flows = n_bnb_flows - len(seeded)  # the trial's power flows count (the seeded set once, in the cache)
    if screen and k == 1:
        scorer.cache.update({(i,): (float(v1[i]) if st1[i] == "ok" else float("nan"), st1[i], float(lost1[i]))
                             for i in range(n)})
        n_screen_flows = 0  # counted as scored sets below
    values = scorer(current)
    # Near-cut candidates (scored now: the polish then starts from the best of them too).
    if candidates and k > 1:
        scorer(near_cut_sets(dc_model, pg, k, limit=min(candidates, int(max(scorer.left, 0)))))
    for _ in range(max_swap_rounds):
        if scorer.left <= 0 or n_grad_flows + restarts > budget - n_screen_flows - (len(scorer.cache) - len(seeded)):
            break
        # Gradient at each current discrete set: which other element, partly removed on
        # top of it, raises the overload fastest (a first-order guess at the best swap).
        ind = torch.zeros_like(alpha)
        ind[torch.arange(restarts)[:, None], torch.as_tensor(current, device=alpha.device)] = 1.0
        ind.requires_grad_(True)
        (g_set,) = torch.autograd.grad(violation_fn(ind, temperature).sum(), ind)
        n_grad_flows += restarts
        scorer.cap -= restarts
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
    cert = None
    if certify != "none" and model.certifiable:
        best = max((v for v, st, _ in scorer.cache.values() if st == "ok"), default=-math.inf)
        if certify == "milp":
            cert = certify_worst(dc_model, pg, k, best, time_limit_s=certify_time_limit_s)
        else:
            cert = certify_bnb(dc_model, pg, k, best, time_limit_s=certify_time_limit_s)
            if cert.detail.get("best_set") is not None:
                cert.detail["best_outage"] = space.set_labels(cert.detail["best_set"])
    return _result(space, scorer, t0, n_grad_flows, n_screen_flows + n_trial_flows, alpha.detach(), pg, trace,
                   "search", budget, cert, k, physics)


def _result(space, scorer: _Scorer, t0: float, n_grad_flows: int, n_screen_flows: int, alpha: Tensor, pg: Tensor,
            trace: list[float], method: str, budget: int, cert, k: int, physics: str) -> AttackResult:
    sets = list(scorer.cache)
    table = result_table(space, sets, np.array([scorer.cache[s][0] for s in sets]),
                         [scorer.cache[s][1] for s in sets], np.array([scorer.cache[s][2] for s in sets]))
    wall = time.perf_counter() - t0
    log.info("attack N-%d %s (%s): %d sets scored, best %.3f MW, %.2f s", k, physics, method, len(sets),
             float(table["violation_mw"].iloc[0]) if len(table) else float("nan"), wall)
    return AttackResult(table=table, wall_time_s=wall, n_ascent_flows=n_grad_flows,
                        n_exact_flows=len(sets) + n_screen_flows, alpha=alpha, dispatch_mw=pg, trace=trace,
                        method=method, max_power_flows=budget, certificate=cert)


def _polish(scorer: _Scorer, k: int, n: int, polish: int, max_rounds: int, singles: list[int],
            extra_starts: int = 64) -> None:
    """Exact best-improvement 1-swap local search (see the module docstring) from the
    ``polish`` best distinct k-sets in ``scorer``'s cache, and from the best cached set
    containing each of the ``polish`` worst single elements (``singles``, from the N-1
    screen; the greedy "worst element, best completion" start). Every set tried lands in
    the cache. Searches that reach the same set merge. Then, while the scorer's budget
    allows a whole neighbourhood, the best cached set not yet known to be a local optimum
    is polished too (at most ``extra_starts`` more; why: a set one swap from the worst is
    often only third or fourth best, observed on PGLib case24 N-3)."""
    if polish == 0 or k == n:
        return
    ranked = sorted(((v, s) for s, (v, st, _) in scorer.cache.items() if st == "ok" and len(s) == k), reverse=True)
    current = [s for _, s in ranked[:polish]]
    for e in singles[:polish]:
        current += [s for _, s in ranked if e in s][:1]
    done: set[tuple[int, ...]] = set()  # sets whose whole neighbourhood is scored: local optima
    hood_size = k * (n - k)

    def climb(current: list[tuple[int, ...]]) -> None:
        for _ in range(max(max_rounds, 1) * 4):  # each round climbs strictly; the cap only bounds the cost
            active = [s for s in dict.fromkeys(current) if s not in done]
            if not active or scorer.left <= 0:
                break
            hoods = [[tuple(sorted(set(s) - {i} | {j})) for i in s for j in range(n) if j not in s] for s in active]
            values = dict(zip((c for h in hoods for c in h), scorer([c for h in hoods for c in h])))
            current = []
            for s, hood in zip(active, hoods):
                best = max(hood, key=lambda c: values[c])
                if values[best] > scorer([s])[0] + 1e-9:
                    current.append(best)
                elif all(c in scorer.cache for c in hood):  # a local optimum only if its whole hood was scored
                    done.add(s)

    climb(current)
    tried = set(current)
    for _ in range(extra_starts):
        if scorer.left < hood_size:
            break
        ranked = sorted(((v, s) for s, (v, st, _) in scorer.cache.items() if st == "ok" and len(s) == k),
                        reverse=True)
        start = next((s for _, s in ranked if s not in done and s not in tried), None)
        if start is None:
            break
        tried.add(start)
        climb([start])


__all__ = ["AttackResult", "attack_contingencies", "default_temperature", "planned_power_flows"]
