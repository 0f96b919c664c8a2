"""What the power flow does with a scenario that plain Newton–Raphson did not solve.

Plain Newton (`pf_newton`, `pf_sparse`) from one start either converges quickly or
fails; it fails for two very different reasons, and the status must say which:

1. a solution exists but the start is outside Newton's basin (case145 from a DC start,
   the RTE snapshots case1888rte/case1951rte/case2868rte from a DC or flat start: their
   files hold a solved operating point, which is where MATPOWER's ``runpf`` starts);
2. no solution exists: the set-points ask for more than the network can carry (PGLib
   files are OPF cases; their PG set-points need not have a power flow solution).

A third trap: plain Newton converges, but to a LOW-VOLTAGE solution of the same
equations (case2848rte from a DC or flat start: |V| = 0.02 p.u. at a bus, 487 buses off the
solved point stored in the file). Such a scenario (some |V| below
``NewtonRaphson.low_voltage_pu``) is retried too, and a solution with every |V| above the
threshold replaces it; if none is found it is kept, flagged (``extras["low_voltage"]``).

`retry` handles (1): exact Newton with a backtracking (Armijo) line search on
½‖F‖², from each start in ``RETRY_STARTS`` in turn ("case": the file's |V|, θ, as
MATPOWER's ``runpf``; "flat"; "dc"). A full step is taken whenever it decreases the
mismatch norm enough, so near a solution this is Newton's method unchanged.

`loadability` handles (2): a continuation in the specified injections,
F_λ(y) = S(y) − λ·S_spec, from no load (λ = 0) towards λ = 1, each λ solved by the
damped Newton from the previous solution, the step in λ halved on failure. If it
reaches λ = 1 the power flow is solved (status CONVERGED). If the step falls below
``_MIN_DLAMBDA`` at λ* < 1, the branch of solutions that starts at no load folds back
before the specified point (the loadability limit, the "nose" of the PV curve, what
MATPOWER's ``runcpf`` traces); the smallest singular value of the Jacobian there,
relative to its value at no load, is recorded as the evidence (→ 0 at a fold). The
scenario is then INFEASIBLE with ``loadability`` λ*: the set-points have no power flow
solution on that branch (the one every Newton start above was aiming for).

Everything here works per scenario on host NumPy arrays through two callables, so the
dense and the sparse paths share it: ``F(y) -> f`` (mismatch rows, per unit) and
``step(y, f) -> dx or None`` (the Newton step J(y)⁻¹ f; None when J is singular).
Failures are rare, so per-scenario loops cost nothing on the batches that converge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

RETRY_STARTS = ("case", "flat", "dc")
_ARMIJO = 1e-4  # sufficient decrease of ½‖F‖² relative to the Newton model's
_MIN_T = 2.0**-12  # smallest line-search step before the iterate is called stalled
_MIN_DLAMBDA = 1e-3
_MAX_DLAMBDA = 0.25
_SIGMA_ITERS = 12

Residual = Callable[[np.ndarray], np.ndarray]
Step = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]


@dataclass
class DampedResult:
    y: np.ndarray
    converged: bool
    err: float  # max |F| at y, per unit
    steps: int
    why: str  # "converged", "stalled" (line search failed: a local minimum of ‖F‖), "singular", "max_steps", "nonfinite"


def damped_newton(F: Residual, step: Step, y0: np.ndarray, tol: float, max_steps: int) -> DampedResult:
    """Newton with a backtracking line search on φ = ½‖F‖² (Armijo: φ(y − t·dx) ≤ (1 − 2c·t) φ(y))."""
    y = np.array(y0, dtype=float, copy=True)
    with np.errstate(all="ignore"):
        f = F(y)
        for k in range(max_steps + 1):
            if not np.isfinite(f).all():
                return DampedResult(y, False, float("inf"), k, "nonfinite")
            err = float(np.abs(f).max()) if f.size else 0.0
            if err <= tol:
                return DampedResult(y, True, err, k, "converged")
            if k == max_steps:
                return DampedResult(y, False, err, k, "max_steps")
            dx = step(y, f)
            if dx is None or not np.isfinite(dx).all():
                return DampedResult(y, False, err, k, "singular")
            phi = 0.5 * float(f @ f)
            t = 1.0
            while True:
                yn = y - t * dx
                fn = F(yn)
                if np.isfinite(fn).all() and 0.5 * float(fn @ fn) <= (1.0 - 2.0 * _ARMIJO * t) * phi:
                    break
                t *= 0.5
                if t < _MIN_T:
                    return DampedResult(y, False, err, k, "stalled")
            y, f = yn, fn
    return DampedResult(y, False, err, max_steps, "max_steps")  # pragma: no cover - loop returns


def retry(F: Residual, step: Step, starts: dict[str, np.ndarray], tol: float, max_steps: int,
          accept: Callable[[np.ndarray], bool] | None = None) -> tuple[str | None, DampedResult | None]:
    """Damped Newton from each start in order; (name of the start that solved it, result) or
    (None, last). ``accept(y)``: a converged point must also pass it (e.g. no collapsed |V|)."""
    last = None
    for name, y0 in starts.items():
        last = damped_newton(F, step, y0, tol, max_steps)
        if last.converged and (accept is None or accept(last.y)):
            return name, last
    return None, last


@dataclass
class Loadability:
    lam: float  # largest λ reached (1.0: solved)
    y: np.ndarray  # solution at lam
    sigma_ratio: float  # σ_min(J) at lam / σ_min(J) at λ = 0 (NaN if not estimated)
    solves: int


def loadability(F: Residual, step: Step, spec: np.ndarray, y_flat: np.ndarray, tol: float, max_steps: int,
                sigma_min: Callable[[np.ndarray], float] | None = None) -> Loadability | None:
    """Continuation of F_λ = F + (1 − λ)·spec from λ = 0 (see the module docstring).

    ``spec``: the specified injection rows (F(y) = S(y) − spec). None when even λ = 0
    (no load) does not solve, i.e. the continuation says nothing.
    """
    def f_at(lam: float) -> Residual:
        return lambda y: F(y) + (1.0 - lam) * spec

    r = damped_newton(f_at(0.0), step, y_flat, tol, max_steps)
    solves = 1
    if not r.converged:
        return None
    y, lam, dl = r.y, 0.0, _MAX_DLAMBDA
    s0 = sigma_min(y) if sigma_min is not None else float("nan")
    prev_y = None
    while lam < 1.0 and dl >= _MIN_DLAMBDA:
        nxt = min(1.0, lam + dl)
        # secant predictor along the branch (first step: the previous solution itself)
        guess = y if prev_y is None else y + (y - prev_y[1]) * (nxt - lam) / (lam - prev_y[0])
        r = damped_newton(f_at(nxt), step, guess, tol, max_steps)
        if not r.converged and prev_y is not None:
            r = damped_newton(f_at(nxt), step, y, tol, max_steps)
            solves += 1
        solves += 1
        if r.converged:
            prev_y = (lam, y)
            y, lam = r.y, nxt
            dl = min(2 * dl, _MAX_DLAMBDA)
        else:
            dl *= 0.5
    ratio = float("nan")
    if sigma_min is not None and lam < 1.0 and np.isfinite(s0) and s0 > 0:
        ratio = sigma_min(y) / s0
    return Loadability(lam=lam, y=y, sigma_ratio=ratio, solves=solves)


@dataclass
class Rescue:
    """Outcome of `rescue` for one scenario."""

    y: np.ndarray | None  # the solution (None unless converged)
    converged: bool
    err: float  # max |F| per unit at the best point tried
    steps: int  # damped-Newton steps of the successful start (or of the last one tried)
    start: str | None  # the start that solved it ("case", "flat", "dc", "continuation") or None
    lam: float  # loadability λ* (1.0 when solved; NaN when not assessed)
    sigma_ratio: float  # σ_min(J) at λ* over σ_min(J) at no load (NaN when not estimated)


def rescue(F: Residual, step: Step, starts: dict[str, np.ndarray], spec: np.ndarray, tol: float,
           max_steps: int, sigma_min: Callable[[np.ndarray], float] | None = None,
           accept: Callable[[np.ndarray], bool] | None = None) -> Rescue:
    """`retry` from every start (``accept`` as there); if none gives an accepted solution,
    `loadability` from the flat start (whose branch from no load is the high-voltage one)."""
    name, r = retry(F, step, starts, tol, max_steps, accept)
    if name is not None:
        return Rescue(r.y, True, r.err, r.steps, name, 1.0, float("nan"))
    err = r.err if r is not None else float("inf")
    steps = r.steps if r is not None else 0
    c = loadability(F, step, spec, starts["flat"], tol, max_steps, sigma_min)
    if c is None:
        return Rescue(None, False, err, steps, None, float("nan"), float("nan"))
    if c.lam >= 1.0:
        return Rescue(c.y, True, float(np.abs(F(c.y)).max()) if c.y.size else 0.0, c.solves, "continuation", 1.0,
                      float("nan"))
    return Rescue(None, False, err, steps, None, c.lam, c.sigma_ratio)


def sigma_min_dense(jac: np.ndarray) -> float:
    return float(np.linalg.svd(jac, compute_uv=False)[-1]) if jac.size else float("nan")


def sigma_min_by_solves(solve: Callable[[np.ndarray, bool], np.ndarray], n: int) -> float:
    """σ_min(J) by inverse power iteration on JᵀJ with a factorisation's solves
    (``solve(b, trans)``), for matrices too large for an SVD."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(n)
    x /= np.linalg.norm(x)
    norm = float("nan")
    with np.errstate(all="ignore"):
        for _ in range(_SIGMA_ITERS):
            z = solve(solve(x, False), True)  # (JᵀJ)⁻¹ x
            norm = float(np.linalg.norm(z))
            if not np.isfinite(norm) or norm == 0:
                return float("nan")
            x = z / norm
    return 1.0 / np.sqrt(norm)


__all__ = ["RETRY_STARTS", "Rescue", "rescue", "DampedResult", "damped_newton", "retry", "Loadability", "loadability",
           "sigma_min_dense", "sigma_min_by_solves"]
