"""Fixed-point and root solvers: answers, per-element status, masking, safeguards, config."""

from __future__ import annotations

import math

import pytest
import torch

from gridlearn.errors import ConfigError
from gridlearn.implicit import Anderson, Broyden, Newton, Picard, Status
from gridlearn.implicit.solvers import autograd_jacobian

from ._helpers import randn

TIGHT = dict(rtol=0.0, atol=1e-11)
SOLVERS = [
    Picard(max_steps=500, **TIGHT),
    Anderson(max_steps=200, **TIGHT),
    Broyden(max_steps=200, **TIGHT),
    Newton(max_steps=50, **TIGHT),
]


def linear_problem(d=6, batch=3, contraction=0.8, seed=0):
    A = randn(d, d, seed=seed)
    A = A * (contraction / torch.linalg.matrix_norm(A, ord=2))
    x = randn(batch, d, seed=seed + 1)
    exact = torch.linalg.solve(torch.eye(d, dtype=A.dtype) - A, x.T).T
    return A, x, exact


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_linear_fixed_point_matches_direct_solve(solver):
    A, x, exact = linear_problem()
    sol = solver.solve_fixed_point(lambda z: z @ A.T + x, torch.zeros_like(x))
    assert sol.ok, sol.statuses
    torch.testing.assert_close(sol.value, exact, atol=1e-9, rtol=0)
    assert (sol.residual <= 1e-11).all()


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_converged_elements_are_frozen_and_undisturbed(solver):
    # Element 0 contracts fast, element 1 slowly: the batch must give element 0 exactly
    # what it gets alone, and element 0 must stop (fewer steps) while 1 keeps going.
    a = torch.tensor([[0.1], [0.95]], dtype=torch.float64)
    c = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    f = lambda z: a * torch.sin(z) + c  # noqa: E731
    both = solver.solve_fixed_point(f, torch.zeros_like(c))
    alone = solver.solve_fixed_point(lambda z: a[:1] * torch.sin(z) + c[:1], torch.zeros_like(c[:1]))
    assert both.ok
    assert torch.equal(both.value[0], alone.value[0])
    assert int(both.steps[0]) == int(alone.steps[0])
    if not isinstance(solver, Newton):
        assert int(both.steps[0]) < int(both.steps[1])


@pytest.mark.parametrize("solver", SOLVERS[:3], ids=lambda s: type(s).__name__)
def test_divergent_element_is_reported_and_others_converge(solver):
    # Element 1 is z + 1 + z², which has no real fixed point (a linear map would not do:
    # Anderson and Broyden solve z = 3z + 1 exactly, as secant methods should).
    a = torch.tensor([[0.5], [1.0]], dtype=torch.float64)
    s = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    sol = solver.solve_fixed_point(lambda z: a * z + 1.0 + s * z**2, torch.zeros(2, 1, dtype=torch.float64))
    assert sol.statuses[0] is Status.CONVERGED
    assert sol.statuses[1] in (Status.DIVERGED, Status.MAX_STEPS, Status.NONFINITE)
    assert float(sol.value[0]) == pytest.approx(2.0, abs=1e-9)


def test_picard_reports_diverged_not_max_steps_for_geometric_growth():
    sol = Picard(max_steps=100).solve_fixed_point(lambda z: 2.0 * z + 1.0, torch.zeros(1, 3, dtype=torch.float64))
    assert sol.statuses == [Status.DIVERGED]
    assert int(sol.steps[0]) < 20  # stopped early, not after all 100 steps


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_nan_input_gives_nonfinite_status(solver):
    x = torch.tensor([[1.0, 2.0], [float("nan"), 0.0]], dtype=torch.float64)
    sol = solver.solve_fixed_point(lambda z: 0.5 * z + x, torch.zeros_like(x))
    assert sol.statuses == [Status.CONVERGED, Status.NONFINITE]


def test_anderson_on_a_singular_history_falls_back_and_converges():
    # A scalar state with memory 5 and no regularisation: the m x m least-squares Gram matrix
    # has rank 1, so Cholesky fails on every step with >1 stored difference.
    solver = Anderson(memory=5, regularization=0.0, max_steps=200, rtol=0.0, atol=1e-12)
    sol = solver.solve_fixed_point(torch.cos, torch.zeros(2, 1, dtype=torch.float64))
    assert sol.ok
    assert sol.extras["fallbacks"] > 0
    torch.testing.assert_close(sol.value, torch.full((2, 1), 0.7390851332151607, dtype=torch.float64), atol=1e-10, rtol=0)


def test_anderson_with_repeated_identical_iterates_does_not_crash():
    # f ignores z for some coordinates: identical residual differences (zero columns).
    def f(z):
        return torch.cat([torch.ones_like(z[:, :1]), 0.5 * z[:, 1:] + 1.0], dim=-1)

    sol = Anderson(memory=4, regularization=0.0, rtol=0.0, atol=1e-12).solve_fixed_point(f, torch.zeros(3, 4, dtype=torch.float64))
    assert sol.ok
    torch.testing.assert_close(sol.value, torch.tensor([[1.0, 2.0, 2.0, 2.0]] * 3, dtype=torch.float64))


def test_anderson_and_broyden_need_fewer_steps_than_picard_on_a_slow_contraction():
    # Symmetric A with spectrum spread over [0, 0.99]: Picard needs ~2500 steps for 1e-11.
    Q, _ = torch.linalg.qr(randn(10, 10, seed=3))
    A = Q @ torch.diag(torch.linspace(0.0, 0.99, 10, dtype=torch.float64)) @ Q.T
    x = randn(2, 10, seed=4)
    f = lambda z: z @ A.T + x  # noqa: E731
    steps = {
        type(s).__name__: int(s.solve_fixed_point(f, torch.zeros_like(x)).steps.max())
        for s in (Picard(max_steps=5000, **TIGHT), Anderson(max_steps=500, **TIGHT), Broyden(max_steps=500, **TIGHT))
    }
    assert steps["Anderson"] < steps["Picard"] / 3
    assert steps["Broyden"] < steps["Picard"] / 3


def test_newton_root_with_analytic_and_autograd_jacobian():
    w = torch.tensor([[2.0, 3.0], [27.0, 0.5]], dtype=torch.float64)
    g = lambda y: y**3 - w  # noqa: E731
    calls = []

    def jac(y):
        calls.append(1)
        return torch.diag_embed(3 * y**2)

    a = Newton(**TIGHT).solve_root(g, torch.ones_like(w), jacobian=jac)
    b = Newton(**TIGHT).solve_root(g, torch.ones_like(w))
    # One Jacobian per step, plus one at the root to certify it simple (Newton's Kantorovich test).
    assert a.ok and b.ok and len(calls) == int(a.steps.max()) + 1
    torch.testing.assert_close(a.value, w ** (1 / 3))
    torch.testing.assert_close(b.value, w ** (1 / 3))
    assert int(a.steps.max()) < 15  # quadratic convergence


def test_newton_singular_jacobian_is_numerical_not_a_crash():
    # g(y) = cos(y) - 0.5 with y0 = 0: g'(0) = -sin(0) = 0.
    sol = Newton().solve_root(lambda y: torch.cos(y) - 0.5, torch.tensor([[0.0], [1.0]], dtype=torch.float64))
    assert sol.statuses[0] is Status.NUMERICAL
    assert sol.statuses[1] is Status.CONVERGED


def test_newton_backtracking_rescues_a_bad_full_step():
    # atan(y) = 0 from y0 = 3: full Newton steps diverge; halving steps converges.
    y0 = torch.tensor([[3.0]], dtype=torch.float64)
    with torch.no_grad():
        plain = Newton(max_steps=30).solve_root(torch.atan, y0)
        damped = Newton(max_steps=30, max_backtracks=10).solve_root(torch.atan, y0)
    assert plain.statuses[0] is not Status.CONVERGED
    assert damped.ok and abs(float(damped.value)) < 1e-8


def test_autograd_jacobian_matches_closed_form():
    y = randn(3, 4, seed=5)
    J, out = autograd_jacobian(lambda v: torch.sin(v) * 2.0, y)
    torch.testing.assert_close(J, torch.diag_embed(2.0 * torch.cos(y)))
    torch.testing.assert_close(out, 2.0 * torch.sin(y))


def test_solvers_work_in_float32():
    A, x, exact = linear_problem()
    sol = Anderson(rtol=1e-5, atol=1e-6).solve_fixed_point(lambda z: z @ A.float().T + x.float(), torch.zeros_like(x).float())
    assert sol.ok and sol.value.dtype == torch.float32
    torch.testing.assert_close(sol.value, exact.float(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Picard(damping=0.0),
        lambda: Picard(max_steps=0),
        lambda: Picard(rtol=-1.0),
        lambda: Anderson(memory=0),
        lambda: Anderson(mixing=1.5),
        lambda: Anderson(regularization=-1.0),
        lambda: Broyden(memory=0),
        lambda: Newton(max_backtracks=-1),
        lambda: Newton(divergence_patience=-1),
    ],
)
def test_bad_settings_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_solver_is_frozen():
    s = Anderson()
    with pytest.raises(Exception):
        s.memory = 3  # type: ignore[misc]
    assert math.isclose(Anderson(memory=6).memory, 6)
