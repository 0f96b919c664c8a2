"""Fixed-point, root and DEQ solvers: CONVERGED means the residual meets the tolerance and
the implicit gradient matches finite differences; ODE: CONVERGED means within tolerance
of a tight reference solve."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gridlearn.implicit import DEQ, Anderson, Broyden, Newton, Picard, fixed_point_solve, odeint_solve, root_solve
from gridlearn.implicit.solution import Status
from tests.fuzz._budget import examples

F64 = torch.float64
SOLVERS = {
    "picard": lambda: Picard(rtol=1e-10, atol=1e-12, max_steps=400),
    "anderson": lambda: Anderson(rtol=1e-10, atol=1e-12, max_steps=200),
    "broyden": lambda: Broyden(rtol=1e-10, atol=1e-12, max_steps=200),
    "newton": lambda: Newton(rtol=1e-10, atol=1e-12, max_steps=50),
}


def _tanh_map(W, U):
    """f(z, x) = tanh(W z + U x): contractive when ‖W‖₂ < 1, merely a map otherwise."""
    return lambda z, x: torch.tanh(z @ W.T + x @ U.T)


@st.composite
def fixed_point_problems(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    d = draw(st.integers(1, 5))
    batch = draw(st.integers(1, 3))
    norm = draw(st.floats(0.1, 1.5))  # above 1 the map may not be contractive: any status is fine
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d, d))
    W *= norm / np.linalg.norm(W, 2)
    U = rng.standard_normal((d, d))
    x = rng.standard_normal((batch, d))
    return torch.tensor(W), torch.tensor(U), torch.tensor(x)


@settings(max_examples=examples(1.5))
@given(fixed_point_problems(), st.sampled_from(sorted(SOLVERS)))
def test_converged_fixed_point_meets_tolerance_and_its_gradient_matches_fd(problem, name):
    W, U, x = problem
    solver = SOLVERS[name]()
    f = _tanh_map(W, U)
    x = x.clone().requires_grad_(True)
    sol = fixed_point_solve(f, torch.zeros_like(x), x, solver=solver)
    conv = sol.converged
    event(f"{name}: {int(conv.sum())}/{conv.numel()} converged")
    z = sol.value.detach()
    res = (f(z, x.detach()) - z).norm(dim=-1)
    tol = solver.atol + solver.rtol * z.norm(dim=-1)
    assert bool((res[conv] <= tol[conv] * (1 + 1e-9)).all())
    w = torch.linspace(-1, 1, z.shape[-1], dtype=F64)
    (g,) = torch.autograd.grad((sol.value * w).sum(), x)
    assert bool(torch.isnan(g[~conv]).all())  # no gradient for a failed element
    if not bool(conv.any()):
        return
    # Central differences of a tighter solve (so the solver's own tolerance, divided by
    # eps, stays far below the comparison's), element by element.
    eps = 1e-4
    solver = Picard(rtol=0, atol=1e-14, max_steps=5000) if name == "picard" else type(solver)(rtol=0, atol=1e-14, max_steps=500)
    for i in torch.nonzero(conv).flatten().tolist():
        for j in range(x.shape[1]):
            xp, xm = x.detach().clone(), x.detach().clone()
            xp[i, j] += eps
            xm[i, j] -= eps
            sp = fixed_point_solve(f, z, xp, solver=solver)
            sm = fixed_point_solve(f, z, xm, solver=solver)
            if not (bool(sp.converged[i]) and bool(sm.converged[i])):
                continue
            fd = float(((sp.value[i] - sm.value[i]) * w).sum()) / (2 * eps)
            assert abs(float(g[i, j]) - fd) < 1e-6 * (1 + abs(fd))


@st.composite
def root_problems(draw):
    """g(y) = y³ + a y − c per coordinate, with a ≥ 0 (one simple root) or a double root
    (a = 0, c = 0), through a random mixing: g(y) = M(y∘y∘y + a∘y − c), M invertible."""
    seed = draw(st.integers(0, 2**31 - 1))
    d = draw(st.integers(1, 4))
    double = draw(st.booleans())
    rng = np.random.default_rng(seed)
    a = rng.random(d) * 2 + 0.1
    c = rng.standard_normal(d)
    if double:
        a[0], c[0] = 0.0, 0.0  # y³ = 0: a triple root, singular Jacobian at the solution
    M = rng.standard_normal((d, d)) + 3 * np.eye(d)
    return torch.tensor(a), torch.tensor(c), torch.tensor(M), double


@settings(max_examples=examples(1.5))
@given(root_problems())
def test_newton_root_is_certified_or_not_converged(problem):
    a, c, M, double = problem
    g = lambda y, c: (y**3 + a * y - c) @ M.T  # noqa: E731
    c = c.unsqueeze(0).clone().requires_grad_(True)
    solver = Newton(rtol=1e-10, atol=1e-12, max_steps=100)
    sol = root_solve(g, torch.ones_like(c), c, solver=solver)
    status = sol.statuses[0]
    event(f"{'multiple' if double else 'simple'} root: {status.name}")
    if double:
        assert status is not Status.CONVERGED  # SINGULAR (or MAX_STEPS), never a finite derivative
        (gr,) = torch.autograd.grad(sol.value.sum(), c)
        assert bool(torch.isnan(gr).all())
        return
    if status is not Status.CONVERGED:
        return
    y = sol.value.detach()
    assert float(g(y, c.detach()).norm()) <= solver.atol + solver.rtol * float(g(torch.ones_like(y), c.detach()).norm()) + 1e-15
    # Closed form: dy/dc = (M J)⁻¹ M = J⁻¹ with J = diag(3y² + a), so d(Σy)/dc_j = 1/(3y_j² + a_j).
    (gr,) = torch.autograd.grad(sol.value.sum(), c)
    torch.testing.assert_close(gr[0], 1 / (3 * y[0] ** 2 + a), atol=1e-7, rtol=1e-6)


class _Cell(torch.nn.Module):
    def __init__(self, d: int, norm: float, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(d, d, generator=g, dtype=F64)
        self.W = torch.nn.Parameter(W * norm / torch.linalg.matrix_norm(W, 2))
        self.U = torch.nn.Parameter(torch.randn(d, d, generator=g, dtype=F64))

    def forward(self, z, x):
        return torch.tanh(z @ self.W.T + x @ self.U.T)


@settings(max_examples=examples(1.0))
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.floats(0.1, 0.95), st.sampled_from(["anderson", "broyden", "picard"]))
def test_deq_gradcheck_when_converged(seed, d, norm, name):
    layer = DEQ(_Cell(d, norm, seed), solver=SOLVERS[name](), on_failure="nan")
    x = torch.randn(2, d, generator=torch.Generator().manual_seed(seed + 1), dtype=F64, requires_grad=True)
    sol = layer.solve(x)
    event(f"DEQ {name}: {'converged' if sol.ok else 'not converged'}")
    if not sol.ok:
        return
    z = sol.value.detach()
    res = (layer.cell(z, x.detach()) - z).norm(dim=-1)
    assert bool((res <= layer.solver.atol + layer.solver.rtol * z.norm(dim=-1) + 1e-15).all())
    assert torch.autograd.gradcheck(lambda x: layer(x), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)


@st.composite
def linear_odes(draw):
    """dy/dt = A y with a random A (eigenvalues of real part in [-stiff, 1]), so the exact
    solution is exp(tA) y0. RK4 gets a step that may be far outside its stability region."""
    seed = draw(st.integers(0, 2**31 - 1))
    d = draw(st.integers(1, 4))
    stiff = 10.0 ** draw(st.floats(-1, 3))
    method = draw(st.sampled_from(["dopri5", "rk4"]))
    step = 10.0 ** draw(st.floats(-3, -0.5))
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = -rng.random(d) * stiff + rng.random(d)
    A = (U * lam) @ U.T
    y0 = rng.standard_normal((2, d))
    return torch.tensor(A), torch.tensor(y0), method, step


@settings(max_examples=examples(2.0))
@given(linear_odes(), st.sampled_from(["adjoint", "backprop"]))
def test_converged_ode_is_within_tolerance_of_the_exact_solution(problem, gradient):
    A, y0, method, step = problem
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    rtol, atol = 1e-6, 1e-8
    y0 = y0.clone().requires_grad_(True)
    sol = odeint_solve(lambda t, y: y @ A.T, y0, t, method=method, rtol=rtol, atol=atol,
                       step_size=step if method == "rk4" else None, max_steps=2000, gradient=gradient)
    conv = sol.converged
    event(f"{method}: {int(conv.sum())}/{conv.numel()} converged")
    exact = torch.stack([y0.detach() @ torch.linalg.matrix_exp(A * ti).T for ti in t])
    scale = atol + rtol * exact.abs().amax(0, keepdim=True)
    # A global error of a few hundred local tolerances over ~100 steps is the contract's reach.
    err = ((sol.value.detach() - exact).abs() / scale).amax(-1).amax(0)
    assert bool((err[conv] < 1e3).all()), err
    (g,) = torch.autograd.grad(sol.value[-1].sum(), y0)
    assert bool(torch.isnan(g[~conv]).all())
    if bool(conv.any()):
        ref = torch.linalg.matrix_exp(A * t[-1]).sum(0)  # d Σ y(1) / d y0 = 1ᵀ exp(A)
        err_g = (g[conv] - ref).abs() / (1e-6 + 1e-4 * ref.abs())
        assert bool((err_g < 10).all())
