"""QPLayer: closed forms, finite differences, failure statuses, warm start, dtypes, bad input."""

from __future__ import annotations

import pytest
import torch

from gridlearn.errors import ConfigError, DataError, InfeasibleError, SolverFailure
from gridlearn.implicit.qp import QPLayer, QPSettings, solve_qp
from gridlearn.implicit.solution import Status

F64 = torch.float64



def random_qp(seed: int, B: int = 3, n: int = 5, m: int = 7, k: int = 2, psd_rank: int | None = None, dtype=F64):
    """Feasible QP: x0 = 0 is strictly feasible (h > 0), b = A·x_feas for a small x_feas."""
    g = torch.Generator().manual_seed(seed)
    r = n if psd_rank is None else psd_rank
    M = torch.randn(B, n, r, generator=g, dtype=dtype)
    Q = M @ M.mT + (1e-1 * torch.eye(n, dtype=dtype) if psd_rank is None else 0.0)
    p = torch.randn(B, n, generator=g, dtype=dtype)
    G = torch.randn(m, n, generator=g, dtype=dtype)
    h = torch.rand(m, generator=g, dtype=dtype) + 0.1
    A = torch.randn(k, n, generator=g, dtype=dtype)
    b = A @ (0.01 * torch.randn(n, generator=g, dtype=dtype))
    return Q, p, G, h, A, b


def kkt_closed_form(Q, p, A, b):
    """Equality-constrained QP: solve [[Q, Aᵀ], [A, 0]] [x; ν] = [−p; b] directly."""
    B, n = p.shape
    k = A.shape[-2]
    K = torch.zeros(B, n + k, n + k, dtype=Q.dtype)
    K[:, :n, :n] = Q
    K[:, :n, n:] = A.mT
    K[:, n:, :n] = A
    sol = torch.linalg.solve(K, torch.cat([-p, b.expand(B, k)], -1))
    return sol[:, :n], sol[:, n:]


def test_equality_qp_matches_kkt_solve():
    Q, p, _, _, A, b = random_qp(0, n=6, k=3)
    x, lam, nu = QPLayer(return_duals=True)(Q, p, None, None, A, b)
    x_ref, nu_ref = kkt_closed_form(Q, p, A, b)
    torch.testing.assert_close(x, x_ref, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(nu, nu_ref, atol=1e-10, rtol=1e-9)
    assert lam.shape == (3, 0)


def test_inactive_inequalities_do_not_change_the_equality_solution():
    Q, p, _, _, A, b = random_qp(1, n=6, k=2)
    x_ref, nu_ref = kkt_closed_form(Q, p, A, b)
    G = torch.eye(6, dtype=F64)
    h = x_ref.abs().amax() + 1.0 + torch.zeros(6, dtype=F64)
    sol = solve_qp(Q, p, G, h, A, b)
    assert sol.ok
    torch.testing.assert_close(sol.value, x_ref, atol=1e-8, rtol=1e-7)
    assert float(sol.extras["lam"].abs().max()) < 1e-8


def test_solution_satisfies_kkt_with_active_constraints():
    Q, p, G, h, A, b = random_qp(2, B=8, n=8, m=12, k=2)
    sol = solve_qp(Q, p, G, h, A, b)
    assert sol.ok
    x, lam, nu = sol.value, sol.extras["lam"], sol.extras["nu"]
    slack = h - x @ G.mT
    assert float(slack.min()) > -1e-8 and float(lam.min()) >= 0
    assert int(((lam > 1e-6) & (slack < 1e-6)).sum()) > 0  # some constraints really are active
    stat = (Q @ x.unsqueeze(-1)).squeeze(-1) + p + lam @ G + nu @ A
    assert float(stat.abs().max()) < 1e-7
    assert float((lam * slack).abs().max()) < 1e-7


def _wrapped(settings=None):
    def f(Q, p, G, h, A, b):
        sol = solve_qp(0.5 * (Q + Q.mT), p, G, h, A, b, settings=settings)
        assert sol.ok, sol.statuses
        return sol.value, sol.extras["lam"], sol.extras["nu"]
    return f


@pytest.mark.parametrize("batched", ["all", "shared_G_A"])
def test_gradcheck_every_input_and_the_duals(batched):
    Q, p, G, h, A, b = random_qp(3, B=2, n=4, m=6, k=2)
    if batched == "all":
        G, h = G.expand(2, 6, 4).clone(), h.expand(2, 6).clone()
        A, b = A.expand(2, 2, 4).clone(), b.expand(2, 2).clone()
    ins = [t.clone().requires_grad_() for t in (Q, p, G, h, A, b)]
    # Central differences with eps=1e-5 keep the active set fixed; forward error ~1e-10.
    assert torch.autograd.gradcheck(_wrapped(), ins, eps=1e-5, atol=1e-6, rtol=1e-4, fast_mode=batched == "all")


def test_gradcheck_psd_only_q():
    # Q = M Mᵀ of rank 2 is differentiated through its factor M: a finite-difference
    # step on Q's own entries would leave the PSD cone, and such a Q is NONCONVEX.
    _, p, G, h, A, b = random_qp(4, B=2, n=5, m=8, k=1, psd_rank=2)
    M = torch.randn(2, 5, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    ins = [t.clone().requires_grad_() for t in (M, p, G, h, A, b)]
    f = _wrapped()
    assert torch.autograd.gradcheck(lambda M, *rest: f(M @ M.mT, *rest), ins, eps=1e-5, atol=1e-6, rtol=1e-4,
                                    fast_mode=True)


def test_psd_only_q_including_an_lp():
    # Q = 0 (an LP over a box) and a rank-1 Q: qpth's LU on Q fails on both.
    n = 4
    G = torch.cat([torch.eye(n), -torch.eye(n)]).to(F64)
    h = torch.ones(2 * n, dtype=F64)
    p = torch.tensor([[1.0, -2.0, 0.5, -0.1], [1.0, -2.0, 0.5, -0.1]], dtype=F64)
    v = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64)
    Q = torch.stack([torch.zeros(n, n, dtype=F64), torch.outer(v, v)])
    sol = solve_qp(Q, p, G, h)
    assert sol.ok
    torch.testing.assert_close(sol.value[0], -torch.sign(p[0]), atol=1e-7, rtol=0)


def test_infeasible_element_is_detected_and_others_solve():
    Q, p, G, h, A, b = random_qp(5, B=4, n=3, m=0, k=0)
    G = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0]], dtype=F64)
    h = torch.tensor([1.0, 1.0, 1.0], dtype=F64).repeat(4, 1)
    h[2] = torch.tensor([1.0, -2.0, 1.0])  # x0 <= 1 and x0 >= 2
    layer = QPLayer(settings=QPSettings(max_iter=60))
    sol = layer.solve(Q, p, G, h)
    assert sol.statuses == [Status.CONVERGED, Status.CONVERGED, Status.INFEASIBLE, Status.CONVERGED]
    assert int(sol.steps[2]) < 40  # detected by certificate, not by running out of iterations
    good = solve_qp(Q[[0, 1, 3]], p[[0, 1, 3]], G, h[[0, 1, 3]])
    torch.testing.assert_close(sol.value[[0, 1, 3]], good.value, atol=1e-9, rtol=0)
    with pytest.raises(InfeasibleError, match="#2: INFEASIBLE") as info:
        layer(Q, p, G, h)
    assert info.value.indices == [2]
    # the message states what the certificate proves, not more (audit finding)
    assert "certified for x with ‖x‖∞ < 1e+07 (eps_inf = 1e-07)" in str(info.value)


def test_unbounded_problem_is_reported():
    # min -x0 s.t. x1 <= 1, Q = diag(0, 1): x0 free to +inf.
    Q = torch.diag(torch.tensor([0.0, 1.0], dtype=F64))
    p = torch.tensor([-1.0, 0.0], dtype=F64)
    G = torch.tensor([[0.0, 1.0]], dtype=F64)
    h = torch.tensor([1.0], dtype=F64)
    sol = solve_qp(Q, p, G, h)
    assert sol.statuses == [Status.UNBOUNDED]
    assert int(sol.steps[0]) < 40
    with pytest.raises(SolverFailure, match="UNBOUNDED"):
        QPLayer()(Q, p, G, h)


def test_non_converged_elements_get_nan_gradients():
    Q, p, G, h, A, b = random_qp(6, B=2, n=3, m=0, k=0)
    G = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]], dtype=F64)
    h = torch.tensor([[1.0, 1.0], [1.0, -2.0]], dtype=F64, requires_grad=True)
    sol = solve_qp(Q, p, G, h)
    sol.value.sum().backward()
    assert torch.isfinite(h.grad[0]).all() and torch.isnan(h.grad[1]).all()


def test_warm_start_cuts_iterations_on_a_perturbed_problem():
    Q, p, G, h, A, b = random_qp(7, B=16, n=24, m=46, k=0)
    layer = QPLayer()
    cold = layer.solve(Q, p, G, h)
    g = torch.Generator().manual_seed(70)
    p2 = p + 1e-3 * torch.randn(p.shape, generator=g, dtype=F64)
    cold2 = layer.solve(Q, p2, G, h)
    warm2 = layer.solve(Q, p2, G, h, warm_start=cold)
    assert cold2.ok and warm2.ok
    torch.testing.assert_close(warm2.value, cold2.value, atol=1e-6, rtol=0)
    assert float(warm2.steps.double().mean()) < float(cold2.steps.double().mean())


def test_float32_works():
    Q, p, G, h, A, b = random_qp(8, B=4, n=6, m=8, k=1, dtype=torch.float32)
    x = QPLayer()(Q, p, G, h, A, b)
    ref = QPLayer()(*(t.double() for t in (Q, p, G, h, A, b)))
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.double(), ref, atol=1e-3, rtol=1e-3)


def test_unbatched_inputs_give_unbatched_outputs():
    Q, p, G, h, A, b = random_qp(9, B=1)
    x, lam, nu = QPLayer(return_duals=True)(Q[0], p[0], G, h, A, b)
    assert x.shape == (5,) and lam.shape == (7,) and nu.shape == (2,)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.__setitem__(0, a[0] + torch.triu(torch.ones(5, 5, dtype=F64), 1)), "not symmetric"),
        (lambda a: a.__setitem__(1, a[1].clone().fill_(float("nan"))), "p contains NaN"),
        (lambda a: a.__setitem__(3, torch.full((7,), float("inf"), dtype=F64)), "h contains NaN or inf"),
        (lambda a: a.__setitem__(2, a[2][:, :4]), "G has shape"),
        (lambda a: a.__setitem__(3, a[3][:5]), "h has shape"),
        (lambda a: a.__setitem__(5, None), "A and b must be given together"),
        (lambda a: a.__setitem__(1, a[1].float()), "p is torch.float32"),
        (lambda a: a.__setitem__(1, torch.zeros(4, 5, dtype=F64)), "batch sizes do not broadcast"),
    ],
)
def test_bad_input_raises_clear_error(mutate, match):
    args = list(random_qp(10))
    mutate(args)
    with pytest.raises(DataError, match=match):
        QPLayer()(*args)


@pytest.mark.parametrize("kw", [{"tol": 0.0}, {"max_iter": 0}, {"step_fraction": 1.0}, {"eps_inf": 2.0}, {"refine_steps": -1},
                                {"kkt_solver": "qr"}])
def test_bad_settings_raise_config_error(kw):
    with pytest.raises(ConfigError):
        QPSettings(**kw)
    with pytest.raises(ConfigError):
        QPLayer(settings=QPSettings(**kw))


# --- Fast paths: the dual (Schur-on-Q) reduction, merged Gram rows, Schur backward ---

def _solve_and_grads(ins, settings=None):
    ins = [t.clone().requires_grad_() for t in ins]
    sol = solve_qp(*ins, settings=settings)
    assert sol.ok, sol.statuses
    w = torch.linspace(-1.0, 1.0, sol.value.numel(), dtype=F64).view_as(sol.value)
    ((sol.value * w).sum() + sol.extras["lam"].sum() + sol.extras["nu"].pow(2).sum()).backward()
    return sol, [t.grad for t in ins]


def test_dual_reduction_matches_the_primal_reduction():
    from gridlearn.implicit.qp_kkt import prefer_dual

    data = random_qp(10, B=4, n=40, m=6, k=2)
    assert prefer_dual(40, 6, 2)  # the default path for this shape is the dual one
    sol_d, g_d = _solve_and_grads(data, QPSettings(kkt_solver="dual_schur"))
    # Primal forward and bordered-LU backward.
    sol_p, g_p = _solve_and_grads(data, QPSettings(kkt_solver="primal_cholesky"))
    assert int(((sol_p.extras["lam"] > 1e-6) & (sol_p.extras["slack"] < 1e-6)).sum()) > 0
    for key in ("lam", "nu"):
        torch.testing.assert_close(sol_d.extras[key], sol_p.extras[key], atol=1e-8, rtol=1e-7)
    torch.testing.assert_close(sol_d.value, sol_p.value, atol=1e-9, rtol=1e-8)
    for a, b in zip(g_d, g_p):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("shared_q", [False, True])
def test_gradcheck_forced_dual_reduction(shared_q):
    Q, p, G, h, A, b = random_qp(11, B=2, n=5, m=3, k=1)
    if shared_q:
        Q = Q[0]
    ins = [t.clone().requires_grad_() for t in (Q, p, G, h, A, b)]
    f = _wrapped(QPSettings(kkt_solver="dual_schur"))
    assert torch.autograd.gradcheck(f, ins, eps=1e-5, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_schur_backward_solve_matches_bordered_lu():
    from gridlearn.implicit.qp_backward import _solve_bordered, _solve_schur
    from gridlearn.implicit.qp_kkt import q_cholesky

    g = torch.Generator().manual_seed(12)
    B, n, c = 3, 9, 5
    M = torch.randn(B, n, n, generator=g, dtype=F64)
    Q = M @ M.mT + torch.eye(n, dtype=F64)
    C = torch.randn(B, c, n, generator=g, dtype=F64)
    C[:, 3] = 0.0  # a padded row: reads −y = r
    e = torch.tensor([1e-14, 1e-14, 0.0, 1.0, 0.0], dtype=F64).expand(B, c)
    r1 = torch.randn(B, n, generator=g, dtype=F64)
    r2 = torch.randn(B, c, generator=g, dtype=F64)
    w_s, y_s = _solve_schur(Q, q_cholesky(Q), C, e, r1, r2)
    w_b, y_b = _solve_bordered(Q, C, e, r1, r2)
    torch.testing.assert_close(w_s, w_b, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(y_s, y_b, atol=1e-10, rtol=1e-9)
    # And the equations themselves hold.
    torch.testing.assert_close((Q @ w_s.unsqueeze(-1)).squeeze(-1) + (y_s.unsqueeze(-2) @ C).squeeze(-2), r1)
    torch.testing.assert_close((C @ w_s.unsqueeze(-1)).squeeze(-1) - e * y_s, r2)


def test_gram_rows_merge_signed_duplicates_and_bounds():
    from gridlearn.implicit.qp_kkt import GramRows

    g = torch.Generator().manual_seed(13)
    n = 4
    r1, r2 = torch.randn(2, n, generator=g, dtype=F64)
    unit = torch.zeros(n, dtype=F64)
    unit[2] = 1.0
    G = torch.stack([r1, -r1, 2.0 * unit, -unit, torch.zeros(n, dtype=F64), r2, -unit])
    d = torch.rand(3, G.shape[0], generator=g, dtype=F64) + 0.1
    Q = torch.eye(n, dtype=F64).expand(3, n, n).clone()
    gram = GramRows.build(G.unsqueeze(0))
    assert gram.n_dense == 2 and gram.col.numel() == 2  # {±r1, r2} dense; {2e, ±e} on the diagonal
    H = gram.hessian(Q, d)
    torch.testing.assert_close(H, Q + G.T @ (d.unsqueeze(-1) * G), atol=1e-13, rtol=1e-13)
    torch.testing.assert_close(gram.hessian(Q[:1], d), H, atol=1e-13, rtol=1e-13)  # shared Q


def test_shared_inputs_get_nan_gradients_from_a_failed_element():
    # Shared-input gradients are summed over the batch by a matmul: NaN must survive it.
    Q = torch.eye(3, dtype=F64).expand(2, 3, 3).clone()
    p = torch.ones(2, 3, dtype=F64)
    G = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]], dtype=F64, requires_grad=True)
    A = torch.tensor([[0.0, 1.0, 1.0]], dtype=F64, requires_grad=True)
    h = torch.tensor([[1.0, 1.0], [1.0, -2.0]], dtype=F64)
    sol = solve_qp(Q, p, G, h, A, torch.zeros(1, dtype=F64))
    assert sol.statuses[0] == Status.CONVERGED and sol.statuses[1] == Status.INFEASIBLE
    sol.value.sum().backward()
    assert torch.isnan(G.grad).all() and torch.isnan(A.grad).all()
