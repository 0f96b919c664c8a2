"""QP layer: random convex QPs agree with Clarabel and closed forms whenever CONVERGED;
random non-convex QPs are never CONVERGED. Objectives are scaled over 1e-10..1e10."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gridlearn.implicit import solve_qp
from gridlearn.implicit.solution import Status
from tests.fuzz._budget import examples

F64 = torch.float64


@st.composite
def convex_qps(draw):
    """(Q, p, G, h, A, b, scale, full_rank) as numpy, Q PSD; feasible by construction.

    G mixes random rows, a duplicated row (redundant), a row through the feasible point
    (degenerate when active) and, when Q is rank-deficient, a box that keeps it bounded.
    """
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(2, 6))
    rank = draw(st.integers(1, n))
    m = draw(st.integers(0, 6))
    k = draw(st.integers(0, min(2, n - 1)))
    redundant = draw(st.booleans())
    scale = 10.0 ** draw(st.integers(-10, 10))
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, rank))
    full_rank = rank == n
    Q = M @ M.T + (0.1 * np.eye(n) if full_rank else 0.0)
    p = rng.standard_normal(n)
    x_feas = 0.3 * rng.standard_normal(n)
    G = rng.standard_normal((m, n))
    if redundant and m:
        G = np.vstack([G, G[:1]])
    if not full_rank:
        G = np.vstack([G, np.eye(n), -np.eye(n)])
    slack = rng.random(G.shape[0])
    if G.shape[0] and draw(st.booleans()):
        slack[0] = 0.0  # a constraint through x_feas
        if redundant and m:
            slack[m] = 0.0  # keep the duplicate identical
    h = G @ x_feas + slack
    if not full_rank:
        h[-2 * n:] = 2.0 + np.abs(x_feas).max()
    A = rng.standard_normal((k, n))
    b = A @ x_feas
    return Q, p, G, h, A, b, scale, full_rank


def _clarabel(Q, p, G, h, A, b):
    x = cp.Variable(Q.shape[0])
    cons = []
    if G.shape[0]:
        cons.append(G @ x <= h)
    if A.shape[0]:
        cons.append(A @ x == b)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, cp.psd_wrap(Q)) + p @ x), cons)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11, max_iter=500)
    assert prob.status == "optimal", prob.status
    lam = cons[0].dual_value if G.shape[0] else np.zeros(0)
    return x.value, float(prob.value), np.atleast_1d(lam)


def _t(*arrays):
    return [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in arrays]


@settings(max_examples=examples(2.0))
@given(convex_qps())
def test_converged_convex_qp_agrees_with_clarabel(problem):
    Q, p, G, h, A, b, s, full_rank = problem
    Qt, pt, Gt, ht, At, bt = _t(s * Q, s * p, G, h, A, b)
    sol = solve_qp(Qt, pt, Gt, ht, At, bt)
    status = sol.statuses[0]
    event(f"status {status.name}, {'PD' if full_rank else 'PSD'} Q")
    assert status is not Status.NONCONVEX  # PSD by construction
    if status is not Status.CONVERGED:
        return  # an honest failure status is allowed; a wrong CONVERGED is not
    x, lam, nu = sol.value.numpy(), sol.extras["lam"].numpy(), sol.extras["nu"].numpy()
    x_ref, obj_ref, lam_ref = _clarabel(Q, p, G, h, A, b)
    # Feasible, optimal objective (unique even when x is not), KKT with our own duals.
    assert (G @ x - h).max(initial=0.0) < 1e-7 * (1 + np.abs(h).max(initial=0.0))
    assert np.abs(A @ x - b).max(initial=0.0) < 1e-7 * (1 + np.abs(b).max(initial=0.0))
    obj = 0.5 * x @ Q @ x + p @ x
    assert abs(obj - obj_ref) < 1e-6 * (1 + abs(obj_ref))
    assert lam.min(initial=0.0) >= 0
    stationarity = s * (Q @ x + p) + G.T @ lam + A.T @ nu
    assert np.abs(stationarity).max() < 1e-6 * s * (1 + np.abs(p).max() + np.abs(Q @ x).max())
    comp = lam * (h - G @ x)
    assert np.abs(comp).max(initial=0.0) < 1e-6 * s * (1 + abs(obj_ref))
    if full_rank:
        np.testing.assert_allclose(x, x_ref, atol=1e-5 * (1 + np.abs(x_ref).max()), rtol=0)


@settings(max_examples=examples(1.0))
@given(convex_qps(), st.integers(0, 2**31 - 1))
def test_converged_gradient_matches_the_active_set_closed_form(problem, wseed):
    Q, p, G, h, A, b, s, full_rank = problem
    if not full_rank:
        return  # x(p) is not unique, so neither is its derivative
    x_ref, _, lam_ref = _clarabel(Q, p, G, h, A, b)
    slack = h - G @ x_ref
    active = lam_ref > 1e-6
    inactive = slack > 1e-6
    if G.shape[0] and not bool((active ^ inactive).all()):
        event("skipped: weakly active constraint")
        return  # weakly active constraint: the derivative is not unique
    C = np.vstack([G[active], A]) if G.shape[0] else A
    if C.shape[0] and np.linalg.matrix_rank(C) < C.shape[0]:
        event("skipped: dependent active rows")
        return  # dependent active rows (the redundant pair): duals not unique
    n, c = Q.shape[0], C.shape[0]
    K = np.block([[Q, C.T], [C, np.zeros((c, c))]])
    w = np.random.default_rng(wseed).standard_normal(n)
    # x solves K [x; y] = [-p; d] on the active set, so d(wᵀx)/dp = -(K⁻¹[w; 0])_x / s after scaling.
    grad_ref = -np.linalg.solve(K, np.concatenate([w, np.zeros(c)]))[:n] / s
    Qt, pt, Gt, ht, At, bt = _t(s * Q, s * p, G, h, A, b)
    pt.requires_grad_(True)
    sol = solve_qp(Qt, pt, Gt, ht, At, bt)
    event(f"gradient checked: {sol.statuses[0].name}")
    if not sol.ok:
        return
    (g,) = torch.autograd.grad((sol.value * torch.as_tensor(w)).sum(), pt)
    np.testing.assert_allclose(g.numpy() * s, grad_ref * s, atol=1e-5 * (1 + np.abs(grad_ref * s).max()), rtol=0)


@st.composite
def nonconvex_qps(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(1, 6))
    m = draw(st.integers(0, 6))
    k = draw(st.integers(0, n - 1))
    boxed = draw(st.booleans())
    neg = draw(st.floats(0.01, 10.0))
    scale = 10.0 ** draw(st.integers(-10, 10))
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = rng.random(n) * 5
    eig[rng.integers(n)] = -neg * max(1.0, eig.max())  # at least one clearly negative eigenvalue
    Q = (U * eig) @ U.T
    Q = 0.5 * (Q + Q.T)
    p = rng.standard_normal(n)
    G = rng.standard_normal((m, n))
    if boxed:
        G = np.vstack([G, np.eye(n), -np.eye(n)])
    h = rng.random(G.shape[0]) + 0.1
    A = rng.standard_normal((k, n))
    b = np.zeros(k)
    return Q, p, G, h, A, b, scale


@settings(max_examples=examples(2.0))
@given(nonconvex_qps(), st.booleans())
def test_nonconvex_qp_is_never_converged(problem, batched):
    Q, p, G, h, A, b, s = problem
    Qt, pt, Gt, ht, At, bt = _t(s * Q, s * p, G, h, A, b)
    if batched:  # with a convex companion in the same batch, which must still solve
        Qt = torch.stack([Qt, torch.eye(Q.shape[0], dtype=F64) * s])
        pt = pt.expand(2, -1).clone()
    Qt.requires_grad_(True)
    sol = solve_qp(Qt, pt, Gt, ht, At, bt)
    assert sol.statuses[0] is Status.NONCONVEX
    if batched:
        assert sol.statuses[1] is Status.CONVERGED
        sol.value.sum().backward()
        assert torch.isnan(Qt.grad[0]).all() and torch.isfinite(Qt.grad[1]).all()
