"""An upper bound on the worst N-k violation by LODF branch-and-bound over the enumeration.

Every k-set is a (k-1)-set S (a "node", indices increasing) plus one later element c (a
"child"). Each node's exact post-outage state is one Woodbury update (flows f^S, outputs
p^S, and the pieces X, Y of the post-outage sensitivities H^S = H + H_{:,S} X, PTDF^S =
PTDF + H_{:,S} Y, X = (I - H_SS)^-1 H_{S,:}, Y = (I - H_SS)^-1 PTDF_{S,:}). From it every
child gets a cheap upper bound on V(S + c) (O(k) per child after O(n k) per node), and
the children whose bound beats the best score so far are scored exactly from the same
node state, best bound first within each block of nodes:
- a branch child by one rank-1 LODF update, f' = f^S + H^S_{:,c} f^S_c / (1 - H^S_cc);
- a generator child (or a dead-end bridge child, below) by its pick-up, f' = f^S +
  PTDF^S C_g (p' - p^S), on the generator buses only.
Both are exact for the DC model (the Woodbury identity of `dc`), cost O(n_branch k) and
O(n_branch n_gen) per child, and each counts as one power flow, like the enumeration's
LODF update. Children whose state this cannot form (the node still islands after the
dead-end substitution, or c becomes a bridge after S that strands no-load buses only) are
scored by `score_sets` at the end, best bound first. When the time or power-flow
allowance runs out first, the largest bound not yet scored is the upper bound and the
result states the gap.

Sets never scored, and never needing a bound. The enumeration does not rank sets that cut
off demand or leave no participating unit. Both properties are monotone: removing more
branches only splits components further (two components with demand stay two or more),
and removing more units leaves fewer. So a node that cuts load, or has no generation,
has only such children (excluded outright), and so has a child c whose own removal cuts
load in the intact network. A child that becomes a bridge after S is classified in one
batch (`classify_islands_batch`). A dead-end bridge (its cut-off side holds no demand,
`DCContingencyModel._dead_ends`) scores as its stranded units' outage with the bridge
kept (the side injects nothing then; the argument of `_dead_end_rows`): so nodes holding
one are updated that way, and such a child is a generator-type child.

The bound. Write V = sum_m relu(|f_m| - r_m) + G (G: the generator-limit terms) and
h_m = relu(r_m - |f^S_m|) the headroom of line m at the node. Adding c moves flow
Delta_m onto each line m; since relu is 1-Lipschitz and each line's gain relu(Delta_m - h_m)
is convex in Delta_m, for any caps |Delta_m| <= A and sum_m |Delta_m| <= D,

    sum_m [relu(|f_m + Delta_m| - r_m) - relu(|f_m| - r_m)] <= knap(A, D)
        = q A - sum_{i < q} h_(i) + relu(min(D - q A, A) - h_(q)),   q = min(floor(D / A), #{h < A})

(h_(i) the headrooms in increasing order: filling the lowest headrooms first is optimal
when every line has the same cap). The caps:
- branch c: Delta_m = L^S_mc f^S_c with L^S_mc = H^S_mc / (1 - H^S_cc) (post-outage LODF).
  |H^S_mc| <= 1 (a DC flow is a potential flow: no line carries more than the MW sent),
  so A = |f^S_c| / |1 - H^S_cc|; and D = |f^S_c| (sum_m |H^S_mc| - |H^S_cc|) / |1 - H^S_cc|
  with the column sum bounded through the Woodbury form:
  sum_m |H^S_mc| <= cs_c + sum_s cs_s |X_sc|, cs = column sums of |H|.
  c's own overload leaves with it (subtracted exactly); G does not change.
- generator g: its output is lost and picked up pro rata (`redispatch`), an injection
  change Delta p (sums to zero) with Delta f = PTDF^S Delta p. A = sum relu(Delta p_bus)
  (no line carries more than the transfer), D = sum_i |Delta p_i| (colsum |PTDF|_i +
  sum_s cs_s |Y_si|). G after the pick-up is computed exactly.
Bounds carry a relative margin of 1e-9 (+1e-6 MW) against rounding.

Cost accounting: C(n, k-1) node updates plus the children scored are power flows; the
child bounds are "screen terms" (arithmetic on the node state), reported apart. Sets
excluded as load-cutting or without generation are counted in ``n_excluded``.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gridlearn.scopf.certificate import Certificate
from gridlearn.scopf.common import members_tensor
from gridlearn.scopf.dc import DCContingencyModel
from gridlearn.scopf.outages import classify_islands_batch

_GAP = 1e-6  # |1 - H^S_cc| below this: c is (nearly) a bridge after S
_NODE_CHUNK = 256
_SCORE_CHUNK = 4096
_PAIR_CHUNK = 4096  # children scored per batched node-state update
_MARGIN_REL, _MARGIN_MW = 1e-9, 1e-6


def _knapsack(h_sorted: Tensor, h_prefix: Tensor, a: Tensor, d: Tensor) -> Tensor:
    """knap(A, D) of the module docstring per (node, child): h_sorted/h_prefix (P, n + 1)
    (ascending headrooms with +inf appended, and their prefix sums from 0), a, d (P, C)."""
    n = h_sorted.shape[1] - 1
    count = torch.searchsorted(h_sorted, a, right=False)  # lines with h < A
    full = torch.floor(d / a.clamp_min(1e-300)).clamp(max=float(n))
    q = torch.minimum(full, count.to(a.dtype)).to(torch.int64)
    gain = q.to(a.dtype) * a - h_prefix.gather(1, q)
    # the next line takes what is left of D, up to its cap A
    left = torch.minimum(d - q.to(a.dtype) * a, a)
    rest = (left - h_sorted.gather(1, q.clamp(max=n))).clamp_min(0.0)
    return torch.where(a > 0, gain + rest, torch.zeros_like(gain))


def _gen_terms(pg: Tensor, pmin: Tensor, pmax: Tensor) -> Tensor:
    return ((pg - pmax).clamp_min(0.0) + (pmin - pg).clamp_min(0.0)).sum(-1)


def _line_terms(flow: Tensor, rate: Tensor) -> Tensor:
    """The branch part of `violation.exact_violation` (same two one-sided excesses)."""
    return ((flow - rate).clamp_min(0.0) + (-flow - rate).clamp_min(0.0)).sum(-1)


@dataclass
class _NodeState:
    """Exact post-outage state of P nodes and the per-child bounds (module docstring)."""

    bound: Tensor  # (P, size); -inf: not a child, or excluded (cuts load / no generation)
    kind: Tensor  # (P, size) int8: 0 excluded, 1 rank-1 branch child, 2 generator-type child, 3 scored later
    flow: Tensor  # (P, n_branch) f^S
    out: Tensor  # (P, n_branch) bool, the branches out at the node (flows held at 0)
    p_s: Tensor  # (P, n_gen)
    a_gen: Tensor  # (P, n_gen) units out at the node (with those stranded by dead-end bridges)
    v_gen: Tensor  # (P,) G at the node
    br_pos: Tensor  # (P, j)
    x: Tensor  # (P, j, n_branch)
    y: Tensor  # (P, j, n_bus)
    h_cc: Tensor  # (P, n_attack_branches)
    n_excluded: int


def _dead_end_table(model: DCContingencyModel) -> tuple[Tensor, Tensor]:
    """(is dead end (n_branch,) bool, stranded units (n_branch, n_gen)) from `_dead_ends`."""
    net = model.network
    dev, dt = model.h.device, model.h.dtype
    is_de = torch.zeros(net.n_branch, dtype=torch.bool, device=dev)
    stranded = torch.zeros(net.n_branch, net.n_gen, dtype=dt, device=dev)
    for b, units in model._dead_ends.items():
        is_de[b] = True
        stranded[b] = torch.as_tensor(units, dtype=dt, device=dev)
    return is_de, stranded


def _cuts_load_alone(model: DCContingencyModel) -> Tensor:
    """(n_attack_branches,) bool: the space's branches whose own removal cuts off demand."""
    sp, net = model.space, model.network
    bridges = [i for i, b in enumerate(sp.branch_pos) if abs(1.0 - float(model.h[b, b])) < _GAP]
    out = torch.zeros(sp.n_attack_branches, dtype=torch.bool, device=model.h.device)
    if bridges:
        mask = np.zeros((len(bridges), net.n_branch), dtype=bool)
        mask[np.arange(len(bridges)), [sp.branch_pos[i] for i in bridges]] = True
        for i, split in zip(bridges, classify_islands_batch(net, mask)):
            out[i] = split.cuts_load
    return out


def _cuts_load(model: DCContingencyModel, sets: list[tuple[int, ...]]) -> np.ndarray:
    """Whether each set (indices into the space) cuts off demand (generators do not matter)."""
    sp, net = model.space, model.network
    nb = sp.n_attack_branches
    mask = np.zeros((len(sets), net.n_branch), dtype=bool)
    for r, s in enumerate(sets):
        mask[r, [sp.branch_pos[m] for m in s if m < nb]] = True
    return np.array([split.cuts_load for split in classify_islands_batch(net, mask)], dtype=bool)


def _node_state(model: DCContingencyModel, pg_mw: Tensor, nodes: Tensor, abs_cs: Tensor, abs_cs_ptdf: Tensor,
                tables: tuple[Tensor, Tensor, Tensor] | None = None) -> _NodeState:
    """`_NodeState` of every node S in ``nodes`` (P, k-1); children at or below max(S) are
    not children (-inf). ``tables``: (`_dead_end_table`, `_cuts_load_alone`), cached by
    the caller."""
    net, sp = model.network, model.space
    P, j = nodes.shape
    nb, size = sp.n_attack_branches, sp.size
    dev, dt = model.h.device, model.h.dtype
    is_de, stranded, cut1 = tables if tables is not None else (*_dead_end_table(model), _cuts_load_alone(model))
    is_br = nodes < nb
    br_pos = torch.as_tensor(sp.branch_pos + (0,), device=dev)[torch.where(is_br, nodes, nb)]
    gen_pos = torch.as_tensor(sp.gen_pos + (0,), device=dev)[torch.where(is_br, len(sp.gen_pos), nodes - nb)]
    a_gen = torch.zeros(P, net.n_gen, dtype=dt, device=dev)
    a_gen.scatter_add_(1, gen_pos, (~is_br).to(dt))  # add: padded slots share index 0
    out = torch.zeros(P, net.n_branch, dtype=dt, device=dev).scatter_add_(1, br_pos, is_br.to(dt)) > 0
    # a dead-end bridge at the node: keep it, its stranded units out (module docstring)
    de = is_br & is_de[br_pos]
    a_gen = (a_gen + torch.einsum("pj,pjg->pg", de.to(dt), stranded[br_pos])).clamp(max=1.0)
    valid = (is_br & ~de).to(dt)
    flow, p_s, pmin_s, pmax_s, singular, no_gen = model._woodbury(pg_mw, br_pos, valid, a_gen)
    flow = torch.where(out, torch.zeros_like(flow), flow)
    rate = net.branch.rate_a_mva
    rated = torch.isfinite(rate)
    over = torch.where(rated, (flow.abs() - rate).clamp_min(0.0), torch.zeros_like(flow))
    v_br = over.sum(-1)
    v_gen = _gen_terms(p_s, pmin_s, pmax_s)
    head = torch.where(rated, (rate - flow.abs()).clamp_min(0.0), torch.full_like(flow, math.inf))
    h_sorted = torch.cat([head.sort(-1).values, torch.full((P, 1), math.inf, dtype=dt, device=dev)], 1)
    h_prefix = torch.cat([torch.zeros(P, 1, dtype=dt, device=dev),
                          torch.nan_to_num(h_sorted[:, :-1], posinf=0.0).cumsum(-1)], 1)
    h = model.h
    eye = torch.eye(j, dtype=dt, device=dev)
    a = eye - h[br_pos[:, :, None], br_pos[:, None, :]] * valid[:, :, None] * valid[:, None, :]
    a = torch.where(singular[:, None, None], eye.expand(P, j, j), a)
    rhs = torch.cat([h[br_pos] * valid[..., None], model.ptdf[br_pos] * valid[..., None]], -1)  # (P, j, nbr + nbus)
    sol = torch.linalg.solve(a, rhs)
    x, y = sol[..., :net.n_branch], sol[..., net.n_branch:]
    w_cs = abs_cs[br_pos] * valid  # (P, j)
    bound = torch.full((P, size), math.inf, dtype=dt, device=dev)
    kind = torch.full((P, size), 3, dtype=torch.int8, device=dev)
    h_cc = torch.zeros(P, nb, dtype=dt, device=dev)
    if nb:
        pos = torch.as_tensor(sp.branch_pos, device=dev)
        h_cc = torch.diagonal(h)[pos] + torch.einsum("pjc,pjc->pc", h.T[br_pos][:, :, pos], x[:, :, pos])
        gap = (1.0 - h_cc).abs()
        f_c = flow[:, pos].abs()
        cs_s = abs_cs[pos] + torch.einsum("pj,pjc->pc", w_cs, x[:, :, pos].abs())
        a_c = f_c / gap.clamp_min(_GAP)
        d_c = f_c * (cs_s - h_cc.abs()).clamp_min(0.0) / gap.clamp_min(_GAP)
        b = v_br[:, None] - over[:, pos] + v_gen[:, None] + _knapsack(h_sorted, h_prefix, a_c, d_c)
        bridge = gap < _GAP
        bound[:, :nb] = torch.where(bridge, torch.full_like(b, math.inf), b)
        de_child = is_de[pos][None, :] & bridge
        kind[:, :nb] = torch.where(bridge, torch.where(de_child, 2, 3), 1).to(torch.int8)
        kind[:, :nb] = torch.where(cut1[None, :] | out[:, pos], 0, kind[:, :nb].to(torch.int64)).to(torch.int8)
    if sp.gen_pos:
        gpos = torch.as_tensor(sp.gen_pos, device=dev)
        ng_a = len(sp.gen_pos)
        a_child = a_gen[:, None, :].repeat(1, ng_a, 1)
        a_child[:, torch.arange(ng_a, device=dev), gpos] = 1.0
        p_c, pmin_c, pmax_c, w_left = model.redispatch(pg_mw, a_child)
        dp = p_c - p_s[:, None, :]  # (P, children, n_gen), onto buses by index (not a dense C_g product)
        dp_bus = dp.new_zeros(P, ng_a, net.n_bus).index_add_(2, net.gen.bus, dp)
        transfer = dp_bus.clamp_min(0.0).sum(-1)
        cs_p = abs_cs_ptdf[None, :] + torch.einsum("pj,pjb->pb", w_cs, y.abs())  # (P, nbus)
        d_g = torch.einsum("pcb,pb->pc", dp_bus.abs(), cs_p)
        bound[:, nb:] = v_br[:, None] + _gen_terms(p_c, pmin_c, pmax_c) + _knapsack(h_sorted, h_prefix, transfer, d_g)
        dead = w_left <= 1e-6 * model.participation.sum()  # no participating unit left
        kind[:, nb:] = torch.where(dead, 0, 2).to(torch.int8)
    kind[singular] = torch.where(kind[singular] == 0, 0, 3).to(torch.int8)
    bound[singular] = math.inf
    node_cut = no_gen | (is_br & cut1[torch.where(is_br, nodes, 0).clamp(max=max(nb - 1, 0))]).any(1)
    # a node still singular after the dead-end substitution: does it cut load? (one batch)
    ask = torch.nonzero(singular & ~node_cut).flatten().tolist()
    if ask:
        cuts = _cuts_load(model, [tuple(nodes[i].tolist()) for i in ask])
        node_cut[torch.as_tensor([i for i, c in zip(ask, cuts) if c], dtype=torch.int64, device=dev)] = True
    kind[node_cut] = 0
    # children that become non-dead-end bridges after S: cut load? (one batch)
    later = torch.arange(size, device=dev)[None, :] > nodes.max(1).values[:, None]
    p_i, c_i = torch.nonzero((kind == 3) & later & ~singular[:, None], as_tuple=True)
    if len(p_i):
        cuts = torch.as_tensor(_cuts_load(model, [tuple(nodes[p].tolist()) + (int(c),)
                                                  for p, c in zip(p_i.tolist(), c_i.tolist())]), device=dev)
        kind[p_i[cuts], c_i[cuts]] = 0
    kind = torch.where(later, kind, torch.zeros_like(kind))
    n_excluded = int((later & (kind == 0)).sum())
    bound = torch.where(kind > 0, bound * (1.0 + _MARGIN_REL) + _MARGIN_MW, torch.full_like(bound, -math.inf))
    return _NodeState(bound=bound, kind=kind, flow=flow, out=out, p_s=p_s, a_gen=a_gen, v_gen=v_gen, br_pos=br_pos,
                      x=x, y=y, h_cc=h_cc, n_excluded=n_excluded)


def _node_bounds(model: DCContingencyModel, pg_mw: Tensor, nodes: Tensor, abs_cs: Tensor, abs_cs_ptdf: Tensor
                 ) -> Tensor:
    """Upper bounds (P, size) on V(S + c) for every node S in ``nodes`` (P, k-1) and every
    element c of the space (-inf: not a child, or a child the enumeration does not score)."""
    return _node_state(model, pg_mw, nodes, abs_cs, abs_cs_ptdf).bound


def _score_children(model: DCContingencyModel, pg_mw: Tensor, st: _NodeState, p_i: Tensor, c_i: Tensor,
                    stranded: Tensor) -> Tensor:
    """Exact V(S + c) for (node, child) pairs of kind 1 or 2 (module docstring), (n,)."""
    net, sp = model.network, model.space
    nb = sp.n_attack_branches
    rate = net.branch.rate_a_mva
    dt = model.h.dtype
    v = torch.empty(len(p_i), dtype=dt, device=model.h.device)
    kind = st.kind[p_i, c_i]
    h_cols = model.h.T  # row m: column m of H
    pos_of = torch.as_tensor(sp.branch_pos, device=model.h.device) if nb else None
    for which in (1, 2):
        idx = torch.nonzero(kind == which).flatten()
        if not len(idx):
            continue
        p, c = p_i[idx], c_i[idx]
        rows = torch.arange(len(idx), device=model.h.device)
        base = st.flow[p]
        zero = st.out[p].clone()
        hs = h_cols[st.br_pos[p]]  # (n, j, n_branch): the columns H_{:,S}
        if which == 1:  # rank-1 LODF update from the node state
            pos = pos_of[c]
            col = h_cols[pos] + torch.einsum("nj,njl->nl", st.x[p, :, pos], hs)  # H^S_{:,c}
            ratio = base[rows, pos] / (1.0 - st.h_cc[p, c])
            flow = base + col * ratio[:, None]
            zero[rows, pos] = True
            v[idx] = _line_terms(torch.where(zero, torch.zeros_like(flow), flow), rate) + st.v_gen[p]
        else:  # the pick-up of the units c takes out, through PTDF^S on the generator buses
            a_child = st.a_gen[p].clone()
            is_b = c < nb
            if bool(is_b.any()):
                bpos = pos_of[c[is_b]]
                a_child[is_b] = (a_child[is_b] + stranded[bpos]).clamp(max=1.0)
                zero[rows[is_b], bpos] = True
            if bool((~is_b).any()):
                gpos = torch.as_tensor(sp.gen_pos, device=model.h.device)[c[~is_b] - nb]
                a_child[rows[~is_b], gpos] = 1.0
            p_c, pmin_c, pmax_c, _ = model.redispatch(pg_mw, a_child)
            dp = p_c - st.p_s[p]  # (n, n_gen)
            gbus = net.gen.bus
            flow = base + dp @ model.ptdf[:, gbus].T + torch.einsum(
                "nj,njl->nl", torch.einsum("njg,ng->nj", st.y[p][:, :, gbus], dp), hs)
            v[idx] = _line_terms(torch.where(zero, torch.zeros_like(flow), flow), rate) + _gen_terms(p_c, pmin_c, pmax_c)
    return v


def certify_bnb(model: DCContingencyModel, pg_mw: Tensor, k: int, best_found_mw: float, *,
                time_limit_s: float = 60.0, max_power_flows: int | None = None,
                probe: int | None = None, keep_scored: bool = False) -> Certificate:
    """Upper bound on max over k-sets of the exact DC violation (module docstring).

    ``best_found_mw``: the search's best exact score, the first incumbent (-inf: none).
    The returned ``detail`` holds ``best_mw`` / ``best_set`` (the best set the
    branch-and-bound scored, indices into the space, when it beats the incumbent),
    ``n_nodes``, ``n_scored``, ``n_bounds`` (screen terms), ``n_excluded`` (sets cutting
    load or without generation: never scored, as in the enumeration), ``n_power_flows``
    (nodes + sets scored), ``n_sets`` = C(n, k) and ``complete`` (every child pruned,
    excluded or scored).

    ``probe``: score only the best ``probe`` children of each block of nodes while visiting
    them; then score best bound first, and once an eighth of what the nodes left of
    ``max_power_flows`` is spent, stop as soon as the sets whose bound is still above the
    incumbent outnumber what is left (status "... the open sets exceed it"). Why: the
    attack's exact-when-cheaper trial should not spend its whole allowance on a run that
    cannot finish. ``keep_scored``: ``detail["scored"]`` lists every set scored as
    (set, violation_mw, status, load_lost_mw) (the attack's table when the trial finishes).

    N-2 on case9 with its ratings at 60 %, from no incumbent: 27 power flows (8 nodes, 19
    sets scored) for the 36 pairs, the 12 pairs that cut load excluded, and the worst pair
    (lines 0 and 6: 315 MW, as `certificate.certify_worst`'s MILP says) proved:

    >>> from gridlearn.grid import load_case
    >>> from gridlearn.scopf import DCContingencyModel, ElementSpace
    >>> net = load_case("case9")
    >>> net = net.with_(rate_a_mva=0.6 * net.branch.rate_a_mva)
    >>> model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
    >>> cert = certify_bnb(model, model.base_dispatch(), 2, float("-inf"))
    >>> cert.claim, round(cert.upper_bound_mw, 6), cert.detail["best_set"], cert.detail["n_excluded"]
    ('certified worst', 315.0, (0, 6), 12)
    >>> cert.detail["n_power_flows"], cert.detail["n_sets"], cert.detail["complete"]
    (27, 36, True)
    """
    t0 = time.perf_counter()
    sp = model.space
    n = sp.size
    n_sets = math.comb(n, k)
    incumbent = best_found_mw if math.isfinite(best_found_mw) else -math.inf
    best_set: tuple[int, ...] | None = None
    cap = max_power_flows if max_power_flows is not None else math.inf
    n_pf = n_bounds = n_scored = n_excluded = n_nodes = 0
    stop_reason = "complete"
    scored: list[tuple[tuple[int, ...], float, str, float]] = []

    def stopped() -> str | None:
        if time.perf_counter() - t0 > time_limit_s:
            return "time limit"
        return "power-flow allowance" if n_pf >= cap else None

    with torch.no_grad():
        pg = pg_mw.detach()
        if k == 1 or math.comb(n - 1, k - 1) >= n_sets:  # as many nodes as sets: score them all
            cand_sets = list(itertools.combinations(range(n), k))
            cand_bound = np.full(len(cand_sets), np.inf)
        else:
            abs_cs = model.h.abs().sum(0)
            abs_cs_ptdf = model.ptdf.abs().sum(0)
            is_de, stranded = _dead_end_table(model)
            tables = (is_de, stranded, _cuts_load_alone(model))
            nodes_total = math.comb(n - 1, k - 1)
            if nodes_total > cap:  # the nodes alone exceed the allowance: no bound can come of it
                return Certificate(math.inf, best_found_mw, "lodf branch-and-bound",
                                   f"power-flow allowance {cap} below the {nodes_total} nodes", time.perf_counter() - t0,
                                   {"n_nodes": 0, "n_sets": n_sets, "n_power_flows": 0, "n_scored": 0,
                                    "complete": False, "best_mw": incumbent, "best_set": None})
            nodes_iter = itertools.combinations(range(n - 1), k - 1)
            keep_nodes, keep_child, keep_bound = [], [], []
            while block := list(itertools.islice(nodes_iter, _NODE_CHUNK)):
                if time.perf_counter() - t0 > time_limit_s:  # nodes not visited carry no bound
                    why = "time limit"
                    return Certificate(math.inf, best_found_mw, "lodf branch-and-bound",
                                       f"{why} reached before every node was bounded", time.perf_counter() - t0,
                                       {"n_nodes": n_nodes, "n_sets": n_sets, "n_power_flows": n_pf,
                                        "n_scored": n_scored, "complete": False, "best_mw": incumbent,
                                        "best_set": best_set})
                nodes = members_tensor(block, model.h.device)
                st = _node_state(model, pg, nodes, abs_cs, abs_cs_ptdf, tables)
                n_nodes += len(block)
                n_pf += len(block)
                n_excluded += st.n_excluded
                n_bounds += int((st.bound > -math.inf).sum())
                # exact children (kinds 1, 2) best bound first, re-pruned as the incumbent rises
                p_i, c_i = torch.nonzero((st.kind == 1) | (st.kind == 2), as_tuple=True)
                b = st.bound[p_i, c_i]
                order = torch.argsort(b, descending=True)
                p_i, c_i, b = p_i[order], c_i[order], b[order]
                pos, step = 0, 16  # small blocks first: the incumbent rises fastest at the best bounds
                # what the allowance leaves after the nodes still to visit; past it, or past
                # the time limit, the children left join the open list with their bounds
                allow = cap - n_pf - (nodes_total - n_nodes)
                if probe is not None:
                    allow = min(allow, probe)
                while pos < len(b) and bool(b[pos] > incumbent) and allow > 0 and stopped() is None:
                    take = slice(pos, pos + int(min(step, allow)))
                    live = b[take] > incumbent
                    pp, cc = p_i[take][live], c_i[take][live]
                    v = _score_children(model, pg, st, pp, cc, stranded)
                    n_pf += len(pp)
                    n_scored += len(pp)
                    allow -= len(pp)
                    if keep_scored:
                        rows = nodes[pp].tolist()
                        scored.extend((tuple(r) + (c,), float(x), "ok", 0.0)
                                      for r, c, x in zip(rows, cc.tolist(), v.tolist()))
                    if len(pp):
                        i = int(torch.argmax(v))
                        if float(v[i]) > incumbent:
                            incumbent = float(v[i])
                            best_set = tuple(int(m) for m in nodes[int(pp[i])].tolist()) + (int(cc[i]),)
                    pos = take.stop
                    step = min(2 * step, _PAIR_CHUNK)
                # the rest (kind 3: no node state for them; others past the allowance) is
                # scored by score_sets at the end, best bound first
                left = torch.zeros_like(st.kind, dtype=torch.bool)
                left[p_i[pos:], c_i[pos:]] = True
                d_p, d_c = torch.nonzero(((st.kind == 3) | left) & (st.bound > incumbent), as_tuple=True)
                keep_nodes.append(nodes[d_p].cpu().numpy())
                keep_child.append(d_c.cpu().numpy())
                keep_bound.append(st.bound[d_p, d_c].cpu().numpy())
            node_arr = np.concatenate(keep_nodes) if keep_nodes else np.zeros((0, k - 1), dtype=np.int64)
            child_arr = np.concatenate(keep_child) if keep_child else np.zeros(0, dtype=np.int64)
            cand_bound = np.concatenate(keep_bound) if keep_bound else np.zeros(0)
            cand_sets = [tuple(r) + (int(c),) for r, c in zip(node_arr.tolist(), child_arr.tolist())]
        order = np.argsort(-cand_bound, kind="stable")
        pos = 0
        judge_at = n_pf + (cap - n_pf) // 8 if probe is not None else math.inf
        while stop_reason == "complete" and pos < len(order):
            if cand_bound[order[pos]] <= incumbent:
                break
            if n_pf >= judge_at and n_pf + int((cand_bound[order[pos:]] > incumbent).sum()) > cap:
                stop_reason = "power-flow allowance (the open sets exceed it)"
                break
            if (why := stopped()) is not None:
                stop_reason = why
                break
            # small blocks first: the incumbent rises fastest at the best bounds
            take = order[pos:pos + int(min(_SCORE_CHUNK, max(64, pos), cap - n_pf))]
            sets = [cand_sets[i] for i in take]
            v, status, lost = model.score_sets(pg, members_tensor(sets, model.h.device))
            if keep_scored:
                scored.extend((tuple(x), float(y), st_, float(z)) for x, y, st_, z in zip(sets, v, status, lost))
            n_pf += len(sets)
            n_scored += len(sets)
            pos += len(take)
            n_excluded += sum(s != "ok" for s in status)
            ok = np.array([s == "ok" for s in status]) & np.isfinite(v)
            if ok.any():
                i = int(np.argmax(np.where(ok, v, -np.inf)))
                if v[i] > incumbent:
                    incumbent, best_set = float(v[i]), tuple(sets[i])
        rest = cand_bound[order[pos:]]
        rest = rest[rest > incumbent]  # the sets still open
        open_bound = float(rest.max()) if len(rest) and stop_reason != "complete" else -math.inf
        if best_set is not None:  # the reported value is `score_sets`'s, as the enumeration's
            v, status, _ = model.score_sets(pg, members_tensor([best_set], model.h.device))
            if status[0] == "ok" and np.isfinite(v[0]):
                incumbent = max(float(v[0]), best_found_mw if math.isfinite(best_found_mw) else -math.inf)
    complete = stop_reason == "complete"
    ub = max(incumbent, open_bound)
    if not math.isfinite(ub) and ub < 0:  # no k-set scores at all (all islanded / no generation)
        ub = best_found_mw
    status = "complete" if complete else f"stopped at the {stop_reason}; {len(rest)} sets open"
    detail = {"best_mw": incumbent, "best_set": best_set, "n_nodes": n_nodes, "n_scored": n_scored,
              "n_bounds": n_bounds, "n_excluded": n_excluded, "n_power_flows": n_pf, "n_sets": n_sets,
              "complete": complete}
    if keep_scored:
        detail["scored"] = scored
    return Certificate(max(ub, best_found_mw), best_found_mw, "lodf branch-and-bound", status,
                       time.perf_counter() - t0, detail)


__all__ = ["certify_bnb"]
