"""SATNet's CG backward (gridlearn.implicit.satnet_adjoint_cg): the same adjoint as the
coordinate sweeps, a stopping test checked against a dense residual, a loud failure where
the system is not positive definite, and per-element independence."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gridlearn.implicit import Status
from gridlearn.implicit.satnet import MixingSettings, satnet_solve
from gridlearn.implicit.satnet_adjoint_cg import adjoint_cg
from gridlearn.implicit.satnet_mixing import mixing_forward


def _instance(seed=0, B=4, n=16, m=12, aux=5):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(m, n + 1 + aux, generator=g, dtype=torch.float64) * 0.4
    z = torch.rand(B, n, generator=g, dtype=torch.float64)
    mask = torch.rand(B, n, generator=g) < 0.4
    w = torch.randn(B, n, generator=g, dtype=torch.float64)
    return S, z, mask, w


def _grads(S, z, mask, w, **kw):
    # both adjoints solved to round-off (the forward's fixed point is the same for both)
    st = MixingSettings(aux=5, k=6, max_iter=4000, eps=1e-18, on_failure="ignore", **kw)
    Sr, zr = S.clone().requires_grad_(True), z.clone().requires_grad_(True)
    sol = satnet_solve(Sr, zr, mask, st, torch.Generator().manual_seed(3))
    (sol.value * w).sum().backward()
    assert bool((sol.extras["adjoint"]["status_code"] == Status.CONVERGED.code).all())
    return sol, Sr.grad, zr.grad


@pytest.mark.parametrize("damping", [0.0, 0.05])
def test_cg_and_sweeps_give_the_same_adjoint_float64(damping):
    S, z, mask, w = _instance()
    cg, dS_cg, dz_cg = _grads(S, z, mask, w, adjoint_solver="cg", adjoint_damping=damping)
    sw, dS_sw, dz_sw = _grads(S, z, mask, w, adjoint_solver="sweeps", adjoint_damping=damping)
    # two different solvers of one linear system, each to a residual ratio of 1e-18: they
    # agree to what its conditioning allows (undamped it is ill-conditioned)
    torch.testing.assert_close(dS_cg, dS_sw, atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(dz_cg, dz_sw, atol=1e-9, rtol=1e-6)
    assert float(dS_cg.abs().max()) > 1e-2
    # the point of CG: far fewer iterations than sweeps for the same accuracy
    assert bool((cg.extras["adjoint"]["steps"] < sw.extras["adjoint"]["steps"]).all())


def _dense_operator(S, V, gn, out):
    """The adjoint operator of one element as a dense (N k, N k) matrix, built entry by entry
    from its definition (independent of adjoint_cg's matrix-free products)."""
    N, k = V.shape
    C = S.T @ S
    A = torch.zeros(N * k, N * k, dtype=S.dtype)
    eye = torch.eye(k, dtype=S.dtype)
    for o in range(N):
        if not out[o]:
            continue
        P = eye - torch.outer(V[o], V[o])
        A[o * k:(o + 1) * k, o * k:(o + 1) * k] = gn[o] * eye
        for j in range(N):
            if j != o and out[j]:
                A[o * k:(o + 1) * k, j * k:(j + 1) * k] = C[o, j] * P
    return A


def _forward_state(S, z, mask, damping=0.05):
    st = MixingSettings(aux=5, k=6, max_iter=4000, eps=1e-14)
    _, V, W, r_perp, g_norm, is_out, *_ = mixing_forward(S, z, mask, st, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(9)
    rhs = torch.randn(V.shape, generator=g, dtype=V.dtype)
    rhs = (rhs - (rhs * V).sum(dim=2, keepdim=True) * V) * is_out.unsqueeze(2)
    return V, g_norm * (1 + damping), is_out, rhs


@pytest.mark.parametrize("eps", [1e-2, 1e-4, 1e-8])
def test_cg_stops_when_the_preconditioned_residual_ratio_falls_below_eps(eps):
    S, z, mask, _ = _instance(seed=1)
    V, gn, is_out, rhs = _forward_state(S, z, mask)
    U, Psi, code, residual, steps = adjoint_cg(S, V, rhs, gn, is_out, 500, eps)
    assert bool((code == Status.CONVERGED.code).all())
    torch.testing.assert_close(Psi, torch.matmul(S, U), atol=1e-12, rtol=0)
    for b in range(V.shape[0]):
        A = _dense_operator(S, V[b], gn[b], is_out[b])
        d = gn[b].repeat_interleave(V.shape[2])
        keep = is_out[b].repeat_interleave(V.shape[2])
        rb = rhs[b].reshape(-1)
        r = rb - A @ U[b].reshape(-1)
        ratio = float((r[keep] ** 2 / d[keep]).sum() / (rb[keep] ** 2 / d[keep]).sum())
        assert ratio < eps
        assert math.isclose(ratio, float(residual[b]), rel_tol=1e-6)
    # one iteration fewer than it took: that element has not met eps
    short = adjoint_cg(S, V, rhs, gn, is_out, int(steps.max()) - 1, eps)
    worst = int(steps.argmax())
    assert int(short[2][worst]) == Status.MAX_STEPS.code and float(short[3][worst]) >= eps


def test_cg_reports_numerical_where_the_system_is_not_positive_definite():
    """Away from a fixed point (random unit vectors, small ||g||) the operator is indefinite:
    CG must say so rather than return a number."""
    S, z, mask, _ = _instance(seed=2)
    V, gn, is_out, rhs = _forward_state(S, z, mask)
    g = torch.Generator().manual_seed(4)
    Vr = torch.randn(V.shape, generator=g, dtype=V.dtype)
    Vr = Vr / Vr.norm(dim=2, keepdim=True)
    rhs = (rhs - (rhs * Vr).sum(dim=2, keepdim=True) * Vr) * is_out.unsqueeze(2)
    small = torch.full_like(gn, 1e-3)
    A0 = _dense_operator(S, Vr[0], small[0], is_out[0])
    assert float(torch.linalg.eigvalsh(0.5 * (A0 + A0.T)).min()) < 0  # the premise
    code = adjoint_cg(S, Vr, rhs, small, is_out, 500, 1e-10)[2]
    assert int(code[0]) == Status.NUMERICAL.code


def test_cg_elements_do_not_depend_on_the_rest_of_the_batch():
    S, z, mask, _ = _instance(seed=3)
    V, gn, is_out, rhs = _forward_state(S, z, mask)
    full = adjoint_cg(S, V, rhs, gn, is_out, 500, 1e-6)
    for b in range(V.shape[0]):
        one = adjoint_cg(S, V[b:b + 1], rhs[b:b + 1], gn[b:b + 1], is_out[b:b + 1], 500, 1e-6)
        assert int(one[4][0]) == int(full[4][b])
        torch.testing.assert_close(one[0][0], full[0][b], atol=1e-12, rtol=0)
    assert len(set(full[4].tolist())) > 1  # they did stop at different iterations


@pytest.mark.parametrize("threads", [2, 3])
def test_cg_in_batch_chunks_on_threads_equals_one_batched_solve(threads):
    """The CPU path cuts the batch into chunks solved on their own threads
    (`satnet_batch_threads`): same U, Psi, statuses and iterations as one batched solve,
    and torch's thread count is what it was before."""
    S, z, mask, _ = _instance(seed=3, B=5)
    V, gn, is_out, rhs = _forward_state(S, z, mask)
    one = adjoint_cg(S, V, rhs, gn, is_out, 500, 1e-6, threads=1)
    before = torch.get_num_threads()
    split = adjoint_cg(S, V, rhs, gn, is_out, 500, 1e-6, threads=threads)
    assert torch.get_num_threads() == before
    for a, b in zip(one, split):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert len(set(one[4].tolist())) > 1  # elements stopped at different iterations, across chunks


def test_batch_chunks_cover_the_batch_once():
    from gridlearn.implicit.satnet_batch_threads import chunk_bounds, run_chunks

    for batch, chunks in ((1, 2), (5, 2), (40, 2), (7, 3), (3, 8)):
        b = chunk_bounds(batch, chunks)
        assert b[0][0] == 0 and b[-1][1] == batch and all(x[1] == y[0] for x, y in zip(b, b[1:]))
        assert max(e - s for s, e in b) - min(e - s for s, e in b) <= 1 and len(b) == min(chunks, batch)
    names = run_chunks(lambda a, b: (a, b, __import__("threading").current_thread().name), 6, threads=2)
    assert [(a, b) for a, b, _ in names] == [(0, 3), (3, 6)]
    assert all(n.startswith("gridlearn-satnet") for _, _, n in names)


def test_cg_converges_within_the_paper_budget_where_the_sweeps_do_not():
    """max_iter 40, eps 1e-4 (the paper's), undamped: on this ill-conditioned instance the
    forward converges for every element, the sweeps' adjoint for none, CG for three of four.
    (The instance's fixed points are those of the ascending update order it was found with.)"""
    S, z, mask, w = _instance(seed=0)
    st = MixingSettings(aux=5, k=6, max_iter=40, eps=1e-4, on_failure="ignore", adjoint_damping=0.0,
                        adjoint_max_iter=40, order="ascending")
    conv = {}
    for solver in ("cg", "sweeps"):
        Sr = S.clone().requires_grad_(True)
        sol = satnet_solve(Sr, z, mask, dataclasses.replace(st, adjoint_solver=solver), torch.Generator().manual_seed(3))
        (sol.value * w).sum().backward()
        assert sol.ok
        conv[solver] = int((sol.extras["adjoint"]["status_code"] == Status.CONVERGED.code).sum())
    assert conv["sweeps"] == 0 and conv["cg"] >= 3


def test_cg_judges_the_true_residual_not_the_recursive_one():
    """float32, undamped, a near-singular element: CG's recursive residual meets eps while
    rhs - A(U) is far from it. That element must come back NUMERICAL (no gradient under
    "mask"), and every element reported CONVERGED must meet eps on its true residual."""
    from gridlearn.implicit.satnet import SATNet

    n, m, aux, B = 12, 8, 4, 3
    net = SATNet(n, m, aux=aux, k=32, max_iter=3000, eps=1e-4, seed=0, adjoint_damping=0.0,
                 on_failure="ignore", generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    z = (torch.rand(B, n, generator=g) > 0.5).float()
    mask = torch.rand(B, n, generator=g) < 0.5
    w = torch.randn(B, n, generator=g)
    sol = net.solve(z, mask)
    (sol.value * w).sum().backward()
    adj = sol.extras["adjoint"]
    assert int(adj["status_code"][0]) == Status.NUMERICAL.code and float(adj["residual"][0]) > 1e-4
    conv = adj["status_code"] == Status.CONVERGED.code
    assert bool(conv[1:].all()) and bool((adj["residual"][conv] < 1e-4).all())
