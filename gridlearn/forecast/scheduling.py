"""Stochastic day-ahead generation scheduling, solved by SQP on `QPLayer`, differentiable in (mu, sigma).

For each day, with the load of hour i forecast as y_i ~ N(mu_i, sigma_i^2), the schedule z
solves (Donti, Amos & Kolter 2017, section 5.2):

    min_z  sum_i E[ g_u (y_i - z_i)_+ + g_o (z_i - y_i)_+ + 1/2 (z_i - y_i)^2 ]
    s.t.   |z_i - z_{i-1}| <= c_ramp,        i = 2..24.

With s = (z - mu)/sigma, Phi/phi the standard normal CDF/PDF, the expectation is, per hour,

    f(z)   = (g_u + g_o) sigma (s Phi(s) + phi(s)) - g_u (z - mu) + 1/2 ((z - mu)^2 + sigma^2)
    f'(z)  = (g_u + g_o) Phi(s) - g_u + (z - mu)
    f''(z) = (g_u + g_o) phi(s) / sigma + 1            (> 0: the problem is strictly convex)

(using E(z-y)_+ = sigma (s Phi + phi) and (y-z)_+ = (z-y)_+ - (z-y)). SQP replaces f by its
second-order model at z_k and solves the QP

    min_x 1/2 x' diag(f''(z_k)) x + (f'(z_k) - f''(z_k) z_k)' x   s.t. the ramp limits,

batched over days and warm-started, with a backtracking line search on f for robustness.

Backward: at the converged z*, the QP built from (mu, sigma) at the *detached* z* has the
solution x = z*, and its KKT conditions are f''(z*) x + f'(z*) - f''(z*) z* + G'lam = 0,
i.e. exactly the KKT conditions of the true problem. Differentiating that QP (OptNet)
with z* held constant gives f''(z*) dx + d_theta f'(z*) + G' dlam = 0 (the dQ z* terms
cancel because x = z*), which is the implicit function theorem applied to the true KKT
system. So one differentiable QP solve at z* yields the exact gradient w.r.t. (mu, sigma).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from gridlearn.errors import ConfigError
from gridlearn.implicit.qp import QPLayer, QPSettings, QPWarmStart
from gridlearn.implicit.solution import Solution, Status

log = logging.getLogger(__name__)

# (Q, p, G, h, warm) -> (x, ok, warm'): a batched QP solve, a per-element success mask, and
# the solver's warm-start state (a `QPWarmStart`, or None for solvers that cannot warm start).
QPSolve = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, QPWarmStart | None], tuple[torch.Tensor, torch.Tensor, QPWarmStart | None]]


@dataclass(frozen=True, kw_only=True)
class SchedulingParams:
    """Costs per unit of under-/over-scheduled load, and the hour-to-hour ramp limit (paper values).

    >>> import torch
    >>> G, h = SchedulingParams(n_hours=4).ramp_constraints(torch.zeros(1))
    >>> tuple(G.shape), h.tolist()        # |z_i - z_(i+1)| <= 0.4, both signs, 3 hour pairs
    ((6, 4), [0.4, 0.4, 0.4, 0.4, 0.4, 0.4])
    """

    gamma_under: float = 50.0
    gamma_over: float = 0.5
    c_ramp: float = 0.4
    n_hours: int = 24

    def __post_init__(self):
        if self.gamma_under < 0 or self.gamma_over < 0:
            raise ConfigError(f"gamma_under and gamma_over must be >= 0, got {self.gamma_under}, {self.gamma_over}")
        if self.c_ramp <= 0:
            raise ConfigError(f"c_ramp must be > 0, got {self.c_ramp}")
        if self.n_hours < 2:
            raise ConfigError(f"n_hours must be >= 2, got {self.n_hours}")

    def ramp_constraints(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """G ``(2(n-1), n)``, h ``(2(n-1),)`` with G z <= h  <=>  |z_i - z_{i+1}| <= c_ramp."""
        n = self.n_hours
        eye = torch.eye(n, device=like.device, dtype=like.dtype)
        d = eye[:-1] - eye[1:]
        g = torch.cat([d, -d])
        h = torch.full((2 * (n - 1),), self.c_ramp, device=like.device, dtype=like.dtype)
        return g, h


@dataclass(frozen=True, kw_only=True)
class SQP:
    """Settings of the sequential-QP loop.

    tol: convergence when max_i |z_new - z| < tol after a full QP step. Far below ~1e-8
        the step is dominated by the inner QP's own accuracy (QPLayer tol 1e-10) and
        the loop stalls instead of converging.
    max_steps: SQP iterations before a day is reported MAX_STEPS.
    line_search: backtrack on the exact expected cost (Armijo) instead of full steps;
        full steps are what the original code takes.

    Two 24-hour days: the default converges in a few SQP steps; one full step is not enough:

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> mu = torch.as_tensor(synthetic_days().y_train[:2]); sigma = torch.full_like(mu, 0.1)
    >>> StochasticScheduler(solver=SQP()).solve(mu, sigma).steps.tolist()
    [4, 6]
    >>> [s.name for s in StochasticScheduler(solver=SQP(max_steps=1)).solve(mu, sigma).statuses]
    ['MAX_STEPS', 'MAX_STEPS']
    >>> SQP(tol=0)
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: tol must be > 0, got 0
    """

    tol: float = 1e-7
    max_steps: int = 50
    line_search: bool = True
    max_backtracks: int = 30

    def __post_init__(self):
        if self.tol <= 0:
            raise ConfigError(f"tol must be > 0, got {self.tol}")
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")


def _normal(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cdf = 0.5 * torch.erfc(-s / math.sqrt(2.0))
    pdf = torch.exp(-0.5 * s * s) / math.sqrt(2.0 * math.pi)
    return cdf, pdf


def expected_cost(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, params: SchedulingParams) -> torch.Tensor:
    """E_{y~N(mu, sigma^2)} of the per-hour cost at schedule z, elementwise ``(..., n)``.

    At z = mu, sigma = 1 it is (gamma_under + gamma_over) phi(0) + 1/2 = 50.5 / sqrt(2 pi) + 0.5:

    >>> import torch
    >>> one = torch.tensor([1.0], dtype=torch.float64)
    >>> round(float(expected_cost(one, one, one, SchedulingParams())), 4)
    20.6466
    """
    gsum = params.gamma_under + params.gamma_over
    s = (z - mu) / sigma
    cdf, pdf = _normal(s)
    return gsum * sigma * (s * cdf + pdf) - params.gamma_under * (z - mu) + 0.5 * ((z - mu) ** 2 + sigma**2)


def expected_cost_derivatives(
    z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, params: SchedulingParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f'(z), f''(z)) of `expected_cost`, elementwise."""
    gsum = params.gamma_under + params.gamma_over
    s = (z - mu) / sigma
    cdf, pdf = _normal(s)
    return gsum * cdf - params.gamma_under + (z - mu), gsum * pdf / sigma + 1.0


def realised_cost(z: torch.Tensor, y: torch.Tensor, params: SchedulingParams) -> torch.Tensor:
    """Per-hour cost of schedule z when the load turns out to be y, elementwise ``(..., n)``.

    >>> import torch
    >>> z, y = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0])   # 1 under-, then 1 over-scheduled
    >>> realised_cost(z, y, SchedulingParams()).tolist()               # 50 + 1/2, 0.5 + 1/2
    [50.5, 1.0]
    """
    return (
        params.gamma_under * torch.clamp(y - z, min=0)
        + params.gamma_over * torch.clamp(z - y, min=0)
        + 0.5 * (z - y) ** 2
    )


def task_loss(z: torch.Tensor, y: torch.Tensor, params: SchedulingParams) -> torch.Tensor:
    """Mean over days of the realised daily cost (sum over hours): the paper's test task cost.

    >>> import torch
    >>> float(task_loss(torch.ones(2, 2), torch.tensor([[2.0, 0.0], [1.0, 1.0]]), SchedulingParams()))
    25.75
    """
    return realised_cost(z, y, params).sum(-1).mean()


def unconstrained_schedule(mu: torch.Tensor, sigma: torch.Tensor, params: SchedulingParams, iters: int = 64) -> torch.Tensor:
    """Per-hour minimiser of f without ramp limits: the root of f'(z) = 0, by bisection in s.

    In s = (z - mu)/sigma, f' = (g_u + g_o) Phi(s) - g_u + sigma s is increasing and changes
    sign on [-(g_o + 1)/sigma, (g_u + 1)/sigma]. It is the SQP's default start: only the
    hours where a ramp limit binds are left for the QPs to move.
    """
    gsum = params.gamma_under + params.gamma_over
    lo = -(params.gamma_over + 1.0) / sigma
    hi = (params.gamma_under + 1.0) / sigma
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        pos = gsum * _normal(mid)[0] - params.gamma_under + sigma * mid > 0
        hi = torch.where(pos, mid, hi)
        lo = torch.where(pos, lo, mid)
    return mu + sigma * 0.5 * (lo + hi)


def _quadratic_model(z, mu, sigma, params):
    d1, d2 = expected_cost_derivatives(z, mu, sigma, params)
    return torch.diag_embed(d2), d1 - d2 * z


def sqp_schedule(
    mu: torch.Tensor,
    sigma: torch.Tensor,
    params: SchedulingParams,
    solver: SQP,
    qp_solve: QPSolve,
    z0: torch.Tensor | None = None,
    warm: QPWarmStart | None = None,
) -> Solution:
    """Run SQP (no autograd) for a batch of days; never raises on non-convergence.

    Args:
        mu, sigma: ``(batch, n)`` forecast means and standard deviations.
        qp_solve: the inner batched QP solver (see `QPSolve`).
        z0: ``(batch, n)`` start (e.g. last epoch's schedules); default the per-hour
            unconstrained optimum (`unconstrained_schedule`).
        warm: the inner QP's primal-dual state to start the first QP from (e.g. the
            ``extras["qp_warm_start"]`` of the previous solve on the same days).

    Returns a `Solution` with value z ``(batch, n)``, per-day status, residual = the last
    full step's max |dz|, steps = SQP iterations; extras["qp_warm_start"] holds the last
    QP's primal-dual point per day (None if the QP solver has none).

    The same two days as `StochasticScheduler.solve`, with the inner QP solver passed
    explicitly; a day with a NaN forecast is reported, not solved:

    >>> import torch
    >>> from gridlearn.data import synthetic_days
    >>> from gridlearn.implicit import QPLayer, QPSettings
    >>> mu = torch.as_tensor(synthetic_days().y_train[:3]); sigma = torch.full_like(mu, 0.1)
    >>> mu[2, 5] = float("nan")
    >>> sol = sqp_schedule(mu, sigma, SchedulingParams(), SQP(), qplayer_solve(QPLayer(settings=QPSettings(tol=1e-10))))
    >>> [s.name for s in sol.statuses], sol.steps.tolist(), bool(sol.residual[:2].max() < 1e-7)
    (['CONVERGED', 'CONVERGED', 'NONFINITE'], [4, 6, 0], True)
    >>> round(float((sol.value[:2] - mu[:2]).mean()), 4)   # hedged above the mean: under-scheduling costs 100x more
    0.2215
    >>> round(float((sol.value[0, 1:] - sol.value[0, :-1]).abs().max()), 6)   # ramp limit c_ramp
    0.4
    """
    with torch.no_grad():
        mu, sigma = mu.detach(), sigma.detach()
        batch = mu.shape[0]
        z = unconstrained_schedule(mu, sigma.clamp_min(1e-12), params) if z0 is None else z0.detach().clone()
        g, h = params.ramp_constraints(mu)
        status = torch.full((batch,), Status.MAX_STEPS.code, dtype=torch.long, device=mu.device)
        step_norm = torch.full((batch,), float("inf"), dtype=mu.dtype, device=mu.device)
        steps = torch.zeros(batch, dtype=torch.long, device=mu.device)
        bad_input = ~(torch.isfinite(mu).all(-1) & torch.isfinite(sigma).all(-1) & (sigma > 0).all(-1))
        bad_input |= ~torch.isfinite(z).all(-1)
        status[bad_input] = Status.NONFINITE.code
        active = ~bad_input
        first = True
        for _ in range(solver.max_steps):
            idx = torch.nonzero(active).flatten()
            if idx.numel() == 0:
                break
            za, ma, sa = z[idx], mu[idx], sigma[idx]
            q, p = _quadratic_model(za, ma, sa, params)
            warm_a = _take(warm, idx)
            x, ok, new_warm = qp_solve(q, p, g, h, warm_a)
            ok = ok & torch.isfinite(x).all(-1)
            if warm_a is not None and not bool(ok.all()):
                # An interior point can stall from a warm start whose slacks sit on the
                # boundary; retry those days cold before calling them failed.
                bad = torch.nonzero(~ok).flatten()
                xb, okb, wb = qp_solve(q[bad], p[bad], g, h, None)
                x[bad] = xb
                ok[bad] = okb & torch.isfinite(xb).all(-1)
                if new_warm is not None and wb is not None:
                    for f in _WARM_FIELDS:
                        getattr(new_warm, f)[bad] = getattr(wb, f)
                log.info("SQP: %d QP(s) failed from a warm start; %d recovered cold", bad.numel(), int(okb.sum()))
            warm = _put(warm, idx, new_warm, batch)
            if not bool(ok.all()):
                status[idx[~ok]] = Status.NUMERICAL.code
                active[idx[~ok]] = False
            d = x - za
            t = torch.ones(idx.numel(), 1, dtype=mu.dtype, device=mu.device)
            if solver.line_search and not first:
                # z and x are both feasible, so every point between them is.
                f0 = expected_cost(za, ma, sa, params).sum(-1)
                slope = (expected_cost_derivatives(za, ma, sa, params)[0] * d).sum(-1)
                for _ in range(solver.max_backtracks):
                    f1 = expected_cost(za + t * d, ma, sa, params).sum(-1)
                    # the 1e-13 allowance accepts steps whose change of f is rounding noise
                    shrink = (f1 > f0 + 1e-4 * t.squeeze(-1) * slope + 1e-13 * (1 + f0.abs())) & (t.squeeze(-1) > 1e-12)
                    if not bool(shrink.any()):
                        break
                    t = torch.where(shrink.unsqueeze(-1), 0.5 * t, t)
            z_new = za + t * d
            moved = (z_new - za).abs().amax(-1)
            full = (d.abs().amax(-1))
            keep = ok
            z[idx[keep]] = z_new[keep]
            steps[idx[keep]] += 1
            step_norm[idx[keep]] = full[keep]
            done = keep & (full < solver.tol)
            status[idx[done]] = Status.CONVERGED.code
            active[idx[done]] = False
            stalled = keep & ~done & (moved == 0)
            status[idx[stalled]] = Status.STEP_TOO_SMALL.code
            active[idx[stalled]] = False
            first = False
        return Solution(value=z, status_code=status, residual=step_norm, steps=steps, extras={"qp_warm_start": warm})


_WARM_FIELDS = ("x", "s", "lam", "nu")


def _take(warm: QPWarmStart | None, idx: torch.Tensor) -> QPWarmStart | None:
    if warm is None:
        return None
    return QPWarmStart(*(getattr(warm, f)[idx] for f in _WARM_FIELDS))


def _put(warm: QPWarmStart | None, idx: torch.Tensor, new: QPWarmStart | None, batch: int) -> QPWarmStart | None:
    """Write the active days' QP state into the full-batch state."""
    if new is None:
        return warm
    if warm is None:
        warm = QPWarmStart(*(v.new_zeros((batch, *v.shape[1:])) for v in (getattr(new, f) for f in _WARM_FIELDS)))
        # days never solved keep s = lam = 0; the QP lifts them to warm_push anyway
    for f in _WARM_FIELDS:
        getattr(warm, f)[idx] = getattr(new, f).detach()
    return warm


def qplayer_solve(qp: QPLayer) -> QPSolve:
    """Adapter: `QPLayer.solve` as the SQP's inner solver, carrying its warm start."""

    def solve(q, p, g, h, warm):
        sol = qp.solve(q, p, g, h, warm_start=warm)
        return sol.value, sol.converged, sol.extras["warm_start"]

    return solve


class StochasticScheduler(nn.Module):
    """Day-ahead schedules z*(mu, sigma) ``(batch, n)``, differentiable by the implicit function theorem.

    Args:
        params: costs and ramp limit.
        solver: SQP settings.
        qp: the `gridlearn.implicit.QPLayer` used for every QP (default ``QPLayer(settings=QPSettings(tol=1e-10))``,
            tighter than its default so that SQP steps converge below 1e-7).

    ``solve(mu, sigma, z0)`` returns a `Solution` and never raises; ``forward`` raises
    `SolverFailure` naming the days that did not converge, then attaches gradients.

    A 4-hour day whose forecast jumps by 2 between hours 0 and 1: the schedule hedges
    above the mean (under-scheduling costs 100 times more) and ramps by at most 0.4:

    >>> import torch
    >>> mu = torch.tensor([[1.0, 3.0, 2.0, 2.0]], dtype=torch.float64, requires_grad=True)
    >>> z = StochasticScheduler(SchedulingParams(n_hours=4))(mu, torch.full((1, 4), 0.5, dtype=torch.float64))
    >>> [round(v, 3) for v in z[0].tolist()], round(float((z[0, 1:] - z[0, :-1]).abs().max().detach()), 6)
    ([3.23, 3.63, 3.23, 2.95], 0.4)
    >>> z.sum().backward(); round(float(mu.grad.sum()), 6)    # shifting every hour's mean shifts z by as much
    4.0
    """

    def __init__(self, params: SchedulingParams | None = None, solver: SQP | None = None, qp: nn.Module | None = None):
        super().__init__()
        self.params = params if params is not None else SchedulingParams()
        self.solver = solver if solver is not None else SQP()
        self.qp = qp if qp is not None else QPLayer(settings=QPSettings(tol=1e-10))

    def solve(self, mu: torch.Tensor, sigma: torch.Tensor, z0: torch.Tensor | None = None, warm: QPWarmStart | None = None) -> Solution:
        self._check(mu, sigma)
        return sqp_schedule(mu, sigma, self.params, self.solver, qplayer_solve(self.qp), z0, warm)

    def forward(self, mu: torch.Tensor, sigma: torch.Tensor, z0: torch.Tensor | None = None, warm: QPWarmStart | None = None) -> torch.Tensor:
        """z* ``(batch, n)``; z0/warm as in `sqp_schedule`."""
        sol = self.solve(mu, sigma, z0, warm)
        sol.raise_on_failure("SQP scheduling (batch element = day)")
        z_star = sol.value
        if not (mu.requires_grad or sigma.requires_grad):
            return z_star
        # One differentiable QP at the detached optimum: its solution is z* and its OptNet
        # backward equals the exact IFT gradient (see the module docstring).
        q, p = _quadratic_model(z_star, mu, sigma, self.params)
        g, h = self.params.ramp_constraints(mu)
        return self.qp(q, p, g, h, warm_start=sol.extras["qp_warm_start"])

    def forward_converged(
        self, mu: torch.Tensor, sigma: torch.Tensor, z0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For training loops: ``(z_ok, ok, z_all)`` where a day whose SQP failed is left out.

        ``ok`` is the bool mask of converged days, ``z_ok`` their differentiable schedules
        (exact IFT gradients, as in `forward`), ``z_all`` every day's detached schedule with
        failed days set to ``mu`` (a safe warm start next time). Why: one ill-conditioned day
        out of thousands must not end a long training run, and it must not contribute a
        gradient either. Raises `SolverFailure` only if no day converged.
        """
        sol = self.solve(mu, sigma, z0)
        ok = sol.converged
        if not bool(ok.any()):
            sol.raise_on_failure("SQP scheduling (batch element = day)")
        z_all = torch.where(ok[:, None], sol.value, mu.detach())
        if not bool(ok.all()):
            log.warning("SQP scheduling: %d of %d days did not converge (%s); left out of this step",
                        int((~ok).sum()), ok.numel(), sorted({s.name for s in sol.statuses if s.name != "CONVERGED"}))
        if not (mu.requires_grad or sigma.requires_grad):
            return z_all[ok], ok, z_all
        mu_ok, sigma_ok = mu[ok], sigma[ok]
        q, p = _quadratic_model(z_all[ok], mu_ok, sigma_ok, self.params)
        g, h = self.params.ramp_constraints(mu_ok)
        return self.qp(q, p, g, h), ok, z_all

    def _check(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        if mu.dim() != 2 or mu.shape != sigma.shape or mu.shape[-1] != self.params.n_hours:
            raise ValueError(f"mu and sigma must both be (batch, {self.params.n_hours}); got {tuple(mu.shape)}, {tuple(sigma.shape)}")
