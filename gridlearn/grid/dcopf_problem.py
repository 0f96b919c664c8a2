"""DC-OPF / economic dispatch as a QP in PTDF form (assembly and read-out).

Formulation (per scenario, per period t = 0..T−1; power in per unit on the network base,
x_t = pg_t / base):

    minimise   Σ_t Σ_g  c2_g base² x_tg² + c1_g base x_tg              ($/h, c0 added after)
    subject to Σ_g x_tg = Σ_i d_ti                                      (balance, dual ν_t)
               −rate_l ≤ f_tl ≤ rate_l        for lines with finite rate_a_mva
               angmin_l ≤ θ_f − θ_t ≤ angmax_l for branches with finite angle limits
               pmin_g ≤ x_tg ≤ pmax_g          (x_tg = pmin_g, an equality row, when pmax_g = pmin_g)
               |x_tg − x_(t−1)g| ≤ ramp_g Δt  (t ≥ 1; and t = 0 against p0 when given)

with d = (pd + gs)/base the bus withdrawal (bus shunt conductance consumes gs at 1 pu, as
in MATPOWER's DC model), flows f = PTDF (C_g x − d − P_shift) + P_f,shift and angles
θ = θ_ref + S (C_g x − d − P_shift), where S = [B_red⁻¹ padded with the slack's zero row and
column], PTDF = B_f S (`matrices.ptdf`). Susceptances are b = 1/(x·tap) (MATPOWER makeBdc,
resistance ignored; PowerModels' DC model uses −Im(1/(r + jx)) instead, so its published
DC objectives differ slightly).

Why PTDF form rather than B θ: the QP has n_gen variables per period instead of
n_gen + n_bus, and the same PTDF rows are what a security-constrained OPF stacks per
contingency.

LMPs are the derivative of the optimal cost w.r.t. the demand at each bus. With the
QP's Lagrangian L = f + λᵀ(Gx − h) + νᵀ(Ax − b) (so ∂f*/∂h = −λ, ∂f*/∂b = −ν):

    LMP_ti = −(1/base) [ν_t + Σ_l (λ⁺_tl − λ⁻_tl) PTDF_li + Σ_l (κ⁺_tl − κ⁻_tl) K_li]   ($/MWh)

with λ± the duals of the flow limits, κ± of the angle-difference limits, K = (C_f − C_t) S.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gridlearn.errors import DataError

from gridlearn.grid import matrices
from gridlearn.grid.network import Network


# A generator whose pmax and pmin differ by at most this (MW) is fixed at pmin.
FIXED_MW = 1e-9
# Curvature ($/h per pu², times base) given to a fixed unit's variable (see assemble).
FIXED_CURVATURE = 1.0


@dataclass(frozen=True)
class DCStructure:
    """Load-independent pieces of a network's DC model, and the QP's row layout.

    ptdf: (n_branch, n_bus); angle_map: (n_bus, n_bus) S; k_ang: (n_branch, n_bus) K;
    p_bus_shift, p_f_shift: per unit (n_bus,), (n_branch,); cg: (n_bus, n_gen).
    lim_lines, ang_lines, up_gens, lo_gens, ramp_gens: long index tensors of the elements
    that have finite limits (the only ones given rows). fixed_gens: generators with
    pmax = pmin (within ``FIXED_MW``), held by one equality row per period instead of two
    bound rows: two opposite bounds that meet leave the feasible set no interior, and the
    interior point's bound duals then grow without limit while their difference settles
    (case_RTS_GMLC's three 0-MW units with Pmin = Pmax = 0: the dual residual reached 1e17
    and the solve hit max_iter at the default tol 1e-11).
    """

    ptdf: Tensor
    angle_map: Tensor
    k_ang: Tensor
    p_bus_shift: Tensor
    p_f_shift: Tensor
    cg: Tensor
    ref: int
    lim_lines: Tensor
    ang_lines: Tensor
    up_gens: Tensor
    lo_gens: Tensor
    fixed_gens: Tensor

    @classmethod
    def build(cls, network: Network) -> "DCStructure":
        if network.branch.x_pu.dim() > 1:
            raise ValueError("DC-OPF: batched branch parameters are not supported; pass a shared network")
        _check_one_island(network)
        dc = matrices.dc_matrices(network)
        ref = int(network.ref_buses[0])
        n = network.n_bus
        keep = torch.tensor([i for i in range(n) if i != ref], device=network.device)
        b_red = dc.b_bus[keep[:, None], keep]
        inv = torch.linalg.solve(b_red, torch.eye(n - 1, dtype=b_red.dtype, device=b_red.device))
        s = torch.zeros(n, n, dtype=inv.dtype, device=inv.device)
        s = s.index_put((keep[:, None], keep[None, :]), inv)
        cf, ct = matrices.incidence(network)
        br, gen = network.branch, network.gen

        def finite(t: Tensor) -> Tensor:
            return torch.isfinite(t.detach()).nonzero().flatten()

        is_fixed = (gen.pmax_mw.detach() - gen.pmin_mw.detach()).abs() <= FIXED_MW
        fixed = is_fixed.nonzero().flatten()

        def finite_free(t: Tensor) -> Tensor:
            return (torch.isfinite(t.detach()) & ~is_fixed).nonzero().flatten()

        lim = finite(br.rate_a_mva)
        ang = torch.unique(torch.cat([finite(br.angmin_rad), finite(br.angmax_rad)]))
        return cls(
            ptdf=dc.b_f @ s, angle_map=s, k_ang=(cf - ct) @ s, p_bus_shift=dc.p_bus_shift, p_f_shift=dc.p_f_shift,
            cg=network.gen_incidence(), ref=ref, lim_lines=lim, ang_lines=ang,
            up_gens=finite_free(gen.pmax_mw), lo_gens=finite_free(gen.pmin_mw), fixed_gens=fixed,
        )


def _check_one_island(network: Network) -> None:
    """The PTDF form balances one system at one reference bus: several islands (each with its
    own reference bus, which `check_network` allows) would make B singular."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    f, t = network.branch.from_bus.cpu().numpy(), network.branch.to_bus.cpu().numpy()
    n = network.n_bus
    n_comp, comp = connected_components(coo_matrix((np.ones(len(f)), (f, t)), shape=(n, n)), directed=False)
    if n_comp > 1:
        refs = [network.bus.labels[int(i)] for i in network.ref_buses]
        raise DataError(f"{network.name or 'the network'} has {n_comp} islands (reference buses {refs}); the DC-OPF "
                        "takes one connected network: solve each island as its own Network")


@dataclass(frozen=True)
class DCQP:
    """The assembled QP (QPLayer inputs) and the row counts needed to read duals back.

    Per period the inequality rows are [gen up | gen low | flow up | flow low | angle up |
    angle low], n_per rows; the T·n_per period rows come first, then ramp rows.
    """

    Q: Tensor
    p: Tensor
    G: Tensor
    h: Tensor
    A: Tensor
    b: Tensor
    n_per: int
    withdrawal: Tensor  # (B, T, n_bus) d, per unit
    rows: dict[str, Tensor]  # branch index of each flow/angle row kept: flow_up, flow_lo, ang_up, ang_lo


def assemble(network: Network, st: DCStructure, pd_mw: Tensor, c2: Tensor, c1: Tensor, ramp_mw_per_h: Tensor | None,
             p0_mw: Tensor | None, interval_h: float, screen: bool = True, angle_limits: bool = True,
             extra_rows: tuple[Tensor, Tensor] | None = None) -> DCQP:
    """QP data for pd_mw (B, T, n_bus); c2, c1 (B or 1, n_gen); ramp (n_gen,) or None; p0 (B or 1, n_gen).

    ``screen``: leave out flow/angle limit rows the generator bounds already imply.
    ``angle_limits``: give the finite angle-difference limits rows (the security-constrained
    OPF passes False: its post-contingency states have flows only, so it secures flows only).
    ``extra_rows``: (G (r, T·n_gen), h (B or 1, r)) more rows G x <= h on the per-unit
    dispatch, appended after the ramp rows (the SC-OPF's contingency rows). c2, c1 may be in
    any cost unit: a common factor scales the objective only (x* and the rows unchanged).
    """
    base = network.base_mva
    bsz, periods, _ = pd_mw.shape
    ng = network.n_gen
    dt, dev = pd_mw.dtype, pd_mw.device
    eye = torch.eye(ng, dtype=dt, device=dev)
    gen, br = network.gen, network.branch

    # Objective (Q, p) per period, block-diagonal over the horizon.
    q_diag = (2.0 * c2 * base**2).repeat(1, periods)  # (B|1, T·ng)
    Q = torch.diag_embed(q_diag)
    p = (c1 * base).repeat(1, periods)

    d = (pd_mw + network.bus.gs_mw) / base  # (B, T, n)
    shift = st.p_bus_shift
    ang_lines = st.ang_lines if angle_limits else st.ang_lines[:0]
    # flows f = H x + f0, angle differences a = K_g x + a0
    h_flow = (st.ptdf @ st.cg)[st.lim_lines]
    f0 = (-(d + shift) @ st.ptdf.T + st.p_f_shift)[..., st.lim_lines]
    k_g = (st.k_ang @ st.cg)[ang_lines]
    a0 = (-(d + shift) @ st.k_ang.T)[..., ang_lines]
    rate = br.rate_a_mva[st.lim_lines] / base
    amax = br.angmax_rad[ang_lines]
    amin = br.angmin_rad[ang_lines]
    # An infinite one-sided angle limit becomes a row with a huge bound; keep it finite.
    big = torch.full_like(amax, 1e3)
    amax = torch.where(torch.isfinite(amax), amax, big)
    amin = torch.where(torch.isfinite(amin), amin, -big)

    if screen:
        # Drop a limit row that no dispatch within the generator bounds can reach (in any
        # scenario or period): it is implied by the bounds, so x*, the other duals and
        # every derivative are unchanged, and the QP shrinks (case118: all 372 flow rows).
        lo = gen.pmin_mw.detach() / base
        hi = gen.pmax_mw.detach() / base

        def reach(mat: Tensor, off: Tensor) -> tuple[Tensor, Tensor]:
            """Largest and smallest value of mat·x + off over the box, over all scenarios."""
            m = mat.detach()
            zero = torch.zeros_like(m)
            top = torch.where(m > 0, m * hi, torch.where(m < 0, m * lo, zero)).sum(-1)
            bot = torch.where(m > 0, m * lo, torch.where(m < 0, m * hi, zero)).sum(-1)
            o = off.detach().flatten(0, -2)
            if o.shape[-1] == 0:
                return top, bot
            return (o + top).amax(0), (o + bot).amin(0)

        fmax, fmin = reach(h_flow, f0)
        amx, amn = reach(k_g, a0)
        margin = 1e-9
        f_up = (fmax > rate.detach() * (1 - margin)).nonzero().flatten()
        f_lo = (fmin < -rate.detach() * (1 - margin)).nonzero().flatten()
        a_up = (amx > amax.detach() - margin).nonzero().flatten()
        a_lo = (amn < amin.detach() + margin).nonzero().flatten()
    else:
        f_up = f_lo = torch.arange(len(st.lim_lines), device=dev)
        a_up = a_lo = torch.arange(len(ang_lines), device=dev)
    g_per = torch.cat([eye[st.up_gens], -eye[st.lo_gens], h_flow[f_up], -h_flow[f_lo], k_g[a_up], -k_g[a_lo]], dim=0)
    n_per = g_per.shape[0]
    pmax = (gen.pmax_mw[st.up_gens] / base).expand(bsz, periods, -1)
    pmin = (gen.pmin_mw[st.lo_gens] / base).expand(bsz, periods, -1)
    h_per = torch.cat(
        [pmax, -pmin, (rate - f0)[..., f_up], (rate + f0)[..., f_lo], (amax - a0)[..., a_up], (-amin + a0)[..., a_lo]],
        dim=-1,
    ).expand(bsz, periods, n_per)
    G = torch.block_diag(*([g_per] * periods)) if periods > 1 else g_per
    h = h_per.reshape(bsz, periods * n_per)

    if ramp_mw_per_h is not None:
        rg = torch.isfinite(ramp_mw_per_h.detach()).nonzero().flatten()
        r = ramp_mw_per_h[rg] * interval_h / base
        blocks, rhs = [], []
        for t in range(1, periods):
            diff = torch.zeros(len(rg), periods * ng, dtype=dt, device=dev)
            rows = torch.arange(len(rg), device=dev)
            diff[rows, t * ng + rg] = 1.0
            diff[rows, (t - 1) * ng + rg] = -1.0
            blocks += [diff, -diff]
            rhs += [r.expand(bsz, -1), r.expand(bsz, -1)]
        if p0_mw is not None:
            first = torch.zeros(len(rg), periods * ng, dtype=dt, device=dev)
            first[torch.arange(len(rg)), rg] = 1.0
            x0 = (p0_mw[..., rg] / base).expand(bsz, -1)
            blocks += [first, -first]
            rhs += [r + x0, r - x0]
        if blocks:
            G = torch.cat([G, *blocks], dim=0)
            h = torch.cat([h, *rhs], dim=-1)

    if extra_rows is not None:
        G = torch.cat([G, extra_rows[0].to(dt)], dim=0)
        h = torch.cat([h, extra_rows[1].to(dt).expand(bsz, -1)], dim=-1)

    A = torch.block_diag(*([torch.ones(1, ng, dtype=dt, device=dev)] * periods))
    b = d.sum(-1) + shift.sum()  # (B, T); Σ shift = 0 but keeps the algebra explicit
    n_fix = len(st.fixed_gens)
    if n_fix:  # fixed units: x_tg = pmin_g, rows after the T balance rows (read_out takes the first T duals)
        fix = torch.zeros(periods * n_fix, periods * ng, dtype=dt, device=dev)
        k = torch.arange(n_fix, device=dev)
        for t in range(periods):
            fix[t * n_fix + k, t * ng + st.fixed_gens] = 1.0
        A = torch.cat([A, fix], 0)
        x_fix = (gen.pmin_mw[st.fixed_gens] / base).to(dt).repeat(periods)
        b = torch.cat([b, x_fix.expand(bsz, -1)], -1)
        # + (w/2)(x − pmin)² on each fixed unit: zero, with zero gradient, wherever the
        # equality holds (x*, every dual and derivative unchanged), but it gives the
        # variable curvature, without which an LP's reduced KKT system is singular in it
        # (case_ACTIVSg2000: 117 fixed units, MAX_STEPS without it).
        cols = (torch.arange(periods, device=dev)[:, None] * ng + st.fixed_gens[None, :]).flatten()
        w = FIXED_CURVATURE * base
        Q = Q.clone()
        Q[..., cols, cols] = Q[..., cols, cols] + w
        p = p.expand(max(p.shape[0], Q.shape[0]), -1).clone()  # c1 may be shared while c2 is batched
        p[..., cols] = p[..., cols] - w * x_fix
    rows = {"flow_up": st.lim_lines[f_up], "flow_lo": st.lim_lines[f_lo], "ang_up": ang_lines[a_up],
            "ang_lo": ang_lines[a_lo]}
    if network.pwl_cost is not None:
        Q, p, G, h, A = _add_epigraph(network, periods, Q, p, G, h, A)
    return DCQP(Q=Q, p=p, G=G, h=h, A=A, b=b, n_per=n_per, withdrawal=d, rows=rows)


def _add_epigraph(network: Network, periods: int, Q: Tensor, p: Tensor, G: Tensor, h: Tensor, A: Tensor):
    """Piecewise-linear costs as MATPOWER poses them: a variable y_tj per period and priced
    generator, in the objective, and rows ``slope_k base x_tg - y_tj <= -intercept_k`` per
    segment k (appended after every other inequality row, so the duals' layout is unchanged).

    Why scaled: y is in $/h (thousands) while x is per unit; the interior point stalls on
    that spread (case30pwl: NUMERICAL after 185 steps). With y = s y', s = base * max|slope|,
    the rows read ``(slope_k base / s) x - y' <= -intercept_k / s`` and y' weighs s.
    """
    pwl = network.pwl_cost
    base = network.base_mva
    ng = network.n_gen
    gens = torch.tensor(pwl.generators(), device=G.device)
    var = torch.searchsorted(gens, pwl.gen.to(G.device))
    n_y, n_seg, n_pg = len(gens), pwl.n, periods * ng
    dt, dev = G.dtype, G.device
    q_diag = torch.diagonal(Q, dim1=-2, dim2=-1)
    Q = torch.diag_embed(torch.cat([q_diag, torch.zeros(*q_diag.shape[:-1], periods * n_y, dtype=dt, device=dev)], -1))
    scale = float(base * pwl.slope_usd_per_mwh.detach().abs().max().clamp_min(1e-12))
    p = torch.cat([p, torch.full((p.shape[0], periods * n_y), scale, dtype=dt, device=dev)], -1)
    G = torch.cat([G, torch.zeros(G.shape[0], periods * n_y, dtype=dt, device=dev)], -1)
    A = torch.cat([A, torch.zeros(A.shape[0], periods * n_y, dtype=dt, device=dev)], -1)
    rows = torch.zeros(periods * n_seg, n_pg + periods * n_y, dtype=dt, device=dev)
    k = torch.arange(n_seg, device=dev)
    for t in range(periods):
        rows[t * n_seg + k, t * ng + pwl.gen.to(dev)] = pwl.slope_usd_per_mwh.to(dt) * base / scale
        rows[t * n_seg + k, n_pg + t * n_y + var] = -1.0
    G = torch.cat([G, rows], 0)
    h = torch.cat([h, (-pwl.intercept_usd_per_h.to(dt) / scale).repeat(periods).expand(h.shape[0], -1)], -1)
    return Q, p, G, h, A


def pwl_cost_usd_per_h(network: Network, pg_mw: Tensor) -> Tensor:
    """Σ_g max_k (slope_k pg_g + intercept_k) over the piecewise-linear generators, (…) from pg (…, n_gen)."""
    pwl = network.pwl_cost
    lines = pg_mw[..., pwl.gen] * pwl.slope_usd_per_mwh + pwl.intercept_usd_per_h  # (…, n_seg)
    gens = torch.tensor(pwl.generators(), device=pg_mw.device)
    var = torch.searchsorted(gens, pwl.gen.to(pg_mw.device))
    best = torch.full((*pg_mw.shape[:-1], len(gens)), -torch.inf, dtype=pg_mw.dtype, device=pg_mw.device)
    best = best.scatter_reduce(-1, var.expand_as(lines), lines, reduce="amax")
    return best.sum(-1)


def read_out(network: Network, st: DCStructure, qp: DCQP, x: Tensor, lam: Tensor, nu: Tensor) -> dict[str, Tensor]:
    """Dispatch, flows, angles, LMPs and line capacity values (B, T, ·) from the QP solution."""
    base = network.base_mva
    bsz, periods, _ = qp.withdrawal.shape
    ng = network.n_gen
    xg = x[..., : periods * ng].reshape(bsz, periods, ng)  # epigraph variables (if any) follow the dispatch
    inj = xg @ st.cg.T - qp.withdrawal - st.p_bus_shift
    flow = inj @ st.ptdf.T + st.p_f_shift
    va = network.bus.va0_rad[st.ref] + inj @ st.angle_map.T
    lam_per = lam[:, : periods * qp.n_per].reshape(bsz, periods, qp.n_per)
    r = qp.rows
    sizes = [len(st.up_gens), len(st.lo_gens), len(r["flow_up"]), len(r["flow_lo"]), len(r["ang_up"]), len(r["ang_lo"])]
    _, _, l_fu, l_fl, l_au, l_al = torch.split(lam_per, sizes, dim=-1)
    nu = nu[:, :periods].reshape(bsz, periods)  # the balance rows (fixed-unit rows follow)
    lmp = -(nu[..., None] + l_fu @ st.ptdf[r["flow_up"]] - l_fl @ st.ptdf[r["flow_lo"]]
            + l_au @ st.k_ang[r["ang_up"]] - l_al @ st.k_ang[r["ang_lo"]]) / base
    # Value of 1 MW more capacity on a branch: ∂f*/∂rate = −(λ⁺ + λ⁻), per MW.
    capacity = torch.zeros(bsz, periods, network.n_branch, dtype=x.dtype, device=x.device)
    capacity = capacity.index_add(-1, r["flow_up"], l_fu / base).index_add(-1, r["flow_lo"], l_fl / base)
    return {"pg_mw": xg * base, "p_from_mw": flow * base, "va_rad": va, "lmp_usd_per_mwh": lmp,
            "line_value_usd_per_mwh": capacity}


__all__ = ["DCStructure", "DCQP", "assemble", "read_out", "pwl_cost_usd_per_h"]
