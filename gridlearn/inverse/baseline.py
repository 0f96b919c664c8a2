"""KKT-residual inverse optimisation of generator costs (convex; cvxpy), the fast baseline.

With the network known and LMPs published at generator buses, the AC-OPF stationarity
condition for generator g in sample s (see `gridlearn.grid.acopf`: Ipopt's bound
multipliers ``zL, zU >= 0`` divided by the base MVA) reads, in $/MWh,

    2 c2_g p_sg + c1_g - LMP_s,bus(g) - nu_lo_sg + nu_hi_sg = 0,   nu_lo >= 0 only at pmin, nu_hi >= 0 only at pmax.

The baseline (Keshavarz, Wang & Boyd 2011, "Imputing a convex objective function")
minimises the squared residuals of these equalities over ``c2 >= 0``, ``c1`` and the
multipliers: a convex QP, exact for noise-free data whenever each generator is off its
limits in at least two samples with different dispatch. It needs the LMP at every
unknown generator's bus; without it (``p_g`` alone, or prices at other buses) it does
not apply, and that is where the gradient method (`recover`) earns its place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.inverse.params import cost_unknowns, parameter_table


#: Two off-limit dispatches of one generator closer than this (MW) cannot separate c2 from c1.
DISTINCT_MW = 1e-3


def _separable(pg_mw: np.ndarray, at_limit: np.ndarray) -> np.ndarray:
    """bool (G,): the generator is off its limits in two samples with different dispatch.

    Only then do its stationarity equations ``2 c2 p + c1 = LMP`` pin both coefficients (a
    line through two points); at a limit the equation holds only up to the limit's multiplier.
    """
    out = np.zeros(pg_mw.shape[1], dtype=bool)
    for g in range(pg_mw.shape[1]):
        p = pg_mw[~at_limit[:, g], g]
        out[g] = p.size >= 2 and float(p.max() - p.min()) > DISTINCT_MW
    return out


@dataclass
class BaselineResult:
    """``parameters``: same layout as `InverseResult.parameters` (c2 and c1 rows); ``residual_rms`` in $/MWh.

    ``parameters["identifiable"]``: the generator is off its limits in at least two samples
    with different dispatch (else only a bound, or only ``2 c2 p + c1``, is determined).

    From `kkt_residual_costs` (noise-free case9: the residual is at rounding level):

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.inverse import simulate_market
    >>> truth = load_case("case9")
    >>> obs = simulate_market(truth, 3, seed=0)                 # 3 load scenarios, prices at every bus
    >>> res = kkt_residual_costs(truth, obs)
    >>> res.status, res.residual_rms < 1e-6, tuple(res.theta.shape), list(res.parameters.columns)
    ('optimal', True, (6,), ['value', 'unit', 'identifiable'])
    """

    parameters: pd.DataFrame
    theta: torch.Tensor
    residual_rms: float
    solve_time_s: float
    status: str


def kkt_residual_costs(network, observations, gens: Sequence[int] | None = None, truth=None,
                       solver: str = "CLARABEL") -> BaselineResult:
    """Fit ``c2, c1`` of generators ``gens`` (positions; all when None) from p_g and LMPs at their buses.

    Raises:
        ConfigError: an unknown generator's bus has no published LMP.
        SolverFailure: cvxpy did not return an optimal solution.

    case9, 3 noise-free scenarios: stationarity 2 c2 p + c1 = LMP at each unit's bus, fitted
    in one convex solve, gives the true costs; without prices there is nothing to fit:

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.inverse import simulate_market
    >>> truth = load_case("case9")
    >>> obs = simulate_market(truth, 3, seed=0)                 # 3 load scenarios, prices at every bus
    >>> res = kkt_residual_costs(truth, obs, truth=truth)
    >>> res.parameters[["value", "true"]].round(4).values.tolist()
    [[0.11, 0.11], [5.0, 5.0], [0.085, 0.085], [1.2, 1.2], [0.1225, 0.1225], [1.0, 1.0]]
    >>> kkt_residual_costs(truth, simulate_market(truth, 2, observe="pg"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: the KKT-residual baseline needs the LMP at every unknown generator's bus; ...
    """
    import cvxpy as cp

    observations.validate(network)
    gens = list(range(network.n_gen)) if gens is None else [int(g) for g in gens]
    published = {int(b): k for k, b in enumerate(observations.lmp_buses.tolist())}
    gen_bus = network.gen.bus.tolist()
    missing = [network.gen.labels[g] for g in gens if gen_bus[g] not in published]
    if missing:
        raise ConfigError(
            f"the KKT-residual baseline needs the LMP at every unknown generator's bus; none is published for "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''} (observe={observations.observe!r}); use recover()"
        )
    pg = observations.pg_mw.detach().cpu().double().numpy()[:, gens]  # (S, G)
    lmp = observations.lmp_usd_per_mwh.detach().cpu().double().numpy()[:, [published[gen_bus[g]] for g in gens]]
    lo = observations.at_pmin.cpu().numpy()[:, gens].astype(float)
    hi = observations.at_pmax.cpu().numpy()[:, gens].astype(float)
    s, n = pg.shape
    c2, c1 = cp.Variable(n), cp.Variable(n)
    nu_lo, nu_hi = cp.Variable((s, n), nonneg=True), cp.Variable((s, n), nonneg=True)
    resid = 2 * cp.multiply(pg, np.ones((s, 1)) @ cp.reshape(c2, (1, n), order="C")) + np.ones((s, 1)) @ cp.reshape(c1, (1, n), order="C") - lmp
    resid = resid - cp.multiply(lo, nu_lo) + cp.multiply(hi, nu_hi)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(resid) / s), [c2 >= 0])
    t0 = time.perf_counter()
    problem.solve(solver=solver)
    elapsed = time.perf_counter() - t0
    if problem.status not in ("optimal", "optimal_inaccurate") or c2.value is None:
        raise SolverFailure(f"KKT-residual baseline: cvxpy returned {problem.status}")
    unknowns = cost_unknowns(network, gens)
    theta = torch.as_tensor(np.stack([c2.value, c1.value], axis=1).reshape(-1), dtype=torch.float64)
    columns = {"value": theta}
    if truth is not None:
        from gridlearn.inverse.params import current_values

        columns["true"] = current_values(truth, unknowns)
    table = parameter_table(network, unknowns, columns)
    table["identifiable"] = np.repeat(_separable(pg, lo + hi > 0), 2)
    return BaselineResult(parameters=table, theta=theta, residual_rms=float(np.sqrt(max(problem.value, 0.0))),
                          solve_time_s=elapsed, status=str(problem.status))
