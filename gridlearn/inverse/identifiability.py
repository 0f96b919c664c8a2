"""Which unknown parameters the observations determine, and why the others are not determined.

Three sources, combined per parameter (all must agree for ``identifiable = True``):

1. Local rank. ``J`` = Jacobian of the weighted observations (``sqrt(w_pg) p_g``,
   ``sqrt(w_lmp) LMP`` over all samples) with respect to the unknowns, columns scaled by
   each parameter's magnitude (relative changes). With ``J = U S V^T`` and the numerical
   rank ``r = #{s_i > rtol * s_1}``, the null space is spanned by ``V[:, r:]``; a parameter
   whose unit vector has a component above ``null_tol`` in that null space can move without
   changing any observation to first order: not identifiable. ``rel_std`` is
   ``sqrt(diag((J^T J)^+))``: the relative error a unit observation noise would cause.
2. Limits. A generator at a limit (pmin or pmax) in every sample has a dispatch fixed by
   that limit and sets no price: only a bound on its costs is known.
3. Invariances. The constant ``c0`` changes neither dispatch nor prices. With ``p_g``
   alone (no prices), multiplying every cost by one factor leaves the dispatch unchanged,
   so when every marginal generator's costs are unknown only cost ratios are determined.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gridlearn.inverse.params import Unknown

#: Reasons a parameter is reported not identifiable.
REASONS = {
    "rank": "the observations do not change to first order along a direction that moves it (rank-deficient Jacobian)",
    "at_limit": "its generator sits at a limit in every sample: only a bound on the cost is known",
    "c0": "a constant cost term changes neither dispatch nor prices",
    "common_scale": "with p_g alone, scaling all costs together leaves the dispatch unchanged",
    "not_converged": "fit did not converge: the residual is above what the data allow, so no value is reported as identified",
    "error_bound": "its first-order error bound at the exact fit exceeds bound_rtol: the observations barely move it",
    "no_report": "no identifiability report: none was asked for, or no sample's optimum was differentiable",
}


@dataclass(frozen=True)
class IdentifiabilityReport:
    """Per-parameter verdicts plus the spectrum they came from.

    ``table``: one row per unknown (same order): ``identifiable`` (bool), ``reason`` (a key of
    `REASONS`, "" when identifiable), ``null_component``, ``rel_std``, ``sensitivity``.

    From `identifiability_report` (see there) on case9 with prices published:

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.grid.acopf import solve_acopf
    >>> from gridlearn.inverse import observation_jacobian, simulate_market
    >>> from gridlearn.inverse.params import cost_unknowns, current_values
    >>> truth = load_case("case9"); obs = simulate_market(truth, 3, seed=0)
    >>> unknowns = cost_unknowns(truth); theta = current_values(truth, unknowns)
    >>> results = [solve_acopf(truth.with_(pd_mw=obs.pd_mw[s], qd_mvar=obs.qd_mvar[s]), backend="direct") for s in range(3)]
    >>> report = identifiability_report(unknowns, theta, *observation_jacobian(truth, obs, unknowns, theta, results),
    ...                                 at_limit_every_sample(obs), obs.has_lmp, weights=(1.0, 100.0))
    >>> report.identifiable.tolist(), report.rank, report.n_observations, report.invariances
    ([True, True, True, True, True, True], 6, 36, [])
    """

    table: pd.DataFrame
    singular_values: np.ndarray
    rank: int
    n_observations: int
    invariances: list[str] = field(default_factory=list)

    @property
    def identifiable(self) -> np.ndarray:
        return self.table["identifiable"].to_numpy(dtype=bool)


def identifiability_report(
    unknowns: Sequence[Unknown],
    theta: Tensor,
    jac_pg: Tensor,
    jac_lmp: Tensor,
    at_limit_every_sample: Tensor,
    has_lmp: bool,
    weights: tuple[float, float] = (1.0, 1.0),
    rtol: float = 1e-7,
    null_tol: float = 1e-2,
    scale: Tensor | None = None,
) -> IdentifiabilityReport:
    """Build the report from the observation Jacobian (see the module docstring).

    Args:
        unknowns: the P unknowns; ``theta`` (P,) their values at the solution.
        jac_pg: (S, n_gen, P) d p_g / d theta; jac_lmp: (S, n_lmp, P) d LMP / d theta.
        at_limit_every_sample: bool (n_gen,) generator at pmin or pmax in every sample.
        has_lmp: whether any LMP is published.
        weights: (w_pg, w_lmp) of the loss, so the report judges the loss actually fitted.
        scale: (P,) the magnitude each column is scaled by (relative changes); default ``|theta|``
            (1 below 1e-12). `recover` passes ``|theta|`` but, for a c2 whose term is negligible
            (PGLib's linear costs), ``c1 / (2 pmax)``: scaled by a c2 of 1e-11 that Ipopt left
            instead of 0, its column falls under ``rtol`` and a determined c2 reads rank-deficient.

    case9's six cost coefficients from 3 scenarios: with the LMPs published all six are
    determined (rank 6 of 36 observations); from the dispatch alone, scaling every cost by
    one factor changes nothing observed, and the report says so instead of a rank count:

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.grid.acopf import solve_acopf
    >>> from gridlearn.inverse import observation_jacobian, simulate_market
    >>> from gridlearn.inverse.params import cost_unknowns, current_values
    >>> truth = load_case("case9")
    >>> unknowns = cost_unknowns(truth); theta = current_values(truth, unknowns)
    >>> def report(observe):
    ...     obs = simulate_market(truth, 3, seed=0, observe=observe)
    ...     results = [solve_acopf(truth.with_(pd_mw=obs.pd_mw[s], qd_mvar=obs.qd_mvar[s]), backend="direct")
    ...                for s in range(3)]
    ...     jac_pg, jac_lmp = observation_jacobian(truth, obs, unknowns, theta, results)
    ...     return identifiability_report(unknowns, theta, jac_pg, jac_lmp, at_limit_every_sample(obs), obs.has_lmp,
    ...                                   weights=(1.0, 100.0))
    >>> with_prices, dispatch_only = report("pg+lmp"), report("pg")
    >>> with_prices.rank, bool(with_prices.identifiable.all()), with_prices.table["rel_std"].round(3).tolist()[:2]
    (6, True, [0.068, 0.276])
    >>> dispatch_only.rank, dispatch_only.invariances, set(dispatch_only.table["reason"])
    (5, ['common_scale'], {'common_scale'})
    """
    p = len(unknowns)
    theta = theta.detach().cpu().double()
    if scale is None:
        scale = theta.abs().clamp_min(1e-12)
        # a zero-valued parameter: judge absolute changes instead (scale 1 in its own unit)
        scale = torch.where(theta.abs() > 1e-12, scale, torch.ones_like(scale))
    scale = scale.detach().cpu().double()
    rows = [jac_pg.reshape(-1, p) * weights[0] ** 0.5]
    if jac_lmp.numel():
        rows.append(jac_lmp.reshape(-1, p) * weights[1] ** 0.5)
    j = torch.cat(rows).detach().cpu().double() * scale
    u_, s, vh = torch.linalg.svd(j, full_matrices=True)
    s_max = float(s[0]) if s.numel() else 0.0
    rank = int((s > rtol * s_max).sum()) if s_max > 0 else 0
    null = vh[rank:].T  # (P, P - rank)
    null_component = null.norm(dim=1) if null.numel() else torch.zeros(p, dtype=torch.float64)
    gram_pinv = torch.linalg.pinv(j.T @ j, rtol=rtol**2) if p else torch.zeros(0, 0)
    rel_std = gram_pinv.diagonal().clamp_min(0).sqrt()
    rel_std = torch.where(null_component > null_tol, torch.full_like(rel_std, float("inf")), rel_std)
    sensitivity = j.norm(dim=0)

    # invariances
    invariances = []
    cost_gens = {u.position for u in unknowns if u.is_cost and u.kind in ("c2", "c1")}
    marginal = {g for g in range(at_limit_every_sample.numel()) if not bool(at_limit_every_sample[g])}
    common_scale = (not has_lmp) and bool(marginal) and marginal <= cost_gens
    if common_scale:
        invariances.append("common_scale")
    if any(u.kind == "c0" for u in unknowns):
        invariances.append("c0")

    reasons = []
    for k, u in enumerate(unknowns):
        if u.kind == "c0":
            reasons.append("c0")
        elif u.is_cost and bool(at_limit_every_sample[u.position]):
            reasons.append("at_limit")
        elif u.is_cost and common_scale:
            reasons.append("common_scale")
        elif float(null_component[k]) > null_tol:
            reasons.append("rank")
        else:
            reasons.append("")
    table = pd.DataFrame({
        "identifiable": [r == "" for r in reasons],
        "reason": reasons,
        "null_component": null_component.numpy(),
        "rel_std": rel_std.numpy(),
        "sensitivity": sensitivity.numpy(),
    })
    return IdentifiabilityReport(table=table, singular_values=s.numpy(), rank=rank, n_observations=int(j.shape[0]),
                                 invariances=invariances)


def at_limit_every_sample(observations) -> Tensor:
    """bool (n_gen,): generator at pmin or pmax in every observed sample."""
    return (observations.at_pmin | observations.at_pmax).all(dim=0)
