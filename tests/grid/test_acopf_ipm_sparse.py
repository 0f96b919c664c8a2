"""The batched sparse KKT path (`acopf_ipm.sparse_kkt`) against the dense one: same optima, multipliers,
statuses and gradients; its inertia count against eigvalsh; zero pivots reported, never NaN answers."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gridlearn.grid import load_case
from gridlearn.grid.acopf_ipm import IPMOptions, solve_acopf_batched
from gridlearn.grid.acopf_ipm import sparse_kkt
from gridlearn.implicit.solution import Status

sys.path.insert(0, str(Path(__file__).parent))
from test_acopf_ipm import random_loads  # noqa: E402

SPARSE, DENSE = IPMOptions(linear_solver="sparse"), IPMOptions(linear_solver="dense")


@pytest.mark.parametrize("name,batch", [("case9", 4), ("case30", 6)])
def test_sparse_and_dense_paths_agree(name, batch):
    net = load_case(name)
    pd, qd = random_loads(net, batch, seed=3)
    a = solve_acopf_batched(net, pd, qd, options=SPARSE)
    b = solve_acopf_batched(net, pd, qd, options=DENSE)
    assert a.status == b.status
    conv = b.converged
    assert conv.sum() >= batch // 2
    for k in ("cost_usd_per_h", "pg_mw", "vm_pu", "lmp_usd_per_mwh", "p_from_mw"):
        x, y = getattr(a, k)[conv], getattr(b, k)[conv]
        assert torch.allclose(x, y, rtol=1e-7, atol=1e-6), k
    for k in ("pg_upper", "vm_upper", "flow_f"):
        assert torch.allclose(a.duals[k][conv], b.duals[k][conv], rtol=1e-5, atol=1e-5), k


def test_sparse_gradients_match_dense_and_gradcheck_case9():
    net = load_case("case9")
    pd, qd = random_loads(net, 2, seed=4)
    w = torch.randn(2, net.n_gen, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for opts in (SPARSE, DENSE):
        x = pd.clone().requires_grad_()
        r = solve_acopf_batched(net, x, qd, options=opts)
        ((r.pg_mw * w).sum() + 1e-3 * r.cost_usd_per_h.sum()).backward()
        grads.append(x.grad)
    assert torch.isfinite(grads[0]).all()
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-9)
    opts = IPMOptions(linear_solver="sparse", tol=1e-11)
    x = pd[:1].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: solve_acopf_batched(net, p, qd[:1], options=opts).pg_mw, (x,),
                                    eps=1e-5, atol=1e-5, rtol=1e-4, fast_mode=True)


def _symbolic_for(mat: np.ndarray, n_x: int, matched: bool = False):
    N = mat.shape[0]
    r, c = np.nonzero(mat)
    flat = torch.as_tensor(r * N + c)
    sym = sparse_kkt.symbolic([flat], N, n_x, matched)
    vals = torch.as_tensor(mat[r, c], dtype=torch.float64)[None]
    return sym, sparse_kkt.assemble_values(sym, vals)


def test_sparse_inertia_and_solve_on_a_random_kkt_matrix():
    g = np.random.default_rng(0)
    n, m = 12, 5
    h = g.standard_normal((n, n)) * (g.random((n, n)) < 0.3)
    h = h + h.T  # indefinite
    j = g.standard_normal((m, n)) * (g.random((m, n)) < 0.4)
    j[np.arange(m), np.arange(m)] = 1.0  # full row rank
    k = np.block([[h + 0.1 * np.eye(n), j.T], [j, np.zeros((m, m))]])
    sym, ax = _symbolic_for(k, n)
    lx, d, a, neg, zero = sparse_kkt.factor(sym, ax, 1e-13)
    ev = np.linalg.eigvalsh(k)
    assert int(zero[0]) == 0
    assert int(neg[0]) == int((ev < 0).sum())  # Sylvester: the signs of D
    rhs = torch.as_tensor(g.standard_normal((1, n + m)))
    sol = sparse_kkt.solve(sym, lx, d, a, rhs)
    assert np.allclose(k @ sol[0].numpy(), rhs[0].numpy(), atol=1e-9)


@pytest.mark.parametrize("matched", [False, True])
def test_ordering_rules_and_solve_with_generator_like_variables(matched):
    """Rows with variables of their own (as pg and qg): the constrained order puts every row after all
    its variables; the matched one lets a row follow its own variable alone. Either way the inertia is
    eigvalsh's and the solve is K's."""
    g = np.random.default_rng(1)
    n_net, m = 16, 6
    n = n_net + m  # variables n_net + i appear in row i only (J = -1, a generator's injection)
    h = g.standard_normal((n_net, n_net)) * (g.random((n_net, n_net)) < 0.25)
    h = np.block([[h + h.T + 6 * np.eye(n_net), np.zeros((n_net, m))], [np.zeros((m, n_net)), np.diag(g.random(m) + 0.1)]])
    j = np.hstack([g.standard_normal((m, n_net)) * (g.random((m, n_net)) < 0.4) + np.eye(m, n_net), -np.eye(m)])
    k = np.block([[h, j.T], [j, np.zeros((m, m))]])
    sym, ax = _symbolic_for(k, n, matched)
    pos = sym.iperm
    after_all = [pos[n + i] > pos[np.flatnonzero(j[i])].max() for i in range(m)]
    after_own = [pos[n + i] > pos[n_net + i] for i in range(m)]
    assert all(after_own)
    assert all(after_all) != matched  # the matched order used its freedom for at least one row
    lx, d, a, neg, zero = sparse_kkt.factor(sym, ax, 1e-13)
    assert int(zero[0]) == 0
    assert int(neg[0]) == int((np.linalg.eigvalsh(k) < 0).sum()) == m
    rhs = torch.as_tensor(g.standard_normal((1, n + m)))
    sol = sparse_kkt.solve(sym, lx, d, a, rhs)
    assert np.allclose(k @ sol[0].numpy(), rhs[0].numpy(), atol=1e-9)


def test_the_iteration_uses_the_matched_ordering_and_the_backward_the_constrained_one():
    """`kkt.ITERATION_MATCHED`: case118's Newton steps factor a smaller L than its backward."""
    from gridlearn.grid.acopf_ipm.kkt import kkt_pattern
    from gridlearn.grid.acopf_ipm.problem import build_structure
    from gridlearn.grid.acopf_ipm.solve import acopf_arrays, get_convention, polar_formulation

    conv = get_convention("matpower")
    d = acopf_arrays(load_case("case118"), conv)
    pat = kkt_pattern(build_structure(d, polar_formulation(d, conv), "cpu", torch.float64), "sparse")
    assert pat.iteration is not None and pat.iteration.iteration is None
    assert pat.iteration.sparse.flops < 0.7 * pat.sparse.flops
    assert pat.iteration.hes_src.numel() == pat.hes_src.numel()  # the lower triangle of either order: each pair once


def test_singular_kkt_is_flagged_a_zero_pivot_not_nan():
    n, m = 3, 2
    j = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # rank 1: the two rows are dependent
    k = np.block([[np.eye(n), j.T], [j, np.zeros((m, m))]])
    sym, ax = _symbolic_for(k, n)
    lx, d, a, neg, zero = sparse_kkt.factor(sym, ax, 1e-13)
    assert int(zero[0]) >= 1
    assert torch.isfinite(d).all() and torch.isfinite(lx).all()


def test_inertia_correction_runs_on_the_sparse_path():
    """A scenario whose first Newton matrix has the wrong inertia: delta_w > 0 was needed and used."""
    import gridlearn.grid.acopf_ipm.ipm as ipm
    net = load_case("case30")
    pd, qd = random_loads(net, 16, seed=0)
    pd, qd = pd[[13, 0]], qd[[13, 0]]  # 13: infeasible (Ipopt too); its late iterations need delta_w > 0
    seen = []
    orig = ipm.factor_with_inertia_correction

    def spy(*a, **k):
        f = orig(*a, **k)
        seen.append(f.delta_w.max().item())
        return f

    ipm.factor_with_inertia_correction = spy
    try:
        r = solve_acopf_batched(net, pd, qd, options=IPMOptions(linear_solver="sparse", retry_flat=False))
    finally:
        ipm.factor_with_inertia_correction = orig
    assert max(seen) > 0
    assert r.status[0] is Status.INFEASIBLE and r.status[1] is Status.CONVERGED
    assert torch.isnan(r.cost_usd_per_h[0]) and torch.isfinite(r.cost_usd_per_h[1])
