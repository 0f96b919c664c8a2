"""Jacobian of published observations (p_g, LMPs) with respect to the unknown parameters.

Forward-mode sensitivity of the same reduced KKT system the `ACOPFLayer` backward uses
(`gridlearn.grid.acopf_kkt`): at each sample's optimum, ``F(y, theta) = 0`` gives

    dy/dtheta = -K^{-1} dF/dtheta,     K = dF/dy,

(Fiacco 1976, NLP sensitivity). K is the analytic sparse matrix `kkt_matrix` (the NLP's
own Hessian and Jacobian), factorised once per sample by sparse LU and solved for all
``n_unknown`` right-hand sides together. ``dF/dtheta`` is closed form for cost
coefficients (only the stationarity row of that generator's ``p_g`` depends on them:
``d/dc1 = B``, ``d/dc2 = 2 B^2 p_g`` in per unit, B the base MVA) and comes from
``torch.func.jacfwd`` of `KKTSystem.residual` for branch parameters (only when one is
unknown). Rows for ``p_g`` come from the free primal entries (a generator held at a bound
has zero sensitivity), rows for LMPs from the power-balance multipliers
(``lmp = -lambda_p / base_mva``, see `gridlearn.grid.acopf`). This is what the
identifiability report and the Levenberg-Marquardt option of `recover` use; the gradient
of a scalar loss goes through the layer's reverse-mode adjoint instead.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from gridlearn.errors import SolverFailure
from gridlearn.grid.acopf_kkt import ACTIVE_TOL, THETA_FIELDS, KKTSystem, active_set, kkt_matrix
from gridlearn.grid.acopf_model import acopf_arrays
from gridlearn.grid.acopf_nlp import ACOPFNLP
from gridlearn.grid.formulations import get_convention
from gridlearn.inverse.params import Unknown

log = logging.getLogger(__name__)


def _theta_dict(network) -> dict[str, Tensor]:
    owners = {"pd_mw": network.bus, "qd_mvar": network.bus, "cost_c2_usd_per_mw2h": network.gen,
              "cost_c1_usd_per_mwh": network.gen, "cost_c0_usd_per_h": network.gen, "r_pu": network.branch,
              "x_pu": network.branch, "g_pu": network.branch, "b_pu": network.branch}
    return {n: getattr(owners[n], n).detach().cpu().double() for n in THETA_FIELDS}


def _singular(sample: int, err: float) -> SolverFailure:
    return SolverFailure(
        f"sample {sample}: the KKT matrix is singular (relative residual {err:.2e}); the observations "
        "have no derivative with respect to the parameters at this optimum", indices=[sample])


def theta_moved(th0: dict[str, Tensor], unknowns: Sequence[Unknown]):
    """``delta (P,) -> `` the parameter dict ``th0`` with unknown k moved by ``delta[k]`` (for jacfwd)."""

    def moved(delta: Tensor) -> dict[str, Tensor]:
        th = dict(th0)
        for k, u in enumerate(unknowns):
            onehot = torch.zeros_like(th0[u.field])
            onehot[u.position] = 1.0
            th[u.field] = th[u.field] + delta[k] * onehot
        return th

    return moved


def sample_jacobian(network, convention, result, unknowns: Sequence[Unknown], active_tol: float = ACTIVE_TOL,
                    sample: int = 0) -> tuple[Tensor, Tensor]:
    """``(d pg_mw / d theta, d lmp / d theta)``: ``(n_gen, P)`` and ``(n_bus, P)`` for one solved sample.

    ``network`` carries the sample's loads and the current parameter values; ``result``
    is its `ACOPFResult`. Units: MW and $/MWh per unit of each unknown (Network units).
    Raises `SolverFailure` when the KKT matrix is singular or the active set is ambiguous
    (``active_tol``: see `acopf_kkt.active_set`).
    """
    from scipy.sparse.linalg import splu

    conv = get_convention(convention)
    net = network.to("cpu", torch.float64)
    base = float(net.base_mva)
    nb, ng = net.n_bus, net.n_gen
    nlp = ACOPFNLP(acopf_arrays(net, conv), conv)
    z0 = torch.cat([result.va_rad, result.vm_pu, result.pg_mw / base, result.qg_mvar / base])
    act = active_set(result, nb, ng, active_tol, sample=sample, nlp=nlp)
    d = result.duals
    lam = torch.cat([d["p_balance"], d["q_balance"]])
    mu = torch.cat([d["flow_f"][act.flow_f], d["flow_t"][act.flow_t], d["angle"][act.angle]])
    nf = act.free.numel()
    n_y = nf + lam.numel() + mu.numel()
    p = len(unknowns)

    # dF/dtheta, one column per unknown
    f_theta = np.zeros((n_y, p))
    row_of = np.full(z0.numel(), -1, dtype=np.int64)
    row_of[act.free.numpy()] = np.arange(nf)
    pg_pu = z0[2 * nb : 2 * nb + ng].numpy()
    branch_cols = []
    for k, u in enumerate(unknowns):
        if u.is_cost:
            r = row_of[2 * nb + u.position]
            if r >= 0 and u.kind != "c0":  # a generator at a bound: its stationarity row is not in F
                f_theta[r, k] = base if u.kind == "c1" else 2 * base * base * pg_pu[u.position]
        else:
            branch_cols.append(k)
    if branch_cols:
        kkt = KKTSystem(net, conv, z0, act, result.angle_bound_rad)
        y = torch.cat([z0[act.free], lam, mu])
        moved = theta_moved(_theta_dict(net), [unknowns[k] for k in branch_cols])
        f_theta[:, branch_cols] = torch.func.jacfwd(lambda delta: kkt.residual(y, moved(delta)))(
            torch.zeros(len(branch_cols), dtype=torch.float64)).numpy()

    k_mat = kkt_matrix(nlp, z0.numpy(), lam.numpy(), mu.numpy(), act)
    try:
        lu = splu(k_mat)  # one factorisation for all P right-hand sides
        # Column by column on purpose: a block solve goes through multithreaded OpenBLAS, which on a
        # loaded machine with torch's OpenMP pool at 1 thread ran 20-40x slower (case118: 0.25 s vs 13 ms).
        dy = -np.column_stack([lu.solve(np.ascontiguousarray(f_theta[:, k])) for k in range(p)]) if p else f_theta
    except RuntimeError as exc:  # SuperLU: "Factor is exactly singular"
        raise _singular(sample, float("inf")) from exc
    res = k_mat @ dy + f_theta
    err = float(np.sqrt(np.sum(res * res)) / max(np.sqrt(np.sum(f_theta * f_theta)), 1e-300))  # no BLAS (see above)
    if not np.all(np.isfinite(dy)) or err > 1e-6:
        raise _singular(sample, err)
    dz = np.zeros((z0.numel(), p))
    dz[act.free.numpy()] = dy[:nf]
    d_pg = torch.as_tensor(dz[2 * nb : 2 * nb + ng] * base)
    d_lmp = torch.as_tensor(-dy[nf : nf + nb] / base)
    return d_pg, d_lmp


def observation_jacobian(network, observations, unknowns: Sequence[Unknown], theta: Tensor, results,
                         convention="matpower", active_tol: float = ACTIVE_TOL,
                         skip_failed: bool = False) -> tuple[Tensor, Tensor]:
    """Stacked sensitivities over samples: ``(S, n_gen, P)`` for p_g and ``(S, n_lmp, P)`` for the published LMPs.

    ``results``: the per-sample `ACOPFResult` at parameters ``theta`` (e.g. from
    ``ACOPFLayer.solve(...).extras["results"]``). A sample whose optimum has no derivative
    (weakly active constraint, singular K) raises `SolverFailure`, or with
    ``skip_failed=True`` gets NaN rows (logged as a warning) so callers can leave it out.

    case9, 3 scenarios: raising unit 0's c1 lowers its own output, and the other two units
    pick up all but 0.1 MW per $/MWh of it (the losses change with the dispatch):

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.grid.acopf import solve_acopf
    >>> from gridlearn.inverse import simulate_market
    >>> from gridlearn.inverse.params import cost_unknowns, current_values
    >>> truth = load_case("case9")
    >>> unknowns = cost_unknowns(truth)                          # c2, c1 of each of the 3 units
    >>> theta = current_values(truth, unknowns)
    >>> def jacobians(obs):                                      # at the true costs' optima
    ...     results = [solve_acopf(truth.with_(pd_mw=obs.pd_mw[s], qd_mvar=obs.qd_mvar[s]), backend="direct")
    ...                for s in range(obs.n_samples)]
    ...     return observation_jacobian(truth, obs, unknowns, theta, results)
    >>> jac_pg, jac_lmp = jacobians(simulate_market(truth, 3, seed=0))
    >>> tuple(jac_pg.shape), tuple(jac_lmp.shape)              # (S, n_gen, P), (S, n_lmp, P)
    ((3, 3, 6), (3, 9, 6))
    >>> [round(float(v), 3) for v in jac_pg[0, :, 1]]          # d p_g / d c1 of unit 0, MW per $/MWh
    [-2.95, 1.796, 1.25]
    """
    from gridlearn.inverse.params import substitute

    base_net = substitute(network, unknowns, theta.detach().cpu().double())
    pg_rows, lmp_rows = [], []
    for s, res in enumerate(results):
        net_s = base_net.with_(pd_mw=observations.pd_mw[s], qd_mvar=observations.qd_mvar[s])
        try:
            d_pg, d_lmp = sample_jacobian(net_s, convention, res, unknowns, active_tol, sample=s)
        except SolverFailure as exc:
            if not skip_failed:
                raise
            log.warning("sensitivity of sample %d left out (NaN rows): %s", s, exc)
            d_pg = torch.full((network.n_gen, len(unknowns)), float("nan"), dtype=torch.float64)
            d_lmp = torch.full((network.n_bus, len(unknowns)), float("nan"), dtype=torch.float64)
        pg_rows.append(d_pg)
        lmp_rows.append(d_lmp[observations.lmp_buses])
    return torch.stack(pg_rows), torch.stack(lmp_rows)
