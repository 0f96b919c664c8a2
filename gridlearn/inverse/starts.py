"""Where `recover` starts: the KKT-residual baseline where prices allow, then the prior and perturbed priors.

The gradient method is local: from a prior 50% off it can stall in a local minimum of
the inverse loss (issue 22: case30 from a +-50% prior, loss stuck at 6% of its start).
The starts, in the order `recover` tries them (it stops at the first that converges and
reports every one it ran):

1. ``"baseline"``: the convex KKT-residual fit (`kkt_residual_costs`) of the cost
   coefficients of every unknown generator whose bus LMP is published and which is off
   its limits in two samples with different dispatch (`baseline._separable`). The
   generators it cannot fit keep the prior where their bus has no price; at a limit in
   every sample, or with a single dispatch, they keep the prior's c2 and get the c1 at
   which their observed dispatch is optimal (the prior's, clipped). Noise-free with every generator's price published, this start is already
   the answer and the gradient method only confirms it; with noise, unknown admittances
   or partial prices the gradient method refines it.
   With prices at some buses only, ``"imputed prices"`` comes first: the baseline over every
   unknown generator, where the price at an unpublished generator bus is the model's LMP at the
   current start times the per-hour ratio of published to model prices at the published buses
   (`imputed_price_start`, a few rounds). The true costs are its fixed point (the model prices
   are then the true ones and the ratio is 1); away from it the ratio carries the published
   price level, set by the priced units, to the unpriced buses, which is what a unit's cost
   answers to while it is off its limits. It is a start only: the gradient method refines it
   and the convergence contract decides what is reported. With no price published at all
   (p_g alone), ``"model prices"``: the same rounds from the prior with the model's prices
   unscaled; their overall scale stays the prior's, which p_g cannot fix (every cost times one
   factor gives the same dispatch), so at best it finds the costs up to that factor.
2. ``"prior"``: the prior itself.
3. ``"perturbed k"``: the prior times ``U(1 - start_spread, 1 + start_spread)`` per
   parameter (seeded by `InverseSolver.seed`), projected on the physical set.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from gridlearn.errors import ConfigError, GridlearnError
from gridlearn.inverse.params import Unknown

log = logging.getLogger(__name__)

INITS = ("auto", "baseline", "prior")


def baseline_generators(network, observations, unknowns: Sequence[Unknown]) -> list[int]:
    """Positions of the generators with an unknown c2 or c1 whose bus LMP is published."""
    published = set(observations.lmp_buses.tolist())
    gens = sorted({u.position for u in unknowns if u.kind in ("c2", "c1")})
    return [g for g in gens if int(network.gen.bus[g]) in published]


def baseline_start(network, observations, unknowns: Sequence[Unknown], prior: Tensor) -> tuple[Tensor, list[int]]:
    """(theta, generators fitted): the prior with the KKT-residual baseline's costs put in where it determines them."""
    from gridlearn.inverse.baseline import _separable, kkt_residual_costs

    gens = baseline_generators(network, observations, unknowns)
    if not gens:
        return prior.clone(), []
    fit = kkt_residual_costs(network, observations, gens=gens)
    pg = observations.pg_mw.detach().cpu().double().numpy()[:, gens]
    at_limit = (observations.at_pmin | observations.at_pmax).cpu().numpy()[:, gens]
    ok = _separable(pg, at_limit)
    values = fit.theta.reshape(len(gens), 2).clone()  # (c2, c1) per generator
    published = {int(b): k for k, b in enumerate(observations.lmp_buses.tolist())}
    lmp = observations.lmp_usd_per_mwh.detach().cpu().double().numpy()
    for i, g in enumerate(gens):
        if ok[i]:
            values[i] = _polish(pg[:, i], lmp[:, published[int(network.gen.bus[g])]], at_limit[:, i], values[i])
    theta = prior.clone()
    used = []
    for k, u in enumerate(unknowns):
        if u.kind in ("c2", "c1") and u.position in gens:
            i = gens.index(u.position)
            if ok[i]:
                theta[k] = values[i, 0 if u.kind == "c2" else 1]
                used.append(u.position)
    # generators the baseline cannot fit: keep the prior's c2, but move its c1 to where the observed
    # dispatch is optimal (with linear costs a prior c1 50% off reorders the merit list, and the
    # AC-OPF at that start moves tens of MW)
    lo = observations.at_pmin.cpu().numpy()[:, gens]
    for i, g in enumerate(gens):
        if ok[i]:
            continue
        k1 = next((k for k, u in enumerate(unknowns) if u.kind == "c1" and u.position == g), None)
        if k1 is None:
            continue
        k2 = next((k for k, u in enumerate(unknowns) if u.kind == "c2" and u.position == g), None)
        c2 = float(theta[k2]) if k2 is not None else float(network.gen.cost_c2_usd_per_mw2h[g])
        price = lmp[:, published[int(network.gen.bus[g])]]
        mc_rest = price - 2 * c2 * pg[:, i]  # the c1 at which each sample's dispatch is marginal
        free = ~at_limit[:, i]
        if free.any():  # one dispatch off its limits (or several equal ones): 2 c2 p + c1 = LMP there
            theta[k1] = float(np.mean(mc_rest[free]))
        else:  # at pmax: c1 <= LMP - 2 c2 p; at pmin: c1 >= LMP - 2 c2 p
            upper = float(np.min(mc_rest[~lo[:, i]])) if (~lo[:, i]).any() else np.inf
            lower = float(np.max(mc_rest[lo[:, i]])) if lo[:, i].any() else -np.inf
            if lower <= upper:
                margin = 0.01 * max(abs(float(np.mean(price))), 1e-6)
                theta[k1] = float(np.clip(float(theta[k1]), lower + margin, upper - margin)) if upper - lower > 2 * margin \
                    else 0.5 * (lower + upper)
    return theta, sorted(set(used))


def _polish(pg_mw, lmp, at_limit, cvx: Tensor) -> Tensor:
    """(c2, c1) of one generator by least squares on its off-limit samples, where ``2 c2 p + c1 = LMP``
    holds as an equality: a direct solve to machine precision, where the QP stops at its own
    tolerance (~1e-5 relative on PGLib case57). That matters with linear costs: there a 1e-5 error
    in c1 moves the AC-OPF dispatch by tens of MW. Keeps the QP's answer if the solve gives c2 < 0."""
    free = ~at_limit
    a = np.stack([2 * pg_mw[free], np.ones(int(free.sum()))], axis=1)
    scale = np.abs(a).max(axis=0)  # columns of like size: c2 multiplies hundreds of MW
    sol, *_ = np.linalg.lstsq(a / scale, lmp[free], rcond=None)
    c2, c1 = sol / scale
    if c2 < 0:  # the constraint c2 >= 0 binds: c1 alone
        c2, c1 = 0.0, float(np.mean(lmp[free]))
    return torch.tensor([c2, c1], dtype=torch.float64) if np.isfinite([c2, c1]).all() else cvx


#: Rounds of price imputation (`imputed_price_start`); each costs one AC-OPF per sample.
IMPUTE_ROUNDS = 3


def unpriced_generators(network, observations, unknowns: Sequence[Unknown]) -> list[int]:
    """Positions of the generators with an unknown c2 or c1 whose bus LMP is not published."""
    published = set(observations.lmp_buses.tolist())
    gens = sorted({u.position for u in unknowns if u.kind in ("c2", "c1")})
    return [g for g in gens if int(network.gen.bus[g]) not in published]


def imputed_price_start(network, observations, unknowns: Sequence[Unknown], prior: Tensor, theta: Tensor,
                        model_lmp, rounds: int = IMPUTE_ROUNDS) -> Tensor:
    """The baseline over every unknown generator with imputed prices at unpublished generator buses.

    ``model_lmp(theta) -> (S, n_bus)`` LMPs of the AC-OPF at ``theta`` (raises a `GridlearnError`
    when some sample fails, which ends the rounds with the last good start). Each round: imputed
    price at bus j in hour s = model_sj * mean over published buses k of (observed_sk / model_sk);
    then `baseline_start` on the observations completed with those prices.
    """
    published = observations.lmp_buses
    extra = torch.as_tensor(sorted({int(network.gen.bus[g]) for g in unpriced_generators(network, observations, unknowns)}),
                            dtype=torch.long)
    buses = torch.cat([published, extra])
    observed = observations.lmp_usd_per_mwh.detach().double()
    for _ in range(rounds):
        try:
            lmp = model_lmp(theta).detach().double()
        except GridlearnError as exc:
            log.info("price imputation stopped: %s", exc)
            break
        model_pub = lmp[:, published]
        ok = model_pub.abs() > 1e-9
        ratio = torch.where(ok, observed / torch.where(ok, model_pub, torch.ones_like(model_pub)), torch.nan)
        # (S, 1) published price level against the model's; with no price published (p_g alone) 1:
        # the model's own prices, whose overall scale stays the start's (p_g cannot fix it)
        level = torch.nanmean(ratio, dim=1, keepdim=True) if published.numel() else torch.ones(lmp.shape[0], 1)
        level = torch.where(torch.isfinite(level), level, torch.ones_like(level))
        completed = dataclasses.replace(observations, lmp_buses=buses,
                                        lmp_usd_per_mwh=torch.cat([observed, lmp[:, extra] * level], dim=1))
        new, _ = baseline_start(network, completed, unknowns, prior)
        done = bool(torch.allclose(new, theta, rtol=1e-9, atol=0.0))
        theta = new
        if done:
            break
    return theta


def perturbed(prior: Tensor, spread: float, n: int, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [prior * (1 - spread + 2 * spread * torch.rand(prior.shape, generator=g, dtype=torch.float64))
            for _ in range(n)]


def starting_points(network, observations, unknowns: Sequence[Unknown], prior: Tensor, init: str, n_starts: int,
                    spread: float, seed: int, model_lmp=None) -> list[tuple[str, Tensor]]:
    """[(name, theta)] in the order to try (module docstring). Raises `ConfigError` for
    ``init="baseline"`` when no unknown generator's bus LMP is published. ``model_lmp``: see
    `imputed_price_start` (without it there is no imputed-price start)."""
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {init!r}")
    starts: list[tuple[str, Tensor]] = []
    if init in ("auto", "baseline"):
        gens = baseline_generators(network, observations, unknowns)
        if not gens and init == "baseline":
            raise ConfigError("init='baseline' needs the LMP at some unknown generator's bus; none is published "
                              f"(observe={observations.observe!r}); use init='auto' or 'prior'")
        if gens:
            try:
                theta, used = baseline_start(network, observations, unknowns, prior)
                if model_lmp is not None and unpriced_generators(network, observations, unknowns):
                    starts.append(("imputed prices", imputed_price_start(network, observations, unknowns, prior,
                                                                         theta, model_lmp)))
                if used:
                    starts.append(("baseline", theta))
            except GridlearnError as exc:  # the baseline QP failed: say so and go on with the priors
                log.warning("baseline start skipped: %s", exc)
        elif init == "auto" and model_lmp is not None and unpriced_generators(network, observations, unknowns):
            # no unknown unit's price published: the model's prices at the prior
            try:
                name = "imputed prices" if observations.has_lmp else "model prices"
                starts.append((name, imputed_price_start(network, observations, unknowns, prior, prior.clone(),
                                                                   model_lmp)))
            except GridlearnError as exc:
                log.warning("model-price start skipped: %s", exc)
    if init in ("auto", "prior"):
        starts.append(("prior", prior.clone()))
        starts += [(f"perturbed {k + 1}", th) for k, th in enumerate(perturbed(prior, spread, n_starts - 1, seed))]
    return starts
