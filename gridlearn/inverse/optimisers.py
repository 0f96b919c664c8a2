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


def _advance(history: list[float], loss: float, step_rel: float, solver) -> bool:
    """Record an accepted iterate's loss; True when the loss or the step says stop (``"tolerance"``)."""
    history.append(loss)
    return history[-1] <= solver.rtol * max(history[0], 1e-300) or step_rel < solver.step_tol


def _optimiser(grad: bool):
    """Wrap an optimiser loop ``loop(problem, theta, scale, project, first)``: solve at the start and
    accept it (every optimiser needs a feasible starting point), or return ``"start_failed"``."""

    def wrap(loop):
        def run(problem, theta, scale, project):
            first = _try(problem, theta, grad=grad)
            if first is None:
                return theta, [], 0, 0, None, None, "start_failed"
            problem.accept(first[3])
            return loop(problem, theta, scale, project, first)

        run.__name__, run.__doc__ = loop.__name__, loop.__doc__
        return run

    return wrap


@_optimiser(grad=False)
def lm(problem, theta, scale, project, first):
    s = problem.solver
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
        if _advance(history, loss, step_rel, s):
            stop = "tolerance"
            break
    return theta, history, rejected, it, results, r, stop


def _gradient_loop(problem, theta, scale, first, propose):
    """The loop the gradient methods share: stop once settled (noise-free), take the next accepted
    point from ``propose(it, theta, loss, g) -> (trial, solve output or None, rejected trials)``
    (None: no acceptable trial, ``"no_decrease"``), accept it, record it."""
    s = problem.solver
    loss, g, r, results = first
    history, rejected, stop, it = [loss], 0, "max_iter", 0
    for it in range(1, s.max_iter + 1):
        if problem.obs.noise <= 0 and problem.settled(r, None, scale):
            it, stop = it - 1, "settled"
            break
        trial, out, n_rejected = propose(it, theta, loss, g)
        rejected += n_rejected
        if out is None:
            stop = "no_decrease"
            break
        step_rel = float(((trial - theta) / scale).norm())
        theta, (loss, g, r, results) = trial, out
        problem.accept(results)
        if _advance(history, loss, step_rel, s):
            stop = "tolerance"
            break
    return theta, history, rejected, it, results, r, stop


@_optimiser(grad=True)
def adam(problem, theta, scale, project, first):
    s = problem.solver
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)  # moment estimates, relative units
    b1, b2, eps = 0.9, 0.999, 1e-12

    def propose(it, theta, loss, g):
        nonlocal m, v
        gu = g * scale
        m = b1 * m + (1 - b1) * gu
        v = b2 * v + (1 - b2) * gu * gu
        step = s.lr * (m / (1 - b1**it)) / ((v / (1 - b2**it)).sqrt() + eps)
        for k in range(s.max_shrinks):  # a trial whose AC-OPF fails: halve the step
            trial = project(theta - step * scale)
            out = _try(problem, trial, grad=True)
            if out is not None:
                return trial, out, k
            step = step / 2
        log.info("Adam: every shrunk step failed at iteration %d; stopping", it)
        return theta, None, s.max_shrinks

    return _gradient_loop(problem, theta, scale, first, propose)


@_optimiser(grad=True)
def lbfgs(problem, theta, scale, project, first):
    s = problem.solver
    pairs: list[tuple[Tensor, Tensor]] = []  # (step, gradient change), relative units, newest last

    def propose(it, theta, loss, g):
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
        t = 1.0
        for k in range(s.max_shrinks):  # Armijo backtracking
            trial = project(theta + t * direction * scale)
            out = _try(problem, trial, grad=True)
            du = (trial - theta) / scale
            if out is not None and out[0] <= loss + 1e-4 * float(gu @ du):
                yk = (out[1] - g) * scale
                if float(yk @ du) > 1e-12 * float(du @ du) ** 0.5 * float(yk @ yk) ** 0.5:
                    pairs.append((du, yk))
                    pairs[:] = pairs[-s.memory:]
                return trial, out, k
            t /= 2
        log.info("L-BFGS: line search failed at iteration %d; stopping", it)
        return theta, None, s.max_shrinks

    return _gradient_loop(problem, theta, scale, first, propose)


OPTIMISERS = {"lbfgs": lbfgs, "adam": adam, "lm": lm}
