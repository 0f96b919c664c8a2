"""QPLayer's tridiagonal KKT path (`qp_tridiag`) and the diagonal-Q convexity test agree with the dense code."""

from __future__ import annotations

import pytest
import torch

import gridlearn.implicit.qp_backward as qp_backward
from gridlearn.implicit.qp import QPLayer
from gridlearn.implicit.qp_kkt import KKTFactor, QPData
from gridlearn.implicit.qp_kkt_solvers import primal_factor
from gridlearn.implicit.qp_scaling import psd_mask
from gridlearn.implicit.qp_tridiag import TridiagonalKKTFactor, TridiagonalPattern

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ramp_qp(seed: int, B: int = 6, n: int = 8, ramp: float = 0.3, bounds: bool = True, q_off: float = 0.0):
    """Diagonal (or tridiagonal, ``q_off``) PD Q, ramp rows ±(x_i − x_{i+1}) ≤ ramp, optional box rows."""
    g = torch.Generator().manual_seed(seed)
    q = 1.0 + torch.rand(B, n, generator=g, dtype=F64) * 5
    Q = torch.diag_embed(q)
    if q_off:
        off = q_off * torch.rand(B, n - 1, generator=g, dtype=F64)
        Q = Q + torch.diag_embed(off, -1) + torch.diag_embed(off, 1)
    p = -q * torch.randn(B, n, generator=g, dtype=F64).cumsum(-1)  # unconstrained optimum: a random walk
    eye = torch.eye(n, dtype=F64)
    d = eye[:-1] - eye[1:]
    rows, h = [d, -d], [torch.full((2 * (n - 1),), ramp, dtype=F64)]
    if bounds:
        rows += [eye, -eye]
        h.append(torch.full((2 * n,), 3.0, dtype=F64))
    return Q, p, torch.cat(rows), torch.cat(h)


@pytest.fixture
def count_tridiagonal(monkeypatch):
    """Count successful tridiagonal factorisations, to prove a test exercised the path."""
    calls = {"ok": 0, "fallback": 0}
    orig = TridiagonalKKTFactor.factor.__func__

    def factor(cls, *a, **k):
        f = orig(cls, *a, **k)
        calls["ok" if f is not None else "fallback"] += 1
        return f

    monkeypatch.setattr(TridiagonalKKTFactor, "factor", classmethod(factor))
    return calls


def test_pattern_detects_tridiagonal_and_rejects_the_rest():
    Q, _, G, _ = ramp_qp(0)
    A0 = torch.zeros(1, 0, 8, dtype=F64)
    assert TridiagonalPattern.build(Q, G[None], A0) is not None
    assert TridiagonalPattern.build(ramp_qp(0, q_off=0.5)[0], G[None], A0) is not None
    skip = G.clone()
    skip[0, 2] = 1.0  # a row touching x_0, x_1 and x_2
    assert TridiagonalPattern.build(Q, skip[None], A0) is None
    far = Q.clone()
    far[:, 0, 2] = far[:, 2, 0] = 0.1  # Q beyond the first off-diagonal
    assert TridiagonalPattern.build(far, G[None], A0) is None
    assert TridiagonalPattern.build(Q, G[None], torch.ones(1, 1, 8, dtype=F64)) is None  # equalities
    assert TridiagonalPattern.build(Q, G.expand(6, -1, -1), A0) is None  # batched G


@pytest.mark.parametrize("q_off,bounds", [(0.0, True), (0.0, False), (0.4, True)])
def test_solution_duals_and_gradients_match_the_dense_path(monkeypatch, count_tridiagonal, q_off, bounds):
    Q, p, G, h = ramp_qp(1, q_off=q_off, bounds=bounds)
    layer = QPLayer(return_duals=True, tol=1e-10)

    def run():
        Qr, pr, hr = Q.clone().requires_grad_(), p.clone().requires_grad_(), h.clone().requires_grad_()
        x, lam, _ = layer(Qr, pr, G, hr)
        w = torch.linspace(-1, 1, x.shape[-1], dtype=F64)
        ((x * w).sum() + (lam ** 2).sum()).backward()
        return x.detach(), lam.detach(), Qr.grad, pr.grad, hr.grad

    fast = run()
    assert count_tridiagonal["ok"] > 0 and count_tridiagonal["fallback"] == 0
    monkeypatch.setattr(qp_backward.TridiagonalPattern, "build", staticmethod(lambda *a: None))
    dense = run()
    for a, b in zip(fast, dense):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)
    assert float(fast[1].amax()) > 1e-3, "some ramp limit must bind, or the test proves little"


def test_gradcheck_through_the_tridiagonal_path(count_tridiagonal):
    Q, p, G, h = ramp_qp(2, B=3, n=6)
    layer = QPLayer(tol=1e-12)
    p = p.requires_grad_()
    h = h.requires_grad_()
    assert torch.autograd.gradcheck(lambda p_, h_: layer(Q, p_, G, h_), (p, h), eps=1e-6, atol=1e-5, rtol=1e-4)
    assert count_tridiagonal["ok"] > 0


def _data(Q, G, h):
    A = torch.zeros(1, 0, Q.shape[-1], dtype=F64)
    return QPData(Q, torch.zeros(Q.shape[0], Q.shape[-1], dtype=F64), G[None], h[None], A, torch.zeros(1, 0, dtype=F64),
                  None, None, TridiagonalPattern.build(Q, G[None], A))


def test_not_positive_definite_falls_back_to_the_dense_factor():
    """A Q + GᵀDG that is not PD (here Q has a negative entry and D is small) is not
    factored by ?pttrf: `primal_factor` hands the sub-batch to `KKTFactor`, which shifts."""
    Q, _, G, h = ramp_qp(3, B=2)
    Q = Q.clone()
    Q[1, 3, 3] = -1.0
    data = _data(Q, G, h)
    d = torch.full((2, G.shape[0]), 1e-3, dtype=F64)
    assert TridiagonalKKTFactor.factor(data, d, 1) is None
    assert isinstance(primal_factor(data, d, 1e-10, 1), KKTFactor)
    assert isinstance(primal_factor(data, d + 10.0, 1e-10, 1), TridiagonalKKTFactor)


def test_take_keeps_the_remaining_elements_factors():
    Q, _, G, h = ramp_qp(4, B=5)
    data = _data(Q, G, h)
    d = torch.rand(5, G.shape[0], dtype=F64) + 0.1
    f = TridiagonalKKTFactor.factor(data, d, 0)
    rx = torch.randn(5, Q.shape[-1], dtype=F64)
    idx = torch.tensor([4, 1, 2])
    x_all, _ = f._solve_once(rx, rx[:, :0])
    x_sub, _ = f.take(idx)._solve_once(rx[idx], rx[idx, :0])
    torch.testing.assert_close(x_sub, x_all[idx], atol=1e-13, rtol=1e-12)
    H = Q + G.mT @ (d[:, :, None] * G)
    torch.testing.assert_close(H @ x_all.unsqueeze(-1), rx.unsqueeze(-1), atol=1e-10, rtol=1e-10)


def test_diagonal_psd_shortcut_is_exact_where_the_cholesky_test_allows_rounding():
    """A diagonal Q's eigenvalues are its entries, so its test is exact (any negative entry
    is nonconvex; audit: diag(1e8, -1e-6) was CONVERGED at a saddle); the dense test allows
    δ of rounding, and differs exactly on the entries in (−δ, 0)."""
    n = 5
    eps = torch.finfo(F64).eps
    diags = torch.tensor([
        [1.0, 2.0, 3.0, 4.0, 5.0],      # PD
        [1.0, 0.0, 3.0, 4.0, 5.0],      # PSD: a zero passes (δ > 0)
        [1.0, -1.0, 3.0, 4.0, 5.0],     # indefinite
        [1.0, -10 * eps, 3.0, 4.0, 5.0],  # below δ = 100·n·eps·max|Q|: the dense test lets it pass
        [1.0, -1e-6, 3.0, 4.0, 5.0],    # beyond δ
        [1.0, float("nan"), 3.0, 4.0, 5.0],
        [0.0] * 5,                      # Q = 0
    ], dtype=F64)
    Q = torch.diag_embed(diags)
    fin = torch.finfo(F64)
    delta = 100 * n * fin.eps * Q.abs().amax((-2, -1)) + fin.tiny
    _, info = torch.linalg.cholesky_ex(Q + delta[:, None, None] * torch.eye(n, dtype=F64))
    assert (info == 0).tolist() == [True, True, False, True, False, False, True]
    assert psd_mask(Q).tolist() == [True, True, False, False, False, False, True]
    assert psd_mask(Q[:1].expand(1, n, n)).tolist() == [True]  # shared Q

