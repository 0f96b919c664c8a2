"""An upper bound on the worst N-k violation: the DC interdiction MILP, solved by HiGHS.

The attacker's problem (Salmeron, Wood & Baldick 2004; Motto, Arroyo & Galiana 2005)
without the operator's redispatch, since here the response to an outage is fixed (AGC
pick-up, `dc.DCContingencyModel`), so it is a single-level MILP:

    max  sum_l (s+_l + s-_l) + sum_g (e+_g + e-_g)                     (= exact violation, MW)
    s.t. sum_e z_e = k,  z binary over the attackable elements
         sum_{l out of i} f_l - sum_{l into i} f_l = sum_{g at i} p'_g - d_i       (balance)
         |f_l - B_l (th_f - th_t) - c_l| <= M_l z_l,  |f_l| <= F_l (1 - z_l)     (attackable l)
         f_l = B_l (th_f - th_t) + c_l                                      (other branches)
         p'_g = p_g + w_g lam - o_g p_g - w_g q_g,   lam W - sum_g w_g q_g = sum_g o_g p_g + P_D - sum_g p_g
         q_g = o_g lam (exact McCormick: o_g is 0/1),  o_g = max(z_g, y_U for U holding g)
         s+_l <= f_l - r_l + (F_l + r_l)(1 - u+_l), s+_l <= (F_l - r_l) u+_l, and - the same
         (u+_l + u-_l <= 1, s >= 0; likewise e for p'_g above (1 - o_g) pmax_g / below (1 - o_g) pmin_g)

B_l = base_mva / (x_l tap_l) MW/rad, c_l the phase-shift flow, d_i = pd_i + gs_i and p' the
pick-up of `dc.DCContingencyModel.redispatch`. Maximising a sum of max(0, .) needs the
binaries u, v: each s is capped at its own term only when its binary is on.

Islands. A set that cuts off demand is infeasible here (the cut-off demand cannot be met),
exactly as the scoring sets it apart. A set that cuts off a part U without demand is
scored with U's units stranded: for every connected set U of demand-free buses whose
boundary delta(U) has at most k attackable branches (and no other), a binary y_U <= z_l
(l in delta(U)) strands U's units when it is on. The demand-free parts are small, so
these U are listed by growing connected sets (at most ``max_islands``).

Big-M values, all valid bounds (so the bound is a true upper bound):
- F_l = sum_i max(d_i, 0) + sum_j |c_j| + |c_l|: a DC flow is a potential flow, so it
  decomposes into source-sink paths with no cycles and no branch carries more than all
  the sources (the shift terms act as extra injections).
- M_l bounds |B_l (th_f - th_t)| when l is out: the angle difference along any surviving
  path is at most F_all * sum_path 1/B_e. k edge-disjoint f-t paths in the network
  without l (a min-cost flow with unit capacities, cost 1/B_e) cannot all be cut by k - 1
  other outages, so M_l = B_l F_all (total cost of those paths); with fewer than k such
  paths, or l on an island boundary, the sum over all branches of 1/B_e instead.
Weak big-Ms make a weak LP relaxation: this is why the MILP closes quickly on small
grids and leaves a gap on large ones (measured in benchmarks/README.md). The gap is
reported, never hidden: `Certificate.claim`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gridlearn.scopf.dc import DCContingencyModel

CERTIFIED_TOL_MW = 1e-4  # bound - best within this: "certified worst"
_MAX_ISLAND_BUSES = 12  # demand-free regions larger than this: islands not listed, no bound


@dataclass(frozen=True)
class Certificate:
    """upper_bound_mw: no k-set of the element space scores above it (inf: no bound).
    best_found_mw: the search's best exact score. status: HiGHS's model status text
    (`certify_worst`) or the branch-and-bound's stop reason (`branch_and_bound.certify_bnb`).

    An incumbent below the true worst is not certified: the gap says by how much.

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.scopf import DCContingencyModel, ElementSpace, certify_bnb
    >>> net = load_case("case9")
    >>> net = net.with_(rate_a_mva=0.6 * net.branch.rate_a_mva)
    >>> model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
    >>> cert = certify_bnb(model, model.base_dispatch(), 1, 30.0)
    >>> cert.certified, cert.claim, round(cert.upper_bound_mw, 2)
    (False, 'best found, gap 8.436 MW', 38.44)
    """

    upper_bound_mw: float
    best_found_mw: float
    method: str
    status: str
    wall_time_s: float
    detail: dict = field(default_factory=dict)

    @property
    def gap_mw(self) -> float:
        return max(self.upper_bound_mw - self.best_found_mw, 0.0)

    @property
    def certified(self) -> bool:
        return self.gap_mw <= CERTIFIED_TOL_MW + 1e-9 * abs(self.best_found_mw)

    @property
    def claim(self) -> str:
        if not math.isfinite(self.upper_bound_mw):
            return f"best found, no bound ({self.status})"
        return "certified worst" if self.certified else f"best found, gap {self.gap_mw:.4g} MW"


def _islands(net, demand: np.ndarray, attack_br: np.ndarray, k: int, max_islands: int) -> list[tuple[frozenset, list[int]]]:
    """Connected sets U of demand-free buses with delta(U) all attackable and |delta(U)| <= k:
    (U, delta(U) branch positions)."""
    f = net.branch.from_bus.cpu().numpy()
    t = net.branch.to_bus.cpu().numpy()
    free = np.abs(demand) <= 1e-9
    nbr: dict[int, list[tuple[int, int]]] = {}
    for l, (a, b) in enumerate(zip(f, t)):
        nbr.setdefault(int(a), []).append((l, int(b)))
        nbr.setdefault(int(b), []).append((l, int(a)))
    seen: set[frozenset] = set()
    out = []
    frontier = [frozenset([int(i)]) for i in np.nonzero(free)[0]]
    while frontier:
        nxt = []
        for u in frontier:
            if u in seen:
                continue
            seen.add(u)
            cut = sorted({l for i in u for l, j in nbr.get(i, []) if j not in u})
            if cut and len(cut) <= k and all(attack_br[c] for c in cut):
                out.append((u, cut))
                if len(out) > max_islands:
                    raise OverflowError
            for i in u:  # grow through demand-free neighbours (the boundary may shrink again)
                for _, j in nbr.get(i, []):
                    if free[j] and j not in u and len(u) < _MAX_ISLAND_BUSES:
                        nxt.append(u | {j})
        frontier = nxt
    return out


def _path_bound(net, inv_b: np.ndarray, l: int, paths: int) -> float | None:
    """Total 1/B cost of ``paths`` edge-disjoint from(l)-to(l) paths avoiding l (None if fewer)."""
    import networkx as nx

    f = net.branch.from_bus.cpu().numpy()
    t = net.branch.to_bus.cpu().numpy()
    g = nx.DiGraph()
    scale = 1e9 / max(inv_b.max(), 1e-30)  # networkx's min-cost flow wants integer weights
    for e, (a, b) in enumerate(zip(f, t)):
        if e == l or a == b:
            continue
        w = int(math.ceil(inv_b[e] * scale))
        for u, v in ((int(a), int(b)), (int(b), int(a))):
            if g.has_edge(u, v):  # parallel branch: keep the cheaper, add capacity
                g[u][v]["capacity"] += 1
                g[u][v]["weight"] = max(g[u][v]["weight"], w)
            else:
                g.add_edge(u, v, capacity=1, weight=w)
    s, d = int(f[l]), int(t[l])
    if s not in g or d not in g:
        return None
    g.nodes[s]["demand"] = -paths
    g.nodes[d]["demand"] = paths
    try:
        cost = nx.min_cost_flow_cost(g, weight="weight", capacity="capacity")
    except nx.NetworkXUnfeasible:
        return None
    return cost / scale


def certify_worst(model: DCContingencyModel, pg_mw: Tensor, k: int, best_found_mw: float, *,
                  time_limit_s: float = 60.0, max_islands: int = 2000) -> Certificate:
    """Upper bound on max over k-sets of the exact DC violation (module docstring), with
    ``best_found_mw`` (the search's best) as the comparison. HiGHS's dual bound is used
    even when it stops at the time limit, so the bound is always valid.

    case9 with its ratings at 60 %: the search's best N-2 set (315 MW) is proved the worst.

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.scopf import DCContingencyModel, ElementSpace
    >>> net = load_case("case9")
    >>> net = net.with_(rate_a_mva=0.6 * net.branch.rate_a_mva)
    >>> model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
    >>> cert = certify_worst(model, model.base_dispatch(), 2, 315.0, time_limit_s=10)
    >>> cert.method, round(cert.upper_bound_mw, 6)
    ('milp', 315.0)
    """
    import highspy
    from scipy.sparse import coo_matrix

    t0 = time.perf_counter()
    net, sp = model.network, model.space
    nb, ng, nbus = net.n_branch, net.n_gen, net.n_bus
    base = float(net.base_mva)
    with torch.no_grad():
        demand = (net.bus.pd_mw + net.bus.gs_mw).detach().cpu().numpy()
        pg = pg_mw.detach().cpu().numpy().astype(float)
        w = model.participation.detach().cpu().numpy().astype(float)
        B = (1.0 / (net.branch.x_pu * net.branch.tap)).detach().cpu().numpy() * base  # MW / rad
        c = -(B * net.branch.shift_rad.detach().cpu().numpy())
        rate = net.branch.rate_a_mva.detach().cpu().numpy()
        pmin = net.gen.pmin_mw.detach().cpu().numpy()
        pmax = net.gen.pmax_mw.detach().cpu().numpy()
    fb, tb = net.branch.from_bus.cpu().numpy(), net.branch.to_bus.cpu().numpy()
    gbus = net.gen.bus.cpu().numpy()
    attack_br = np.zeros(nb, dtype=bool)
    attack_br[list(sp.branch_pos)] = True
    attack_gen = np.zeros(ng, dtype=bool)
    attack_gen[list(sp.gen_pos)] = True
    from gridlearn.scopf.outages import components

    F_all = float(np.clip(demand, 0, None).sum() + np.abs(c).sum())
    W = float(w.sum())

    def flow_bound(why: str) -> Certificate:
        # No branch carries more than F_l, no unit strays further than its mg from its
        # limits: a valid, very loose bound, stated as such, when the MILP cannot be built.
        w_pos = float(w[w > 1e-6 * W].min())
        lam = (pg.clip(min=0).sum() + abs(float(demand.sum() - pg.sum()))) / w_pos
        ub = float(np.where(np.isfinite(rate), np.clip(F_all + 2 * np.abs(c) - rate, 0, None), 0.0).sum()
                   + (pg.clip(min=0) + w * lam + np.abs(pmax) + np.abs(pmin)).sum())
        return Certificate(max(ub, best_found_mw), best_found_mw, "flow bound", f"flow bound only: {why}",
                           time.perf_counter() - t0)

    free = np.abs(demand) <= 1e-9
    sub = components(net, ~(free[fb] & free[tb]))  # components of the demand-free buses' own graph
    if free.any() and np.bincount(sub[free]).max() > _MAX_ISLAND_BUSES:
        return flow_bound(f"a demand-free region has more than {_MAX_ISLAND_BUSES} buses; its islands are not listed")
    try:
        islands = _islands(net, demand, attack_br, k, max_islands)
    except OverflowError:
        return flow_bound(f"more than {max_islands} demand-free islands")
    F = F_all + np.abs(c)
    inv_b = 1.0 / np.abs(B)
    on_boundary = np.zeros(nb, dtype=bool)
    for _, cut in islands:
        on_boundary[cut] = True
    M = np.zeros(nb)
    for l in np.nonzero(attack_br)[0]:
        pb = None if on_boundary[l] else _path_bound(net, inv_b, int(l), k)
        M[l] = abs(B[l]) * F_all * (pb if pb is not None else float(inv_b.sum())) + abs(c[l])
    # lam = lost / remaining weight; lost <= all output, remaining >= W minus the k largest
    # attackable weights and every unit on a demand-free island
    strandable = np.zeros(ng, dtype=bool)
    for u, _ in islands:
        strandable |= np.isin(gbus, list(u))
    # lam = lost / remaining weight. Sets leaving no participating unit are not scored
    # ("no_generation"), so every scored set keeps at least the smallest positive weight.
    w_out = np.sort(w[attack_gen & ~strandable])[::-1][:k].sum() + w[strandable].sum()
    w_floor = W - w_out if W - w_out > 1e-6 * W else float(w[w > 1e-6 * W].min())
    imbalance = float(demand.sum() - pg.sum())
    lam_max = float(max(pg.clip(min=0).sum() + abs(imbalance), 0.0) / w_floor)
    lam_min = -abs(imbalance) / w_floor  # over-generation in the dispatch: the pick-up is negative

    cols: dict[str, tuple[int, int]] = {}
    lo: list[float] = []
    hi: list[float] = []
    integ: list[int] = []
    cost: list[float] = []

    def add(name, n, lb, ub, integer=False, obj=0.0):
        cols[name] = (len(lo), n)
        lo.extend(np.broadcast_to(lb, n).astype(float).tolist())
        hi.extend(np.broadcast_to(ub, n).astype(float).tolist())
        integ.extend([1 if integer else 0] * n)
        cost.extend(np.broadcast_to(obj, n).astype(float).tolist())

    def ix(name, i=0):
        return cols[name][0] + i

    ne = sp.size
    add("z", ne, 0, 1, True)
    add("y", len(islands), 0, 1, True)
    add("o", ng, 0, np.where(attack_gen | strandable, 1.0, 0.0))
    add("lam", 1, lam_min, lam_max)
    add("q", ng, lam_min, lam_max)
    add("p", ng, -np.inf, np.inf)
    add("th", nbus, -np.inf, np.inf)
    add("f", nb, -F, F)
    rated = np.isfinite(rate) & (F > rate)
    add("sp", nb, 0, np.where(rated, F - rate, 0.0), obj=1.0)
    add("sm", nb, 0, np.where(rated, F - rate, 0.0), obj=1.0)
    add("up", nb, 0, np.where(rated, 1.0, 0.0), True)
    add("um", nb, 0, np.where(rated, 1.0, 0.0), True)
    mg = pg.clip(min=0) + w * lam_max + np.abs(pmax) + np.abs(pmin) + 1.0
    add("ep", ng, 0, mg, obj=1.0)
    add("em", ng, 0, mg, obj=1.0)
    add("vp", ng, 0, 1, True)
    add("vm", ng, 0, 1, True)

    rows: list[tuple[list[int], list[float], float, float]] = []

    def row(idx, val, rlo, rhi):
        rows.append((list(idx), list(val), float(rlo), float(rhi)))

    inf = np.inf
    row([ix("z", e) for e in range(ne)], [1.0] * ne, k, k)
    zbr = {p: ix("z", i) for i, p in enumerate(sp.branch_pos)}
    zgen = {p: ix("z", len(sp.branch_pos) + i) for i, p in enumerate(sp.gen_pos)}
    for j, (u, cut) in enumerate(islands):
        for l in cut:
            row([ix("y", j), zbr[l]], [1.0, -1.0], -inf, 0.0)  # y_U <= z_l
    for g in range(ng):
        owners = [j for j, (u, _) in enumerate(islands) if gbus[g] in u]
        srcs = ([zgen[g]] if g in zgen else []) + [ix("y", j) for j in owners]
        for s_ in srcs:
            row([ix("o", g), s_], [1.0, -1.0], 0.0, inf)  # o_g >= each source
        row([ix("o", g)] + srcs, [1.0] + [-1.0] * len(srcs), -inf, 0.0)  # o_g <= their sum
        # q_g = o_g lam (McCormick on [lam_min, lam_max], exact for binary o_g)
        row([ix("q", g), ix("o", g)], [1.0, -lam_max], -inf, 0.0)
        row([ix("q", g), ix("o", g)], [1.0, -lam_min], 0.0, inf)
        row([ix("q", g), ix("lam"), ix("o", g)], [1.0, -1.0, -lam_min], -inf, -lam_min)
        row([ix("q", g), ix("lam"), ix("o", g)], [1.0, -1.0, -lam_max], -lam_max, inf)
        # p'_g = p_g + w_g lam - o_g p_g - w_g q_g
        row([ix("p", g), ix("lam"), ix("o", g), ix("q", g)], [1.0, -w[g], pg[g], w[g]], pg[g], pg[g])
        # limit excess: e+ <= p' - (1 - o) pmax when v+ is on, e- <= (1 - o) pmin - p' when v- is on
        row([ix("ep", g), ix("p", g), ix("o", g), ix("vp", g)], [1.0, -1.0, -pmax[g], mg[g] + pmax[g]],
            -inf, mg[g] + pmax[g] - pmax[g])
        row([ix("ep", g), ix("vp", g)], [1.0, -mg[g]], -inf, 0.0)
        row([ix("em", g), ix("p", g), ix("o", g), ix("vm", g)], [1.0, 1.0, pmin[g], 2 * mg[g] + abs(pmin[g])],
            -inf, pmin[g] + 2 * mg[g] + abs(pmin[g]))
        row([ix("em", g), ix("vm", g)], [1.0, -mg[g]], -inf, 0.0)
    # scored sets keep a participating unit (see w_floor)
    row([ix("o", g) for g in range(ng)], w.tolist(), -inf, W - w_floor)
    # pick-up: lam W - sum w_g q_g - sum p_g o_g = P_D - sum p_g
    row([ix("lam")] + [ix("q", g) for g in range(ng)] + [ix("o", g) for g in range(ng)],
        [W] + (-w).tolist() + (-pg).tolist(), float(demand.sum() - pg.sum()), float(demand.sum() - pg.sum()))
    # balance per bus
    bal: dict[int, tuple[list[int], list[float]]] = {i: ([], []) for i in range(nbus)}
    for l in range(nb):
        bal[int(fb[l])][0].append(ix("f", l)), bal[int(fb[l])][1].append(1.0)
        bal[int(tb[l])][0].append(ix("f", l)), bal[int(tb[l])][1].append(-1.0)
    for g in range(ng):
        bal[int(gbus[g])][0].append(ix("p", g)), bal[int(gbus[g])][1].append(-1.0)
    for i in range(nbus):
        row(bal[i][0], bal[i][1], -demand[i], -demand[i])
    row([ix("th", model.slack)], [1.0], 0.0, 0.0)
    for l in range(nb):
        kvl = ([ix("f", l), ix("th", int(fb[l])), ix("th", int(tb[l]))], [1.0, -B[l], B[l]])
        if not attack_br[l]:
            row(*kvl, c[l], c[l])
            continue
        zl = zbr[l]
        row(kvl[0] + [zl], kvl[1] + [-M[l]], -inf, c[l])
        row(kvl[0] + [zl], kvl[1] + [M[l]], c[l], inf)
        row([ix("f", l), zl], [1.0, F[l]], -inf, F[l])
        row([ix("f", l), zl], [1.0, -F[l]], -F[l], inf)
    for l in np.nonzero(rated)[0]:
        big = F[l] + rate[l]
        row([ix("sp", l), ix("f", l), ix("up", l)], [1.0, -1.0, big], -inf, big - rate[l])
        row([ix("sm", l), ix("f", l), ix("um", l)], [1.0, 1.0, big], -inf, big - rate[l])
        row([ix("sp", l), ix("up", l)], [1.0, -(F[l] - rate[l])], -inf, 0.0)
        row([ix("sm", l), ix("um", l)], [1.0, -(F[l] - rate[l])], -inf, 0.0)
        row([ix("up", l), ix("um", l)], [1.0, 1.0], -inf, 1.0)

    n_col = len(lo)
    r_i = np.concatenate([[r] * len(idx) for r, (idx, _, _, _) in enumerate(rows)]).astype(np.int64)
    c_i = np.concatenate([idx for idx, _, _, _ in rows]).astype(np.int64)
    vals = np.concatenate([val for _, val, _, _ in rows]).astype(float)
    a = coo_matrix((vals, (r_i, c_i)), shape=(len(rows), n_col)).tocsc()
    a.sum_duplicates()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_col, len(rows)
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = np.array(cost), np.array(lo), np.array(hi)
    lp.row_lower_ = np.array([r[2] for r in rows])
    lp.row_upper_ = np.array([r[3] for r in rows])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = a.indptr, a.indices, a.data
    lp.integrality_ = [highspy.HighsVarType.kInteger if v else highspy.HighsVarType.kContinuous for v in integ]
    lp.sense_ = highspy.ObjSense.kMaximize
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("time_limit", float(max(time_limit_s - (time.perf_counter() - t0), 1.0)))
    h.setOptionValue("mip_rel_gap", 1e-7)
    h.passModel(lp)
    h.run()
    info = h.getInfo()
    status = h.modelStatusToString(h.getModelStatus())
    ub = float(info.mip_dual_bound)
    if status == "Infeasible":  # no k-set keeps the demand supplied: nothing to score
        ub = -math.inf
    if not math.isfinite(ub) and ub != -math.inf:  # stopped before any dual bound: the flow bound stands in
        return flow_bound(f"the MILP gave no bound within {time_limit_s:g} s ({status})")
    primal = float(info.objective_function_value) if info.mip_node_count >= 0 else float("nan")
    detail = {"n_binaries": int(sum(integ)), "n_rows": len(rows), "n_islands": len(islands),
              "mip_nodes": int(info.mip_node_count), "milp_best_mw": primal}
    return Certificate(max(ub, best_found_mw) if ub != -math.inf else best_found_mw, best_found_mw, "milp",
                       status, time.perf_counter() - t0, detail)


__all__ = ["Certificate", "certify_worst", "CERTIFIED_TOL_MW"]
