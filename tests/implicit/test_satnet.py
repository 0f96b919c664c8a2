"""SATNet: analytic gradient vs finite differences, forward vs a dense SDP solve, learning
XOR/parity, statuses and failure policies, argument checks."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.implicit import SATNet, Status
from gridlearn.implicit.satnet import MixingSettings, satnet_solve
from gridlearn.implicit.satnet_mixing import init_vectors


def _tiny_problem(dtype=torch.float64, batch=2, n=5, m=6, aux=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(m, n + 1 + aux, generator=g, dtype=dtype)
    z = torch.rand(batch, n, generator=g, dtype=dtype) * 0.8 + 0.1
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask[0, :2] = True
    if batch > 1:
        mask[1, [0, 2, n - 1]] = True
    return S, z, mask


@pytest.mark.parametrize("backend,solver", [("torch", "sweeps"), ("numba", "sweeps"), ("numba", "cg"), ("torch", "cg")])
def test_gradient_matches_finite_differences_float64(backend, solver):
    S, z, mask = _tiny_problem()
    settings = MixingSettings(aux=1, k=5, max_iter=5000, eps=1e-11, on_failure="raise", backend=backend,
                              adjoint_solver=solver)

    def f(z, S):  # a fresh, identically seeded generator: the solve is a function of (z, S)
        return satnet_solve(S, z, mask, settings, torch.Generator().manual_seed(1)).value

    sol = satnet_solve(S, z, mask, settings, torch.Generator().manual_seed(1))
    assert sol.ok, sol.statuses
    z.requires_grad_(True)
    S.requires_grad_(True)
    assert torch.autograd.gradcheck(f, (z, S), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_forward_matches_dense_sdp_optimum():
    """With k large enough (Burer-Monteiro), the mixing fixed point attains the SDP optimum:
    min <S^T S, X> s.t. X psd, diag X = 1, X fixed on the known block (v_T and inputs)."""
    cp = pytest.importorskip("cvxpy")
    n, m, aux = 4, 5, 1
    N = n + 1 + aux
    S, z, _ = _tiny_problem(batch=1, n=n, m=m, aux=aux, seed=3)
    mask = torch.tensor([[True, True, False, False]])
    settings = MixingSettings(aux=aux, k=N + 1, max_iter=20000, eps=1e-12)
    gen = torch.Generator().manual_seed(0)
    sol = satnet_solve(S, z, mask, settings, gen)
    assert sol.ok
    # rebuild the vectors the solve used: same seed, same draw
    V0, _ = init_vectors(z, mask, N, settings.k, torch.Generator().manual_seed(0))
    known = [0, 1, 2]  # v_T and the two inputs
    Xk = (V0[0, known] @ V0[0, known].T).numpy()
    C = (S.T @ S).numpy()
    X = cp.Variable((N, N), PSD=True)
    cons = [cp.diag(X) == 1] + [X[a, b] == Xk[i, j] for i, a in enumerate(known) for j, b in enumerate(known)]
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X)), cons)
    prob.solve(solver=cp.CLARABEL)
    assert prob.status == "optimal"
    # objective of the mixing solution: recompute V by the fixed-point outputs via the solver internals
    from gridlearn.implicit.satnet_mixing import mixing_forward

    with torch.no_grad():
        _, V, *_ = mixing_forward(S, z, mask, settings, torch.Generator().manual_seed(0))
    obj_mixing = float(torch.einsum("ij,ik,jk->", torch.from_numpy(C), V[0], V[0]))
    assert obj_mixing == pytest.approx(prob.value, rel=1e-5, abs=1e-6)
    # and the outputs agree with the SDP's: z_o = arccos(-X[o, T]) / pi
    z_sdp = np.arccos(np.clip(-X.value[0, 3:5], -1, 1)) / math.pi
    np.testing.assert_allclose(sol.value[0, 2:].numpy(), z_sdp, atol=2e-4)


def _parity_data(bits: int, dtype=torch.float64):
    X = torch.tensor(list(itertools.product([0.0, 1.0], repeat=bits)), dtype=dtype)
    y = X.sum(dim=1) % 2
    z = torch.cat([X, torch.zeros(len(X), 1, dtype=dtype)], dim=1)
    mask = torch.tensor([True] * bits + [False])
    return z, mask, y


@pytest.mark.parametrize("bits,m,seed", [(2, 4, 1), (3, 8, 2)], ids=["xor", "parity3"])
def test_learns_parity_truth_table(bits, m, seed):
    z, mask, y = _parity_data(bits)
    net = SATNet(bits + 1, m, aux=1, seed=seed, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    acc = 0.0
    for _ in range(200):
        out = net(z, mask)[:, -1]
        acc = float(((out > 0.5).to(y.dtype) == y).to(torch.float64).mean())
        if acc == 1.0:
            break
        loss = torch.nn.functional.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert acc == 1.0


def test_fully_given_board_is_reproduced_exactly():
    from gridlearn.logic.sudoku import generate_puzzle, input_mask, one_hot

    _, solution = generate_puzzle(np.random.default_rng(0), box=3, givens=81)
    bits = torch.from_numpy(one_hot(solution[None]))
    mask = torch.from_numpy(input_mask(solution[None]))
    assert bool(mask.all())
    net = SATNet(729, 20, aux=3, seed=0)
    out = net(bits, mask)
    assert torch.equal(out, bits)


def test_float32_matches_float64_and_m_not_multiple_of_4():
    S64, z64, mask = _tiny_problem(m=7)
    settings = MixingSettings(aux=1, k=5, max_iter=2000, eps=1e-6)
    outs, grads = [], []
    for dt in (torch.float32, torch.float64):
        S = S64.to(dt).requires_grad_(True)
        sol = satnet_solve(S, z64.to(dt), mask, settings, torch.Generator().manual_seed(4))
        assert sol.value.dtype == dt and sol.ok
        sol.value.sum().backward()
        outs.append(sol.value.detach().double())
        grads.append(S.grad.double())
    torch.testing.assert_close(outs[0], outs[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-3, rtol=1e-3)


def test_status_reports_max_steps_and_policies():
    S, z, mask = _tiny_problem()
    sol = satnet_solve(S, z, mask, MixingSettings(aux=1, k=5, max_iter=1, eps=1e-12), torch.Generator().manual_seed(0))
    assert sol.statuses == [Status.MAX_STEPS, Status.MAX_STEPS]
    assert bool((sol.steps == 1).all()) and bool((sol.residual > 1e-12).all())
    ok = satnet_solve(S, z, mask, MixingSettings(aux=1, k=5, max_iter=3000, eps=1e-8), torch.Generator().manual_seed(0))
    assert ok.ok and bool((ok.residual < 1e-8).all()) and bool((ok.steps > 1).all())

    def layer(policy, max_iter):
        net = SATNet(5, 6, aux=1, max_iter=max_iter, eps=1e-12, on_failure=policy, seed=0, dtype=torch.float64)
        with torch.no_grad():
            net.S.copy_(S)
        return net

    with pytest.raises(SolverFailure, match="#0: MAX_STEPS") as info:
        layer("raise", 1)(z, mask)
    assert info.value.indices == [0, 1]
    # "zero": outputs still come back, but no implicit gradient for unconverged elements
    zr = z.clone().requires_grad_(True)
    net = layer("zero", 1)
    net(zr, mask).sum().backward()
    assert float(net.S.grad.abs().max()) == 0.0
    # the pass-through of the known entries is not an implicit gradient and stays
    assert torch.equal(zr.grad, mask.to(zr.dtype))
    net = layer("keep", 1)
    net(z, mask).sum().backward()
    assert float(net.S.grad.abs().max()) > 0.0


@pytest.mark.parametrize("old, new, kernel_word", [("mask", "zero", "mask"), ("ignore", "keep", "ignore")])
def test_old_on_failure_words_warn_and_mean_the_same(old, new, kernel_word):
    with pytest.warns(DeprecationWarning, match=f"on_failure={new!r}"):
        net = SATNet(5, 6, aux=1, on_failure=old)
    assert net.on_failure == new and net.settings.on_failure == kernel_word
    assert SATNet(5, 6, aux=1, on_failure=new).settings == net.settings


def test_seeded_solves_are_reproducible():
    S, z, mask = _tiny_problem()
    net = SATNet(5, 6, aux=1, seed=7, dtype=torch.float64)
    torch.testing.assert_close(net(z, mask), net(z, mask), atol=0, rtol=0)
    settings = MixingSettings(aux=1, k=5, max_iter=3, eps=1e-12)
    a = satnet_solve(S, z, mask, settings, torch.Generator().manual_seed(3)).value
    b = satnet_solve(S, z, mask, settings, torch.Generator().manual_seed(3)).value
    c = satnet_solve(S, z, mask, settings, torch.Generator().manual_seed(4)).value
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_inputs_raise_value_error_naming_the_argument():
    net = SATNet(5, 6, aux=1, seed=0)
    z = torch.full((2, 5), 0.5)
    with pytest.raises(ValueError, match="is_input"):
        net(z, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="is_input"):
        net(z, torch.full((2, 5), 2))
    with pytest.raises(ValueError, match="z must lie in"):
        net(z + 1.0, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="z contains NaN"):
        net(torch.full((2, 5), float("nan")), torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="z must have shape"):
        net(torch.full((2, 6), 0.5), torch.ones(6, dtype=torch.bool))
    with pytest.raises(ConfigError, match="on_failure"):
        SATNet(5, 6, on_failure="bogus")
    with pytest.raises(ConfigError, match="m must be"):
        SATNet(5, 0)


def _random_instance(seed, B=5, n=14, m=9, aux=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    S = torch.randn(m, n + 1 + aux, generator=g, dtype=dtype)
    z = torch.rand(B, n, generator=g, dtype=dtype)
    mask = torch.rand(B, n, generator=g) < 0.4
    mask[0] = False  # one element with no inputs at all
    w = torch.randn(B, n, generator=g, dtype=dtype)
    return S, z, mask, w


@pytest.mark.parametrize("seed,max_iter,damping", [(0, 300, 0.0), (1, 7, 0.0), (2, 300, 0.05)])
def test_compiled_matches_torch_values_statuses_and_gradients(seed, max_iter, damping):
    """The numba kernels and the torch reference path: same outputs, statuses, sweeps and
    gradients (S and z) to 1e-10 in float64, including elements that stop at different
    sweeps, one that does not converge (max_iter=7), and the adjoint damping."""
    S, z, mask, w = _random_instance(seed)
    got = {}
    for backend in ("torch", "numba"):
        # the kernels' adjoint sweeps (the default CG backward is the same torch code on both)
        st = MixingSettings(aux=4, k=6, max_iter=max_iter, eps=1e-7, backend=backend, on_failure="ignore",
                            adjoint_damping=damping, adjoint_solver="sweeps")
        Sr, zr = S.clone().requires_grad_(True), z.clone().requires_grad_(True)
        sol = satnet_solve(Sr, zr, mask, st, torch.Generator().manual_seed(seed))
        (sol.value * w).sum().backward()
        got[backend] = (sol, Sr.grad, zr.grad)
    (a, dSa, dza), (b, dSb, dzb) = got["torch"], got["numba"]
    assert torch.equal(a.status_code, b.status_code) and torch.equal(a.steps, b.steps)
    assert torch.equal(a.extras["adjoint"]["steps"], b.extras["adjoint"]["steps"])
    if max_iter == 7:
        assert not a.ok
    else:
        assert len(set(a.steps.tolist())) > 1  # elements stopped on their own
    torch.testing.assert_close(b.value, a.value, atol=1e-10, rtol=0)
    torch.testing.assert_close(b.residual, a.residual, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(dSb, dSa, atol=1e-10, rtol=0)
    torch.testing.assert_close(dzb, dza, atol=1e-10, rtol=0)
    assert float(dSa.abs().max()) > 1e-3


def test_compiled_path_gradcheck_with_damping():
    """gradcheck of the compiled path when the adjoint is damped: the gradient is then that of
    the damped system, so it must NOT match finite differences (the damping does something),
    while the undamped one does (test_gradient_matches_finite_differences_float64)."""
    S, z, mask = _tiny_problem()
    st = MixingSettings(aux=1, k=5, max_iter=5000, eps=1e-11, on_failure="raise", backend="numba",
                        adjoint_damping=0.05)
    S.requires_grad_(True)

    def f(S):
        return satnet_solve(S, z, mask, st, torch.Generator().manual_seed(1)).value

    assert not torch.autograd.gradcheck(f, (S,), eps=1e-6, atol=1e-5, rtol=1e-4, raise_exception=False)


def _reference_rule_sweeps(S, V0, unknown, eps, max_iter):
    """The reference code's forward loop (locuslab/SATNet mix_forward), written from its
    description: sweep the unknowns in order, delta = sum ||g_j|| ||v_j^new - v_j||^2, stop
    after a sweep t >= 2 with delta < eps * (first sweep's delta). Returns sweeps done."""
    C = (S.T @ S).numpy()
    V = V0.numpy().copy()
    delta0 = None
    for t in range(max_iter):
        delta = 0.0
        for j in unknown:
            g = C[j] @ V - C[j, j] * V[j]
            gn = np.linalg.norm(g)
            new = -g / gn
            delta += gn * float(np.sum((new - V[j]) ** 2))
            V[j] = new
        if t == 0:
            delta0 = delta
        elif delta < eps * delta0:
            return t + 1
    return max_iter + 1  # did not fire


@pytest.mark.parametrize("order", ["random", "ascending"])
@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_stopping_test_fires_where_the_reference_rule_does(backend, order):
    n, m, aux = 8, 6, 3
    N = n + 1 + aux
    S, z, _ = _tiny_problem(batch=1, n=n, m=m, aux=aux, seed=5)
    mask = torch.tensor([[True, False, True, False, False, True, False, False]])
    for eps in (1e-2, 1e-4, 1e-6):
        st = MixingSettings(aux=aux, k=5, max_iter=500, eps=eps, backend=backend, order=order)
        sol = satnet_solve(S, z, mask, st, torch.Generator().manual_seed(2))
        gen = torch.Generator().manual_seed(2)
        V0, _ = init_vectors(z, mask, N, 5, gen)
        unknown = [j for j in range(1, N) if j > n or not bool(mask[0, j - 1])]
        if order == "random":  # the documented draw: a permutation of 1..N-1 after the vectors
            perm = (torch.randperm(N - 1, generator=gen) + 1).tolist()
            unknown = [j for j in perm if j in unknown]
            assert unknown != sorted(unknown)
        expected = _reference_rule_sweeps(S, V0[0], unknown, eps, 500)
        assert expected <= 500, "the reference rule should fire on this instance"
        assert sol.ok and int(sol.steps[0]) == expected, (eps, int(sol.steps[0]), expected)
        assert float(sol.residual[0]) < eps


def test_mask_policy_gives_gradients_on_sudoku_at_the_paper_settings():
    """n=729, m=600, aux=300, max_iter 40, eps 1e-4, default "mask": the forward and the
    (damped) adjoint converge on generated puzzles, so S gets a gradient. With the old move
    test 0 of 40 puzzles converged; see benchmarks/bench_satnet.py for the batch-40 numbers."""
    from gridlearn.logic.sudoku import generate_dataset, input_mask, one_hot

    ds = generate_dataset(2, seed=7)
    z = torch.from_numpy(one_hot(ds.puzzles))
    y = torch.from_numpy(one_hot(ds.solutions))
    mask = torch.from_numpy(input_mask(ds.puzzles))
    net = SATNet(729, 600, aux=300, seed=0, generator=torch.Generator().manual_seed(0))
    assert net.settings.on_failure == "mask" and net.settings.max_iter == 40 and net.settings.eps == 1e-4
    sol = net.solve(z, mask)
    torch.nn.functional.binary_cross_entropy(sol.value.clamp(1e-6, 1 - 1e-6), y).backward()
    assert sol.ok and bool((sol.steps < 40).all())
    assert bool(sol.extras["adjoint"]["gradient_given"].all())
    assert float(net.S.grad.abs().max()) > 0.0


def test_backend_and_damping_are_checked():
    with pytest.raises(ConfigError, match="backend"):
        SATNet(5, 6, backend="cuda-please")
    with pytest.raises(ConfigError, match="adjoint_damping"):
        SATNet(5, 6, adjoint_damping=-1.0)
    with pytest.raises(ConfigError, match="adjoint_solver"):
        MixingSettings(aux=0, k=4, max_iter=5, eps=1e-4, adjoint_solver="lu")


def test_unknown_index_follows_the_update_order():
    from gridlearn.implicit.satnet_kernels import unknown_index

    is_out = torch.tensor([[False, True, False, True, True], [False, False, True, True, False]])
    idx, ptr = unknown_index(is_out)
    assert ptr.tolist() == [0, 3, 5] and idx.tolist() == [1, 3, 4, 2, 3]
    idx, ptr = unknown_index(is_out, [4, 2, 1, 3])
    assert ptr.tolist() == [0, 3, 5] and idx.tolist() == [4, 1, 3, 2, 3]
    with pytest.raises(ValueError, match="every unknown"):
        unknown_index(is_out, [4, 2, 1])


def test_random_order_is_drawn_from_the_solve_generator():
    """Same seed, same order and answer; another seed, another order (hence other sweeps);
    "ascending" does not depend on the draw's order at all."""
    S, z, mask = _tiny_problem(batch=2, n=8, m=6, aux=3, seed=5)
    st = MixingSettings(aux=3, k=5, max_iter=500, eps=1e-6)
    a = satnet_solve(S, z, mask, st, torch.Generator().manual_seed(4))
    b = satnet_solve(S, z, mask, st, torch.Generator().manual_seed(4))
    assert torch.equal(a.value, b.value) and torch.equal(a.steps, b.steps)
    from gridlearn.implicit.satnet_mixing import _update_order

    is_out = torch.ones(2, 12, dtype=torch.bool)
    is_out[:, 0] = False
    o1 = _update_order(is_out, st, torch.Generator().manual_seed(4))
    o2 = _update_order(is_out, st, torch.Generator().manual_seed(5))
    asc = _update_order(is_out, dataclasses.replace(st, order="ascending"), None)
    assert sorted(o1) == sorted(o2) == asc == list(range(1, 12)) and o1 != o2 and o1 != asc
    with pytest.raises(ConfigError, match="order"):
        MixingSettings(aux=3, k=5, max_iter=5, eps=1e-6, order="backwards")
