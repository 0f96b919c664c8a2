"""`DCOPFLayer`: batched, differentiable DC optimal power flow / economic dispatch.

The problem (PTDF form, optional multi-period ramping) is stated in
`gridlearn.grid.dcopf_problem`; it is solved by `gridlearn.implicit.QPLayer`'s
interior point, and differentiated through the QP's KKT conditions (Amos & Kolter 2017):
dispatch, flows, angles, cost and the LMPs (read from the duals) are differentiable
w.r.t. loads and cost coefficients.

Costs: polynomial, and piecewise linear (`Network.pwl_cost`) as MATPOWER's epigraph
(`dcopf_problem._add_epigraph`); reactive-power costs have no DC counterpart and are left
out, as in MATPOWER's DC OPF.

Failure: a scenario with no feasible dispatch (load beyond what generation and line
limits allow) raises `InfeasibleError` naming it from `forward`; `solve` returns the
`Solution` with Status.INFEASIBLE instead. NaN loads or costs raise `DataError`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gridlearn._deprecation import renamed_attribute, take_renamed
from gridlearn.errors import ConfigError, DataError, InfeasibleError
from gridlearn.grid.checks import check_costs, check_inputs
from gridlearn.grid.dcopf_problem import DCStructure, assemble, pwl_cost_usd_per_h, read_out
from gridlearn.grid.network import Network
from gridlearn.implicit.qp import QPSettings, solve_qp
from gridlearn.implicit.solution import Solution, Status


@dataclass(frozen=True)
class DCOPFResult:
    """DC-OPF solution. Shapes: (B, ·) single period, (B, T, ·) with ``multi_period``; no
    B when no input was batched.

    pg_mw: (…, n_gen) dispatch. p_from_mw: (…, n_branch) from-end flow (``flow_mw``
    before issue 17's one vocabulary: still readable for one release, with a warning). va_rad: (…, n_bus)
    DC angles (reference bus at its angle). lmp_usd_per_mwh: (…, n_bus) locational
    marginal price = cost of serving 1 MW more load at the bus for one hour.
    line_value_usd_per_mwh: (…, n_branch) ≥ 0, cost saved per MW of extra capacity on the
    branch (0 where not congested or unlimited). cost_usd_per_h: (…) total generation
    cost Σ c2 p² + c1 p + c0 (per period with ``multi_period``).
    """

    pg_mw: Tensor
    p_from_mw: Tensor
    va_rad: Tensor
    lmp_usd_per_mwh: Tensor
    line_value_usd_per_mwh: Tensor
    cost_usd_per_h: Tensor

    flow_mw = renamed_attribute("DCOPFResult", "flow_mw", "p_from_mw")

    def _map(self, fn) -> "DCOPFResult":
        return DCOPFResult(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})


_OLD_COST_NAMES = {"cost_c2": "cost_c2_usd_per_mw2h", "cost_c1": "cost_c1_usd_per_mwh"}


def _cost_arguments(c2: Tensor | None, c1: Tensor | None, deprecated: dict) -> tuple[Tensor | None, Tensor | None]:
    """The cost coefficients, from their unit-named arguments or (deprecated) the old names."""
    new = take_renamed("DCOPFLayer", deprecated, _OLD_COST_NAMES, stacklevel=3)
    given = {"cost_c2_usd_per_mw2h": c2, "cost_c1_usd_per_mwh": c1}
    for name, value in new.items():
        if given[name] is not None:
            raise ConfigError(f"DCOPFLayer: {name} given twice (also under its old name)")
        given[name] = value
    return given["cost_c2_usd_per_mw2h"], given["cost_c1_usd_per_mwh"]


class DCOPFLayer(nn.Module):
    """Differentiable DC-OPF: ``result = DCOPFLayer()(network, pd_mw)``.

    Args:
        settings: `QPSettings` of the interior point (tolerance, iterations); the default
            tol=1e-11 (tighter than QPLayer's: generators with a small c2 make the dispatch
            sensitive to the dual residual) gets dispatch to ~1e-6 MW on case300.
        multi_period: False: ``pd_mw`` is (n_bus,) or (B, n_bus). True: a dispatch
            horizon, ``pd_mw`` is (T, n_bus) or (B, T, n_bus), periods linked by ramp limits.
        screen_limits: leave out flow and angle limit rows that no dispatch within the
            generator bounds can reach, in any scenario of the batch (exact: they are
            implied, so the solution and its derivatives are unchanged; the QP shrinks).

    Call ``layer(network, pd_mw=None, cost_c2_usd_per_mw2h=None, cost_c1_usd_per_mwh=None,
    ramp_mw_per_h=None, p0_mw=None, interval_h=1.0)``:
        pd_mw: demand per bus, MW (default: the network's).
        cost_c2_usd_per_mw2h, cost_c1_usd_per_mwh: (n_gen,) or (B, n_gen); default: the
            network's (the names `ACOPFLayer` uses; ``cost_c2=``/``cost_c1=`` still work for
            one release, with a DeprecationWarning).
        ramp_mw_per_h: (n_gen,) ramp limit per generator (inf = none); multi_period only.
        p0_mw: (n_gen,) or (B, n_gen) dispatch before the first period (ramp-limited
            against it); multi_period only.
        interval_h: period length in hours.

    With linear costs only (c2 = 0) the QP's Q is zero; the problem is still well posed
    (the generator bounds make the interior point's reduced system positive definite),
    but the LP's solution can be non-unique and its derivatives are piecewise constant.

    >>> from gridlearn.grid import load_case
    >>> res = DCOPFLayer()(load_case("case9"))
    >>> round(float(res.pg_mw.sum()), 3), tuple(res.lmp_usd_per_mwh.shape)   # lossless: generation = 315 MW load
    (315.0, (9,))
    """

    def __init__(self, *, settings: QPSettings = QPSettings(tol=1e-11), multi_period: bool = False,
                 screen_limits: bool = True):
        super().__init__()
        if not isinstance(settings, QPSettings):
            raise ConfigError(f"DCOPFLayer: settings must be QPSettings, got {type(settings).__name__}")
        if not isinstance(multi_period, bool):
            raise ConfigError(f"DCOPFLayer: multi_period must be a bool, got {multi_period!r}")
        self.settings = settings
        self.multi_period = multi_period
        self.screen_limits = bool(screen_limits)

    def extra_repr(self) -> str:
        return f"multi_period={self.multi_period}, screen_limits={self.screen_limits}, settings={self.settings}"

    def forward(self, network: Network, pd_mw: Tensor | None = None, cost_c2_usd_per_mw2h: Tensor | None = None,
                cost_c1_usd_per_mwh: Tensor | None = None, ramp_mw_per_h: Tensor | None = None,
                p0_mw: Tensor | None = None, interval_h: float = 1.0, **deprecated) -> DCOPFResult:
        c2, c1 = _cost_arguments(cost_c2_usd_per_mw2h, cost_c1_usd_per_mwh, deprecated)
        sol = self.solve(network, pd_mw, c2, c1, ramp_mw_per_h, p0_mw, interval_h)
        bad = sol.failed_indices()
        if bad and all(s is Status.INFEASIBLE for s in (sol.statuses[i] for i in bad)):
            totals = sol.extras["total_load_mw"]
            cap = sol.extras["capacity_mw"]
            shown = ", ".join(f"#{i} ({float(totals[i]):.1f} MW)" for i in bad[:10])
            raise InfeasibleError(
                f"DC-OPF infeasible for {len(bad)} of {sol.status_code.numel()} scenarios: {shown}; the load "
                f"exceeds what generation (capacity {cap:.1f} MW), line, angle and ramp limits allow. "
                "Reduce the load, raise pmax_mw or rate_a_mva, or relax ramp limits.",
                indices=bad, statuses=[Status.INFEASIBLE] * len(bad),
                residuals=[float(sol.residual[i]) for i in bad], steps=[int(sol.steps[i]) for i in bad],
            )
        sol.raise_on_failure("DCOPFLayer (DC-OPF)")
        return sol.value

    def solve(self, network: Network, pd_mw: Tensor | None = None, cost_c2_usd_per_mw2h: Tensor | None = None,
              cost_c1_usd_per_mwh: Tensor | None = None, ramp_mw_per_h: Tensor | None = None,
              p0_mw: Tensor | None = None, interval_h: float = 1.0, **deprecated) -> Solution:
        """Like `forward`, but never raises on failure: a `Solution` whose value is a
        `DCOPFResult` (NaN where a scenario failed), with per-scenario status (INFEASIBLE,
        MAX_STEPS, ...), and extras "qp" (the QP's own Solution), "total_load_mw" (B,),
        "capacity_mw"."""
        cost_c2, cost_c1 = _cost_arguments(cost_c2_usd_per_mw2h, cost_c1_usd_per_mwh, deprecated)
        if not isinstance(network, Network):
            raise TypeError(f"network must be a gridlearn Network, got {type(network).__name__}")
        if not (isinstance(interval_h, (int, float)) and interval_h > 0):
            raise ConfigError(f"interval_h must be a positive number, got {interval_h!r}")
        pd, c2, c1, ramp, p0, batched = self._inputs(network, pd_mw, cost_c2, cost_c1, ramp_mw_per_h, p0_mw)
        if pd.shape[0] == 0:
            raise DataError("DCOPFLayer: the batch of load scenarios is empty (pd_mw has batch size 0); "
                            "pass at least one scenario")
        st = DCStructure.build(network)
        qp = assemble(network, st, pd, c2, c1, ramp, p0, float(interval_h), screen=self.screen_limits)
        qsol = solve_qp(qp.Q, qp.p, qp.G, qp.h, qp.A, qp.b, settings=self.settings)
        x, lam, nu = qsol.value, qsol.extras["lam"], qsol.extras["nu"]
        out = read_out(network, st, qp, x, lam, nu)
        pg = out["pg_mw"]
        cost = (c2[:, None, :] * pg**2 + c1[:, None, :] * pg).sum(-1) + torch.nan_to_num(network.gen.cost_c0_usd_per_h, nan=0.0).sum()
        if network.pwl_cost is not None:
            cost = cost + pwl_cost_usd_per_h(network, pg)
        result = DCOPFResult(cost_usd_per_h=cost, **out)
        bad = ~qsol.converged
        if bool(bad.any()):
            result = result._map(lambda t: torch.where(bad.view(-1, *([1] * (t.dim() - 1))), torch.full_like(t, float("nan")), t))
        if not self.multi_period:
            result = result._map(lambda t: t[:, 0])
        if not batched:
            result = result._map(lambda t: t[0])
        cap = float(network.gen.pmax_mw.detach().sum())
        return Solution(
            value=result, status_code=qsol.status_code, residual=qsol.residual, steps=qsol.steps,
            extras={"qp": qsol, "total_load_mw": (pd + network.bus.gs_mw).detach().sum(-1).amax(-1), "capacity_mw": cap},
        )

    # ------------------------------------------------------------------ inputs
    def _inputs(self, network, pd_mw, cost_c2, cost_c1, ramp, p0):
        nb, ng = network.n_bus, network.n_gen
        pd_mw = network.bus.pd_mw if pd_mw is None else pd_mw
        if network.pwl_cost is not None and (cost_c2 is not None or cost_c1 is not None):
            raise ConfigError("cost_c2_usd_per_mw2h/cost_c1_usd_per_mwh replace polynomial costs, but this network prices generators "
                              f"{[network.gen.labels[i] for i in network.pwl_cost.generators()][:5]} piecewise "
                              "linearly; give those generators polynomial costs first")
        if cost_c2 is None or cost_c1 is None:
            # Reactive-power costs have no DC counterpart (MATPOWER's DC OPF drops them too).
            check_costs(network, pwl=True, reactive=True)
        c2 = network.gen.cost_c2_usd_per_mw2h if cost_c2 is None else cost_c2
        c1 = network.gen.cost_c1_usd_per_mwh if cost_c1 is None else cost_c1
        # +inf ramp means "no ramp limit"
        check_inputs({"pd_mw": pd_mw, "cost_c2_usd_per_mw2h": c2, "cost_c1_usd_per_mwh": c1, "ramp_mw_per_h": ramp,
                      "p0_mw": p0}, posinf_ok=frozenset({"ramp_mw_per_h"}))
        if bool((c2.detach() < 0).any()):
            raise DataError("cost_c2_usd_per_mw2h must be >= 0 (a convex cost) for the DC-OPF")
        if not self.multi_period and (ramp is not None or p0 is not None):
            raise ConfigError("ramp_mw_per_h and p0_mw need DCOPFLayer(multi_period=True)")
        if p0 is not None and ramp is None:
            raise ConfigError("p0_mw only matters with ramp_mw_per_h; pass both")
        if ramp is not None and (ramp.dim() != 1 or ramp.shape[0] != ng):
            raise DataError(f"ramp_mw_per_h must have shape ({ng},), got {tuple(ramp.shape)}")
        if ramp is not None and bool((ramp.detach() < 0).any()):
            raise DataError("ramp_mw_per_h must be >= 0")
        load_dims = 2 if self.multi_period else 1
        if pd_mw.shape[-1] != nb or pd_mw.dim() not in (load_dims, load_dims + 1):
            want = "(T, n_bus) or (B, T, n_bus)" if self.multi_period else "(n_bus,) or (B, n_bus)"
            raise DataError(f"pd_mw must have shape {want} with n_bus={nb}, got {tuple(pd_mw.shape)}")
        for name, t in (("cost_c2_usd_per_mw2h", c2), ("cost_c1_usd_per_mwh", c1)) + ((("p0_mw", p0),) if p0 is not None else ()):
            if t.shape[-1] != ng or t.dim() > 2:
                raise DataError(f"{name} must have shape ({ng},) or (B, {ng}), got {tuple(t.shape)}")
        sizes = {t.shape[0] for t in (c2, c1) + ((p0,) if p0 is not None else ()) if t.dim() == 2}
        if pd_mw.dim() == load_dims + 1:
            sizes.add(pd_mw.shape[0])
        batched = bool(sizes)
        sizes.discard(1)
        if len(sizes) > 1:
            raise DataError(f"batch sizes do not broadcast: {sorted(sizes)}")
        bsz = sizes.pop() if sizes else 1
        pd = pd_mw if pd_mw.dim() == load_dims + 1 else pd_mw.unsqueeze(0)
        if not self.multi_period:
            pd = pd.unsqueeze(1)
        pd = pd.expand(bsz, -1, -1)
        c2 = c2 if c2.dim() == 2 else c2.unsqueeze(0)
        c1 = c1 if c1.dim() == 2 else c1.unsqueeze(0)
        if p0 is not None and p0.dim() == 1:
            p0 = p0.unsqueeze(0)
        return pd, c2, c1, ramp, p0, batched


__all__ = ["DCOPFLayer", "DCOPFResult"]
