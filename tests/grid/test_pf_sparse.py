"""Sparse power flow path: agreement with the dense path and runpp, gradients, per-scenario
failures, the automatic switch, the sparse LU wrapper, and no n_bus² tensor on the way."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from gridlearn.errors import ConfigError, SolverFailure
from gridlearn.grid import matrices, Network, network_from_pandapower, PowerFlowLayer
from gridlearn.grid.cases import load_pandapower_net
from gridlearn.grid.pf_newton import SPARSE_MIN_BUS, NewtonRaphson
from gridlearn.grid.sparse_lu import PatternLU, default_engine
from gridlearn.grid.sparse_matrices import sparse_ybus
from gridlearn.implicit.solution import Status

from tests.grid.test_powerflow import _load_scenarios, _pp_voltages, _runpp


# Small dense batched kernels: extra OpenMP threads only contend on a shared runner.
pytestmark = pytest.mark.usefixtures("single_thread")


@functools.lru_cache(maxsize=None)
def _case(name: str):
    net = load_pandapower_net(name)
    return net, network_from_pandapower(net)


def _layer(backend: str, **kw) -> PowerFlowLayer:
    return PowerFlowLayer(solver=NewtonRaphson(backend=backend, **kw))


FIELDS = ("vm_pu", "va_rad", "p_from_mw", "q_from_mvar", "p_to_mw", "q_to_mvar", "pg_mw", "qg_mvar", "slack_mw")


@pytest.mark.parametrize("jacobian", ["shared", "per_scenario"])
def test_sparse_and_dense_agree_case300(jacobian):
    net, network = _case("case300")
    _, pd, qd = _load_scenarios(net, network, 3, seed=4)
    dense = _layer("dense", tol_mva=1e-10, jacobian=jacobian).solve(network, pd_mw=pd, qd_mvar=qd)
    sparse = _layer("sparse", tol_mva=1e-10, jacobian=jacobian).solve(network, pd_mw=pd, qd_mvar=qd)
    assert dense.ok and sparse.ok
    assert dense.extras["backend"] == "dense" and sparse.extras["backend"] == "sparse"
    torch.testing.assert_close(sparse.value.vm_pu, dense.value.vm_pu, atol=1e-10, rtol=0)
    torch.testing.assert_close(sparse.value.va_rad, dense.value.va_rad, atol=1e-10, rtol=0)
    for name in FIELDS[2:]:  # MW/MVAr: 1e-10 p.u. on the 100 MVA base
        torch.testing.assert_close(getattr(sparse.value, name), getattr(dense.value, name), atol=1e-8, rtol=0)


def test_sparse_matches_runpp_batch_case118():
    net, network = _case("case118")
    factors, pd, qd = _load_scenarios(net, network, 3, seed=5)
    sol = _layer("sparse").solve(network, pd_mw=pd, qd_mvar=qd)
    assert sol.ok
    p0, q0 = net.load.p_mw.values.copy(), net.load.q_mvar.values.copy()
    try:
        for s in range(3):
            net.load["p_mw"], net.load["q_mvar"] = p0 * factors[s], q0 * factors[s]
            _runpp(net)
            vm, va = _pp_voltages(net, network)
            np.testing.assert_allclose(sol.value.vm_pu[s].numpy(), vm, atol=1e-8, rtol=0)
            np.testing.assert_allclose(sol.value.va_rad[s].numpy(), va, atol=1e-8, rtol=0)
    finally:
        net.load["p_mw"], net.load["q_mvar"] = p0, q0


def test_sparse_ybus_matches_dense_with_batched_scale():
    _, network = _case("case30")
    g = torch.Generator().manual_seed(1)
    scale = torch.rand(2, network.n_branch, generator=g, dtype=torch.float64)
    y = sparse_ybus(network, scale)
    assert y.values.shape == (2, y.nnz) and y.nnz < network.n_bus ** 2 / 4
    torch.testing.assert_close(y.to_dense(), matrices.ybus(network, scale), atol=1e-12, rtol=0)
    v = torch.polar(torch.rand(2, network.n_bus, generator=g, dtype=torch.float64) + 0.5,
                    torch.rand(2, network.n_bus, generator=g, dtype=torch.float64))
    torch.testing.assert_close(y.matvec(v), torch.einsum("bij,bj->bi", matrices.ybus(network, scale), v))


def _outputs(r):
    return r.vm_pu, r.va_rad, r.q_to_mvar, r.pg_mw, r.qg_mvar


@pytest.mark.parametrize("jacobian", ["shared", "per_scenario"])
def test_gradcheck_sparse_case30_loads_and_reactance(jacobian):
    _, network = _case("case30")
    layer = _layer("sparse", tol_mva=1e-11, jacobian=jacobian)
    g = torch.Generator().manual_seed(0)
    pd = (network.bus.pd_mw * (1 + 0.1 * torch.rand(2, network.n_bus, generator=g, dtype=torch.float64))).requires_grad_()
    qd = network.bus.qd_mvar.clone().requires_grad_()
    x = network.branch.x_pu.clone().requires_grad_()

    def f(pd, qd, x):
        r = layer(network.with_(x_pu=x), pd_mw=pd, qd_mvar=qd)
        return r.vm_pu, r.va_rad, r.q_to_mvar, r.qg_mvar

    # shared: loads and reactances; per_scenario: the loads (the same backward, kept CI-sized)
    inputs = (pd, qd, x) if jacobian == "shared" else (pd,)
    fn = f if jacobian == "shared" else (lambda pd: f(pd, qd.detach(), x.detach()))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_sparse_scale_setpoints_and_distributed_slack():
    _, network = _case("case9")
    layer = _layer("sparse", tol_mva=1e-11)
    scale = torch.tensor([[1.0] * 9, [1.0, 0.7, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 0.9]], dtype=torch.float64, requires_grad=True)
    vg = network.gen.vg_pu.clone().requires_grad_()
    part = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)

    def f(scale, vg, part):
        r = layer(network, scale=scale, vg_pu=vg, participation=part)
        return _outputs(r) + (r.slack_mw,)

    assert torch.autograd.gradcheck(f, (scale, vg, part), eps=1e-6, atol=1e-5, rtol=1e-4)
    dense = _layer("dense", tol_mva=1e-11)(network, scale=scale, vg_pu=vg, participation=part)
    sparse = layer(network, scale=scale, vg_pu=vg, participation=part)
    for name in FIELDS:
        torch.testing.assert_close(getattr(sparse, name), getattr(dense, name), atol=1e-9, rtol=0)


def test_sparse_gradient_matches_runpp_finite_difference_case300():
    """d(Σ w·vm + Σ va)/d(load P) on the sparse path vs central differences of runpp."""
    net, network = _case("case300")
    w = torch.linspace(-1.0, 1.0, network.n_bus, dtype=torch.float64)
    pd = network.bus.pd_mw.clone().requires_grad_()
    res = _layer("sparse", tol_mva=1e-10)(network, pd_mw=pd)
    ((res.vm_pu * w).sum() + res.va_rad.sum()).backward()
    h = 1e-2
    p0 = net.load.p_mw.values.copy()
    try:
        for load in (3, 100):
            bus = network.bus.labels.index(int(net.load.bus.at[load]))
            vals = []
            for sign in (1, -1):
                net.load["p_mw"] = p0
                net.load.loc[load, "p_mw"] += sign * h
                _runpp(net)
                vm, va = _pp_voltages(net, network)
                vals.append(float(vm @ w.numpy() + va.sum()))
            fd = (vals[0] - vals[1]) / (2 * h)
            assert float(pd.grad[bus]) == pytest.approx(fd, rel=1e-4, abs=1e-8)
    finally:
        net.load["p_mw"] = p0


def test_sparse_mixed_batch_one_scenario_diverges():
    _, network = _case("case30")
    layer = _layer("sparse", max_steps=15)
    pd = network.bus.pd_mw.expand(3, -1).clone()
    pd[1] = pd[1] * 20.0  # far beyond the voltage-stability limit: no solution
    pd.requires_grad_()
    sol = layer.solve(network, pd_mw=pd)
    assert sol.statuses[0] is Status.CONVERGED and sol.statuses[2] is Status.CONVERGED
    # the retry's continuation names the cause: beyond the loadability limit (λ* < 1)
    assert sol.statuses[1] is Status.INFEASIBLE
    assert 0 < float(sol.extras["loadability"][1]) < 1 and bool(sol.extras["retried"][1])
    assert not bool(sol.extras["retried"][0]) and not bool(sol.extras["retried"][2])
    assert bool(torch.isnan(sol.value.vm_pu[1]).all())
    # the converged scenarios are the ones solved alone, gradient included; none for #1
    sol.value.vm_pu[[0, 2]].sum().backward()
    alone = network.bus.pd_mw.clone().requires_grad_()
    layer(network, pd_mw=alone).vm_pu.sum().backward()
    # (the batch takes a different Newton path, so the two agree to the tolerance, not bitwise)
    torch.testing.assert_close(sol.value.vm_pu[0], layer(network).vm_pu, atol=1e-9, rtol=0)
    torch.testing.assert_close(pd.grad[0], alone.grad, atol=1e-8, rtol=1e-6)
    assert bool((pd.grad[1] == 0).all())
    with pytest.raises(SolverFailure, match="#1") as info:
        layer(network, pd_mw=pd)
    assert info.value.indices == [1]


def test_automatic_switch_chooses_sparse_above_threshold():
    solver = NewtonRaphson()
    assert solver.backend == "auto"
    assert not solver.use_sparse(SPARSE_MIN_BUS - 1) and solver.use_sparse(SPARSE_MIN_BUS)
    assert NewtonRaphson(backend="sparse").use_sparse(9) and not NewtonRaphson(backend="dense").use_sparse(10**5)
    _, small = _case("case9")
    _, big = _case("case118")
    assert small.n_bus < SPARSE_MIN_BUS <= big.n_bus
    assert PowerFlowLayer().solve(small).extras["backend"] == "dense"
    sol = PowerFlowLayer().solve(big)
    assert sol.ok and sol.extras["backend"] == "sparse"
    assert PowerFlowLayer(solver=NewtonRaphson(sparse_min_bus=200)).solve(big).extras["backend"] == "dense"


def test_sparse_path_builds_no_dense_bus_matrix(monkeypatch):
    """Forward and backward on the sparse path never call the dense (n_bus², n_branch × n_bus
    or n_bus × n_gen) builders."""
    _, network = _case("case118")

    def forbidden(*a, **k):
        raise AssertionError("dense matrix built on the sparse path")

    for name in ("ybus", "yf_yt", "incidence", "dc_matrices", "ptdf"):
        monkeypatch.setattr(matrices, name, forbidden)
    monkeypatch.setattr(Network, "gen_incidence", forbidden)
    monkeypatch.setattr(Network, "dc_matrices", forbidden)
    x = network.branch.x_pu.clone().requires_grad_()
    pd = network.bus.pd_mw.expand(2, -1).clone().requires_grad_()
    res = _layer("sparse")(network.with_(x_pu=x), pd_mw=pd, participation=torch.ones(network.n_gen, dtype=torch.float64))
    (res.vm_pu.sum() + res.p_from_mw.sum()).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(pd.grad).all()


def test_sparse_float32_converges_and_agrees():
    _, network = _case("case30")
    r64 = _layer("sparse")(network)
    r32 = _layer("sparse", tol_mva=1e-3)(network.to(dtype=torch.float32))
    assert r32.vm_pu.dtype == torch.float32
    torch.testing.assert_close(r32.vm_pu.double(), r64.vm_pu, atol=1e-5, rtol=0)


@pytest.mark.parametrize("engine", ["superlu"] + (["klu"] if default_engine() == "klu" else []))
def test_pattern_lu_reuses_analysis_and_keeps_each_factor(engine):
    rng = np.random.default_rng(0)
    n = 40
    pattern = (sp.random(n, n, density=0.1, random_state=1) + sp.eye(n)).tocsc()
    pattern.sort_indices()
    lu = PatternLU(pattern.indptr, pattern.indices, n, engine=engine)
    mats = [sp.csc_matrix((rng.standard_normal(pattern.nnz) + 5 * (pattern.indices == np.repeat(np.arange(n), np.diff(pattern.indptr))),
                           pattern.indices, pattern.indptr), shape=(n, n)) for _ in range(3)]
    factors = [lu.factor(m.data) for m in mats]  # later factorisations must not alter earlier ones
    b = rng.standard_normal((n, 2))
    for m, f in zip(mats, factors):
        np.testing.assert_allclose(m @ f.solve(b), b, atol=1e-10)
        np.testing.assert_allclose(m.T @ f.solve(b[:, 0], trans=True), b[:, 0], atol=1e-10)
    singular = mats[0].copy()
    singular.data[singular.indices == 3] = 0.0  # row 3 empty
    assert lu.factor(singular.data) is None
    assert lu.factor(np.full(pattern.nnz, np.nan)) is None


def test_sparse_settings_are_validated():
    with pytest.raises(ConfigError):
        NewtonRaphson(backend="gpu")
    with pytest.raises(ConfigError):
        NewtonRaphson(sparse_min_bus=-1)
    with pytest.raises(ConfigError):
        PatternLU(np.array([0, 1]), np.array([0]), 1, engine="mumps")

