"""The local-infeasibility certificate of the torch AC-OPF interior point (issue 20, `acopf_ipm.restoration`):
a scenario the iteration leaves undecided (MAX_STEPS) is INFEASIBLE only at a stationary point of the
violation that stays above ``constr_viol_tol``; a feasible one keeps MAX_STEPS."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from gridlearn.errors import InfeasibleError
from gridlearn.grid import load_case
from gridlearn.grid.acopf import solve_acopf
from gridlearn.grid.acopf_ipm import IPMOptions, solve_acopf_batched
from gridlearn.grid.acopf_ipm import restoration as R
from gridlearn.grid.acopf_ipm.problem import build_structure, scenarios_from
from gridlearn.grid.acopf_model import acopf_arrays, polar_formulation
from gridlearn.grid.formulations import get_convention
from gridlearn.implicit.solution import Status

_CASES = {name: load_case(name) for name in ("case9", "case14", "case30")}


def _problem(net, pd_mw):
    conv = get_convention("matpower")
    d = acopf_arrays(net, conv)
    st = build_structure(d, polar_formulation(d, conv), "cpu", torch.float64)
    return st, scenarios_from(net, d, conv, {"pd_mw": pd_mw}, pd_mw.shape[0], "cpu", torch.float64)


@pytest.mark.parametrize("name", ["case9", "case30"])
def test_violation_gradient_and_hessian_match_central_differences(name):
    """At a random point of 3x the load (most flow limits violated, so their max(h, 0) rows and curvature
    count), J^T r and J^T J + sum r_i hess r_i against central differences of phi = |r|^2 / 2."""
    net = _CASES[name]
    st, sc = _problem(net, net.bus.pd_mw[None] * 3)
    x = 1.0 + 0.3 * torch.randn(1, st.n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def grad(xv):
        r, ev = R._residuals(st, sc, xv, True)
        jac = R._dense_jacobian(st, ev, r)
        return (jac.transpose(1, 2) @ r[..., None])[0, :, 0], r, ev, jac

    def phi(xv):
        return 0.5 * float((R._residuals(st, sc, xv, False)[0] ** 2).sum())

    g, r, ev, jac = grad(x)
    assert int((r[0, st.n_eq :] > 0).sum()) > 5  # the test exercises violated limits
    hes = R._hessian(st, sc, ev, r, jac)[0]
    eps, eye = 1e-6, torch.eye(st.n, dtype=torch.float64)
    g_fd = torch.tensor([(phi(x + eps * eye[j]) - phi(x - eps * eye[j])) / (2 * eps) for j in range(st.n)])
    h_fd = torch.stack([(grad(x + eps * eye[j])[0] - grad(x - eps * eye[j])[0]) / (2 * eps) for j in range(st.n)], 1)
    assert float((g - g_fd).abs().max()) <= 1e-7 * float(g.abs().max())
    assert float((hes - h_fd).abs().max()) <= 1e-7 * float(hes.abs().max())


@pytest.mark.parametrize("name,load,steps", [("case9", 2.2, 4), ("case9", 2.5, 3)])
def test_an_undecided_infeasible_scenario_is_certified_infeasible(name, load, steps):
    """Loads Ipopt calls infeasible (below the capacity, so not proven from the data), stopped after a few
    iterations, before the iteration's own tests can decide: the certificate says INFEASIBLE, at a point
    whose violation stays above the tolerance and whose stationarity meets 1 / infeasible_multiplier."""
    net = _CASES[name]
    pd, qd = net.bus.pd_mw * load, net.bus.qd_mvar * load
    opts = IPMOptions(max_iter=steps, retry_flat=False, linear_solver="dense")
    r = solve_acopf_batched(net, pd[None], qd[None], options=opts)
    assert r.status == [Status.INFEASIBLE] and int(r.iterations[0]) == steps
    assert float(r.residuals["least_violation"][0]) > 10 * opts.constr_viol_tol
    assert float(r.residuals["infeasibility_stationarity"][0]) <= 1 / opts.infeasible_multiplier
    with pytest.raises(InfeasibleError):
        solve_acopf(net.with_(pd_mw=pd, qd_mvar=qd), backend="direct")


def test_a_gradient_uncancelled_in_one_column_is_not_stationary():
    """kappa is per column, in cosines: a column with a small gradient next to a stiff one still counts,
    a bound-held component pointing out of the box does not, and rescaling r or a column changes nothing."""
    jac = torch.tensor([[[1e4, 0.0, 1.0], [0.0, 1e-3, 0.0]]], dtype=torch.float64)
    r = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    g = (jac.transpose(1, 2) @ r[..., None])[..., 0]
    free = torch.zeros(1, 3, dtype=torch.bool)
    k = R._stationarity(g, jac, r, free, free)
    assert float(k) == pytest.approx(1e4 / (1e4 * float(r.norm())))  # column 0: no cancellation at all
    held = torch.tensor([[True, True, True]])  # every variable at its lower bound, g > 0 pointing out
    assert float(R._stationarity(g, jac, r, held, free)) == 0.0
    scaled = jac * torch.tensor([1e-6, 1e3, 7.0], dtype=torch.float64)
    g2 = (scaled.transpose(1, 2) @ (3 * r)[..., None])[..., 0]
    assert float(R._stationarity(g2, scaled, 3 * r, free, free)) == pytest.approx(float(k))


def test_a_converged_scenario_is_not_touched_and_an_undecided_feasible_one_keeps_max_steps():
    """The certificate runs on MAX_STEPS only (NaN elsewhere); from a feasible scenario's early iterate it
    finds a point within constr_viol_tol, so it claims nothing."""
    net = _CASES["case9"]
    r = solve_acopf_batched(net, net.bus.pd_mw[None], net.bus.qd_mvar[None])
    assert r.status == [Status.CONVERGED] and torch.isnan(r.residuals["least_violation"]).all()
    opts = IPMOptions(max_iter=2, retry_flat=False, linear_solver="dense")
    r = solve_acopf_batched(net, net.bus.pd_mw[None], net.bus.qd_mvar[None], options=opts)
    assert r.status == [Status.MAX_STEPS]
    assert float(r.residuals["least_violation"][0]) <= opts.constr_viol_tol


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=hst.sampled_from(["case9", "case14"]), load=hst.floats(0.5, 1.1), steps=hst.integers(1, 6),
       seed=hst.integers(0, 2**16))
def test_a_feasible_scenario_stopped_early_is_never_called_infeasible(name, load, steps, seed):
    """Random feasible loads (each bus +-10% around ``load`` x the case's, which Ipopt solves), the iteration
    cut off after 1-6 steps: MAX_STEPS or CONVERGED, never INFEASIBLE."""
    net = _CASES[name]
    g = torch.Generator().manual_seed(seed)
    pd = net.bus.pd_mw * load * (1 + 0.1 * (2 * torch.rand(net.n_bus, generator=g, dtype=torch.float64) - 1))
    ref = solve_acopf(net.with_(pd_mw=pd), backend="direct")
    assert ref.cost_usd_per_h > 0
    r = solve_acopf_batched(net, pd[None], net.bus.qd_mvar[None],
                            options=IPMOptions(max_iter=steps, retry_flat=False, linear_solver="dense"))
    assert r.status[0] in (Status.MAX_STEPS, Status.CONVERGED)
