"""`recover`: fit unknown costs and branch parameters to published dispatch and prices through AC-OPF.

Loss (weights stated, default ``w_pg : w_lmp = 1 : 100``, the 100:1 ratio of Donti,
Azevedo & Kolter 2018, put on prices since they are the smaller numbers; or
``weights="variance"``: each channel divided by its observed variance):

    L(theta) = (1/S) sum_s [ w_pg ||p_g*(theta; d_s) - p_g,s||^2 + w_lmp ||LMP*(theta; d_s)[obs] - LMP_s||^2 ]

``p_g*``, ``LMP*``: the AC-OPF solution (`ACOPFLayer`, Ipopt forward, KKT backward). The
optimiser works in relative units ``u = theta / |theta_prior|`` and projects onto the
physical set after each step (c2 >= 0, r >= 0, x keeps the prior's sign and stays away
from 0). Methods:

- ``"lbfgs"``: L-BFGS two-loop direction (Nocedal & Wright, alg. 7.4), projected
  backtracking (Armijo) line search; gradient from the layer's adjoint.
- ``"adam"``: projected Adam (Kingma & Ba 2015); gradient from the layer's adjoint.
- ``"lm"``: Levenberg-Marquardt on the residuals with the forward-mode KKT Jacobian
  (`sensitivity`), i.e. Gauss-Newton with a trust parameter. A sample whose optimum is not
  differentiable at the current iterate (a weakly active constraint) is left out of that
  iteration's Jacobian and residual (logged): the step is only a search direction, and its
  acceptance still checks the full loss over every sample.

A trial point where any sample's AC-OPF fails (infeasible, not converged, not
differentiable) is rejected and the step shrinks; the optimiser never crashes on it.
With ``warm_start=True`` (default) every AC-OPF of a trial point starts from that
sample's solution at the last accepted iterate (`ACOPFLayer`'s ``warm_start``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.grid.acopf_kkt import ACTIVE_TOL
from gridlearn.inverse.identifiability import IdentifiabilityReport, at_limit_every_sample, identifiability_report
from gridlearn.inverse.params import Unknown, current_values, parameter_table, parse_unknowns, substitute

log = logging.getLogger(__name__)

METHODS = ("lbfgs", "adam", "lm")


@dataclass(frozen=True, kw_only=True)
class InverseSolver:
    """Settings of the outer optimisation. ``lr``: Adam step in relative units; ``memory``: L-BFGS pairs."""

    method: str = "lm"
    max_iter: int = 30
    lr: float = 0.05
    memory: int = 8
    rtol: float = 1e-10  # stop when the loss falls below rtol * initial loss
    step_tol: float = 1e-8  # or when the relative step is this small
    max_shrinks: int = 10
    convention: str = "matpower"
    ipopt_tol: float = 1e-9  # the ACOPFLayer default; 1e-10 makes Ipopt stop at "acceptable" on some case30 loads
    active_tol: float = ACTIVE_TOL  # relative (scale-aware) active-set threshold, see acopf_kkt.active_set
    warm_start: bool = True  # start each trial point's AC-OPFs from the last accepted iterate's solutions

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.max_iter < 0 or self.memory < 1 or self.max_shrinks < 1:
            raise ConfigError("max_iter must be >= 0, memory and max_shrinks >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not self.active_tol > 0 or not self.ipopt_tol > 0:
            raise ConfigError(f"active_tol and ipopt_tol must be positive, got {self.active_tol}, {self.ipopt_tol}")


@dataclass
class InverseResult:
    """What `recover` found.

    ``parameters``: DataFrame, one row per unknown, index ``(pandapower label, coefficient)``,
    columns ``value`` (recovered), ``prior``, ``true`` (when given), ``unit`` (pandapower's),
    ``identifiable``, ``reason``, ``rel_std``. ``loss_history``: loss per accepted iterate
    (index 0 = prior). ``per_sample``: RMSE of the fit per sample. ``report``: the
    `IdentifiabilityReport` at the solution (None if it could not be computed).
    ``theta``: recovered values in Network units (same order as ``unknowns``).
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
    timings: dict[str, float] = field(default_factory=dict)
    report_skipped_samples: list[int] = field(default_factory=list)  # no sensitivity at the solution: not in the report


class InverseProblem:
    """The inverse loss and its derivatives at a parameter vector (in Network units)."""

    def __init__(self, network, observations, unknowns: Sequence[Unknown], weights: tuple[float, float],
                 solver: InverseSolver):
        from gridlearn.grid.acopf_layer import ACOPFLayer

        self.network = network
        self.obs = observations
        self.unknowns = list(unknowns)
        self.weights = weights
        self.solver = solver
        self.layer = ACOPFLayer(network, convention=solver.convention, ipopt_options={"tol": solver.ipopt_tol},
                                active_tol=solver.active_tol)
        self.timings = {"forward_s": 0.0, "backward_s": 0.0, "jacobian_s": 0.0, "n_forward": 0, "n_backward": 0}
        self.warm: list | None = None  # per-sample ACOPFResult of the last accepted iterate

    def accept(self, results: list | None) -> None:
        """Remember an accepted iterate's per-sample solutions as the next warm start."""
        if self.solver.warm_start and results is not None:
            self.warm = list(results)

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
        """(loss, gradient or None, residuals (S, m), per-sample results); raises SolverFailure."""
        t0 = time.perf_counter()
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

    def _count(self, key: str, t0: float) -> None:
        self.timings[key] += time.perf_counter() - t0
        self.timings["n_forward"] += 1

    def jacobian(self, theta: Tensor, results) -> Tensor:
        """(S, m, P) Jacobian of the weighted residuals (forward-mode KKT sensitivity); NaN for a
        sample whose optimum has no derivative (see `observation_jacobian`'s ``skip_failed``)."""
        from gridlearn.inverse.sensitivity import observation_jacobian

        t0 = time.perf_counter()
        j_pg, j_lmp = observation_jacobian(self.network, self.obs, self.unknowns, theta, results,
                                           self.solver.convention, self.solver.active_tol, skip_failed=True)
        self.timings["jacobian_s"] += time.perf_counter() - t0
        return torch.cat([j_pg * self.weights[0] ** 0.5, j_lmp * self.weights[1] ** 0.5], dim=1)


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

    Args:
        network_prior: the `Network` with known parameters right and unknown ones at the prior guess.
        observations: `Observations` (validated here: shapes, finiteness, at least one sample).
        unknown: ``"costs"``, a dict (see `params.parse_unknowns`) or a list of `Unknown`.
        weights: ``(w_pg per MW^2, w_lmp per ($/MWh)^2)`` or ``"variance"``.
        truth: optional `Network` with the true parameters, to fill the ``true`` column.
        report: compute the identifiability report at the solution.
    """
    observations.validate(network_prior)
    unknowns = parse_unknowns(network_prior, unknown)
    w = default_weights(observations, weights)
    problem = InverseProblem(network_prior, observations, unknowns, w, solver)
    prior = current_values(network_prior, unknowns)
    scale = torch.where(prior.abs() > 1e-12, prior.abs(), torch.ones_like(prior))
    project = _projector(prior, unknowns)
    t_start = time.perf_counter()
    run = {"lbfgs": _lbfgs, "adam": _adam, "lm": _lm}[solver.method]
    theta, history, rejected, iters, results = run(problem, project(prior), scale, project)
    timings = dict(problem.timings, total_s=time.perf_counter() - t_start)

    # fit per sample, and the report, at the final point
    _, _, r, results = problem.loss(theta, grad=False)
    n_pg = network_prior.n_gen
    per_sample = pd.DataFrame({
        "rmse_pg_mw": ((r[:, :n_pg] ** 2).mean(1).sqrt() / max(w[0], 1e-300) ** 0.5).numpy(),
        "rmse_lmp_usd_per_mwh": (((r[:, n_pg:] ** 2).mean(1).sqrt() / max(w[1], 1e-300) ** 0.5).numpy()
                                 if r.shape[1] > n_pg else np.full(r.shape[0], np.nan)),
    })
    rep, skipped = None, []
    if report:
        j = problem.jacobian(theta, results)
        ok = torch.isfinite(j).all(dim=(1, 2))
        skipped = (~ok).nonzero().flatten().tolist()
        if ok.any():
            j = j[ok]
            j_pg = j[:, :n_pg] / w[0] ** 0.5 if w[0] > 0 else j[:, :n_pg]
            j_lmp = j[:, n_pg:] / w[1] ** 0.5 if w[1] > 0 else j[:, n_pg:]
            rep = identifiability_report(unknowns, theta, j_pg, j_lmp, at_limit_every_sample(observations),
                                         observations.has_lmp, weights=w)
        else:
            log.warning("identifiability report skipped: no sample's optimum is differentiable at the solution")
    columns = {"value": theta, "prior": prior}
    if truth is not None:
        columns["true"] = current_values(truth, unknowns)
    table = parameter_table(network_prior, unknowns, columns)
    if rep is not None:
        table["identifiable"] = rep.table["identifiable"].to_numpy()
        table["reason"] = rep.table["reason"].to_numpy()
        table["rel_std"] = rep.table["rel_std"].to_numpy()
    return InverseResult(parameters=table, theta=theta, unknowns=unknowns, loss_history=history, per_sample=per_sample,
                         report=rep, weights=w, iterations=iters, n_rejected_steps=rejected, timings=timings,
                         report_skipped_samples=skipped)


# ---------------------------------------------------------------------- optimisers
def _try(problem: InverseProblem, theta: Tensor, grad: bool):
    try:
        return problem.loss(theta, grad)
    except SolverFailure as exc:
        log.info("trial point rejected: %s", str(exc)[:200])
        return None


def _done(history: list[float], step_rel: float, solver: InverseSolver) -> bool:
    return history[-1] <= solver.rtol * max(history[0], 1e-300) or step_rel < solver.step_tol


def _start(problem, theta, grad: bool):
    """Solve at the prior and accept it; every optimiser needs a feasible starting point."""
    first = _try(problem, theta, grad=grad)
    if first is None:
        raise SolverFailure("the AC-OPF fails at the prior parameters; start from a feasible prior")
    problem.accept(first[3])
    return first


def _lm(problem, theta, scale, project):
    s = problem.solver
    loss, _, r, results = _start(problem, theta, grad=False)
    history, rejected, mu, it = [loss], 0, 1e-3, 0
    for it in range(1, s.max_iter + 1):
        j = problem.jacobian(theta, results)
        ok = torch.isfinite(j).all(dim=(1, 2))  # samples with no derivative here: left out of this step
        if not ok.any():
            log.info("LM: no sample is differentiable at iteration %d; stopping", it)
            break
        j = j[ok].reshape(-1, len(problem.unknowns)) * scale  # relative units
        rv = r[ok].reshape(-1)
        jtj, jtr = j.T @ j, j.T @ rv
        damping = jtj.diagonal().clamp_min(1e-12 * float(jtj.diagonal().max().clamp_min(1e-300)))
        accepted = False
        for _ in range(s.max_shrinks):
            du = -torch.linalg.solve(jtj + mu * torch.diag(damping), jtr)
            trial = project(theta + du * scale)
            out = _try(problem, trial, grad=False)
            if out is not None and out[0] < loss:
                step_rel = float(((trial - theta) / scale).norm())
                theta, (loss, _, r, results) = trial, out
                problem.accept(results)
                mu = max(mu / 10, 1e-12)
                accepted = True
                break
            rejected += 1
            mu *= 10
        if not accepted:
            log.info("LM: no decreasing step found at iteration %d; stopping", it)
            break
        history.append(loss)
        if _done(history, step_rel, s):
            break
    return theta, history, rejected, it, results


def _adam(problem, theta, scale, project):
    s = problem.solver
    loss, g, _, results = _start(problem, theta, grad=True)
    history, rejected = [loss], 0
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    b1, b2, eps = 0.9, 0.999, 1e-12
    it = 0
    for it in range(1, s.max_iter + 1):
        gu = g * scale
        m = b1 * m + (1 - b1) * gu
        v = b2 * v + (1 - b2) * gu * gu
        step = s.lr * (m / (1 - b1**it)) / ((v / (1 - b2**it)).sqrt() + eps)
        for _ in range(s.max_shrinks):
            trial = project(theta - step * scale)
            out = _try(problem, trial, grad=True)
            if out is not None:
                break
            rejected += 1
            step = step / 2
        else:
            log.info("Adam: every shrunk step failed at iteration %d; stopping", it)
            break
        step_rel = float(((trial - theta) / scale).norm())
        theta, (loss, g, _, results) = trial, out
        problem.accept(results)
        history.append(loss)
        if _done(history, step_rel, s):
            break
    return theta, history, rejected, it, results


def _lbfgs(problem, theta, scale, project):
    s = problem.solver
    loss, g, _, results = _start(problem, theta, grad=True)
    history, rejected = [loss], 0
    pairs: list[tuple[Tensor, Tensor]] = []
    it = 0
    for it in range(1, s.max_iter + 1):
        gu = g * scale
        # two-loop recursion in relative units
        q = gu.clone()
        alphas = []
        for sk, yk in reversed(pairs):
            a = (sk @ q) / (yk @ sk)
            alphas.append(a)
            q = q - a * yk
        if pairs:
            sk, yk = pairs[-1]
            q = q * (sk @ yk) / (yk @ yk)
        else:
            q = q * s.lr / gu.abs().max().clamp_min(1e-300)  # first step: at most lr relative
        for (sk, yk), a in zip(pairs, reversed(alphas)):
            b = (yk @ q) / (yk @ sk)
            q = q + sk * (a - b)
        direction = -q
        if float(direction @ gu) >= 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            direction = -gu * s.lr / gu.abs().max().clamp_min(1e-300)
        t, accepted = 1.0, False
        for _ in range(s.max_shrinks):
            trial = project(theta + t * direction * scale)
            out = _try(problem, trial, grad=True)
            du = (trial - theta) / scale
            if out is not None and out[0] <= loss + 1e-4 * float(gu @ du):
                accepted = True
                break
            rejected += 1
            t /= 2
        if not accepted:
            log.info("L-BFGS: line search failed at iteration %d; stopping", it)
            break
        new_loss, new_g, _, results = out
        problem.accept(results)
        yk = (new_g - g) * scale
        if float(yk @ du) > 1e-12 * float(du @ du) ** 0.5 * float(yk @ yk) ** 0.5:
            pairs.append((du, yk))
            pairs[:] = pairs[-s.memory:]
        theta, loss, g = trial, new_loss, new_g
        history.append(loss)
        if _done(history, float(du.norm()), s):
            break
    return theta, history, rejected, it, results
