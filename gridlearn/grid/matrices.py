"""Network matrices in torch: branch admittances, Ybus, Yf/Yt, DC B matrices, PTDF.

All functions broadcast over leading batch dimensions of the branch parameters (so a
batch of admittance perturbations gives a batch of matrices) and are differentiable with
respect to every floating parameter. Conventions follow MATPOWER's makeYbus/makeBdc,
which pandapower also uses:

    y_s = 1/(r + j x),  t = tap * exp(j shift),  y_c = g + j b (total pi shunt)
    Y_ff = (y_s + y_c/2) / |t|^2,  Y_ft = -y_s / conj(t),  Y_tf = -y_s / t,  Y_tt = y_s + y_c/2
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gridlearn.grid.params import NetworkTables


def incidence(network: NetworkTables) -> tuple[Tensor, Tensor]:
    """Dense from/to incidence matrices Cf, Ct of shape (n_branch, n_bus), real dtype."""
    nb, nl = network.n_bus, network.n_branch
    dev, dt = network.device, network.dtype
    rows = torch.arange(nl, device=dev)
    cf = torch.zeros(nl, nb, dtype=dt, device=dev)
    ct = torch.zeros(nl, nb, dtype=dt, device=dev)
    cf[rows, network.branch.from_bus] = 1.0
    ct[rows, network.branch.to_bus] = 1.0
    return cf, ct


def branch_admittances(network: NetworkTables, scale: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(Y_ff, Y_ft, Y_tf, Y_tt), each complex (..., n_branch).

    ``scale`` (..., n_branch) multiplies each branch's whole pi model (series and shunt),
    e.g. 1 - alpha for a fractional outage; 0 removes the branch.
    """
    br = network.branch
    ys = 1.0 / torch.complex(br.r_pu, br.x_pu)
    yc = torch.complex(br.g_pu, br.b_pu)
    t = torch.polar(br.tap, br.shift_rad)
    ytt = ys + yc / 2
    yff = ytt / (br.tap * br.tap)
    yft = -ys / t.conj()
    ytf = -ys / t
    if scale is not None:
        s = scale.to(ys.dtype)
        yff, yft, ytf, ytt = yff * s, yft * s, ytf * s, ytt * s
    return yff, yft, ytf, ytt


def ybus(network: NetworkTables, scale: Tensor | None = None) -> Tensor:
    """Complex bus admittance matrix (..., n_bus, n_bus) including bus shunts."""
    yff, yft, ytf, ytt = branch_admittances(network, scale)
    cf, ct = (c.to(yff.dtype) for c in incidence(network))
    y = (
        torch.einsum("lb,...l,lc->...bc", cf, yff, cf)
        + torch.einsum("lb,...l,lc->...bc", cf, yft, ct)
        + torch.einsum("lb,...l,lc->...bc", ct, ytf, cf)
        + torch.einsum("lb,...l,lc->...bc", ct, ytt, ct)
    )
    ysh = torch.complex(network.bus.gs_mw, network.bus.bs_mvar) / network.base_mva
    return y + torch.diag_embed(ysh.to(y.dtype))


def yf_yt(network: NetworkTables, scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Branch-end admittance matrices (..., n_branch, n_bus): I_f = Yf V, I_t = Yt V."""
    yff, yft, ytf, ytt = branch_admittances(network, scale)
    cf, ct = (c.to(yff.dtype) for c in incidence(network))
    yf = yff[..., :, None] * cf + yft[..., :, None] * ct
    yt = ytf[..., :, None] * cf + ytt[..., :, None] * ct
    return yf, yt


@dataclass(frozen=True)
class DCMatrices:
    """DC approximation: P_bus = B_bus theta + p_bus_shift, P_f = B_f theta + p_f_shift (per unit)."""

    b_bus: Tensor  # (..., n_bus, n_bus)
    b_f: Tensor  # (..., n_branch, n_bus)
    p_bus_shift: Tensor  # (..., n_bus)
    p_f_shift: Tensor  # (..., n_branch)


def dc_susceptance(network: NetworkTables, scale: Tensor | None = None) -> Tensor:
    """Branch susceptance b = 1/(x tap) (MATPOWER makeBdc: resistance and shunts ignored)."""
    b = 1.0 / (network.branch.x_pu * network.branch.tap)
    return b if scale is None else b * scale


def dc_matrices(network: NetworkTables, scale: Tensor | None = None) -> DCMatrices:
    b = dc_susceptance(network, scale)
    cf, ct = incidence(network)
    a = cf - ct  # (n_branch, n_bus)
    b_f = b[..., :, None] * a
    b_bus = torch.einsum("lb,...lc->...bc", a, b_f)
    p_f_shift = -b * network.branch.shift_rad
    p_bus_shift = torch.einsum("lb,...l->...b", a, p_f_shift)
    return DCMatrices(b_bus=b_bus, b_f=b_f, p_bus_shift=p_bus_shift, p_f_shift=p_f_shift)


def ptdf(network: NetworkTables, slack: int | None = None, scale: Tensor | None = None) -> Tensor:
    """Power transfer distribution factors (..., n_branch, n_bus) with injections balanced at ``slack``.

    PTDF = B_f[:, nonslack] B_bus[nonslack, nonslack]^{-1}; the slack column is zero.
    ``slack`` defaults to the first reference bus.
    """
    dc = dc_matrices(network, scale)
    if slack is None:
        slack = int(network.ref_buses[0])
    keep = torch.tensor([i for i in range(network.n_bus) if i != slack], device=network.device)
    b_red = dc.b_bus[..., keep[:, None], keep]
    bf_red = dc.b_f[..., :, keep]
    # Solve B_red^T X^T = B_f_red^T instead of forming the inverse (better conditioned).
    x = torch.linalg.solve(b_red.transpose(-1, -2), bf_red.transpose(-1, -2)).transpose(-1, -2)
    out = torch.zeros(*x.shape[:-1], network.n_bus, dtype=x.dtype, device=x.device)
    out[..., keep] = x
    return out
