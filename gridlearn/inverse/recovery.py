"""`recover`: fit unknown costs and branch parameters to published dispatch and prices through AC-OPF.

Loss (weights stated, default ``w_pg : w_lmp = 1 : 100``, the 100:1 ratio of Donti,
Azevedo & Kolter 2018, put on prices since they are the smaller numbers; or
``weights="variance"``: each channel divided by its observed variance):

    L(theta) = (1/S) sum_s [ w_pg ||p_g*(theta; d_s) - p_g,s||^2 + w_lmp ||LMP*(theta; d_s)[obs] - LMP_s||^2 ]

``p_g*``, ``LMP*``: the AC-OPF solution (`ACOPFLayer`; ``InverseSolver.backend="ipopt"``: one
Ipopt solve per sample, sparse KKT backward and forward-mode KKT Jacobian (`sensitivity`);
``"torch"``: all samples in one batched torch interior point, its implicit-function backward
for the gradient, the same forward-mode KKT Jacobian at its solutions, `batched`). The
optimiser works in relative units ``u = theta / |theta_prior|`` and projects onto the
physical set after each step (c2 >= 0, r >= 0, x keeps the prior's sign and stays away
from 0). Methods (`optimisers`):

- ``"lbfgs"``: L-BFGS two-loop direction (Nocedal & Wright, alg. 7.4), projected
  backtracking (Armijo) line search; gradient from the layer's adjoint.
- ``"adam"``: projected Adam (Kingma & Ba 2015); gradient from the layer's adjoint.
- ``"lm"``: Levenberg-Marquardt on the residuals with the forward-mode KKT Jacobian
  (`sensitivity`), i.e. Gauss-Newton with a trust parameter. A sample whose optimum is not
  differentiable at the current iterate (a weakly active constraint) is left out of that
  iteration's Jacobian and residual (logged): the step is only a search direction, and its
  acceptance still checks the full loss over every sample.

Starts (`starts`, ``InverseSolver.init``): ``"auto"`` tries the KKT-residual baseline
first where LMPs at unknown generators' buses are published (preceded by the baseline on
imputed prices where only some are, or on the model's own prices with p_g alone), then the prior, then
``n_starts - 1`` perturbed priors, stopping at the first start whose fit converges and
keeping the best (lowest final loss among converged, else overall); every start run is
reported in ``InverseResult.starts``.

The contract (`convergence`): ``InverseResult.status`` is CONVERGED only when the
residual is at the level the data allow (noise-free: per-channel RMS below ``fit_rtol``
of the channel; noisy: at the noise floor, with the Gauss-Newton step left below 0.1
standard errors). A parameter is flagged identifiable only when the fit converged, the
local tests of `identifiability` pass and (noise-free) its first-order error bound is
below ``bound_rtol``; otherwise its reason is ``"not_converged"`` ("fit did not
converge"), whatever the local tests said at the final iterate (kept in ``local_reason``).
Under noise each parameter gets a standard error from the Gauss-Newton sandwich
covariance (`uncertainty`).

A trial point where any sample's AC-OPF fails (infeasible, not converged, not
differentiable) is rejected and the step shrinks; the optimiser never crashes on it.
With ``warm_start=True`` (default) every AC-OPF of a trial point starts from that
sample's solution at the last accepted iterate (`ACOPFLayer`'s ``warm_start``: the per-sample
results for Ipopt, the previous call's `BatchedACOPFResult` for the torch backend; failed samples
start cold in both).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gridlearn.errors import ConfigError
from gridlearn.implicit.solution import Status
from gridlearn.grid.acopf_kkt import ACTIVE_TOL
from gridlearn.inverse.convergence import FitCheck, FitStatus, decide, fit_check
from gridlearn.inverse.identifiability import (REASONS, IdentifiabilityReport, at_limit_every_sample,
                                               identifiability_report)
from gridlearn.inverse.optimisers import OPTIMISERS
from gridlearn.inverse.params import Unknown, current_values, parameter_table, parse_unknowns, substitute
from gridlearn.inverse.starts import INITS, starting_points
from gridlearn.inverse.uncertainty import LocalErrors, local_errors, null_mask, step_in_std_err

log = logging.getLogger(__name__)

METHODS = tuple(OPTIMISERS)
BACKENDS = ("ipopt", "torch")
TORCH_JACOBIANS = ("kkt", "reverse")


@dataclass(frozen=True, kw_only=True)
class InverseSolver:
    """Settings of the outer optimisation. ``lr``: Adam step in relative units; ``memory``: L-BFGS pairs.

    ``init``/``n_starts``/``start_spread``/``seed``: the starts (see `starts`); ``fit_rtol``:
    the noise-free per-channel RMS tolerance of a converged fit (`convergence`);
    ``bound_rtol``: the largest first-order relative error bound (noise-free) of a coefficient
    flagged identifiable, ten times inside a 1% target. ``backend``: how every loss and Jacobian
    evaluation solves the S samples' AC-OPFs: ``"ipopt"`` (default, the reference: one Ipopt
    solve per sample) or ``"torch"`` (one batched torch interior point, `batched`; its tolerance
    ``ipm_tol``, `IPMOptions.tol`).

    >>> InverseSolver().method, InverseSolver(method="adam", lr=0.1).lr
    ('lm', 0.1)
    >>> InverseSolver(method="newton")
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: method must be one of ('lbfgs', 'adam', 'lm'), got 'newton'
    >>> InverseSolver(backend="gpu")
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: backend must be one of ('ipopt', 'torch'), got 'gpu'
    """

    method: str = "lm"
    max_iter: int = 30
    lr: float = 0.05
    memory: int = 8
    rtol: float = 1e-14  # stop when the loss falls below rtol * initial loss
    step_tol: float = 1e-8  # or when the relative step is this small
    max_shrinks: int = 10
    convention: str = "matpower"
    ipopt_tol: float = 1e-9  # the ACOPFLayer default; 1e-10 makes Ipopt stop at "acceptable" on some case30 loads
    active_tol: float = ACTIVE_TOL  # relative (scale-aware) active-set threshold, see acopf_kkt.active_set
    warm_start: bool = True  # start each trial point's AC-OPFs from the last accepted iterate's solutions
    init: str = "auto"
    n_starts: int = 4  # starts from the prior family (the prior and n_starts - 1 perturbed priors)
    start_spread: float = 0.3  # perturbed priors: prior * U(1 - spread, 1 + spread)
    seed: int = 0
    fit_rtol: float = 1e-5
    bound_rtol: float = 1e-3
    # Noise-free only: when no start converges but every hour except at most this fraction is
    # reproduced to the fit tolerance at the best start, refit without those hours and say so
    # (`InverseResult.hours_left_out`): there the AC-OPF reaches another local optimum than the
    # market's. 0 turns it off.
    max_hours_left_out: float = 0.25
    backend: str = "ipopt"
    ipm_tol: float = 1e-9  # backend="torch": the interior point's scaled optimality tolerance (Ipopt's tol)
    # backend="torch", the Levenberg-Marquardt / report Jacobian: "kkt" (the Ipopt path's forward-mode
    # sparse KKT sensitivity at the torch solution) or "reverse" (one reverse pass of the layer's batched
    # backward per residual column). Measured at 20 samples (benchmarks/results/inverse_backends*.json), kkt
    # vs reverse: case14 (19 columns) 0.04 vs 0.06 s, case30 (36) 0.05 vs 0.19 s, case57 (64) 0.06 vs 0.42 s,
    # case118 (172) 0.15 vs 2.6 s; both within 3.2e-6 of Ipopt's Jacobian (`batched` module docstring).
    torch_jacobian: str = "kkt"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.max_iter < 0 or self.memory < 1 or self.max_shrinks < 1:
            raise ConfigError("max_iter must be >= 0, memory and max_shrinks >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not self.active_tol > 0 or not self.ipopt_tol > 0:
            raise ConfigError(f"active_tol and ipopt_tol must be positive, got {self.active_tol}, {self.ipopt_tol}")
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {self.init!r}")
        if self.n_starts < 1 or not 0 <= self.start_spread < 1:
            raise ConfigError(f"n_starts must be >= 1 and start_spread in [0, 1), got {self.n_starts}, {self.start_spread}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.torch_jacobian not in TORCH_JACOBIANS:
            raise ConfigError(f"torch_jacobian must be one of {TORCH_JACOBIANS}, got {self.torch_jacobian!r}")
        if not self.ipm_tol > 0:
            raise ConfigError(f"ipm_tol must be positive, got {self.ipm_tol}")
        if not self.fit_rtol > 0 or not self.bound_rtol > 0:
            raise ConfigError(f"fit_rtol and bound_rtol must be positive, got {self.fit_rtol}, {self.bound_rtol}")


@dataclass
class InverseResult:
    """What `recover` found.

    ``status`` (`FitStatus`: converged / stalled / max_iter / failed) and ``message`` (a
    sentence saying why); ``final_loss``; ``noise_floor_loss``: the loss the stated noise
    level implies at the optimum (0 for noise-free data); ``fit``: the residual test.
    ``parameters``: DataFrame, one row per unknown, index ``(pandapower label, coefficient)``,
    columns ``value`` (recovered), ``prior``, ``true`` (when given), ``unit`` (pandapower's),
    ``identifiable``, ``reason`` (a key of `identifiability.REASONS`; ``"not_converged"`` for
    every row of a fit that did not converge), ``explanation`` (the reason's sentence),
    ``local_reason`` (what the local tests said at the final point), ``rel_std``,
    ``std_err`` (noisy data: Gauss-Newton standard error, pandapower units),
    ``error_bound`` (noise-free: first-order relative error bound). ``starts``: one row per
    start run (name, initial and final loss, status, iterations, rejected steps, seconds).
    ``loss_history``: loss per accepted iterate of the kept start (index 0 = its start).
    ``per_sample``: RMSE of the fit per sample. ``report``: the `IdentifiabilityReport` at
    the solution (None if it could not be computed). ``theta``: recovered values in
    Network units (same order as ``unknowns``).

    From `recover` on case9 started at a prior 30 % off (no baseline start): Levenberg-
    Marquardt converges in 4 iterations, every coefficient identified:

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.inverse import simulate_market
    >>> truth = load_case("case9")
    >>> obs = simulate_market(truth, 3, seed=0)                 # 3 load scenarios, prices at every bus
    >>> prior = truth.with_(cost_c2_usd_per_mw2h=0.7 * truth.gen.cost_c2_usd_per_mw2h,    # 30 % off
    ...                     cost_c1_usd_per_mwh=1.3 * truth.gen.cost_c1_usd_per_mwh)
    >>> res = recover(prior, obs, "costs", truth=truth, solver=InverseSolver(init="prior", n_starts=1))
    >>> res.status, res.start, len(res.loss_history), list(res.starts["start"])
    (<FitStatus.CONVERGED: 'converged'>, 'prior', 5, ['prior'])
    >>> round(res.loss_history[0]), res.loss_history[-1] < 1e-9, bool(res.parameters["identifiable"].all())
    (33616, True, True)
    >>> res.parameters.loc[[(("gen", 0), "c1")], ["value", "prior", "true", "unit"]].round(4)
                                value  prior  true            unit
    element  coefficient
    (gen, 0) c1            1.2   1.56   1.2  cp1_eur_per_mw
    """

    parameters: pd.DataFrame
    theta: Tensor
    unknowns: list[Unknown]
    loss_history: list[float]
    per_sample: pd.DataFrame
    report: IdentifiabilityReport | None
    weights: tuple[float, float]
    iterations: int
    n_rejected_steps: int
    status: FitStatus = FitStatus.FAILED
    message: str = ""
    final_loss: float = float("nan")
    noise_floor_loss: float = float("nan")
    fit: FitCheck | None = None
    starts: pd.DataFrame = field(default_factory=pd.DataFrame)
    start: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    report_skipped_samples: list[int] = field(default_factory=list)  # no sensitivity at the solution: not in the report
    # hours (sample positions of the observations given) left out of the fit because the model could not
    # reproduce them where it reproduced every other hour (`InverseSolver.max_hours_left_out`)
    hours_left_out: list[int] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.status is FitStatus.CONVERGED


class InverseProblem:
    """The inverse loss and its derivatives at a parameter vector (in Network units)."""

    def __init__(self, network, observations, unknowns: Sequence[Unknown], weights: tuple[float, float],
                 solver: InverseSolver):
        from gridlearn.grid.acopf_ipm import IPMOptions
        from gridlearn.grid.acopf_layer import ACOPFLayer

        self.network = network
        self.obs = observations
        self.unknowns = list(unknowns)
        self.weights = weights
        self.solver = solver
        self.layer = ACOPFLayer(network, convention=solver.convention, ipopt_options={"tol": solver.ipopt_tol},
                                active_tol=solver.active_tol, backend=solver.backend,
                                ipm_options=IPMOptions(tol=solver.ipm_tol))
        self.timings = {"forward_s": 0.0, "backward_s": 0.0, "jacobian_s": 0.0, "n_forward": 0, "n_backward": 0}
        # the last accepted iterate's solutions: per-sample ACOPFResult (Ipopt), a BatchedACOPFResult (torch)
        self.warm = None
        self._jac_cache: tuple[list, Tensor] | None = None

    @property
    def batched(self) -> bool:
        return self.solver.backend == "torch"

    def accept(self, results) -> None:
        """Remember an accepted iterate's solutions (what `loss` returned) as the next warm start."""
        if self.solver.warm_start and results is not None:
            self.warm = results.solution if self.batched else list(results)

    def fields(self, theta: Tensor) -> dict[str, Tensor]:
        net = substitute(self.network, self.unknowns, theta)
        names = {u.field for u in self.unknowns}
        return {n: getattr(net.gen if n.startswith("cost") else net.branch, n) for n in names}

    def residuals(self, pg: Tensor, lmp: Tensor) -> Tensor:
        """(S, n_gen + n_lmp) weighted residuals: sqrt(w) (model - observation)."""
        r_pg = (pg - self.obs.pg_mw) * self.weights[0] ** 0.5
        r_lmp = (lmp[:, self.obs.lmp_buses] - self.obs.lmp_usd_per_mwh) * self.weights[1] ** 0.5
        return torch.cat([r_pg, r_lmp], dim=1)

    def loss(self, theta: Tensor, grad: bool) -> tuple[float, Tensor | None, Tensor, list]:
        """(loss, gradient or None, residuals (S, m), solutions); raises SolverFailure.

        The solutions are the per-sample `ACOPFResult` list (Ipopt) or a `batched.BatchedPoint`
        (torch): pass them back to `jacobian` and `accept` as they are."""
        t0 = time.perf_counter()
        if self.batched:
            return self._batched_loss(theta, grad, t0)
        if not grad:
            sol = self.layer.solve(self.obs.pd_mw, self.obs.qd_mvar, warm_start=self.warm, **self.fields(theta))
            self._count("forward_s", t0)
            sol.raise_on_failure("AC-OPF at trial parameters")
            r = self.residuals(sol.value.pg_mw, sol.value.lmp_usd_per_mwh)
            return float((r**2).sum() / r.shape[0]), None, r, sol.extras["results"]
        th = theta.detach().clone().requires_grad_(True)
        out, sol = self.layer.forward_with_solution(self.obs.pd_mw, self.obs.qd_mvar, warm_start=self.warm,
                                                    **self.fields(th))
        self._count("forward_s", t0)
        r = self.residuals(out.pg_mw, out.lmp_usd_per_mwh)
        value = (r**2).sum() / r.shape[0]
        t1 = time.perf_counter()
        (g,) = torch.autograd.grad(value, th)
        self.timings["backward_s"] += time.perf_counter() - t1
        self.timings["n_backward"] += 1
        return float(value.detach()), g, r.detach(), sol.extras["results"]

    def _batched_loss(self, theta: Tensor, grad: bool, t0: float):
        from gridlearn.inverse import batched

        graph = grad or self.solver.torch_jacobian == "reverse"  # the KKT Jacobian needs no autograd graph
        point = batched.evaluate(self.layer, self.network, self.obs, self.unknowns, theta, self.warm, self.residuals,
                                 graph=graph)
        self._count("forward_s", t0)
        r = point.residuals
        value = (r**2).sum() / r.shape[0]
        g = None
        if grad:
            t1 = time.perf_counter()
            g = batched.loss_gradient(point, value)
            self.timings["backward_s"] += time.perf_counter() - t1
            self.timings["n_backward"] += 1
        return float(value.detach()), g, r.detach(), point

    def solve_outputs(self, theta: Tensor) -> tuple[Tensor, Tensor, list[int]]:
        """(pg_mw (S, n_gen), lmp_usd_per_mwh (S, n_bus), samples that failed) at ``theta``, cold
        started, without gradients; never raises on a sample's failure (its rows are NaN)."""
        sol = self.layer.solve(self.obs.pd_mw, self.obs.qd_mvar, **self.fields(theta))
        pg, lmp = sol.value.pg_mw.double(), sol.value.lmp_usd_per_mwh.double()
        bad = (sol.status_code != Status.CONVERGED.code) | ~torch.isfinite(pg).all(1) | ~torch.isfinite(lmp).all(1)
        return pg, lmp, bad.nonzero().flatten().tolist()

    def _count(self, key: str, t0: float) -> None:
        self.timings[key] += time.perf_counter() - t0
        self.timings["n_forward"] += 1

    def jacobian(self, theta: Tensor, results) -> Tensor:
        """(S, m, P) Jacobian of the weighted residuals (forward-mode KKT sensitivity, at the Ipopt or
        the torch solutions; torch with ``torch_jacobian="reverse"``: one batched reverse pass per
        residual column, `batched.reverse_jacobian`); NaN for a sample whose optimum has no
        derivative (see `observation_jacobian`'s ``skip_failed``)."""
        from gridlearn.inverse import batched
        from gridlearn.inverse.sensitivity import observation_jacobian

        if self._jac_cache is not None and self._jac_cache[0] is results:  # same solutions: same Jacobian
            return self._jac_cache[1]
        t0 = time.perf_counter()
        point = results
        if self.batched and self.solver.torch_jacobian == "reverse":
            jac = batched.reverse_jacobian(point, self.entry_weights())
            self.timings["jacobian_s"] += time.perf_counter() - t0
            self._jac_cache = (point, jac)
            return jac
        if self.batched:  # the torch solutions, read by the Ipopt path's sensitivity
            results = batched.per_sample_results(substitute(self.network, self.unknowns, theta.detach()),
                                                 self.solver.convention, point.solution)
        j_pg, j_lmp = observation_jacobian(self.network, self.obs, self.unknowns, theta, results,
                                           self.solver.convention, self.solver.active_tol, skip_failed=True)
        self.timings["jacobian_s"] += time.perf_counter() - t0
        jac = torch.cat([j_pg * self.weights[0] ** 0.5, j_lmp * self.weights[1] ** 0.5], dim=1)
        self._jac_cache = (point, jac)
        return jac


    # ------------------------------------------------------------ the fit at a point
    def entry_weights(self) -> Tensor:
        """(m,) loss weight of each residual column (p_g columns, then published LMPs)."""
        n_lmp = int(self.obs.lmp_buses.numel())
        return torch.cat([torch.full((self.network.n_gen,), self.weights[0], dtype=torch.float64),
                          torch.full((n_lmp,), self.weights[1], dtype=torch.float64)])

    def observed(self) -> Tensor:
        """(S, m) the published values, in the residuals' column order."""
        return torch.cat([self.obs.pg_mw, self.obs.lmp_usd_per_mwh], dim=1).double()

    def raw(self, r: Tensor) -> Tensor:
        """Unweighted residuals (model - observation) from weighted ones; a zero-weight channel
        is not fitted and reads 0 (it is left out of the fit test)."""
        w = self.entry_weights()
        return torch.where(w > 0, r / w.clamp_min(1e-300).sqrt(), torch.zeros_like(r))

    def check(self, r: Tensor) -> FitCheck:
        return fit_check(self.obs, self.raw(r), self.network.n_gen, len(self.unknowns), self.weights,
                         self.solver.fit_rtol)

    def local(self, r: Tensor, jac: Tensor, scale: Tensor) -> tuple[LocalErrors, Tensor, Tensor] | None:
        """(errors, null mask, differentiable-sample mask) from weighted residuals (S, m) and the
        Jacobian (S, m, P; NaN rows for samples without a derivative); None when no sample has one."""
        ok = torch.isfinite(jac).all(dim=(1, 2))
        if not ok.any():
            return None
        p = len(self.unknowns)
        j = jac[ok].reshape(-1, p)
        null = null_mask(j, scale)
        w = self.entry_weights().expand_as(r)
        raw, y = self.raw(r), self.observed()
        err = local_errors(j, raw[ok].reshape(-1), y[ok].reshape(-1), w[ok].reshape(-1), scale, null, p,
                           noisy=self.obs.noise > 0, raw_all=raw.reshape(-1), observed_all=y.reshape(-1),
                           entry_w_all=w.reshape(-1))
        return err, null, ok

    def settled(self, r: Tensor, jac: Tensor | None, scale: Tensor) -> bool:
        """The fit test passes here (noisy data: and the Gauss-Newton step left is a tenth of the
        convergence threshold in standard errors), so further iterations cannot improve the answer."""
        from gridlearn.inverse.convergence import STEP_IN_SE

        if not self.check(r).passed:
            return False
        if jac is None:  # the gradient methods, noise-free: the residual test alone
            return self.obs.noise <= 0
        loc = self.local(r, jac, scale)
        if loc is None:
            return False
        err, null, _ = loc
        if self.obs.noise <= 0:  # and the step left is a tenth of what flagging allows
            rel = err.step.abs() / scale
            return bool((rel[~null] <= self.solver.bound_rtol / 10).all())
        step = step_in_std_err(err, null)
        return step is not None and step <= STEP_IN_SE / 10


def _projector(prior: Tensor, unknowns: Sequence[Unknown]):
    lo = torch.full_like(prior, -float("inf"))
    hi = torch.full_like(prior, float("inf"))
    for k, u in enumerate(unknowns):
        if u.kind in ("c2", "r"):
            lo[k] = 0.0
        elif u.kind == "x":
            # keep the sign; 1e-3 of the prior keeps the branch an impedance, not a short
            if prior[k] > 0:
                lo[k] = 1e-3 * prior[k]
            else:
                hi[k] = 1e-3 * prior[k]
    return lambda th: torch.maximum(torch.minimum(th, hi), lo)


def default_weights(observations, weights) -> tuple[float, float]:
    if isinstance(weights, str):
        if weights != "variance":
            raise ConfigError(f"weights must be (w_pg, w_lmp) or 'variance', got {weights!r}")
        var_pg = float(observations.pg_mw.var()) if observations.pg_mw.numel() > 1 else 1.0
        var_lmp = float(observations.lmp_usd_per_mwh.var()) if observations.lmp_usd_per_mwh.numel() > 1 else 1.0
        return 1.0 / max(var_pg, 1e-12), 1.0 / max(var_lmp, 1e-12)
    w = tuple(float(x) for x in weights)
    if len(w) != 2 or min(w) < 0 or not all(np.isfinite(w)):
        raise ConfigError(f"weights must be two finite non-negative numbers (w_pg, w_lmp), got {weights!r}")
    return w  # type: ignore[return-value]


def _better(a: dict, b: dict | None) -> bool:
    """Is start outcome ``a`` better than ``b``: converged first, then the lower final loss."""
    if b is None:
        return True
    if a["status"] is FitStatus.CONVERGED and b["status"] is not FitStatus.CONVERGED:
        return True
    if b["status"] is FitStatus.CONVERGED and a["status"] is not FitStatus.CONVERGED:
        return False
    la, lb = a["final_loss"], b["final_loss"]
    return (not math.isnan(la)) and (math.isnan(lb) or la < lb)


def _assess(problem: InverseProblem, theta: Tensor, r: Tensor | None, results, stop: str, scale: Tensor,
            need_jac: bool) -> dict:
    """Everything `recover` reports about one start's final point."""
    out = {"theta": theta, "r": r, "results": results, "stop": stop, "jac": None, "local": None}
    if r is None:  # the AC-OPF failed at this start
        out.update(status=FitStatus.FAILED, message="failed: the AC-OPF fails at this start", final_loss=float("nan"),
                   check=None)
        return out
    check = problem.check(r)
    step_se = None
    if need_jac or problem.obs.noise > 0:
        out["jac"] = problem.jacobian(theta, results)
        out["local"] = problem.local(r, out["jac"], scale)
        if out["local"] is not None:
            step_se = step_in_std_err(out["local"][0], out["local"][1])
    status, message = decide(check, stop, step_se)
    out.update(status=status, message=message, final_loss=float((r**2).sum() / r.shape[0]), check=check)
    return out


def recover(
    network_prior,
    observations,
    unknown: Any = "costs",
    *,
    weights: tuple[float, float] | str = (1.0, 100.0),
    solver: InverseSolver = InverseSolver(),
    truth=None,
    report: bool = True,
) -> InverseResult:
    """Recover ``unknown`` parameters of ``network_prior`` from ``observations`` (see module docstring).

    Never raises on a fit that does not converge: read ``status``. Every start is reported in
    ``starts``; the kept one is the first that converged, else the lowest final loss.

    Args:
        network_prior: the `Network` with known parameters right and unknown ones at the prior guess.
        observations: `Observations` (validated here: shapes, finiteness, at least one sample).
        unknown: ``"costs"``, a dict (see `params.parse_unknowns`) or a list of `Unknown`.
        weights: ``(w_pg per MW^2, w_lmp per ($/MWh)^2)`` or ``"variance"``.
        truth: optional `Network` with the true parameters, to fill the ``true`` column.
        report: compute the identifiability report at the solution (without it nothing is
            flagged identifiable).

    case9's linear cost coefficients from 3 scenarios with prices at the generator buses
    only: the default start (the KKT-residual baseline, which needs exactly those prices)
    is already exact:

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.inverse import simulate_market
    >>> truth = load_case("case9")
    >>> prior = truth.with_(cost_c1_usd_per_mwh=2.0 * truth.gen.cost_c1_usd_per_mwh)
    >>> obs = simulate_market(truth, 3, seed=0, observe="pg+lmp_gen")
    >>> res = recover(prior, obs, {"costs": "all", "coefficients": ("c1",)}, truth=truth)
    >>> res.status.value, res.start, res.message.split(":")[0]
    ('converged', 'baseline', 'converged')
    >>> float((res.parameters["value"] / res.parameters["true"] - 1).abs().max()) < 1e-6
    True
    """
    observations.validate(network_prior)
    unknowns = parse_unknowns(network_prior, unknown)
    w = default_weights(observations, weights)
    problem = InverseProblem(network_prior, observations, unknowns, w, solver)
    prior = current_values(network_prior, unknowns)
    scale = torch.where(prior.abs() > 1e-12, prior.abs(), torch.ones_like(prior))
    project = _projector(prior, unknowns)
    t_start = time.perf_counter()
    run = OPTIMISERS[solver.method]
    def model_lmp(theta: Tensor) -> Tensor:  # the AC-OPF's LMPs at theta, for the imputed-price start
        sol = problem.layer.solve(observations.pd_mw, observations.qd_mvar, **problem.fields(project(theta)))
        sol.raise_on_failure("AC-OPF at the imputed-price start")
        return sol.value.lmp_usd_per_mwh

    starts = starting_points(network_prior, observations, unknowns, project(prior), solver.init, solver.n_starts,
                             solver.start_spread, solver.seed, model_lmp=model_lmp)
    if not starts:
        starts = [("prior", project(prior))]
    best, rows = None, []
    for name, theta0 in starts:
        t0 = time.perf_counter()
        problem.warm = None  # a new start: nothing to warm-start from
        theta, history, rejected, iters, results, r, stop = run(problem, project(theta0), scale, project)
        out = _assess(problem, theta, r, results, stop, scale, need_jac=report)
        out.update(name=name, history=history, rejected=rejected, iterations=iters)
        rows.append({"start": name, "initial_loss": history[0] if history else float("nan"),
                     "final_loss": out["final_loss"], "status": out["status"].value, "iterations": iters,
                     "rejected_steps": rejected, "time_s": time.perf_counter() - t0, "stop": stop})
        if truth is not None:
            true = current_values(truth, unknowns)
            nz = true.abs() > 0
            rows[-1]["max_rel_err"] = float(((theta - true).abs()[nz] / true.abs()[nz]).max()) if nz.any() else np.nan
        log.info("start %s: %s", name, out["message"])
        if _better(out, best):
            best = out
        if out["status"] is FitStatus.CONVERGED:
            break
    timings = dict(problem.timings, total_s=time.perf_counter() - t_start)
    retry = _without_unreproduced_hours(network_prior, observations, unknowns, problem, best, w, solver, truth, report,
                                        dict(starts), pd.DataFrame(rows))
    if retry is not None:  # its time: the whole call, the stalled pass over every hour included
        retry.timings = dict(retry.timings, all_hours_s=timings["total_s"], total_s=time.perf_counter() - t_start)
        return retry
    return _result(network_prior, observations, unknowns, problem, best, prior, truth, report, w, timings,
                   pd.DataFrame(rows))


def _unreproduced_hours(problem: InverseProblem, r: Tensor) -> tuple[list[int], float]:
    """(hours whose p_g or LMP residual RMS exceeds 10x its channel's fit tolerance, their worst p_g gap in MW).

    ``r``: weighted residuals (S, m); rows of hours whose AC-OPF failed are the caller's to mark."""
    raw = problem.raw(r)
    n_gen = problem.network.n_gen
    obs = problem.observed()
    bad = torch.zeros(raw.shape[0], dtype=torch.bool)
    for cols in (slice(0, n_gen), slice(n_gen, raw.shape[1])):
        if raw[:, cols].shape[1] == 0:
            continue
        tol = problem.solver.fit_rtol * max(float(obs[:, cols].pow(2).mean().sqrt()), 1e-12)
        bad |= raw[:, cols].pow(2).mean(dim=1).sqrt() > 10 * tol
    gap = float(raw[bad, :n_gen].abs().max()) if bad.any() else 0.0
    return torch.nonzero(bad).flatten().tolist(), gap


def _without_unreproduced_hours(network_prior, observations, unknowns, problem, best, w, solver, truth, report,
                                starts: dict, rows: pd.DataFrame):
    """The refit of `InverseSolver.max_hours_left_out`, or None when it does not apply or does not converge.

    Judged at the start the prices determine (``"baseline"`` or ``"imputed prices"``), not at a
    stalled final point: from there the optimiser has moved every cost to fit the odd hours."""
    if (best is None or best["status"] is FitStatus.CONVERGED or observations.noise > 0
            or solver.max_hours_left_out <= 0):
        return None
    name = next((k for k in ("baseline", "imputed prices") if k in starts), None)
    if name is None:
        return None
    problem.warm = None
    pg, lmp, failed = problem.solve_outputs(starts[name])  # failed: hours whose AC-OPF fails at this start
    if len(failed) == pg.shape[0]:
        return None
    # a failed hour gets the published values (zero residual): it is left out as failed, not as a gap
    lmp_obs = torch.zeros_like(lmp)
    lmp_obs[:, observations.lmp_buses] = observations.lmp_usd_per_mwh.double()
    pg, lmp = pg.clone(), lmp.clone()
    pg[failed], lmp[failed] = observations.pg_mw[failed].double(), lmp_obs[failed]
    hours, gap = _unreproduced_hours(problem, problem.residuals(pg, lmp))
    hours = sorted(set(hours) | set(failed))
    n = observations.n_samples
    if not hours or len(hours) > solver.max_hours_left_out * n or n - len(hours) < 2:
        return None
    keep = [s for s in range(n) if s not in set(hours)]
    log.info("refitting without hours %s: at the %s start they fail (%s) or miss the published data (by up to %.3g MW) "
             "while the other %d hours are reproduced", hours, name, failed, gap, len(keep))
    sub = recover(network_prior, observations.select(keep), unknowns, weights=w, truth=truth, report=report,
                  solver=dataclasses.replace(solver, max_hours_left_out=0.0))
    if not sub.converged:
        return None
    sub.hours_left_out = hours
    sub.starts = pd.concat([rows.assign(hours="all"), sub.starts.assign(hours=f"without {hours}")], ignore_index=True)
    why = [f"the AC-OPF fails at hours {failed}"] if failed else []
    if set(hours) - set(failed):
        why.append(f"it reaches another local optimum than the published one at hours {sorted(set(hours) - set(failed))} "
                   f"(p_g up to {gap:.3g} MW away)")
    sub.message = f"{sub.message}; on {len(keep)} of {n} hours: hours {hours} left out: at these costs " + " and ".join(why)
    return sub


def _bound_reference(network, unknowns: Sequence[Unknown], theta: Tensor, rtol: float) -> Tensor:
    """(P,) the magnitude each first-order error bound is judged against: ``|theta_k|``, except a
    quadratic cost coefficient whose term is negligible (``2 |c2| pmax <= rtol |c1|``, PGLib's linear
    costs: c2 = 0), where a relative bound is meaningless: there ``|c1| / (2 pmax)``, the c2 whose term ``2 c2 p`` equals ``c1`` at full
    output, so ``error_bound <= bound_rtol`` says the marginal cost at pmax is known to ``bound_rtol`` of c1."""
    ref = theta.detach().abs().clone()
    net = substitute(network, unknowns, theta.detach())
    c1 = net.gen.cost_c1_usd_per_mwh.detach().double().abs()
    pmax = net.gen.pmax_mw.detach().double().abs().clamp_min(1.0)
    for k, u in enumerate(unknowns):
        linear = float(c1[u.position] / (2 * pmax[u.position])) if u.kind == "c2" else 0.0
        if u.kind == "c2" and float(ref[k]) <= rtol * linear:  # 2 c2 pmax below rtol of c1: a linear cost
            ref[k] = linear
    return ref.clamp_min(1e-300)


def _result(network, observations, unknowns, problem, best, prior, truth, report, w, timings, starts) -> InverseResult:
    theta, r, p = best["theta"], best["r"], len(unknowns)
    n_pg = network.n_gen
    nan = torch.full((p,), float("nan"), dtype=torch.float64)
    if r is not None:
        raw = problem.raw(r)
        per_sample = pd.DataFrame({
            "rmse_pg_mw": (raw[:, :n_pg] ** 2).mean(1).sqrt().numpy(),
            "rmse_lmp_usd_per_mwh": ((raw[:, n_pg:] ** 2).mean(1).sqrt().numpy()
                                     if raw.shape[1] > n_pg else np.full(raw.shape[0], np.nan)),
        })
    else:
        per_sample = pd.DataFrame({"rmse_pg_mw": np.full(observations.n_samples, np.nan),
                                   "rmse_lmp_usd_per_mwh": np.full(observations.n_samples, np.nan)})
    rep, skipped = None, []
    jac = best["jac"]
    if report and jac is not None:
        ok = torch.isfinite(jac).all(dim=(1, 2))
        skipped = (~ok).nonzero().flatten().tolist()
        if ok.any():
            j = jac[ok]
            j_pg = j[:, :n_pg] / w[0] ** 0.5 if w[0] > 0 else j[:, :n_pg]
            j_lmp = j[:, n_pg:] / w[1] ** 0.5 if w[1] > 0 else j[:, n_pg:]
            rep = identifiability_report(unknowns, theta, j_pg, j_lmp, at_limit_every_sample(observations),
                                         observations.has_lmp, weights=w,
                                         scale=_bound_reference(network, unknowns, theta, problem.solver.bound_rtol))
        else:
            log.warning("identifiability report skipped: no sample's optimum is differentiable at the solution")
    loc = best["local"][0] if best["local"] is not None else None
    std_err = loc.std_err if loc is not None else nan
    bound = loc.error_bound / _bound_reference(network, unknowns, theta, problem.solver.bound_rtol) if loc is not None else nan
    columns = {"value": theta, "prior": prior}
    if truth is not None:
        columns["true"] = current_values(truth, unknowns)
    columns["std_err"] = std_err
    table = parameter_table(network, unknowns, columns)
    table["error_bound"] = bound.numpy()  # relative: no unit conversion
    converged = best["status"] is FitStatus.CONVERGED
    noisy = observations.noise > 0
    if rep is not None:
        local_reason = rep.table["reason"].to_numpy(dtype=object).copy()
        if not noisy:  # noise-free: the first-order error bound must be inside bound_rtol as well
            loose = (rep.table["reason"].to_numpy() == "") & ~(bound.numpy() <= problem.solver.bound_rtol)
            local_reason[loose] = "error_bound"
        table["rel_std"] = rep.table["rel_std"].to_numpy()
    else:
        local_reason = np.array(["no_report"] * p, dtype=object)
        table["rel_std"] = np.nan
    reason = local_reason if converged else np.array(["not_converged"] * p, dtype=object)
    table["identifiable"] = reason == ""
    table["reason"] = reason
    table["explanation"] = [REASONS.get(k, "") for k in reason]
    table["local_reason"] = local_reason
    check = best["check"]
    return InverseResult(
        parameters=table, theta=theta, unknowns=list(unknowns), loss_history=best["history"], per_sample=per_sample,
        report=rep, weights=w, iterations=best["iterations"], n_rejected_steps=best["rejected"],
        status=best["status"], message=best["message"], final_loss=best["final_loss"],
        noise_floor_loss=check.noise_floor_loss if check is not None else float("nan"), fit=check, starts=starts,
        start=best["name"], timings=timings, report_skipped_samples=skipped)
