"""Reference solve of the scheduling problem, independent of any QP solver."""

from __future__ import annotations

import numpy as np


def scipy_schedule(mu: np.ndarray, sigma: np.ndarray, gu: float, go: float, c_ramp: float) -> np.ndarray:
    """Reference: the exact expected-cost problem of one day, solved by SLSQP with its gradient."""
    from scipy.optimize import minimize
    from scipy.stats import norm

    def f(z):
        s = (z - mu) / sigma
        val = (gu + go) * sigma * (s * norm.cdf(s) + norm.pdf(s)) - gu * (z - mu) + 0.5 * ((z - mu) ** 2 + sigma**2)
        grad = (gu + go) * norm.cdf(s) - gu + (z - mu)
        return val.sum(), grad

    n = len(mu)
    d = np.eye(n)[:-1] - np.eye(n)[1:]
    cons = [{"type": "ineq", "fun": lambda z: c_ramp - d @ z, "jac": lambda z: -d},
            {"type": "ineq", "fun": lambda z: c_ramp + d @ z, "jac": lambda z: d}]
    z0 = np.convolve(mu, np.ones(1), mode="same")
    res = minimize(f, z0, jac=True, constraints=cons, method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
    assert res.success, res.message
    return res.x
