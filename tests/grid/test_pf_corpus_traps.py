"""The power-flow traps of the MATPOWER/PGLib corpus, one small case each (`gridlearn.grid.pf_robust`).

- case145 (a solved file): plain Newton from the DC start fails; a solution exists, the
  retry finds it from the case's own voltages (MATPOWER's runpf start), and it is
  pandapower's runpp solution.
- case2848rte: plain Newton from the DC start converges, to a collapsed-voltage solution of
  the same equations; the retry returns the high-voltage one, the file's solved point.
- PGLib case3_lmbd: the OPF file's PG set-points have no power-flow solution; the status is
  INFEASIBLE with the loadability λ*, and least squares from many starts confirms no root.
- PGLib case39_epri: the same, λ* < 1.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from gridlearn.errors import InfeasibleError
from gridlearn.grid import PowerFlowLayer, load_case
from gridlearn.grid.cases import load_pandapower_net, matpower_data_dir
from gridlearn.grid.pf_newton import NewtonRaphson, jacobian, residual
from gridlearn.implicit.solution import Status
from tests.grid._matpower_equations import raw_mismatch_mva

DATA = matpower_data_dir()
PLAIN = NewtonRaphson(retry=False)


def test_case145_solved_by_the_retry_from_the_case_start_is_pandapowers_solution():
    import pandapower as pp

    net = load_case("case145")
    plain = PowerFlowLayer(solver=PLAIN).solve(net)
    assert plain.statuses[0] is not Status.CONVERGED  # the trap: DC start outside Newton's basin
    sol = PowerFlowLayer().solve(net)
    assert sol.statuses[0] is Status.CONVERGED
    assert sol.extras["rescued_from"][0] == "case"
    vm, va = sol.value.vm_pu.numpy(), sol.value.va_rad.numpy()
    dp, dq = raw_mismatch_mva(DATA / "case145.m", vm, va, net.bus.labels)
    assert dp < 1e-6 and dq < 1e-6
    ref = load_pandapower_net(DATA / "case145.m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(ref, calculate_voltage_angles=True, tolerance_mva=1e-10)
    np.testing.assert_allclose(vm, ref.res_bus.vm_pu.to_numpy(), atol=1e-8)
    np.testing.assert_allclose(np.rad2deg(va - va[0]), ref.res_bus.va_degree.to_numpy() - ref.res_bus.va_degree.iloc[0],
                               atol=1e-6)


def test_case2848rte_low_voltage_solution_is_replaced_by_the_files_operating_point():
    net = load_case("case2848rte")
    plain = PowerFlowLayer(solver=PLAIN).solve(net)
    assert plain.statuses[0] is Status.CONVERGED
    assert float(plain.value.vm_pu.min()) < 0.5  # a genuine root, but a collapsed one
    sol = PowerFlowLayer().solve(net)
    assert sol.statuses[0] is Status.CONVERGED and not bool(sol.extras["low_voltage"][0])
    assert sol.extras["rescued_from"][0] == "case"
    assert float(sol.value.vm_pu.min()) > 0.85
    # the file stores a solved operating point: the solution is that one (file rounding aside)
    assert float((sol.value.vm_pu - net.bus.vm0_pu).abs().max()) < 2e-3
    dp, dq = raw_mismatch_mva(DATA / "case2848rte.m", sol.value.vm_pu.numpy(), sol.value.va_rad.numpy(),
                              net.bus.labels)
    assert dp < 1e-6 and dq < 1e-6


def _least_squares_floor_mva(net, starts: int, seed: int = 0) -> float:
    """Smallest max |mismatch| (MVA) Levenberg–Marquardt reaches from random starts: an
    independent check (no continuation, no Newton) that the equations have no root."""
    from scipy.optimize import least_squares

    layer = PowerFlowLayer(solver=NewtonRaphson(backend="dense"))
    pr, lay, _, _ = layer._problem(net, None, None, None, None, None, None, False)

    def f(y):
        return residual(torch.from_numpy(y)[None], lay, pr)[0].numpy()

    def jac(y):
        return jacobian(torch.from_numpy(y)[None], lay, pr)[0].numpy()

    n_va, n_vm = len(lay.va_buses), len(lay.vm_buses)
    rng = np.random.default_rng(seed)
    best = np.inf
    for _ in range(starts):
        y0 = np.r_[rng.uniform(-np.pi, np.pi, n_va), rng.uniform(0.3, 1.5, n_vm)]
        r = least_squares(f, y0, jac=jac, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=500)
        best = min(best, float(np.abs(r.fun).max()) * net.base_mva)
    return best


def test_pglib_case3_lmbd_set_points_have_no_power_flow_solution(shared_data):
    net = load_case(shared_data / "pglib-opf" / "pglib_opf_case3_lmbd.m")
    sol = PowerFlowLayer().solve(net)
    assert sol.statuses[0] is Status.INFEASIBLE
    lam = float(sol.extras["loadability"][0])
    assert 0.2 < lam < 0.35  # measured 0.271: the units' 2000 MW of set-points against 315 MW of load
    with pytest.raises(InfeasibleError, match="loadability"):
        PowerFlowLayer()(net)
    # independent: no start of a least-squares solve gets anywhere near a root
    assert _least_squares_floor_mva(net, starts=60) > 100.0
    # and the continuation's λ* is a real limit: the scaled set-points just below it solve
    pd, qd, pg = net.bus.pd_mw, net.bus.qd_mvar, net.gen.p_mw
    below = PowerFlowLayer(solver=NewtonRaphson(retry=False, jacobian="per_scenario", max_steps=50)).solve(
        net, pd_mw=0.97 * lam * pd, qd_mvar=0.97 * lam * qd, pg_mw=0.97 * lam * pg)
    assert below.statuses[0] is Status.CONVERGED


def test_pglib_case39_epri_set_points_are_beyond_the_loadability_limit(shared_data):
    net = load_case(shared_data / "pglib-opf" / "pglib_opf_case39_epri.m")
    sol = PowerFlowLayer().solve(net)
    assert sol.statuses[0] is Status.INFEASIBLE
    lam = float(sol.extras["loadability"][0])
    assert 0 < lam < 1
    pd, qd, pg = net.bus.pd_mw, net.bus.qd_mvar, net.gen.p_mw
    below = PowerFlowLayer(solver=NewtonRaphson(retry=False, jacobian="per_scenario", max_steps=50)).solve(
        net, pd_mw=0.97 * lam * pd, qd_mvar=0.97 * lam * qd, pg_mw=0.97 * lam * pg)
    assert below.statuses[0] is Status.CONVERGED
    assert _least_squares_floor_mva(net, starts=10) > 1.0


def test_retry_leaves_a_converged_batch_untouched():
    """The retry costs nothing where plain Newton converges: same answer, nothing retried."""
    net = load_case("case118")
    pd = net.bus.pd_mw * (1 + 0.05 * torch.rand(4, net.n_bus, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    a = PowerFlowLayer().solve(net, pd_mw=pd)
    b = PowerFlowLayer(solver=PLAIN).solve(net, pd_mw=pd)
    assert bool(a.converged.all()) and not bool(a.extras["retried"].any())
    torch.testing.assert_close(a.value.vm_pu, b.value.vm_pu, atol=0, rtol=0)


def test_case_start_is_the_files_voltages():
    """init="case" starts at bus VM/VA (MATPOWER's runpf): on case39, whose file holds its
    solved power flow, Newton from there needs at most one step."""
    net = load_case("case39")
    sol = PowerFlowLayer(solver=NewtonRaphson(init="case", retry=False, jacobian="per_scenario")).solve(net)
    assert sol.statuses[0] is Status.CONVERGED and int(sol.steps[0]) <= 2
    flat = PowerFlowLayer(solver=NewtonRaphson(init="flat", retry=False, jacobian="per_scenario")).solve(net)
    assert int(flat.steps[0]) > int(sol.steps[0])
