"""root_find / root_solve / implicit_root_grad: IFT gradients against closed forms and gradcheck."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.implicit import ImplicitAdjoint, Newton, PhantomAdjoint, Status, UnrolledAdjoint, root_find
from gridlearn.implicit.root import implicit_root_grad, root_solve

from ._helpers import randn

TIGHT = Newton(rtol=0.0, atol=1e-12)


def sqrt_residual(y, w):
    return y * y - w


def test_root_of_square_minus_omega_has_gradient_one_over_two_root():
    w = torch.tensor([[2.0], [9.0], [0.25]], dtype=torch.float64, requires_grad=True)
    y = root_find(sqrt_residual, torch.ones_like(w), w, solver=TIGHT)
    (dw,) = torch.autograd.grad(y.sum(), w)
    torch.testing.assert_close(y.detach(), w.detach().sqrt())
    torch.testing.assert_close(dw, 1 / (2 * y.detach()))


@pytest.mark.parametrize("direct", [True, False], ids=["dense", "iterative"])
def test_root_find_passes_gradcheck(direct):
    # g(y; x) = y + 0.3 tanh(B y) - x: ∂g/∂y = I + 0.3 diag(sech²) B, close to I so both the
    # dense and the iterative backward apply.
    B = randn(5, 5, seed=1) / 5**0.5

    def g(y, x, s):
        return y + s * torch.tanh(y @ B.T) - x

    adjoint = ImplicitAdjoint(direct=direct, solver=None if direct else None)
    x = randn(3, 5, seed=2, requires_grad=True)
    s = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, s: root_find(g, torch.zeros_like(x), x, s, solver=TIGHT, adjoint=adjoint)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, s), eps=1e-6, atol=1e-6)


def test_gradients_reach_parameters_the_residual_closes_over():
    lin = nn.Linear(4, 4).double()
    with torch.no_grad():
        lin.weight.mul_(0.3)
    x = randn(2, 4, seed=3)

    def solve(weight):
        # weight is closed over (not passed in *args), like an nn.Module's parameter
        g = lambda y: y - torch.tanh(y @ weight.T + lin.bias) - x  # noqa: E731
        return root_find(g, torch.zeros_like(x), solver=TIGHT)

    W = lin.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(solve, (W,), eps=1e-6, atol=1e-6)

    g_mod = lambda y: y - torch.tanh(lin(y)) - x  # noqa: E731
    y = root_find(g_mod, torch.zeros_like(x), solver=TIGHT)
    y.pow(2).sum().backward()
    assert lin.weight.grad is not None and lin.bias.grad is not None
    Wr = lin.weight.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(solve(Wr).pow(2).sum(), Wr)
    torch.testing.assert_close(lin.weight.grad, expected)


def test_dense_jacobian_is_used_forward_and_backward():
    w = torch.tensor([[8.0, 1.0], [27.0, 0.125]], dtype=torch.float64, requires_grad=True)
    calls = {"n": 0}

    def jac(y, w):
        calls["n"] += 1
        return torch.diag_embed(3 * y**2)

    y = root_find(lambda y, w: y**3 - w, torch.ones_like(w), w, solver=TIGHT, jacobian=jac)
    n_forward = calls["n"]
    (dw,) = torch.autograd.grad(y.sum(), w)
    assert n_forward > 1 and calls["n"] == n_forward + 1
    torch.testing.assert_close(dw, 1 / (3 * y.detach() ** 2))


def test_implicit_root_grad_for_an_external_solver():
    w = torch.tensor([[2.0], [5.0]], dtype=torch.float64, requires_grad=True)
    y_ext = w.detach().sqrt()  # "found by someone else"
    y = implicit_root_grad(sqrt_residual, y_ext, w)
    assert torch.equal(y.detach(), y_ext)
    (dw,) = torch.autograd.grad((y**2).sum(), w)
    torch.testing.assert_close(dw, torch.ones_like(dw))  # d(y²)/dw = 2y · 1/(2y) = 1

    # the dense-Jacobian route gives the same
    y2 = implicit_root_grad(sqrt_residual, y_ext, w, jacobian=lambda y, w: torch.diag_embed(2 * y))
    (dw2,) = torch.autograd.grad((y2**2).sum(), w)
    torch.testing.assert_close(dw2, dw)


def test_non_converged_element_gets_no_implicit_gradient():
    # x² + w = 0 has no real root for w > 0: element 1 fails, element 0 is fine.
    w = torch.tensor([[-4.0], [1.0]], dtype=torch.float64, requires_grad=True)
    g = lambda y, w: y * y + w  # noqa: E731
    solver = Newton(max_steps=40)
    sol = root_solve(g, torch.ones_like(w), w, solver=solver)
    assert sol.statuses[0] is Status.CONVERGED and sol.statuses[1] is not Status.CONVERGED
    (dw,) = torch.autograd.grad(sol.value.sum(), w)
    assert float(dw[0]) == pytest.approx(-1 / (2 * 2.0), rel=1e-6)
    assert torch.isnan(dw[1]).all()

    with pytest.raises(SolverFailure, match="#1") as err:
        root_find(g, torch.ones_like(w), w, solver=solver)
    assert err.value.indices == [1]

    sol = root_solve(g, torch.ones_like(w), w, solver=solver, on_failure="raise")
    with pytest.raises(SolverFailure, match=r"did not converge for elements \[1\]"):
        sol.value.sum().backward()
    # ... but an element that receives no cotangent does not block the others
    (dw0,) = torch.autograd.grad(sol.value[0].sum(), w)
    assert float(dw0[0]) == pytest.approx(-0.25, rel=1e-6) and float(dw0[1]) == 0.0


def test_singular_backward_system_is_loud():
    # y³ = w at w = 0: root y = 0 where ∂g/∂y = 3y² = 0: no implicit gradient exists.
    w = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    y = implicit_root_grad(lambda y, w: y**3 - w, torch.zeros(1, 1, dtype=torch.float64), w)
    with pytest.raises(SolverFailure, match="backward linear system"):
        y.sum().backward()


def test_phantom_and_unrolled_approach_the_implicit_gradient():
    B = randn(4, 4, seed=7) * 0.2
    x = randn(2, 4, seed=8, requires_grad=True)
    g = lambda y, x: y - 0.5 * torch.tanh(y @ B.T) - x  # noqa: E731
    ref = torch.autograd.grad(root_find(g, torch.zeros_like(x), x, solver=TIGHT).sum(), x)[0]
    errs = []
    for k in (1, 3, 8):
        y = root_find(g, torch.zeros_like(x), x, solver=TIGHT, adjoint=PhantomAdjoint(steps=k))
        errs.append(float((torch.autograd.grad(y.sum(), x)[0] - ref).abs().max()))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-4
    y = root_find(g, torch.zeros_like(x), x, solver=TIGHT, adjoint=UnrolledAdjoint())
    torch.testing.assert_close(torch.autograd.grad(y.sum(), x)[0], ref, atol=1e-8, rtol=0)


def test_bad_arguments():
    w = torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(ConfigError):
        root_find(sqrt_residual, w, w, on_failure="ignore")
    with pytest.raises(ConfigError):
        root_find(sqrt_residual, w, w, adjoint="implicit")
    with pytest.raises(ValueError, match="shaped like the state"):
        root_find(lambda y, w: (y * y - w).sum(), w, w)
    with pytest.raises(ConfigError):
        implicit_root_grad(sqrt_residual, w, w, adjoint=UnrolledAdjoint())
