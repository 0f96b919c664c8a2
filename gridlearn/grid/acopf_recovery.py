"""How `solve_acopf` recovers from and explains a failed Ipopt solve.

- start points for its retry: `powerflow_start` (the case's AC power flow) and `flat_start`;
- `kkt_residuals`: how far an Ipopt point is from satisfying the KKT conditions (reported
  with every result, and the measure of an acceptable-level one);
- `relaxations_that_restore_feasibility`: which family of limits, lifted alone, makes an
  infeasible case feasible, so that an `InfeasibleError` names its true cause.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from gridlearn.grid.acopf_model import ACOPFArrays
from gridlearn.grid.acopf_nlp import ACOPFNLP
from gridlearn.implicit.solution import Status


def flat_start(d: ACOPFArrays, network) -> dict[str, np.ndarray]:
    """MATPOWER's flat start: angles at the reference angle, vm and dispatch mid-range (finite bounds)."""
    def mid(lo, hi, default):
        m = np.where(np.isfinite(lo) & np.isfinite(hi), (lo + hi) / 2, np.where(np.isfinite(lo), lo, np.where(np.isfinite(hi), hi, default)))
        return np.clip(m, lo, hi)

    va = np.zeros(d.n_bus)
    for i, v in d.va_fixed.items():
        va[:] = v  # one reference angle for every bus
        break
    vm = mid(d.vmin, d.vmax, 1.0)
    for i, v in d.vm_fixed.items():
        vm[i] = v
    return {"va": va, "vm": vm, "pg": mid(d.pmin, d.pmax, 0.0), "qg": mid(d.qmin, d.qmax, 0.0)}


def powerflow_start(d: ACOPFArrays, network) -> dict[str, np.ndarray] | None:
    """The case's AC power flow (setpoints as in the file) as a start, clipped to bounds; None if it fails."""
    from gridlearn.errors import GridlearnError
    from gridlearn.grid.powerflow import PowerFlowLayer

    try:
        sol = PowerFlowLayer().solve(network)
    except (GridlearnError, ValueError, RuntimeError):  # e.g. a generator at a PQ bus
        return None
    if not bool(sol.converged.all()):
        return None
    r = sol.value

    def a(t):
        return t.detach().cpu().double().numpy().reshape(-1)

    vm = np.clip(a(r.vm_pu), d.vmin, d.vmax)
    for i, v in d.vm_fixed.items():
        vm[i] = v
    return {"va": a(r.va_rad), "vm": vm, "pg": np.clip(a(r.pg_mw) / d.base_mva, d.pmin, d.pmax),
            "qg": np.clip(a(r.qg_mvar) / d.base_mva, d.qmin, d.qmax)}


def kkt_residuals(nlp: ACOPFNLP, x: np.ndarray, mult_g: np.ndarray, zl: np.ndarray, zu: np.ndarray) -> dict[str, float]:
    """Largest primal, dual and complementarity violations of Ipopt's KKT conditions at ``x``.

    Stationarity of ``f + mult_g^T g(x) - zl^T (x - x_lb) + zu^T (x - x_ub)`` in x (Ipopt's
    Lagrangian, ``zl``/``zu`` over Ipopt's x); primal: ``g`` outside ``[g_lb, g_ub]`` or ``x``
    outside its bounds; complementarity: ``max zl (x - x_lb), zu (x_ub - x), |mult_g| slack``.
    """
    g = nlp.constraints(x)
    primal = max(float(np.max(np.maximum(nlp.g_lb - g, g - nlp.g_ub), initial=0.0)),
                 float(np.max(np.maximum(nlp.x_lb - x, x - nlp.x_ub), initial=0.0)))
    rows, cols = nlp.jacobianstructure()
    jt_lam = np.bincount(cols, nlp.jacobian(x) * mult_g[rows], nlp.n)
    dual = float(np.max(np.abs(nlp.gradient(x) + jt_lam - zl + zu), initial=0.0))
    with np.errstate(invalid="ignore"):
        slack_g = np.minimum(np.where(np.isfinite(nlp.g_lb), g - nlp.g_lb, np.inf), np.where(np.isfinite(nlp.g_ub), nlp.g_ub - g, np.inf))
        comp_g = np.where(np.isfinite(slack_g), np.abs(mult_g) * slack_g, 0.0)
        comp_l = np.where(np.isfinite(nlp.x_lb), zl * (x - nlp.x_lb), 0.0)
        comp_u = np.where(np.isfinite(nlp.x_ub), zu * (nlp.x_ub - x), 0.0)
    comp = float(max(np.max(np.abs(comp_g), initial=0.0), np.max(np.abs(comp_l), initial=0.0), np.max(np.abs(comp_u), initial=0.0)))
    return {"primal": primal, "dual": dual, "complementarity": comp}


#: Limits `solve_acopf` lifts one at a time to name the cause of an infeasible AC-OPF.
RELAXATIONS = {
    "voltage limits (vmin_pu/vmax_pu)": lambda n: n.with_(vmin_pu=torch.zeros_like(n.bus.vmin_pu),
                                                          vmax_pu=torch.full_like(n.bus.vmax_pu, 2.0)),
    "reactive limits (qmin_mvar/qmax_mvar)": lambda n: n.with_(qmin_mvar=torch.full_like(n.gen.qmin_mvar, -float("inf")),
                                                               qmax_mvar=torch.full_like(n.gen.qmax_mvar, float("inf"))),
    # pmax only: with pmin = -inf a linear cost would make the problem unbounded
    "generator capacities (pmax_mw)": lambda n: n.with_(pmax_mw=torch.full_like(n.gen.pmax_mw, float("inf"))),
    "generator minimum outputs (pmin_mw)": lambda n: n.with_(pmin_mw=torch.clamp(n.gen.pmin_mw, max=0.0)),
    "branch ratings (rate_a_mva)": lambda n: n.with_(rate_a_mva=torch.full_like(n.branch.rate_a_mva, float("inf"))),
    "angle-difference limits": lambda n: n.with_(angmin_rad=torch.full_like(n.branch.angmin_rad, -float("inf")),
                                                 angmax_rad=torch.full_like(n.branch.angmax_rad, float("inf"))),
}


def relaxations_that_restore_feasibility(network, solve: Callable[[Any], Status]) -> list[str]:
    """Which single family of limits, lifted, lets ``solve(relaxed network)`` converge (the likely true cause)."""
    return [what for what, relax in RELAXATIONS.items() if solve(relax(network)) in (Status.CONVERGED, Status.ACCEPTABLE)]
