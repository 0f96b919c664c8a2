"""The outer optimisers of `recover`: Levenberg-Marquardt, projected Adam, projected L-BFGS.

Each takes an `InverseProblem`, a start (Network units), the relative-unit scale and the
projector, and returns ``(theta, loss history, rejected steps, iterations, per-sample
results, weighted residuals, stop)``, where ``stop`` says why it ended: ``"tolerance"`` (loss below ``rtol``
of its start, or a step below ``step_tol``), ``"no_decrease"`` (no trial step lowered the
loss), ``"max_iter"``, ``"no_derivative"`` (LM: no sample differentiable) or
``"start_failed"`` (the AC-OPF fails at the start). Whether that end is a converged fit is
decided afterwards, from the residual (`convergence`). See `recovery` for the methods.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from gridlearn.errors import SolverFailure

log = logging.getLogger(__name__)


def _try(problem, theta: Tensor, grad: bool):
    try:
        return problem.loss(theta, grad)
    except SolverFailure as exc:
        log.info("trial point rejected: %s", str(exc)[:200])
        return None


def _done(history: list[float], step_rel: float, solver) -> bool:
    return history[-1] <= solver.rtol * max(history[0], 1e-300) or step_rel < solver.step_tol


def _start(problem, theta, grad: bool):
    """Solve at the prior and accept it; every optimiser needs a feasible starting point."""
    first = _try(problem, theta, grad=grad)
    if first is not None:
        problem.accept(first[3])
    return first


def lm(problem, theta, scale, project):
    s = problem.solver
    first = _start(problem, theta, grad=False)
    if first is None:
        return theta, [], 0, 0, None, None, "start_failed"
    loss, _, r, results = first
    history, rejected, mu, it, stop = [loss], 0, 1e-3, 0, "max_iter"
    for it in range(1, s.max_iter + 1):
        j = problem.jacobian(theta, results)
        if problem.settled(r, j, scale):  # the fit test passes and the step left is negligible
            it, stop = it - 1, "settled"
            break
        ok = torch.isfinite(j).all(dim=(1, 2))  # samples with no derivative here: left out of this step
        if not ok.any():
            log.info("LM: no sample is differentiable at iteration %d; stopping", it)
            stop = "no_derivative"
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
            stop = "no_decrease"
            break
        history.append(loss)
        if _done(history, step_rel, s):
            stop = "tolerance"
            break
    return theta, history, rejected, it, results, r, stop


def adam(problem, theta, scale, project):
    s = problem.solver
    first = _start(problem, theta, grad=True)
    if first is None:
        return theta, [], 0, 0, None, None, "start_failed"
    loss, g, r, results = first
    history, rejected, stop = [loss], 0, "max_iter"
    m = torch.zeros_like(theta)
    v = torch.zeros_like(theta)
    b1, b2, eps = 0.9, 0.999, 1e-12
    it = 0
    for it in range(1, s.max_iter + 1):
        if problem.obs.noise <= 0 and problem.settled(r, None, scale):
            it, stop = it - 1, "settled"
            break
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
            stop = "no_decrease"
            break
        step_rel = float(((trial - theta) / scale).norm())
        theta, (loss, g, r, results) = trial, out
        problem.accept(results)
        history.append(loss)
        if _done(history, step_rel, s):
            stop = "tolerance"
            break
    return theta, history, rejected, it, results, r, stop


def lbfgs(problem, theta, scale, project):
    s = problem.solver
    first = _start(problem, theta, grad=True)
    if first is None:
        return theta, [], 0, 0, None, None, "start_failed"
    loss, g, r, results = first
    history, rejected, stop = [loss], 0, "max_iter"
    pairs: list[tuple[Tensor, Tensor]] = []
    it = 0
    for it in range(1, s.max_iter + 1):
        if problem.obs.noise <= 0 and problem.settled(r, None, scale):
            it, stop = it - 1, "settled"
            break
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
            stop = "no_decrease"
            break
        new_loss, new_g, r, results = out
        problem.accept(results)
        yk = (new_g - g) * scale
        if float(yk @ du) > 1e-12 * float(du @ du) ** 0.5 * float(yk @ yk) ** 0.5:
            pairs.append((du, yk))
            pairs[:] = pairs[-s.memory:]
        theta, loss, g = trial, new_loss, new_g
        history.append(loss)
        if _done(history, float(du.norm()), s):
            stop = "tolerance"
            break
    return theta, history, rejected, it, results, r, stop


OPTIMISERS = {"lbfgs": lbfgs, "adam": adam, "lm": lm}
