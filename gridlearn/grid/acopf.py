"""`solve_acopf`: polar AC-OPF of a `Network` solved by Ipopt, with all multipliers.

The problem is the recipe in `acopf_model` over the physics of `acphysics.ACPolar`, posed
in one of the `formulations` conventions (MATPOWER / pandapower). `solve_acopf` builds that Pyomo model and solves it with Ipopt
through Pyomo's cyipopt interface (``backend="pyomo"``, the default). With
``backend="direct"`` Ipopt (through cyipopt) evaluates the very same problem with the
vectorised numpy callbacks of `acopf_nlp.ACOPFNLP` (analytic sparse Jacobian and
Hessian): same optimum and multipliers (tested), 4-8x faster end to end on
case57-case118, where Pyomo's model building and NL writing dominate. `ACOPFLayer` and the
application modules, which solve many scenarios, use the direct path.

Multipliers are Ipopt's raw ones (Pyomo's ``dual``/``ipopt_zL_out``/``ipopt_zU_out``
suffixes hold the same numbers): Ipopt's Lagrangian is
``f + lambda^T c(x) - zL^T (x - xL) + zU^T (x - xU)``, so for ``c(x, pd) = ... - pd/B = 0``
the envelope theorem gives ``d f*/d pd_i = -lambda_i / B``: the LMP in $/MWh is
``-dual(p_balance_i) / base_mva`` (checked against a finite difference in the tests).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gridlearn._deprecation import renamed_attribute, warn_renamed
from gridlearn.errors import ConfigError, InfeasibleError, SolverFailure, SolverUnavailable
from gridlearn.grid.acopf_model import ACOPFArrays, acopf_arrays, build_acopf_model
from gridlearn.grid.adequacy import active_power_shortfall_mw
from gridlearn.grid.acopf_nlp import ACOPFNLP
from gridlearn.grid.acopf_recovery import flat_start, kkt_residuals, powerflow_start, relaxations_that_restore_feasibility
from gridlearn.grid.checks import check_costs, check_finite
from gridlearn.grid.acopf_model import polar_formulation
from gridlearn.grid.formulations import Convention, get_convention
from gridlearn.implicit.solution import Solution, Status

log = logging.getLogger(__name__)

# Ipopt's ApplicationReturnStatus names -> gridlearn Status (anything else: NUMERICAL).
IPOPT_STATUS = {
    "Solve_Succeeded": Status.CONVERGED,
    "Infeasible_Problem_Detected": Status.INFEASIBLE,
    "Maximum_Iterations_Exceeded": Status.MAX_STEPS,
    "Maximum_CpuTime_Exceeded": Status.MAX_STEPS,
    "Diverging_Iterates": Status.DIVERGED,
    "Search_Direction_Becomes_Too_Small": Status.STEP_TOO_SMALL,
    "Invalid_Number_Detected": Status.NONFINITE,
    "Solved_To_Acceptable_Level": Status.ACCEPTABLE,
}


class AcceptableWarning(UserWarning):
    """An AC-OPF was solved only to Ipopt's acceptable level (its residuals are in the result)."""
# Ipopt's ApplicationReturnStatus codes (IpReturnCodes_inc.h), as cyipopt reports them.
IPOPT_RETURN_CODES = {
    0: "Solve_Succeeded", 1: "Solved_To_Acceptable_Level", 2: "Infeasible_Problem_Detected",
    3: "Search_Direction_Becomes_Too_Small", 4: "Diverging_Iterates", 5: "User_Requested_Stop",
    6: "Feasible_Point_Found", -1: "Maximum_Iterations_Exceeded", -2: "Restoration_Failed",
    -3: "Error_In_Step_Computation", -4: "Maximum_CpuTime_Exceeded", -10: "Not_Enough_Degrees_Of_Freedom",
    -11: "Invalid_Problem_Definition", -12: "Invalid_Option", -13: "Invalid_Number_Detected",
    -100: "Unrecoverable_Exception", -101: "NonIpopt_Exception_Thrown", -102: "Insufficient_Memory",
    -199: "Internal_Error",
}


@dataclass(frozen=True)
class ACOPFResult:
    """A solved AC-OPF. Tensors are float64 on the CPU; per unit unless the name says otherwise.

    ``duals`` holds Ipopt's raw multipliers (sign convention in the module docstring):
    ``p_balance``/``q_balance`` (n_bus,), ``flow_f``/``flow_t`` (n_branch, 0 where unlimited),
    ``angle`` (n_branch, positive when the upper limit binds), and the bound multipliers
    ``{va,vm,pg,qg}_lower``/``_upper`` (>= 0; 0 for fixed variables).
    """

    convention: str
    status: str  # Ipopt's return status: "Solve_Succeeded", or "Solved_To_Acceptable_Level" (outcome ACCEPTABLE)
    cost_usd_per_h: float  # the objective: generation cost
    pg_mw: Tensor  # (n_gen,)
    qg_mvar: Tensor  # (n_gen,)
    vm_pu: Tensor  # (n_bus,)
    va_rad: Tensor  # (n_bus,)
    p_from_mw: Tensor  # (n_branch,) active power into the branch at its from end
    q_from_mvar: Tensor
    p_to_mw: Tensor  # at the to end
    q_to_mvar: Tensor
    lmp_usd_per_mwh: Tensor  # (n_bus,) d objective / d pd_mw
    lmp_q_usd_per_mvarh: Tensor  # (n_bus,) d objective / d qd_mvar
    duals: dict[str, Tensor] = field(repr=False)
    fixed: dict[str, Tensor] = field(repr=False)  # bool masks of fixed va / vm entries
    slacks: dict[str, Tensor] = field(repr=False)  # flow_f/flow_t: -h >= 0 (inf: unlimited); angle: to the nearer limit
    angle_bound_rad: Tensor = field(repr=False, default=None)  # (n_branch,) limit on the side whose dual is nonzero
    solve_time_s: float = 0.0  # Ipopt alone
    outcome: Status = Status.CONVERGED  # CONVERGED, or ACCEPTABLE (Ipopt's acceptable level; see residuals)
    # Largest violations at the returned point, per unit: "primal" (constraints and bounds), "dual"
    # (stationarity of Ipopt's Lagrangian, $/h per pu), "complementarity".
    residuals: dict[str, float] = field(default_factory=dict)
    start: str = "case"  # which start point gave this result: "warm", "case", "powerflow" or "flat"

    # Old flow names (before the one vocabulary of issue 17), kept for one release.
    pf_mw = renamed_attribute("ACOPFResult", "pf_mw", "p_from_mw")
    qf_mvar = renamed_attribute("ACOPFResult", "qf_mvar", "q_from_mvar")
    pt_mw = renamed_attribute("ACOPFResult", "pt_mw", "p_to_mw")
    qt_mvar = renamed_attribute("ACOPFResult", "qt_mvar", "q_to_mvar")
    objective = renamed_attribute("ACOPFResult", "objective", "cost_usd_per_h")

    def start_point(self, base_mva: float) -> dict[str, np.ndarray]:
        """This solution as an Ipopt starting point (per unit)."""
        return {
            "va": self.va_rad.numpy(),
            "vm": self.vm_pu.numpy(),
            "pg": self.pg_mw.numpy() / base_mva,
            "qg": self.qg_mvar.numpy() / base_mva,
        }


def default_start(d: ACOPFArrays, network) -> dict[str, np.ndarray]:
    """MATPOWER-style start: case angles and voltages (generator buses at their setpoint), clipped to bounds."""
    vm = network.bus.vm0_pu.detach().cpu().double().numpy().copy()
    vm[d.gen_bus] = network.gen.vg_pu.detach().cpu().double().numpy()
    for i, v in d.vm_fixed.items():
        vm[i] = v
    pg = network.gen.p_mw.detach().cpu().double().numpy() / d.base_mva
    return {
        "va": network.bus.va0_rad.detach().cpu().double().numpy().copy(),
        "vm": np.clip(vm, d.vmin, d.vmax),
        "pg": np.clip(pg, d.pmin, d.pmax),
        "qg": np.clip(np.zeros(d.n_gen), d.qmin, d.qmax),
    }


def _validate(network) -> None:
    check_costs(network, convex=True, pwl=True, reactive=True)
    for name in ("pd_mw", "qd_mvar", "gs_mw", "bs_mvar"):
        check_finite(f"bus.{name}", getattr(network.bus, name), network.bus.labels)
    for name in ("r_pu", "x_pu", "g_pu", "b_pu"):
        check_finite(f"branch.{name}", getattr(network.branch, name), network.branch.labels)


def _check_start(d: ACOPFArrays, network, warm_start: ACOPFResult | None) -> dict[str, np.ndarray]:
    start = warm_start.start_point(d.base_mva) if warm_start is not None else default_start(d, network)
    for key, n in (("va", d.n_bus), ("vm", d.n_bus), ("pg", d.n_gen), ("qg", d.n_gen)):
        if start[key].shape != (n,):
            raise ValueError(f"warm_start {key} has shape {start[key].shape}, the network needs ({n},)")
    return start


def _ipopt_problem(nlp: ACOPFNLP, options: dict[str, Any]):
    try:
        import cyipopt
    except ImportError as exc:
        raise SolverUnavailable(f"Ipopt is not installed: cannot import cyipopt ({exc}). "
                                "Install the `cyipopt-wheels` package (scripts/setup.sh does).") from exc
    from gridlearn.solvers import DEFAULT_IPOPT_OPTIONS, check_ipopt_options

    check_ipopt_options(options)  # a misspelt option is a ConfigError naming it, not a TypeError
    problem = cyipopt.Problem(n=nlp.n, m=nlp.m, problem_obj=nlp, lb=nlp.x_lb, ub=nlp.x_ub, cl=nlp.g_lb, cu=nlp.g_ub)
    for key, value in {**DEFAULT_IPOPT_OPTIONS, **options}.items():
        try:
            problem.add_option(key, value)
        except TypeError as exc:  # cyipopt: "Error while assigning an option", for any rejected option
            problem.close()
            raise ConfigError(f"Ipopt rejected the option {key}={value!r}: an unknown name, a value of the wrong type "
                              "or out of range (see Ipopt's options reference)") from exc
    return problem


@dataclass
class ACOPFStatus(Solution):
    """The `Solution` of `solve_acopf_status` (batch of one).

    Unpacks, for one release and with a DeprecationWarning, as the ``(Status, Ipopt status,
    result or None)`` tuple earlier releases returned.
    """

    def __iter__(self):
        warn_renamed("solve_acopf_status", "tuple unpacking",
                     "the Solution: .statuses[0], .extras['ipopt_status'], .value")
        return iter((self.statuses[0], self.extras["ipopt_status"], self.value))


def solve_acopf_status(
    network, convention: str | Convention = "matpower", warm_start: ACOPFResult | None = None,
    backend: str = "pyomo", **ipopt_options: Any,
) -> ACOPFStatus:
    """Like `solve_acopf` from one start (no retries), never raising on solver failure.

    Returns a `Solution` of one element: ``value`` the `ACOPFResult` when the status is
    CONVERGED, else None (an acceptable-level solve gives Status.ACCEPTABLE and None here;
    `solve_acopf` returns it with a warning); ``residual`` the largest of the result's KKT
    residuals (inf without a result); ``steps`` -1 (Ipopt's iteration count is not read
    back); ``extras["ipopt_status"]`` Ipopt's own return status. ``backend`` as in
    `solve_acopf`, with the same default.

    >>> from gridlearn.grid import load_case
    >>> sol = solve_acopf_status(load_case("case9"), backend="direct")
    >>> sol.statuses, sol.extras["ipopt_status"], round(sol.value.cost_usd_per_h, 2)
    ([<Status.CONVERGED: 'converged'>], 'Solve_Succeeded', 5296.69)
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    conv = get_convention(convention)
    _validate(network)
    d = acopf_arrays(network, conv)
    start = _check_start(d, network, warm_start)
    if backend == "pyomo":
        status, ipopt_status, result = _solve_pyomo(d, conv, start, ipopt_options, network.name)
    else:
        status, ipopt_status, result, _ = _solve_direct(d, conv, start, ipopt_options, network.name)
    result = result if status is Status.CONVERGED else None
    residual = max(result.residuals.values(), default=0.0) if result is not None else float("inf")
    return ACOPFStatus(value=result, status_code=torch.tensor([status.code]),
                       residual=torch.tensor([residual], dtype=torch.float64), steps=torch.tensor([-1]),
                       extras={"ipopt_status": ipopt_status})


def solve_acopf_nlp(
    network, conv: Convention, warm_start: ACOPFResult | None, ipopt_options: dict[str, Any]
) -> tuple[Status, str, ACOPFResult | None, ACOPFNLP]:
    """One direct-path solve that also returns the `ACOPFNLP` (the layer's backward reuses its derivatives)."""
    _validate(network)
    d = acopf_arrays(network, conv)
    start = _check_start(d, network, warm_start)
    status, ipopt_status, result, nlp = _solve_direct(d, conv, start, ipopt_options, network.name)
    return status, ipopt_status, (result if status is Status.CONVERGED else None), nlp


def _solve_direct(d: ACOPFArrays, conv: Convention, start: dict[str, np.ndarray], ipopt_options: dict[str, Any],
                  name: str) -> tuple[Status, str, ACOPFResult | None, ACOPFNLP]:
    """One Ipopt solve through the vectorised callbacks; a result for CONVERGED and ACCEPTABLE."""
    nlp = ACOPFNLP(d, conv)
    z0 = np.concatenate([start["va"], start["vm"], start["pg"], start["qg"]])
    problem = _ipopt_problem(nlp, ipopt_options)
    t0 = time.perf_counter()
    x, info = problem.solve(nlp.to_x(z0))
    solve_time = time.perf_counter() - t0
    problem.close()
    ipopt_status = IPOPT_RETURN_CODES.get(int(info["status"]), f"return code {info['status']}")
    status = IPOPT_STATUS.get(ipopt_status, Status.NUMERICAL)
    if status not in (Status.CONVERGED, Status.ACCEPTABLE):
        log.info("AC-OPF %s (%s convention): Ipopt returned %s", name, conv.name, ipopt_status)
        return status, ipopt_status, None, nlp
    z = nlp.to_z(x)
    mult_l, mult_u = np.asarray(info["mult_x_L"], dtype=float), np.asarray(info["mult_x_U"], dtype=float)
    zl, zu = np.zeros(nlp.nz), np.zeros(nlp.nz)
    zl[nlp.free], zu[nlp.free] = mult_l[: nlp.n_free], mult_u[: nlp.n_free]
    g = np.asarray(info["mult_g"], dtype=float)
    cons = _constraint_duals(d, nlp, g)
    result = _pack(d, conv, ipopt_status, nlp.objective(x), solve_time, z, cons, zl, zu)
    residuals = kkt_residuals(nlp, np.asarray(x, dtype=float), g, mult_l, mult_u)
    return status, ipopt_status, dataclasses.replace(result, outcome=status, residuals=residuals), nlp


def _constraint_duals(d: ACOPFArrays, nlp: ACOPFNLP, g: np.ndarray) -> dict[str, np.ndarray]:
    """Ipopt's constraint multipliers (in `ACOPFNLP`'s row order) per named constraint."""
    nb, nlim, nang = d.n_bus, nlp.n_lim // 2, d.angle_limited.size

    def per_branch(idx, values):
        out = np.zeros(d.n_branch)
        out[idx] = values
        return out

    o = 2 * nb
    return {
        "p_balance": g[:nb],
        "q_balance": g[nb:o],
        "flow_f": per_branch(d.limited, g[o : o + nlim]),
        "flow_t": per_branch(d.limited, g[o + nlim : o + 2 * nlim]),
        "angle": per_branch(d.angle_limited, g[o + 2 * nlim : o + 2 * nlim + nang]),
        **({"pwl": g[o + 2 * nlim + nang :]} if d.n_pwl else {}),  # epigraph segments
    }


def solve_acopf_pyomo_status(
    network, convention: str | Convention = "matpower", warm_start: ACOPFResult | None = None, **ipopt_options: Any
) -> tuple[Status, str, ACOPFResult | None]:
    """Deprecated: ``solve_acopf_status(..., backend="pyomo")`` (the default) gives the same solve as a `Solution`."""
    warn_renamed("gridlearn.grid.acopf", "solve_acopf_pyomo_status", "solve_acopf_status(..., backend='pyomo')")
    sol = solve_acopf_status(network, convention, warm_start, backend="pyomo", **ipopt_options)
    return sol.statuses[0], sol.extras["ipopt_status"], sol.value


def _solve_pyomo(d: ACOPFArrays, conv: Convention, start: dict[str, np.ndarray], ipopt_options: dict[str, Any],
                 name: str) -> tuple[Status, str, ACOPFResult | None]:
    """One Ipopt solve of the Pyomo model; a result for CONVERGED and ACCEPTABLE."""
    import pyomo.environ as pyo

    from gridlearn.solvers import get_ipopt

    model = build_acopf_model(d, conv, start)
    solver = get_ipopt(**ipopt_options)
    t0 = time.perf_counter()
    results = solver.solve(model)
    solve_time = time.perf_counter() - t0
    ipopt_status = IPOPT_RETURN_CODES.get(int(results.solver.return_code), f"return code {results.solver.return_code}")
    status = IPOPT_STATUS.get(ipopt_status, Status.NUMERICAL)
    if status not in (Status.CONVERGED, Status.ACCEPTABLE):
        log.info("AC-OPF %s (%s convention): Ipopt returned %s", name, conv.name, ipopt_status)
        return status, ipopt_status, None
    result = _extract(model, d, conv, ipopt_status, float(pyo.value(model.cost)), solve_time)
    # The same KKT residuals as the direct path, from the NLP evaluated at Pyomo's point and multipliers.
    nlp = ACOPFNLP(d, conv)
    y = np.array([model.y[j].value for j in range(d.n_pwl)], dtype=float) if d.n_pwl else np.zeros(0)
    z = np.concatenate([t.numpy() for t in (result.va_rad, result.vm_pu)] +
                       [result.pg_mw.numpy() / d.base_mva, result.qg_mvar.numpy() / d.base_mva])
    x = np.concatenate([z[nlp.free], y])
    du = result.duals
    mult_g = np.concatenate([du["p_balance"].numpy(), du["q_balance"].numpy(), du["flow_f"].numpy()[d.limited],
                             du["flow_t"].numpy()[d.limited], du["angle"].numpy()[d.angle_limited]] +
                            ([du["pwl"].numpy()] if d.n_pwl else []))
    zl = np.concatenate([du[f"{k}_lower"].numpy() for k in ("va", "vm", "pg", "qg")])[nlp.free]
    zu = np.concatenate([du[f"{k}_upper"].numpy() for k in ("va", "vm", "pg", "qg")])[nlp.free]
    residuals = kkt_residuals(nlp, x, mult_g, np.concatenate([zl, np.zeros(d.n_pwl)]),
                              np.concatenate([zu, np.zeros(d.n_pwl)]))
    return status, ipopt_status, dataclasses.replace(result, outcome=status, residuals=residuals)


BACKENDS = ("pyomo", "direct")
#: Start points `solve_acopf` tries, in order, until Ipopt converges (``retry=True``).
RETRY_STARTS = ("powerflow", "flat")


def solve_acopf(
    network,
    convention: str | Convention = "matpower",
    warm_start: ACOPFResult | None = None,
    backend: str = "pyomo",
    strict: bool = False,
    retry: bool = True,
    **ipopt_options: Any,
) -> ACOPFResult:
    """Solve the polar AC-OPF of ``network`` with Ipopt (see `acopf_model` for the problem).

    Args:
        network: a `Network` with convex costs: polynomial (degree <= 2), piecewise linear
            (`Network.pwl_cost`, MATPOWER's epigraph) and reactive (`Network.reactive_cost`).
        convention: ``"matpower"`` (PGLib/MATPOWER: |S| limits, angle limits, reference
            voltage free) or ``"pandapower"`` (runopp: |I| limits, ext_grid voltage fixed).
        warm_start: a previous `ACOPFResult` of a network of the same size to start from;
            by default the case's own voltages and dispatch, clipped to their bounds.
        backend: how the problem reaches Ipopt. ``"pyomo"`` (default): the Pyomo model of
            `acopf_model`, through Pyomo's cyipopt interface. ``"direct"``: the same problem
            with vectorised numpy callbacks (`acopf_nlp`), no model build or NL file, about
            4x faster on case118; tests hold the two to the same solution and multipliers.
        strict: raise `SolverFailure` when Ipopt reaches only its acceptable level
            (``Solved_To_Acceptable_Level``) instead of returning that result with an
            `AcceptableWarning` (``result.outcome`` is then Status.ACCEPTABLE and
            ``result.residuals`` says how far from tolerance it is).
        retry: when the first start does not converge, try again from the case's AC power
            flow (`powerflow_start`, skipped when that power flow fails) and then from a flat
            start (`flat_start`), in that order (`RETRY_STARTS`); the first converged result
            wins (``result.start`` names its start). A failure is reported only after all.
        **ipopt_options: passed to Ipopt (e.g. ``tol=1e-10``, ``max_iter=500``).

    Raises:
        InfeasibleError: Ipopt converged to a point of local infeasibility from every start.
        SolverFailure: any other outcome from every start (iteration limit, restoration
            failure, ...), or an acceptable-level result with ``strict=True``.

    >>> from gridlearn.grid import load_case
    >>> res = solve_acopf(load_case("case9"), backend="direct")
    >>> round(res.cost_usd_per_h, 2), res.start          # MATPOWER's runopf: 5296.69 $/h
    (5296.69, 'case')
    """
    conv = get_convention(convention)
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    _validate(network)
    d = acopf_arrays(network, conv)
    first = _check_start(d, network, warm_start)
    makers = {"powerflow": lambda: powerflow_start(d, network), "flat": lambda: flat_start(d, network)}
    starts = [("warm" if warm_start is not None else "case", lambda: first)]
    starts += [(name, makers[name]) for name in RETRY_STARTS] if retry else []
    tried: list[tuple[str, Status | None, str]] = []
    acceptable: ACOPFResult | None = None
    for label, make in starts:
        start = make()
        if start is None:
            tried.append((label, None, "no start point (the power flow did not converge)"))
            continue
        if backend == "pyomo":
            status, ipopt_status, result = _solve_pyomo(d, conv, start, ipopt_options, network.name)
        else:
            status, ipopt_status, result, _ = _solve_direct(d, conv, start, ipopt_options, network.name)
        tried.append((label, status, ipopt_status))
        if status is Status.CONVERGED:
            return dataclasses.replace(result, start=label)
        if status is Status.ACCEPTABLE and acceptable is None:
            acceptable = dataclasses.replace(result, start=label)
    what = f"AC-OPF of {network.name or 'network'} ({conv.name} convention)"
    summary = "; ".join(f"{label} start: {ipopt_status}" for label, _, ipopt_status in tried)
    if acceptable is not None:
        r = acceptable.residuals
        msg = (f"{what}: Ipopt reached only its acceptable level ({summary}); residuals primal "
               f"{r.get('primal', float('nan')):.2e}, dual {r.get('dual', float('nan')):.2e}, complementarity "
               f"{r.get('complementarity', float('nan')):.2e}")
        if strict:
            raise SolverFailure(msg + " (strict=True)", indices=[0], statuses=[Status.ACCEPTABLE],
                                residuals=[max(r.values(), default=float("nan"))])
        warnings.warn(msg, AcceptableWarning, stacklevel=2)
        return acceptable
    statuses = [st for _, st, _ in tried if st is not None]
    # Load beyond capacity on a passive network is a proof, whatever Ipopt said (`adequacy`).
    cap = float(network.gen.pmax_mw.detach().sum())
    load = float(active_power_shortfall_mw(network)) + cap
    if load > cap:
        raise InfeasibleError(f"{what} failed: {summary}. The load ({load:.1f} MW) exceeds the generation capacity "
                              f"({cap:.1f} MW)", indices=[0], statuses=[Status.INFEASIBLE])
    if statuses and all(st is Status.INFEASIBLE for st in statuses):
        found = _explain(network, conv, ipopt_options)
        cause = ("Ipopt found only points of local infeasibility; " +
                 (f"the problem becomes feasible when only these limits are lifted: {', '.join(found)}" if found
                  else "lifting voltage, reactive, capacity, line or angle limits one at a time does not make it feasible"))
        raise InfeasibleError(f"{what} failed: {summary}. {cause}", indices=[0], statuses=[Status.INFEASIBLE])
    worst = statuses[0] if statuses else Status.NUMERICAL
    raise SolverFailure(f"{what} failed from every start ({summary}). {worst.name}: {worst.value}; raise max_iter "
                        "or give a warm_start", indices=[0], statuses=[worst])


def _explain(network, conv: Convention, ipopt_options: dict[str, Any]) -> list[str]:
    """The limit families whose removal alone lets the direct path converge (see `acopf_recovery`)."""
    def solve(relaxed) -> Status:
        d = acopf_arrays(relaxed, conv)
        return _solve_direct(d, conv, default_start(d, relaxed), ipopt_options, network.name)[0]

    return relaxations_that_restore_feasibility(network, solve)


def _extract(model, d: ACOPFArrays, conv: Convention, ipopt_status: str, objective: float, solve_time: float) -> ACOPFResult:
    """Read a solved Pyomo model (values and import suffixes) into an `ACOPFResult`."""
    def vals(var, n):
        return np.array([var[i].value for i in range(n)], dtype=float)

    z = np.concatenate([vals(model.va, d.n_bus), vals(model.vm, d.n_bus), vals(model.pg, d.n_gen), vals(model.qg, d.n_gen)])
    dual, zl_suffix, zu_suffix = model.dual, model.ipopt_zL_out, model.ipopt_zU_out

    def cons(con, index, n):
        out = np.zeros(n)
        for i in index:
            out[i] = dual.get(con[i], 0.0)
        return out

    duals = {
        "p_balance": cons(model.p_balance, range(d.n_bus), d.n_bus),
        "q_balance": cons(model.q_balance, range(d.n_bus), d.n_bus),
        "flow_f": cons(model.flow_f, d.limited.tolist(), d.n_branch),
        "flow_t": cons(model.flow_t, d.limited.tolist(), d.n_branch),
        "angle": cons(model.angle, d.angle_limited.tolist(), d.n_branch),
        **({"pwl": cons(model.pwl, range(d.pwl_gen.size), d.pwl_gen.size)} if d.n_pwl else {}),
    }
    zl, zu = [], []
    for var, n in ((model.va, d.n_bus), (model.vm, d.n_bus), (model.pg, d.n_gen), (model.qg, d.n_gen)):
        zl += [zl_suffix.get(var[i], 0.0) for i in range(n)]
        zu += [zu_suffix.get(var[i], 0.0) for i in range(n)]
    return _pack(d, conv, ipopt_status, objective, solve_time, z, duals, np.array(zl), np.array(zu))


def _pack(d: ACOPFArrays, conv: Convention, ipopt_status: str, objective: float, solve_time: float, z: np.ndarray,
          cons: dict[str, np.ndarray], zl: np.ndarray, zu: np.ndarray) -> ACOPFResult:
    """An `ACOPFResult` from ``z = (va, vm, pg, qg)``, constraint multipliers and bound multipliers (full z)."""
    nb, ng = d.n_bus, d.n_gen
    va, vm, pg, qg = z[:nb], z[nb : 2 * nb], z[2 * nb : 2 * nb + ng], z[2 * nb + ng :]
    duals = dict(cons)
    for k, (name, lo, hi) in enumerate((("va", 0, nb), ("vm", nb, 2 * nb), ("pg", 2 * nb, 2 * nb + ng),
                                        ("qg", 2 * nb + ng, 2 * nb + 2 * ng))):
        duals[f"{name}_lower"] = np.asarray(zl[lo:hi], dtype=float)
        duals[f"{name}_upper"] = np.asarray(zu[lo:hi], dtype=float)
    f, t = d.from_bus, d.to_bus
    form = polar_formulation(d, conv)
    ends = form.end_state(va, vm)
    pf, qf, pt, qt = form.flows(ends)
    base = d.base_mva
    slack_f = np.full(d.n_branch, np.inf)
    slack_t = np.full(d.n_branch, np.inf)
    lim = d.limited
    h = form.limit_residual(ends)  # from ends of the limited branches, then their to ends
    slack_f[lim], slack_t[lim] = -h[: lim.size], -h[lim.size :]
    dva = va[f] - va[t]
    slack_angle = np.full(d.n_branch, np.inf)
    al = d.angle_limited
    slack_angle[al] = np.minimum(d.angmax[al] - dva[al], dva[al] - d.angmin[al])
    angle_bound = np.where(duals["angle"] > 0, d.angmax, d.angmin)
    angle_bound[~np.isfinite(angle_bound)] = 0.0

    def tt(x):
        return torch.as_tensor(np.asarray(x, dtype=float), dtype=torch.float64)

    va_fixed = np.zeros(d.n_bus, dtype=bool)
    va_fixed[list(d.va_fixed)] = True
    vm_fixed = np.zeros(d.n_bus, dtype=bool)
    vm_fixed[list(d.vm_fixed)] = True
    return ACOPFResult(
        convention=conv.name,
        status=ipopt_status,
        cost_usd_per_h=objective,
        pg_mw=tt(pg * base),
        qg_mvar=tt(qg * base),
        vm_pu=tt(vm),
        va_rad=tt(va),
        p_from_mw=tt(pf * base),
        q_from_mvar=tt(qf * base),
        p_to_mw=tt(pt * base),
        q_to_mvar=tt(qt * base),
        lmp_usd_per_mwh=tt(-duals["p_balance"] / base),
        lmp_q_usd_per_mvarh=tt(-duals["q_balance"] / base),
        duals={k: tt(v) for k, v in duals.items()},
        fixed={"va": torch.as_tensor(va_fixed), "vm": torch.as_tensor(vm_fixed)},
        slacks={"flow_f": tt(slack_f), "flow_t": tt(slack_t), "angle": tt(slack_angle)},
        angle_bound_rad=tt(angle_bound),
        solve_time_s=solve_time,
    )
