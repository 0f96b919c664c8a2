"""An upper bound on the worst N-k violation by LODF branch-and-bound over the enumeration.

Every k-set is a (k-1)-set S (a "node", indices increasing) plus one later element c (a
"child"). Each node's exact post-outage state is one Woodbury update
(`dc.DCContingencyModel.set_flows`: flows f^S, outputs p^S); from it every child gets a
cheap upper bound on V(S + c) (O(k) per child after O(n k) per node), and only children
whose bound beats the best score so far are scored exactly (`score_sets`), best bound
first. When the next bound is not above the best score, the best is certified; when the
time or power-flow allowance runs out first, the largest bound not yet scored is the
upper bound and the result states the gap.

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
  with the column sum bounded through the Woodbury form H^S = H + H_{:,S} X,
  X = (I - H_SS)^-1 H_{S,:}: sum_m |H^S_mc| <= cs_c + sum_s cs_s |X_sc|, cs = column sums of |H|.
  c's own overload leaves with it (subtracted exactly); G does not change.
- generator g: its output is lost and picked up pro rata (`redispatch`), an injection
  change Delta p (sums to zero) with Delta f = PTDF^S Delta p. A = sum relu(Delta p_bus)
  (no line carries more than the transfer), D = sum_i |Delta p_i| (colsum |PTDF|_i +
  sum_s cs_s |Y_si|), Y = (I - H_SS)^-1 PTDF_{S,:}. G after the pick-up is computed exactly.
Children whose bound cannot be formed (the node islands, c becomes a bridge after S, no
participating unit left) get an infinite bound: they are scored exactly, which handles
islands (`dc` module docstring). Bounds carry a relative margin of 1e-9 (+1e-6 MW)
against rounding.

Cost accounting: C(n, k-1) node updates plus the children scored are power flows; the
child bounds are "screen terms" (arithmetic on the node state), reported apart.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch
from torch import Tensor

from gridlearn.scopf.certificate import Certificate
from gridlearn.scopf.common import members_tensor
from gridlearn.scopf.dc import DCContingencyModel

_GAP = 1e-6  # |1 - H^S_cc| below this: c is (nearly) a bridge after S; scored exactly
_NODE_CHUNK = 256
_SCORE_CHUNK = 4096


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


def _node_bounds(model: DCContingencyModel, pg_mw: Tensor, nodes: Tensor, abs_cs: Tensor, abs_cs_ptdf: Tensor
                 ) -> Tensor:
    """Upper bounds (P, size) on V(S + c) for every node S in ``nodes`` (P, k-1) and every
    element c of the space (children at or below max(S) are -inf: not children)."""
    net, sp = model.network, model.space
    P, j = nodes.shape
    nb, size = sp.n_attack_branches, sp.size
    dev, dt = model.h.device, model.h.dtype
    flow, p_s, pmin_s, pmax_s, singular, no_gen = model.set_flows(pg_mw, nodes)
    rate = net.branch.rate_a_mva
    rated = torch.isfinite(rate)
    over = torch.where(rated, (flow.abs() - rate).clamp_min(0.0), torch.zeros_like(flow))
    v_br = over.sum(-1)
    v_gen = _gen_terms(p_s, pmin_s, pmax_s)
    head = torch.where(rated, (rate - flow.abs()).clamp_min(0.0), torch.full_like(flow, math.inf))
    h_sorted = torch.cat([head.sort(-1).values, torch.full((P, 1), math.inf, dtype=dt, device=dev)], 1)
    h_prefix = torch.cat([torch.zeros(P, 1, dtype=dt, device=dev),
                          torch.nan_to_num(h_sorted[:, :-1], posinf=0.0).cumsum(-1)], 1)
    # Woodbury pieces of the node's branch outages (padding slots for generator members).
    is_br = nodes < nb
    br_pos = torch.as_tensor(sp.branch_pos + (0,), device=dev)[torch.where(is_br, nodes, nb)]
    valid = is_br.to(dt)
    h = model.h
    a = torch.eye(j, dtype=dt, device=dev) - h[br_pos[:, :, None], br_pos[:, None, :]] * valid[:, :, None] * valid[:, None, :]
    a = torch.where(singular[:, None, None], torch.eye(j, dtype=dt, device=dev).expand(P, j, j), a)
    rhs = torch.cat([h[br_pos] * valid[..., None], model.ptdf[br_pos] * valid[..., None]], -1)  # (P, j, nbr + nbus)
    sol = torch.linalg.solve(a, rhs)
    x, y = sol[..., :net.n_branch], sol[..., net.n_branch:]
    w_cs = abs_cs[br_pos] * valid  # (P, j)
    out = torch.full((P, size), math.inf, dtype=dt, device=dev)
    if nb:
        pos = torch.as_tensor(sp.branch_pos, device=dev)
        h_cc = torch.diagonal(h)[pos] + torch.einsum("pjc,pjc->pc", h.T[br_pos][:, :, pos], x[:, :, pos])
        gap = (1.0 - h_cc).abs()
        f_c = flow[:, pos].abs()
        cs_s = abs_cs[pos] + torch.einsum("pj,pjc->pc", w_cs, x[:, :, pos].abs())
        a_c = f_c / gap.clamp_min(_GAP)
        d_c = f_c * (cs_s - h_cc.abs()).clamp_min(0.0) / gap.clamp_min(_GAP)
        b = v_br[:, None] - over[:, pos] + v_gen[:, None] + _knapsack(h_sorted, h_prefix, a_c, d_c)
        out[:, :nb] = torch.where(gap < _GAP, torch.full_like(b, math.inf), b)
    if sp.gen_pos:
        gpos = torch.as_tensor(sp.gen_pos, device=dev)
        ng_a = len(sp.gen_pos)
        a_gen = torch.zeros(P, net.n_gen, dtype=dt, device=dev)
        gen_members = torch.where(is_br, torch.zeros_like(nodes), nodes - nb)
        a_gen.scatter_add_(1, torch.as_tensor(sp.gen_pos, device=dev)[gen_members.clamp(max=ng_a - 1)], (~is_br).to(dt))
        a_child = a_gen[:, None, :].repeat(1, ng_a, 1)
        a_child[:, torch.arange(ng_a, device=dev), gpos] = 1.0
        p_c, pmin_c, pmax_c, w_left = model.redispatch(pg_mw, a_child.clamp(max=1.0))
        dp_bus = torch.einsum("bg,pcg->pcb", net.gen_incidence(), p_c - p_s[:, None, :])
        transfer = dp_bus.clamp_min(0.0).sum(-1)
        cs_p = abs_cs_ptdf[None, :] + torch.einsum("pj,pjb->pb", w_cs, y.abs())  # (P, nbus)
        d_g = torch.einsum("pcb,pb->pc", dp_bus.abs(), cs_p)
        b = v_br[:, None] + _gen_terms(p_c, pmin_c, pmax_c) + _knapsack(h_sorted, h_prefix, transfer, d_g)
        bad = w_left <= 1e-6 * model.participation.sum()
        out[:, nb:] = torch.where(bad, torch.full_like(b, math.inf), b)
    out[singular | no_gen] = math.inf
    out = out * (1.0 + 1e-9) + 1e-6
    # Only later elements are children (each k-set is visited once).
    later = torch.arange(size, device=dev)[None, :] > nodes.max(1).values[:, None]
    return torch.where(later, out, torch.full_like(out, -math.inf))


def certify_bnb(model: DCContingencyModel, pg_mw: Tensor, k: int, best_found_mw: float, *,
                time_limit_s: float = 60.0, max_power_flows: int | None = None) -> Certificate:
    """Upper bound on max over k-sets of the exact DC violation (module docstring).

    ``best_found_mw``: the search's best exact score, the first incumbent. The returned
    ``detail`` holds ``best_mw`` / ``best_set`` (the best set the branch-and-bound scored,
    indices into the space; it may beat the search's), ``n_nodes``, ``n_scored``,
    ``n_bounds`` (screen terms), ``n_power_flows`` (nodes + sets scored), ``n_sets`` = C(n, k)
    and ``complete`` (every child pruned or scored)."""
    t0 = time.perf_counter()
    sp = model.space
    n = sp.size
    n_sets = math.comb(n, k)
    incumbent = best_found_mw if math.isfinite(best_found_mw) else -math.inf
    best_set: tuple[int, ...] | None = None
    cap = max_power_flows if max_power_flows is not None else math.inf
    n_pf = 0
    n_bounds = 0
    out_of_time = False
    with torch.no_grad():
        pg = pg_mw.detach()
        if k == 1 or math.comb(n - 1, k - 1) >= n_sets:  # as many nodes as sets: score them all
            cand_sets = list(itertools.combinations(range(n), k))
            cand_bound = np.full(len(cand_sets), np.inf)
            n_nodes = 0
        else:
            abs_h = model.h.abs()
            abs_cs = abs_h.sum(0)
            abs_cs_ptdf = model.ptdf.abs().sum(0)
            nodes_iter = itertools.combinations(range(n - 1), k - 1)
            keep_nodes, keep_child, keep_bound = [], [], []
            n_nodes = 0
            while block := list(itertools.islice(nodes_iter, _NODE_CHUNK)):
                nodes = members_tensor(block, model.h.device)
                b = _node_bounds(model, pg, nodes, abs_cs, abs_cs_ptdf)
                n_nodes += len(block)
                n_bounds += int((b > -math.inf).sum())
                p_i, c_i = torch.nonzero(b > incumbent, as_tuple=True)
                keep_nodes.append(nodes[p_i].cpu().numpy())
                keep_child.append(c_i.cpu().numpy())
                keep_bound.append(b[p_i, c_i].cpu().numpy())
                if time.perf_counter() - t0 > time_limit_s:
                    out_of_time = True
                    break
            n_pf += n_nodes
            if out_of_time:  # nodes not visited carry no bound: no certificate from this method
                return Certificate(math.inf, best_found_mw, "lodf branch-and-bound",
                                   f"time limit {time_limit_s:g} s before every node was bounded",
                                   time.perf_counter() - t0,
                                   {"n_nodes": n_nodes, "n_sets": n_sets, "n_power_flows": n_pf, "complete": False})
            node_arr = np.concatenate(keep_nodes) if keep_nodes else np.zeros((0, k - 1), dtype=np.int64)
            child_arr = np.concatenate(keep_child) if keep_child else np.zeros(0, dtype=np.int64)
            cand_bound = np.concatenate(keep_bound) if keep_bound else np.zeros(0)
            cand_sets = [tuple(r) + (int(c),) for r, c in zip(node_arr.tolist(), child_arr.tolist())]
        order = np.argsort(-cand_bound, kind="stable")
        n_scored = 0
        pos = 0
        stop_reason = "complete"
        while pos < len(order):
            if cand_bound[order[pos]] <= incumbent:
                break
            if time.perf_counter() - t0 > time_limit_s:
                stop_reason = "time limit"
                break
            if n_pf >= cap:
                stop_reason = "power-flow allowance"
                break
            # small blocks first: the incumbent rises fastest at the best bounds
            take = order[pos:pos + int(min(_SCORE_CHUNK, max(64, pos), cap - n_pf))]
            sets = [cand_sets[i] for i in take]
            v, status, _ = model.score_sets(pg, members_tensor(sets, model.h.device))
            n_pf += len(sets)
            n_scored += len(sets)
            pos += len(take)
            ok = np.array([s == "ok" for s in status]) & np.isfinite(v)
            if ok.any():
                i = int(np.argmax(np.where(ok, v, -np.inf)))
                if v[i] > incumbent:
                    incumbent, best_set = float(v[i]), tuple(sets[i])
        rest = cand_bound[order[pos:]]
        rest = rest[rest > incumbent]  # the sets still open
        open_bound = float(rest.max()) if len(rest) and stop_reason != "complete" else -math.inf
    complete = stop_reason == "complete"
    ub = max(incumbent, open_bound)
    if not math.isfinite(ub) and ub < 0:  # no k-set scores at all (all islanded / no generation)
        ub = best_found_mw
    status = "complete" if complete else f"stopped at the {stop_reason}; {len(rest)} sets open"
    detail = {"best_mw": incumbent, "best_set": best_set, "n_nodes": n_nodes, "n_scored": n_scored,
              "n_bounds": n_bounds, "n_power_flows": n_pf, "n_sets": n_sets, "complete": complete}
    return Certificate(max(ub, best_found_mw), best_found_mw, "lodf branch-and-bound", status,
                       time.perf_counter() - t0, detail)


__all__ = ["certify_bnb"]
