"""Jacobian of published observations (p_g, LMPs) with respect to the unknown parameters.

Forward-mode sensitivity of the same reduced KKT system the `ACOPFLayer` backward uses
(`gridlearn.grid.acopf_kkt`): at each sample's optimum, ``F(y, theta) = 0`` gives

    dy/dtheta = -K^{-1} dF/dtheta,     K = dF/dy,

(Fiacco 1976, NLP sensitivity), one factorisation and ``n_unknown`` right-hand sides per
sample. Rows for ``p_g`` come from the free primal entries (a generator held at a bound
has zero sensitivity), rows for LMPs from the power-balance multipliers
(``lmp = -lambda_p / base_mva``, see `gridlearn.grid.acopf`). This is what the
identifiability report and the Levenberg-Marquardt option of `recover` use; the gradient
of a scalar loss goes through the layer's reverse-mode adjoint instead.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from gridlearn.errors import SolverFailure
from gridlearn.grid.acopf_kkt import THETA_FIELDS, KKTSystem, active_set
from gridlearn.grid.formulations import get_convention
from gridlearn.inverse.params import Unknown


def _theta_dict(network) -> dict[str, Tensor]:
    owners = {"pd_mw": network.bus, "qd_mvar": network.bus, "cost_c2_usd_per_mw2h": network.gen,
              "cost_c1_usd_per_mwh": network.gen, "cost_c0_usd_per_h": network.gen, "r_pu": network.branch,
              "x_pu": network.branch, "g_pu": network.branch, "b_pu": network.branch}
    return {n: getattr(owners[n], n).detach().cpu().double() for n in THETA_FIELDS}


def sample_jacobian(network, convention, result, unknowns: Sequence[Unknown], active_tol: float = 1e-5,
                    sample: int = 0) -> tuple[Tensor, Tensor]:
    """``(d pg_mw / d theta, d lmp / d theta)``: ``(n_gen, P)`` and ``(n_bus, P)`` for one solved sample.

    ``network`` carries the sample's loads and the current parameter values; ``result``
    is its `ACOPFResult`. Units: MW and $/MWh per unit of each unknown (Network units).
    Raises `SolverFailure` when the KKT matrix is singular or the active set is ambiguous.
    """
    conv = get_convention(convention)
    net = network.to("cpu", torch.float64)
    base = float(net.base_mva)
    nb, ng = net.n_bus, net.n_gen
    z0 = torch.cat([result.va_rad, result.vm_pu, result.pg_mw / base, result.qg_mvar / base])
    act = active_set(result, nb, ng, active_tol, sample=sample)
    kkt = KKTSystem(net, conv, z0, act, result.angle_bound_rad)
    d = result.duals
    lam = torch.cat([d["p_balance"], d["q_balance"]])
    mu = torch.cat([d["flow_f"][act.flow_f], d["flow_t"][act.flow_t], d["angle"][act.angle]])
    y = torch.cat([z0[act.free], lam, mu])
    th0 = _theta_dict(net)
    fields = [u.field for u in unknowns]
    positions = torch.tensor([u.position for u in unknowns])

    def residual_of(delta: Tensor) -> Tensor:
        th = dict(th0)
        for k, name in enumerate(fields):
            onehot = torch.zeros_like(th0[name])
            onehot[positions[k]] = 1.0
            th[name] = th[name] + delta[k] * onehot
        return kkt.residual(y, th)

    k_mat = torch.func.jacfwd(kkt.residual, argnums=0)(y, th0)
    f_theta = torch.func.jacfwd(residual_of)(torch.zeros(len(unknowns), dtype=torch.float64))
    dy = -torch.linalg.solve(k_mat, f_theta)
    err = (k_mat @ dy + f_theta).norm() / f_theta.norm().clamp_min(1e-300)
    if not torch.isfinite(dy).all() or err > 1e-6:
        raise SolverFailure(
            f"sample {sample}: the KKT matrix is singular (relative residual {float(err):.2e}); the observations "
            "have no derivative with respect to the parameters at this optimum", indices=[sample])
    nf = act.free.numel()
    dz = torch.zeros(z0.numel(), len(unknowns), dtype=torch.float64)
    dz[act.free] = dy[:nf]
    d_pg = dz[2 * nb : 2 * nb + ng] * base
    d_lmp = -dy[nf : nf + nb] / base
    return d_pg, d_lmp


def observation_jacobian(network, observations, unknowns: Sequence[Unknown], theta: Tensor, results,
                         convention="matpower", active_tol: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Stacked sensitivities over samples: ``(S, n_gen, P)`` for p_g and ``(S, n_lmp, P)`` for the published LMPs.

    ``results``: the per-sample `ACOPFResult` at parameters ``theta`` (e.g. from
    ``ACOPFLayer.solve(...).extras["results"]``).
    """
    from gridlearn.inverse.params import substitute

    base_net = substitute(network, unknowns, theta.detach().cpu().double())
    pg_rows, lmp_rows = [], []
    for s, res in enumerate(results):
        net_s = base_net.with_(pd_mw=observations.pd_mw[s], qd_mvar=observations.qd_mvar[s])
        d_pg, d_lmp = sample_jacobian(net_s, convention, res, unknowns, active_tol, sample=s)
        pg_rows.append(d_pg)
        lmp_rows.append(d_lmp[observations.lmp_buses])
    return torch.stack(pg_rows), torch.stack(lmp_rows)
