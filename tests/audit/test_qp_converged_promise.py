"""The QP layer's CONVERGED promise, attacked with random problems nobody tuned on.

CONVERGED must mean: primal feasible (row by row, relative to that row's own scale), λ ≥ 0,
dual residual small, complementarity small, and (convex, where Clarabel solves it) the
optimal objective. Infeasible, nonconvex and unbounded inputs are never CONVERGED, and an
element that did not converge gets no gradient (NaN, never a finite number).
"""

from __future__ import annotations

import clarabel
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridlearn.implicit import solve_qp

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _clarabel(Q, p, G, h, A, b):
    n = len(p)
    rows = np.vstack([A, G]) if len(b) + len(h) else np.zeros((0, n))
    cones = ([clarabel.ZeroConeT(len(b))] if len(b) else []) + ([clarabel.NonnegativeConeT(len(h))] if len(h) else [])
    s = clarabel.DefaultSettings()
    s.verbose = False
    sol = clarabel.DefaultSolver(sp.csc_matrix(np.triu(Q)), p, sp.csc_matrix(rows), np.r_[b, h], cones, s).solve()
    return str(sol.status), sol.obj_val


def _solve(Q, p, G, h, A, b, grad=False):
    t = [torch.tensor(a, requires_grad=grad and i < 2) for i, a in enumerate((Q, p, G, h, A, b))]
    sol = solve_qp(t[0], t[1], t[2] if len(h) else None, t[3] if len(h) else None,
                   t[4] if len(b) else None, t[5] if len(b) else None)
    return sol, t


def _problem(seed: int, kind: str):
    """A random QP: feasible by construction (x0 satisfies it) unless ``kind`` says otherwise."""
    rng = np.random.default_rng(seed)
    n, m, k = int(rng.integers(1, 7)), int(rng.integers(1, 9)), 0
    k = int(rng.integers(0, min(n, 3) + 1))
    r = int(rng.integers(0, n + 1))  # rank of Q: 0 (an LP) to n
    L = rng.standard_normal((n, r))
    Q = L @ L.T
    x0 = rng.standard_normal(n)
    G = rng.standard_normal((m, n))
    h = G @ x0 + rng.exponential(1, m) * (rng.random(m) < 0.6)  # some rows active at x0
    A = rng.standard_normal((k, n))
    b = A @ x0
    p = rng.standard_normal(n)
    box_G = np.vstack([np.eye(n), -np.eye(n)])
    box_h = np.r_[x0 + 1 + rng.exponential(1, n), -x0 + 1 + rng.exponential(1, n)]
    G, h = np.vstack([G, box_G]), np.r_[h, box_h]  # bounded: an optimum exists
    if kind == "degenerate":
        G, h = np.vstack([G, G[:1], 2 * G[:1]]), np.r_[h, h[:1], 2 * h[:1]]
        if k >= 2:
            A[1], b[1] = A[0], b[0]
    elif kind == "badscale":
        Q, p = Q * 10.0 ** rng.uniform(-5, 5), p * 10.0 ** rng.uniform(-5, 5)
        rs = 10.0 ** rng.uniform(-5, 5, size=len(h))
        G, h = G * rs[:, None], h * rs
    elif kind == "infeasible":
        g = rng.standard_normal(n)
        c, gap = g @ x0, 10.0 ** rng.uniform(-4, 2)
        G, h = np.vstack([G, g, -g]), np.r_[h, c, -c - gap]  # g·x ≤ c and g·x ≥ c + gap
    elif kind == "nonconvex":
        w, V = np.linalg.eigh(rng.standard_normal((n, n)) @ rng.standard_normal((n, n)).T + np.eye(n) * n)
        w[0] = -10.0 ** rng.uniform(-3, 0) * abs(w).max()
        Q = (V * w) @ V.T
        Q = 0.5 * (Q + Q.T)
    return Q, p, G, h, A, b


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["plain", "degenerate", "badscale"]))
def test_converged_means_kkt_and_optimal(seed, kind):
    Q, p, G, h, A, b = _problem(seed, kind)
    sol, _ = _solve(Q, p, G, h, A, b)
    if sol.statuses[0].name != "CONVERGED":
        return  # a failure is allowed to be reported; a wrong CONVERGED is not
    x = sol.value.detach().numpy()
    lam = sol.extras["lam"].detach().numpy()
    nu = sol.extras["nu"].detach().numpy()
    row_scale = 1 + np.abs(h) + np.abs(G) @ np.abs(x)
    assert np.max((G @ x - h) / row_scale) <= 1e-6
    if len(b):
        assert np.max(np.abs(A @ x - b) / (1 + np.abs(b) + np.abs(A) @ np.abs(x))) <= 1e-6
    assert lam.min() >= -1e-12
    grad_scale = 1 + np.abs(p).max() + np.abs(Q).max() * np.abs(x).max()
    assert np.abs(Q @ x + p + G.T @ lam + A.T @ nu).max() <= 1e-6 * grad_scale
    obj = 0.5 * x @ Q @ x + p @ x
    assert np.max(lam * (h - G @ x)) <= 1e-6 * (1 + abs(obj))
    status, ref = _clarabel(Q, p, G, h, A, b)
    if status == "Solved":
        assert abs(obj - ref) <= 1e-6 * (1 + abs(ref))


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["infeasible", "nonconvex"]))
def test_infeasible_and_nonconvex_are_never_converged_and_have_no_gradient(seed, kind):
    Q, p, G, h, A, b = _problem(seed, kind)
    sol, t = _solve(Q, p, G, h, A, b, grad=True)
    name = sol.statuses[0].name
    assert name != "CONVERGED"
    if kind == "nonconvex":
        assert name == "NONCONVEX"
    sol.value.sum().backward()
    assert not torch.isfinite(t[1].grad).any()
    assert t[0].grad is None or not torch.isfinite(t[0].grad).any()


@pytest.mark.parametrize("seed", range(20))
def test_unbounded_is_never_converged(seed):
    """An LP direction with no constraint: min pᵀx over a half-space that does not block -p."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 6))
    p = rng.standard_normal(n)
    g = -p + 0.1 * rng.standard_normal(n)  # the row g·x ≤ 1 leaves the ray -t·p feasible when g·p > 0
    g = g if g @ p < 0 else -g
    Q = np.zeros((n, n))
    sol, _ = _solve(Q, p, g[None, :], np.ones(1), np.zeros((0, n)), np.zeros(0))
    assert sol.statuses[0].name != "CONVERGED"


def test_shared_gradient_of_a_mixed_batch_is_not_silently_finite():
    """A shared Q with one infeasible element: its batch-summed gradient must not look valid."""
    Q = torch.eye(2, dtype=torch.float64, requires_grad=True)
    p = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    G = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    h = torch.tensor([[1.0, 1.0], [-1.0, -2.0]], dtype=torch.float64)  # element 1: x0 ≤ -1 and x0 ≥ 2
    sol = solve_qp(Q, p, G, h)
    assert [s.name for s in sol.statuses] == ["CONVERGED", "INFEASIBLE"]
    sol.value.sum().backward()
    assert torch.isfinite(p.grad[0]).all() and not torch.isfinite(p.grad[1]).any()
    assert not torch.isfinite(Q.grad).any()
