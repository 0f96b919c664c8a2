"""`QPSettings.kkt_solver`: every KKT solver gives the same values and gradients (float64).

The solvers are reached through the setting alone, never by patching private flags.
"""

from __future__ import annotations

import pytest
import torch

from gridlearn.errors import ConfigError
from gridlearn.implicit.qp import QPLayer, QPSettings, solve_qp
from gridlearn.implicit.qp_kkt import DualKKTFactor, KKTFactor, QPData
from gridlearn.implicit.qp_kkt_solvers import KKT_SOLVERS, BorderedLUFactor
from tests.implicit.test_qp import _wrapped, random_qp

F64 = torch.float64
SOLVERS = sorted(KKT_SOLVERS)



def _values_and_grads(ins, solver):
    ins = [t.clone().requires_grad_() for t in ins]
    sol = solve_qp(*ins, settings=QPSettings(kkt_solver=solver))
    assert sol.ok, (solver, sol.statuses)
    w = torch.linspace(-1.0, 1.0, sol.value.numel(), dtype=F64).view_as(sol.value)
    ((sol.value * w).sum() + sol.extras["lam"].sum() + sol.extras["nu"].pow(2).sum()).backward()
    return sol, [t.grad for t in ins]


def _assert_same(ref, got):
    (sol_r, g_r), (sol_g, g_g) = ref, got
    torch.testing.assert_close(sol_g.value, sol_r.value, atol=1e-8, rtol=1e-7)
    for key in ("lam", "nu"):
        torch.testing.assert_close(sol_g.extras[key], sol_r.extras[key], atol=1e-7, rtol=1e-6)
    for a, b in zip(g_g, g_r):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("shape", [dict(n=40, m=6, k=2), dict(n=6, m=14, k=2), dict(n=5, m=8, k=0)])
def test_every_solver_agrees_with_bordered_lu(solver, shape):
    data = random_qp(20, B=3, **shape)
    ref = _values_and_grads(data, "bordered_lu")
    got = _values_and_grads(data, solver)
    # Some constraints are active, so the backward's bordered block is exercised.
    assert int(((got[0].extras["lam"] > 1e-6) & (got[0].extras["slack"] < 1e-6)).sum()) > 0
    _assert_same(ref, got)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_agrees_on_a_psd_only_q(solver):
    # Rank-2 Q: Q's Cholesky fails, so dual_schur (and auto) must fall back to the primal path.
    data = random_qp(21, B=2, n=5, m=8, k=1, psd_rank=2)
    _assert_same(_values_and_grads(data, "bordered_lu"), _values_and_grads(data, solver))


@pytest.mark.parametrize("solver", SOLVERS)
def test_gradcheck_every_solver(solver):
    ins = [t.clone().requires_grad_() for t in random_qp(22, B=2, n=5, m=6, k=1)]
    f = _wrapped(QPSettings(kkt_solver=solver))
    assert torch.autograd.gradcheck(f, ins, eps=1e-5, atol=1e-6, rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("solver, factor_type, uses_q", [
    ("primal_cholesky", KKTFactor, False),
    ("dual_schur", DualKKTFactor, True),
    ("bordered_lu", BorderedLUFactor, False),
])
def test_each_setting_takes_its_own_factorisation(solver, factor_type, uses_q):
    Q, p, G, h, A, b = random_qp(23, B=1, n=8, m=12, k=2)  # Q (1, n, n), p (1, n)
    G, h, A, b = (t.unsqueeze(0) for t in (G, h, A, b))
    strategy = KKT_SOLVERS[solver]
    qf = strategy.q_factor(Q, G, A)
    assert (qf is not None) == uses_q
    data = QPData(Q, p, G, h, A, b, None, qf)
    d = torch.rand(1, 12, dtype=F64) + 0.5
    f = strategy.factor(data, d, 1e-10, 1)
    assert type(f) is factor_type
    # The factor solves the reduced KKT system: H dx + Aᵀ dν = rx, A dx = re.
    rx, re = torch.randn(1, 8, dtype=F64), torch.randn(1, 2, dtype=F64)
    dx, dnu = f.solve(rx, re)
    H = Q[0] + G[0].T @ (d[0, :, None] * G[0])
    torch.testing.assert_close(H @ dx[0] + A[0].T @ dnu[0], rx[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(A[0] @ dx[0], re[0], atol=1e-10, rtol=1e-10)
    # The backward's choice follows the same setting.
    assert (strategy.adjoint_cholesky(Q, None if qf is None else qf.L) is not None) == uses_q


def test_auto_backward_uses_q_when_the_forward_did_not():
    Q = torch.eye(4, dtype=F64).unsqueeze(0)
    assert KKT_SOLVERS["auto"].adjoint_cholesky(Q, None) is not None
    assert KKT_SOLVERS["primal_cholesky"].adjoint_cholesky(Q, None) is None


def test_old_keywords_warn_and_still_configure_the_layer():
    with pytest.warns(DeprecationWarning) as record:
        layer = QPLayer(tol=1e-10, max_iter=80)
    assert sorted(str(w.message).split("use ")[1] for w in record) == [
        "settings=QPSettings(max_iter=...)", "settings=QPSettings(tol=...)"]
    assert layer.settings == QPSettings(tol=1e-10, max_iter=80)
    with pytest.raises(TypeError, match="kkt"):
        QPLayer(kkt=1)
    with pytest.raises(ConfigError, match="not both"), pytest.warns(DeprecationWarning):
        QPLayer(tol=1e-10, settings=QPSettings())
