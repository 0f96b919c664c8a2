"""What the batched AC-OPF does where its fast path is not enough (issue 20): a stalled infeasible
iterate is labelled INFEASIBLE; a scenario the sparse (static-pivot) KKT path cannot finish is solved
densely; a backward solve that is not accurate is redone densely, never given as a gradient."""

from __future__ import annotations

import torch

from gridlearn.grid import ACOPFLayer, load_case
from gridlearn.grid.acopf import solve_acopf
from gridlearn.grid.acopf_ipm import IPMOptions, solve_acopf_batched
from gridlearn.grid.acopf_ipm import ipm, kkt, sparse_kkt
from gridlearn.grid.acopf_ipm import solve as ipm_solve
from gridlearn.errors import InfeasibleError
from gridlearn.implicit.solution import Status

import pytest


def corpus_loads(net, batch: int = 100):
    """`benchmarks/check_acopf_ipm_corpus.py`'s scenarios (pd, then qd, U(0.9, 1.1), seed 0)."""
    g = torch.Generator().manual_seed(0)
    pd = net.bus.pd_mw * (1 + 0.1 * (2 * torch.rand(batch, net.n_bus, generator=g, dtype=torch.float64) - 1))
    qd = net.bus.qd_mvar * (1 + 0.1 * (2 * torch.rand(batch, net.n_bus, generator=g, dtype=torch.float64) - 1))
    return pd, qd


def test_stalled_infeasible_scenario_is_infeasible_like_ipopt():
    """case6ww corpus scenario 86: the primal infeasibility stays at 1.2e-3 while the multipliers grow
    linearly (8e7 to 9e8): before the stall test this ran 200 iterations to MAX_STEPS."""
    net = load_case("case6ww")
    pd, qd = corpus_loads(net)
    with pytest.raises(InfeasibleError):
        solve_acopf(net.with_(pd_mw=pd[86], qd_mvar=qd[86]), backend="direct", tol=1e-9)
    r = solve_acopf_batched(net, pd[[86, 0]], qd[[86, 0]], options=IPMOptions(retry_flat=False))
    assert r.status == [Status.INFEASIBLE, Status.CONVERGED]
    assert int(r.iterations[0]) < 60
    assert torch.isnan(r.cost_usd_per_h[0]) and torch.isfinite(r.cost_usd_per_h[1])


def _case30_57(linear_solver: str):
    """case30 corpus scenarios 57 and 0: (result, gradient of a fixed loss in pd, the loss weights)."""
    net = load_case("case30")
    pd, qd = corpus_loads(net)
    idx = [57, 0]
    w = torch.randn(2, net.n_gen, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = pd[idx].clone().requires_grad_()
    r = solve_acopf_batched(net, x, qd[idx], options=IPMOptions(linear_solver=linear_solver, retry_flat=False))
    (r.pg_mw * w).sum().backward()
    return r, x.grad, w


def test_sparse_failure_is_solved_densely_and_its_gradient_is_the_ipopt_layers(monkeypatch):
    """case30 corpus scenario 57 (next to infeasibility, multipliers ~5e5): with the constrained
    ordering in the iteration too (`kkt.ITERATION_MATCHED` off) and the Newton steps refined as tightly
    as the backward's solves (`ipm.STEP_REFINE_RTOL`), the sparse path stalls at error 2.4e-6; the
    dense retry converges to the dense path's optimum. With the defaults the sparse path itself
    converges there, to the same optimum. The barrier backward refused this gradient (its K, with
    mu/s ~ 1e10, was too ill-conditioned to trust); the active-set backward gives it, equal on both
    KKT paths and the Ipopt layer's (Ipopt stops ACCEPTABLE below tol 1e-9 here)."""
    net = load_case("case30")
    pd, qd = corpus_loads(net)
    rd, gd, w = _case30_57("dense")
    for defaults in (False, True):
        if not defaults:
            monkeypatch.setattr(kkt, "ITERATION_MATCHED", False)
            monkeypatch.setattr(ipm, "STEP_REFINE_RTOL", sparse_kkt.REFINE_RTOL)
        else:
            monkeypatch.undo()
        rs, gs, _ = _case30_57("sparse")
        assert rs.status == rd.status == [Status.CONVERGED, Status.CONVERGED]
        if defaults:
            assert int(rs.iterations[0]) <= IPMOptions().max_iter  # no retry
        else:
            assert int(rs.iterations[0]) > IPMOptions().max_iter  # the sparse attempt ran out, then the dense retry
        assert torch.allclose(rs.cost_usd_per_h, rd.cost_usd_per_h, rtol=1e-10)
        assert torch.isfinite(gs).all()
        assert float(((gs - gd).abs().max() / gd.abs().max())) < 1e-8
    x = pd[[57]].clone().requires_grad_()
    ref = ACOPFLayer(net, ipopt_options={"tol": 1e-9, "bound_relax_factor": 0.0})(x, qd[[57]])
    (ref.pg_mw * w[:1]).sum().backward()
    assert float((gd[0] - x.grad[0]).abs().max() / x.grad[0].abs().max()) < 1e-6


def test_backward_with_zero_sparse_pivots_is_redone_densely(monkeypatch):
    """Without the inactive rows' small term, the sparse static-order factor of the backward's
    K_rho has zero pivots (qg has no curvature): the backward solves those scenarios on the dense
    LDLᵀ instead, whose Bunch-Kaufman pivoting needs no nonzero diagonal, and gets the dense path's
    gradient (to 1e-6: the two paths' solutions agree to their tolerance, and scenario 1's polish
    to 1e-11 succeeds on the dense path only; a wrong solve would be O(1) off)."""
    net = load_case("case30")
    pd, qd = corpus_loads(net)
    idx = [0, 1]
    w = torch.randn(2, net.n_gen, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads, calls = [], []
    dense = ipm_solve._Solver._dense_solve
    monkeypatch.setattr(ipm_solve._Solver, "_dense_solve",
                        lambda self, ch, rows, v: calls.append(rows.tolist()) or dense(self, ch, rows, v))
    for ls, cap in (("dense", ipm_solve.INACTIVE_SIGMA), ("sparse", 0.0)):
        monkeypatch.setattr(ipm_solve, "INACTIVE_SIGMA", cap)
        calls.clear()
        x = pd[idx].clone().requires_grad_()
        r = solve_acopf_batched(net, x, qd[idx], options=IPMOptions(linear_solver=ls, retry_flat=False))
        (r.pg_mw * w).sum().backward()
        grads.append(x.grad)
        assert calls == ([] if ls == "dense" else [[0, 1]])
    assert torch.isfinite(grads[1]).all()
    assert float((grads[1] - grads[0]).abs().max() / grads[0].abs().max()) < 1e-6


def test_backward_error_flags_a_wrong_solution():
    """The componentwise backward error is ~eps for the solve, and O(1) for a perturbed answer."""
    n = 6
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    k = a + a.T + 8 * torch.eye(n, dtype=torch.float64)
    k[0, 0] = 1e10  # an active bound's mu/s: ill-conditioned, yet the solve is backward stable
    r, c = torch.nonzero(k, as_tuple=True)
    sym = sparse_kkt.symbolic([r * n + c], n, n)
    ax = sparse_kkt.assemble_values(sym, k[r, c][None])
    lx, d, axs, neg, zero = sparse_kkt.factor(sym, ax, 1e-13)
    rhs = torch.randn(1, n, generator=g, dtype=torch.float64)
    sol = sparse_kkt.solve(sym, lx, d, axs, rhs)
    assert float(sparse_kkt.backward_error(sym, axs, rhs, sol)[0]) < 1e-14
    bad = sol.clone()
    bad[0, 3] += 1.0
    assert float(sparse_kkt.backward_error(sym, axs, rhs, bad)[0]) > 1e-3
