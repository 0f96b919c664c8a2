"""Dispatches: parsing user input, the base DC-OPF, and the DC security-constrained OPF.

The DC-OPF (`dcopf.solve_dispatch`: the grid's DC-OPF assembly, `grid.dcopf_problem.assemble`,
solved on `gridlearn.implicit.QPLayer`, variables x = p / base_mva):

    min_p  sum_g c2_g p_g^2 + c1_g p_g
    s.t.   pmin <= p <= pmax,   sum_g p_g = P_D,   |PTDF C_g p + f_load| <= rate

and, for the SC-OPF, for every contingency c the post-contingency state is affine in p
(`contingency_affine`): p'_c = R_c p + r_c (AGC pick-up), f'_c = T_c p + t_c, and
|f'_c| <= rate, pmin'_c <= p'_c <= pmax'_c are added (preventive security).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from gridlearn.errors import DataError
from gridlearn.grid.network import Network
from gridlearn.scopf.dc import DCContingencyModel
from gridlearn.scopf.dcopf import solve_dispatch
from gridlearn.scopf.models import contingency_model
from gridlearn.scopf.pickup import pickup_affine
# How far outside [pmin, pmax] a given dispatch may be (solver round-off), MW + relative.
_LIMIT_TOL_MW = 1e-3
_LIMIT_TOL_REL = 1e-4


def as_dispatch(network: Network, dispatch: Any) -> Tensor:
    """A dispatch in MW as a (n_gen,) tensor in Network generator order.

    Accepts a tensor/array of shape (n_gen,) or a pandas Series indexed by generator
    labels ((table, index) tuples). Raises DataError on a wrong shape, unknown or missing
    labels, duplicated labels, non-finite values, or values outside [pmin, pmax] by
    more than 1e-3 MW + 1e-4·|limit|.
    """
    import pandas as pd

    if isinstance(dispatch, pd.Series):
        dup = dispatch.index[dispatch.index.duplicated()].unique().tolist()
        if dup:
            raise DataError(f"dispatch lists generators more than once: {dup[:10]}; give each generator one value")
        lookup = {tuple(lbl): i for i, lbl in enumerate(network.gen.labels)}
        values = np.full(network.n_gen, np.nan)
        for lbl, v in dispatch.items():
            key = tuple(lbl) if isinstance(lbl, (tuple, list)) else lbl
            if key not in lookup:
                raise DataError(f"dispatch has label {lbl!r}, which is not a generator of this network")
            values[lookup[key]] = float(v)
        missing = [network.gen.labels[i] for i in np.flatnonzero(np.isnan(values))]
        if missing:
            raise DataError(f"dispatch lacks generators {missing[:10]}")
        out = torch.as_tensor(values, dtype=network.dtype, device=network.device)
    else:
        out = torch.as_tensor(dispatch, dtype=network.dtype, device=network.device)
    if out.shape != (network.n_gen,):
        raise DataError(f"dispatch must have shape ({network.n_gen},) (MW per generator), got {tuple(out.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise DataError("dispatch has NaN or inf entries")
    # Outside [pmin, pmax] by more than a solver's tolerance is not a dispatch of this grid.
    lo, hi = network.gen.pmin_mw.detach(), network.gen.pmax_mw.detach()
    slack = _LIMIT_TOL_MW + _LIMIT_TOL_REL * torch.maximum(lo.abs(), hi.abs()).nan_to_num(nan=0.0, posinf=0.0)
    bad = (torch.isfinite(hi) & (out.detach() > hi + slack)) | (torch.isfinite(lo) & (out.detach() < lo - slack))
    if bool(bad.any()):
        shown = ", ".join(f"{network.gen.labels[i]}: {float(out[i]):.4g} MW outside [{float(lo[i]):.4g}, {float(hi[i]):.4g}]"
                          for i in torch.nonzero(bad).flatten().tolist()[:10])
        raise DataError(f"dispatch violates generator limits: {shown}")
    return out


def dispatch_series(network: Network, pg_mw: Tensor) -> Any:
    import pandas as pd

    return pd.Series(pg_mw.detach().cpu().numpy(), index=pd.MultiIndex.from_tuples(network.gen.labels), name="p_mw")


def contingency_affine(model: DCContingencyModel, members: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Post-contingency state of sets ``members`` (C, k) as affine maps of the dispatch p (n_gen,).

    Returns T (C, n_branch, n_gen), t (C, n_branch) with f' = T p + t in MW; R (C, n_gen,
    n_gen), r (C, n_gen) with p' = R p + r; pmin', pmax' (C, n_gen). Exact for sets that do
    not island (the same equations as `DCContingencyModel.set_flows`, which they reproduce).
    """
    net, sp = model.network, model.space
    C, k = members.shape
    dt, dev = model.h.dtype, model.h.device
    nb = sp.n_attack_branches
    is_branch = members < nb
    br_pos = torch.as_tensor(sp.branch_pos + (0,), device=dev)[torch.where(is_branch, members, nb)]
    gen_pos = torch.as_tensor(sp.gen_pos + (0,), device=dev)[torch.where(is_branch, len(sp.gen_pos), members - nb)]
    a_gen = torch.zeros(C, net.n_gen, dtype=dt, device=dev).scatter_add_(1, gen_pos, (~is_branch).to(dt))
    keep = 1.0 - a_gen
    R, r = pickup_affine(model.participation, keep, (net.bus.pd_mw + net.bus.gs_mw).sum())
    # Outage correction L = I + H[:, M] (I - H_MM)^-1 E_M^T, with rows M zeroed.
    valid = is_branch.to(dt)
    h_mm = model.h[br_pos[:, :, None], br_pos[:, None, :]] * valid[:, :, None] * valid[:, None, :]
    a = torch.eye(k, dtype=dt, device=dev) - h_mm
    h_cols = model.h[:, br_pos].permute(1, 0, 2) * valid[:, None, :]  # (C, n_branch, k)
    e_m = torch.zeros(C, k, net.n_branch, dtype=dt, device=dev).scatter_(2, br_pos.unsqueeze(-1), valid.unsqueeze(-1))
    sol_m, info = torch.linalg.solve_ex(a, e_m)
    if bool((info != 0).any()):  # I - H_MM singular: the set splits the network (no LODF answer)
        bad = torch.nonzero(info != 0).flatten().tolist()
        raise DataError(f"outage sets {[sp.set_labels(members[i].tolist()) for i in bad[:3]]} split the network: "
                        "the preventive SC-OPF's LODF update has no post-outage flows for them "
                        "(leave them out: gridlearn.scopf.outages.set_splits_network)")
    L = torch.eye(net.n_branch, dtype=dt, device=dev) + h_cols @ sol_m
    out = torch.zeros(C, net.n_branch, dtype=dt, device=dev).scatter_add_(1, br_pos, valid) > 0
    L = torch.where(out.unsqueeze(-1), torch.zeros_like(L), L)
    ptdf_g = model.ptdf[:, net.gen.bus]  # MW of flow per MW injected at each generator
    f_load = model.base_flows(torch.zeros(net.n_gen, dtype=dt, device=dev))
    T = L @ ptdf_g @ R
    t = (L @ (ptdf_g @ r.unsqueeze(-1) + f_load.unsqueeze(-1))).squeeze(-1)
    return T, t, R, r, keep * net.gen.pmin_mw, keep * net.gen.pmax_mw


def _rows(mat: Tensor, vec: Tensor, lo: Tensor, hi: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Inequality rows for lo <= mat p + vec <= hi, skipping infinite bounds."""
    G, h = [], []
    fin_hi, fin_lo = torch.isfinite(hi), torch.isfinite(lo)
    G.append(mat[fin_hi])
    h.append((hi - vec)[fin_hi])
    G.append(-mat[fin_lo])
    h.append((vec - lo)[fin_lo])
    return G, h


def solve_scopf(model: DCContingencyModel, contingencies: Tensor | None = None) -> tuple[Tensor, float]:
    """DC (SC-)OPF dispatch (n_gen,) in MW and its cost in $/h; ``contingencies`` (C, k)
    are outage sets (indices into ``model.space``) secured preventively: the DC-OPF
    (`dcopf.solve_dispatch`) with each set's post-contingency flow and generator-limit rows
    added. Raises InfeasibleError when no dispatch satisfies every constraint."""
    net = model.network
    if contingencies is None or not len(contingencies):
        return solve_dispatch(net)
    T, t, R, r, pmin, pmax = contingency_affine(model, contingencies)
    rate = net.branch.rate_a_mva
    Gs, hs = [], []
    for c in range(T.shape[0]):
        G3, h3 = _rows(T[c], t[c], -rate, rate)
        G4, h4 = _rows(R[c], r[c], pmin[c], pmax[c])
        Gs += G3 + G4
        hs += h3 + h4
    return solve_dispatch(net, (torch.cat(Gs), torch.cat(hs)))


def dispatch_cost(network: Network, pg_mw: Tensor) -> Tensor:
    g = network.gen
    return (g.cost_c2_usd_per_mw2h * pg_mw**2 + g.cost_c1_usd_per_mwh * pg_mw + g.cost_c0_usd_per_h).sum(-1)


def base_dispatch(network: Network, physics: str = "dc") -> Tensor:
    """The insecure base dispatch (n_gen,) MW of ``physics``'s contingency model (DC-OPF for
    "dc", AC-OPF for "ac"; `models.contingency_model` chooses).

    >>> from gridlearn.grid import load_case
    >>> pg = base_dispatch(load_case("case9"))
    >>> [round(v, 2) for v in pg.tolist()], round(float(pg.sum()), 6)   # lossless: generation = 315 MW load
    ([86.56, 134.38, 94.06], 315.0)
    """
    from gridlearn.scopf.outages import ElementSpace

    return contingency_model(network, ElementSpace.of(network, "branches"), physics, None).base_dispatch()


__all__ = ["as_dispatch", "dispatch_series", "contingency_affine", "solve_scopf", "base_dispatch", "dispatch_cost",
           "project_box_sum"]


def project_box_sum(v: Tensor, lo: Tensor, hi: Tensor, total: float) -> Tensor:
    """Euclidean projection of v (n,) onto {lo <= p <= hi, sum p = total}: p = clip(v - tau, lo, hi)
    with tau found by bisection (the sum is continuous and non-increasing in tau).
    Raises DataError when sum lo > total or sum hi < total (the set is empty)."""
    if float(lo.sum()) > total + 1e-9 or float(hi.sum()) < total - 1e-9:
        raise DataError(f"no dispatch within limits meets the load {total:.3f} MW")
    span = float((v - lo).abs().max() + (hi - v).abs().max()) + 1.0
    a, b = -span, span
    for _ in range(100):
        mid = 0.5 * (a + b)
        if float(torch.clamp(v - mid, lo, hi).sum()) > total:
            a = mid
        else:
            b = mid
    return torch.clamp(v - 0.5 * (a + b), lo, hi)
