"""Gradients of the torch AC-OPF interior point: gradcheck (float64), the Ipopt layer's KKT backward
(`ACOPFLayer`) and central finite differences of re-solves."""

from __future__ import annotations

import pytest
import torch

from gridlearn.grid import ACOPFLayer, load_case
from gridlearn.grid.acopf_ipm import IPMOptions, solve_acopf_batched

OPTS = IPMOptions(tol=1e-11)


@pytest.fixture(scope="module")
def case9():
    return load_case("case9")


def outputs(net, pd, **params):
    r = solve_acopf_batched(net, pd, options=OPTS, **params)
    return r.pg_mw, r.lmp_usd_per_mwh, r.cost_usd_per_h, r.vm_pu


def test_gradcheck_case9_float64(case9):
    pd = case9.bus.pd_mw.repeat(2, 1)
    pd[1] *= 1.05
    pd.requires_grad_()
    c1 = case9.gen.cost_c1_usd_per_mwh.clone().requires_grad_()
    x = case9.branch.x_pu.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda pd, c1, x: outputs(case9, pd, cost_c1_usd_per_mwh=c1, x_pu=x), (pd, c1, x),
                                    eps=1e-5, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_matches_the_ipopt_layer_and_finite_differences(case9):
    g = torch.Generator().manual_seed(0)
    pd = case9.bus.pd_mw * (1 + 0.1 * (2 * torch.rand(2, case9.n_bus, generator=g, dtype=torch.float64) - 1))
    c2 = case9.gen.cost_c2_usd_per_mw2h.repeat(2, 1)
    r = case9.branch.r_pu.repeat(2, 1)
    w_pg = torch.randn(2, case9.n_gen, generator=g, dtype=torch.float64)
    w_lmp = torch.randn(2, case9.n_bus, generator=g, dtype=torch.float64)

    def loss(pg, lmp, obj):
        return (pg * w_pg).sum() + (lmp * w_lmp).sum() + 1e-3 * obj.sum()

    ref_in = [t.clone().requires_grad_() for t in (pd, c2, r)]
    out = ACOPFLayer(case9, ipopt_options={"tol": 1e-11})(ref_in[0], cost_c2_usd_per_mw2h=ref_in[1], r_pu=ref_in[2])
    ref = torch.autograd.grad(loss(out.pg_mw, out.lmp_usd_per_mwh, out.cost_usd_per_h), ref_in)
    ours_in = [t.clone().requires_grad_() for t in (pd, c2, r)]
    pg, lmp, obj, _ = outputs(case9, ours_in[0], cost_c2_usd_per_mw2h=ours_in[1], r_pu=ours_in[2])
    ours = torch.autograd.grad(loss(pg, lmp, obj), ours_in)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    # central finite differences of re-solves, for two load entries and one resistance
    for which, (row, col), h in ((0, (0, 4), 1e-3), (0, (1, 8), 1e-3), (2, (1, 3), 1e-6)):
        up = [t.clone() for t in (pd, c2, r)]
        dn = [t.clone() for t in (pd, c2, r)]
        up[which][row, col] += h
        dn[which][row, col] -= h
        f_up = loss(*outputs(case9, up[0], cost_c2_usd_per_mw2h=up[1], r_pu=up[2])[:3])
        f_dn = loss(*outputs(case9, dn[0], cost_c2_usd_per_mw2h=dn[1], r_pu=dn[2])[:3])
        fd = (f_up - f_dn).item() / (2 * h)
        assert abs(ours[which][row, col].item() - fd) <= 1e-5 * abs(fd) + 1e-7


def test_acopf_layer_torch_backend_matches_the_ipopt_backend(case9):
    pd = (case9.bus.pd_mw * torch.tensor([[1.0], [0.95]], dtype=torch.float64)).requires_grad_()
    ref = ACOPFLayer(case9)(pd)
    layer = ACOPFLayer(case9, backend="torch")
    out = layer(pd)
    for a, b in zip(out, ref):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-4)
    (g_ref,) = torch.autograd.grad(ref.pg_mw[:, 1].sum() + ref.cost_usd_per_h.sum(), pd)
    (g,) = torch.autograd.grad(out.pg_mw[:, 1].sum() + out.cost_usd_per_h.sum(), pd)
    assert torch.allclose(g, g_ref, rtol=1e-5, atol=1e-6)
    sol = layer.solve(pd.detach() * 1.01, warm_start=layer.solve(pd.detach()).extras["results"])
    assert (sol.status_code == 0).all()


def test_acopf_layer_torch_backend_raises_naming_the_failed_sample(case9):
    from gridlearn.errors import InfeasibleError

    pd = case9.bus.pd_mw.repeat(2, 1)
    pd[1] *= 3.0
    with pytest.raises(InfeasibleError, match="#1"):
        ACOPFLayer(case9, backend="torch")(pd)


def test_weakly_active_bound_gives_no_gradient(case9):
    from gridlearn.errors import SolverFailure

    base = solve_acopf_batched(case9, case9.bus.pd_mw[None], options=OPTS)
    assert not base.weakly_active.any()
    pmax = case9.gen.pmax_mw.clone()
    pmax[1] = base.pg_mw[0, 1].detach()  # the bound sits exactly at the unconstrained optimum
    net = case9.with_(pmax_mw=pmax)
    pd = case9.bus.pd_mw[None].clone().requires_grad_()
    res = solve_acopf_batched(net, pd, options=OPTS)
    assert res.status[0].name == "CONVERGED" and bool(res.weakly_active[0])
    (g,) = torch.autograd.grad(res.pg_mw.sum(), pd)
    assert torch.isnan(g).all()
    strict = solve_acopf_batched(net, pd, options=OPTS, strict_gradients=True)
    with pytest.raises(SolverFailure, match="weakly active"):
        torch.autograd.grad(strict.pg_mw.sum(), pd)


#: The Ipopt layer as the reference for the problem as stated: Ipopt's default bound_relax_factor
#: (1e-8) moves every bound and limit outwards, which moves case30's gradients by up to 1e-5.
REFERENCE = {"tol": 1e-11, "bound_relax_factor": 0.0}


@pytest.mark.parametrize("linear_solver", ["sparse", "dense"])
def test_case30_corpus_gradients_are_the_ipopt_layers_active_set_ones(linear_solver):
    """case30 corpus scenarios 1, 5 and 10 (active flow limits and voltage bounds): the barrier
    backward was 4e-5 to 7e-4 off the Ipopt layer there (it differentiated the barrier KKT at the
    final mu); the active-set backward is within 1e-6 (measured 2e-10 to 4e-9)."""
    from tests.grid.test_acopf_ipm_fallbacks import corpus_loads

    net = load_case("case30")
    pd, qd = corpus_loads(net)
    idx = [1, 5, 10]
    g = torch.Generator().manual_seed(1)
    w_pg = torch.randn(3, net.n_gen, generator=g, dtype=torch.float64)
    w_lmp = torch.randn(3, net.n_bus, generator=g, dtype=torch.float64)
    x = pd[idx].clone().requires_grad_()
    r = solve_acopf_batched(net, x, qd[idx], options=IPMOptions(linear_solver=linear_solver, retry_flat=False))
    ((r.pg_mw * w_pg).sum() + (r.lmp_usd_per_mwh * w_lmp).sum()).backward()
    layer = ACOPFLayer(net, ipopt_options=REFERENCE)
    for k, b in enumerate(idx):
        xr = pd[[b]].clone().requires_grad_()
        out = layer(xr, qd[[b]])
        ((out.pg_mw * w_pg[k]).sum() + (out.lmp_usd_per_mwh * w_lmp[k]).sum()).backward()
        gap = float((x.grad[k] - xr.grad[0]).abs().max() / xr.grad[0].abs().max())
        assert gap < 1e-6, (b, gap)


def test_gradcheck_with_an_active_flow_limit_float64():
    """case30 corpus scenario 5: a binding from-end flow limit and a voltage at its upper bound."""
    from tests.grid.test_acopf_ipm_fallbacks import corpus_loads

    net = load_case("case30")
    pd, qd = corpus_loads(net)
    base = solve_acopf_batched(net, pd[[5]], qd[[5]], options=OPTS)
    assert bool((base.duals["flow_f"] > 1.0).any()) and bool((base.duals["vm_upper"] > 1.0).any())
    x = pd[[5]].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: outputs(net, p, qd_mvar=qd[[5]])[:2], (x,), eps=1e-5, atol=1e-5,
                                    rtol=1e-4, fast_mode=True)


@pytest.mark.parametrize("linear_solver", ["sparse", "dense"])
@pytest.mark.parametrize("name", ["case14", "case39"])
def test_a_loss_on_generators_held_at_their_bounds_has_zero_gradient(name, linear_solver):
    """A generator at an active pmin/pmax does not move with the loads: the bordered backward's
    solution is w = 0 exactly with the bound's multiplier carrying the cotangent. Its convergence test
    once measured J_A w against |w| alone, which stays O(1) while w decays to 0, so these gradients
    were refused (NaN). The Ipopt layer's gradient is 0 too; with cotangents on every output, the two
    agree."""
    net = load_case(name)
    pd, qd = net.bus.pd_mw[None], net.bus.qd_mvar[None]
    opts = IPMOptions(linear_solver=linear_solver)
    r = solve_acopf_batched(net, pd, qd, options=opts)
    pg = r.pg_mw[0]
    held = ((pg - net.gen.pmin_mw).abs() < 1e-4) | ((net.gen.pmax_mw - pg).abs() < 1e-4)
    assert bool(held.any()) and not bool(r.weakly_active[0])
    x = pd.clone().requires_grad_()
    out = solve_acopf_batched(net, x, qd, options=opts)
    out.pg_mw[0, held].sum().backward()
    assert torch.isfinite(x.grad).all()
    assert float(x.grad.abs().max()) < 1e-9
    w = torch.randn(1, net.n_gen, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = []
    for layer in (None, ACOPFLayer(net, ipopt_options=REFERENCE)):
        x = pd.clone().requires_grad_()
        o = solve_acopf_batched(net, x, qd, options=opts) if layer is None else layer(x, qd)
        ((o.pg_mw * w).sum() + o.lmp_usd_per_mwh.sum()).backward()
        grads.append(x.grad[0])
    assert float((grads[0] - grads[1]).abs().max() / grads[1].abs().max()) < 1e-6


def test_with_gradients_the_iteration_polishes_and_a_failed_polish_changes_nothing(case9, monkeypatch):
    """With gradients asked for, a scenario whose active set is ambiguous at tol goes on in the same batch
    until it is not, or its error is below `solve.POLISH_TOL` (the backward's active set needs it,
    `_Solver._polish`); a polish that cannot get there gives back the best converged iterate on the way,
    with the same status and an error no larger than the solve without gradients."""
    from gridlearn.grid.acopf_ipm import ipm
    from gridlearn.grid.acopf_ipm import solve as ipm_solve

    pd = case9.bus.pd_mw * torch.tensor([[0.8], [1.0], [1.2]], dtype=torch.float64)
    plain = solve_acopf_batched(case9, pd)
    seen = []
    run = ipm_solve._Solver.run

    def spy(self):
        out = run(self)
        seen.extend((ch.state.polish.clone(), ch.state.error.clone(), ipm_solve._separation(self.st, ch))
                    for ch in self.chunks)
        return out

    monkeypatch.setattr(ipm_solve._Solver, "run", spy)
    polished = solve_acopf_batched(case9, pd.clone().requires_grad_())
    assert polished.status == plain.status
    (state, error, separation), = seen
    assert bool((state == ipm.POLISHED).all())
    assert bool(((error <= ipm_solve.POLISH_TOL) | (separation >= ipm_solve.POLISH_SEPARATION)).all())
    assert bool((polished.residuals["error"] <= plain.residuals["error"]).all())
    assert bool((polished.residuals["error"] < ipm_solve.POLISH_TOL).any())  # scenario 2 was ambiguous
    assert torch.allclose(polished.cost_usd_per_h.detach(), plain.cost_usd_per_h, rtol=1e-8)
    monkeypatch.undo()
    monkeypatch.setattr(ipm_solve, "POLISH_TOL", 1e-30)
    monkeypatch.setattr(ipm_solve, "POLISH_SEPARATION", float("inf"))
    monkeypatch.setattr(ipm_solve, "POLISH_STEPS", 1)
    failed = solve_acopf_batched(case9, pd.clone().requires_grad_())
    assert failed.status == plain.status
    assert bool((failed.residuals["error"] <= plain.residuals["error"]).all())
