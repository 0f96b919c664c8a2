"""DEQ: gradcheck for every solver with the exact adjoint, approximations against it,
monitoring (spectral radius, Jacobian penalty), warm start, failures, memory."""

from __future__ import annotations

import pytest
import torch

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.implicit import DEQ, Anderson, Broyden, ImplicitAdjoint, Newton, PhantomAdjoint, Picard, Status, UnrolledAdjoint

from ._helpers import LinearCell, TanhCell, count_saved_tensors, randn

TOL = dict(rtol=0.0, atol=1e-12)
SOLVERS = [Picard(max_steps=300, **TOL), Anderson(max_steps=200, **TOL), Broyden(max_steps=200, **TOL), Newton(max_steps=30, **TOL)]
BACKWARD = Anderson(max_steps=300, rtol=0.0, atol=1e-13)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("direct", [True, False], ids=["dense", "iterative"])
def test_deq_gradcheck_input_and_parameters(solver, direct):
    cell = TanhCell(d=3, contraction=0.6, seed=1)
    layer = DEQ(cell, solver=solver, adjoint=ImplicitAdjoint(direct=direct, solver=BACKWARD))
    x = randn(2, 3, seed=2, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-6)

    # parameters the cell holds: gradcheck through a functional copy of W
    W0 = cell.W.detach().clone().requires_grad_(True)

    def as_function_of_W(W):
        original = cell.W
        try:
            del cell.W
            cell.W = W  # plain tensor attribute for the duration of the call
            return layer(x.detach())
        finally:
            del cell.W
            cell.W = original

    assert torch.autograd.gradcheck(as_function_of_W, (W0,), eps=1e-6, atol=1e-6)


def test_deq_parameter_gradients_match_unrolled_backprop():
    cell = TanhCell(d=5, contraction=0.5, seed=3)
    x = randn(4, 5, seed=4)
    grads = {}
    for name, adjoint, solver in [
        ("implicit", ImplicitAdjoint(direct=False, solver=BACKWARD), Anderson(**TOL)),
        ("unrolled", UnrolledAdjoint(), Picard(max_steps=300, **TOL)),
    ]:
        cell.zero_grad()
        DEQ(cell, solver=solver, adjoint=adjoint)(x).pow(2).sum().backward()
        grads[name] = [p.grad.clone() for p in cell.parameters()]
    for a, b in zip(grads["implicit"], grads["unrolled"]):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_phantom_gradient_is_close_to_implicit_and_improves_with_k():
    cell = TanhCell(d=6, contraction=0.5, seed=5)
    x = randn(3, 6, seed=6, requires_grad=True)
    ref = torch.autograd.grad(DEQ(cell, solver=Anderson(**TOL))(x).sum(), x)[0]
    err = {}
    for k in (2, 10):
        z = DEQ(cell, solver=Anderson(**TOL), adjoint=PhantomAdjoint(steps=k))(x)
        err[k] = float((torch.autograd.grad(z.sum(), x)[0] - ref).norm() / ref.norm())
    assert err[10] < err[2] and err[10] < 1e-2 and err[2] > 1e-4


def test_spectral_radius_of_a_linear_cell_matches_eigenvalues():
    Q, _ = torch.linalg.qr(randn(6, 6, seed=7))
    eig = torch.tensor([0.9, -0.5, 0.3, 0.2, 0.1, 0.0], dtype=torch.float64)
    layer = DEQ(LinearCell(Q @ torch.diag(eig) @ Q.T), solver=Anderson(**TOL))
    x = randn(3, 6, seed=8)
    rho = layer.spectral_radius(x, iters=200, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rho, torch.full((3,), 0.9, dtype=torch.float64), atol=1e-6, rtol=0)


def test_jacobian_penalty_estimates_frobenius_norm_and_is_differentiable():
    A = randn(5, 5, seed=9) * 0.2
    layer = DEQ(LinearCell(A), solver=Anderson(**TOL))
    x = randn(2, 5, seed=10)
    z, pen = layer.forward_with_penalty(x, samples=4000, generator=torch.Generator().manual_seed(1))
    fro2 = float(torch.linalg.matrix_norm(A) ** 2)
    assert pen.shape == (2,)
    assert float(pen.detach().mean()) == pytest.approx(fro2, rel=0.05)
    pen.mean().backward()  # d‖A‖²_F/dA = 2A, estimated
    torch.testing.assert_close(layer.cell.A.grad, 2 * A, atol=0.05, rtol=0)


def test_warm_start_from_the_equilibrium_takes_no_steps():
    layer = DEQ(TanhCell(d=4, seed=11), solver=Anderson(rtol=1e-8, atol=1e-10))
    x = randn(3, 4, seed=12)
    cold = layer.solve(x)
    warm = layer.solve(x, z0=cold.value.detach())
    assert cold.ok and warm.ok
    assert int(warm.steps.max()) == 0 < int(cold.steps.min())
    torch.testing.assert_close(warm.value, cold.value)


def test_mixed_batch_forward_raises_naming_the_bad_element():
    # contraction 0.5 for element 0; element 1's input is NaN
    layer = DEQ(TanhCell(d=3, seed=13), solver=Anderson())
    x = randn(2, 3, seed=14, requires_grad=True)
    x_bad = torch.cat([x[:1], torch.full_like(x[1:], float("nan"))])
    with pytest.raises(SolverFailure, match=r"#1: NONFINITE") as err:
        layer(x_bad)
    assert err.value.indices == [1]
    sol = layer.solve(x_bad)
    assert sol.statuses == [Status.CONVERGED, Status.NONFINITE]


def test_divergent_cell_element_reported_and_easy_element_keeps_its_gradient():
    # z = a ⊙ z + x per element: a = 0.5 converges, a = 1.5 runs away geometrically
    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor([[0.5], [1.5]], dtype=torch.float64))

        def forward(self, z, x):
            return self.a * z + x

    layer = DEQ(Scale(), solver=Picard(max_steps=200), on_failure="nan")
    x = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    sol = layer.solve(x)
    assert sol.statuses[0] is Status.CONVERGED
    assert sol.statuses[1] is Status.DIVERGED
    (dx,) = torch.autograd.grad(sol.value.sum(), x)
    torch.testing.assert_close(dx[0], torch.full((2,), 2.0, dtype=torch.float64))  # 1/(1-a)
    assert torch.isnan(dx[1]).all()
    with pytest.raises(SolverFailure, match="DIVERGED"):
        DEQ(Scale(), solver=Picard(max_steps=200))(x)


def test_implicit_backward_memory_does_not_grow_with_iterations():
    cell = TanhCell(d=8, contraction=0.99, seed=15)
    x = randn(4, 8, seed=16, requires_grad=True)

    def saved(adjoint, steps):
        # never converges (atol=rtol=0), so exactly `steps` iterations run every time
        layer = DEQ(cell, solver=Picard(max_steps=steps, rtol=0.0, atol=0.0, divergence_patience=0), adjoint=adjoint, on_failure="zero")
        return count_saved_tensors(lambda: layer(x))

    implicit = [saved(ImplicitAdjoint(), n) for n in (10, 20, 40)]
    unrolled = [saved(UnrolledAdjoint(), n) for n in (10, 20, 40)]
    assert implicit[0] == implicit[1] == implicit[2] > 0
    assert unrolled[0] < unrolled[1] < unrolled[2]


def test_deq_runs_in_float32():
    cell = TanhCell(d=4, seed=17, dtype=torch.float32)
    x = randn(3, 4, seed=18, dtype=torch.float32, requires_grad=True)
    z = DEQ(cell, solver=Anderson(rtol=1e-5, atol=1e-6))(x)
    z.sum().backward()
    assert z.dtype == torch.float32 and x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_configuration():
    with pytest.raises(ConfigError):
        DEQ(TanhCell(), solver="anderson")
    with pytest.raises(ConfigError):
        DEQ(TanhCell(), adjoint=Picard())
    with pytest.raises(ConfigError):
        DEQ(TanhCell(), on_failure="warn")
    with pytest.raises(ConfigError):
        PhantomAdjoint(steps=-1)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_unrolled_backprop_through_each_solver_agrees_with_implicit(solver):
    # once the forward has converged tightly, differentiating the iterations converges to the IFT gradient
    cell = TanhCell(d=4, seed=19)
    x = randn(2, 4, seed=20, requires_grad=True)
    ref = torch.autograd.grad(DEQ(cell, solver=Anderson(**TOL))(x).sum(), x)[0]
    got = torch.autograd.grad(DEQ(cell, solver=solver, adjoint=UnrolledAdjoint())(x).sum(), x)[0]
    torch.testing.assert_close(got, ref, atol=1e-9, rtol=0)
