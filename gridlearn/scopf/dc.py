"""Post-contingency DC physics: continuous (differentiable in alpha) and exact discrete (LODF).

Generator response. A generator's output and limits scale with 1 - a_g (a_g = 1: out).
The power no longer produced, plus any base imbalance, is picked up by the remaining
generators in proportion to participation factors w (default pmax), as AGC would:

    p'_g = (1 - a_g) p_g + w~_g (P_D - sum_j (1 - a_j) p_j),   w~_g = w_g (1 - a_g) / sum_j w_j (1 - a_j)

with P_D = sum_i (pd_i + gs_i) the DC load (MATPOWER's DC power flow charges bus shunt
conductance at V = 1 p.u. as load); the rule lives in `pickup`, shared with the SC-OPF
and the AC model.

The contingency-model interface (shared with `ac.ACContingencyModel`; the attack and the
enumeration call only this): ``build(network, space, participation)``,
``violation(pg, alpha, temperature=None, floor=...)`` (smooth or exact, differentiable in
alpha) and ``score_sets(pg, members)`` (exact scores of discrete sets, with status and
load lost), plus ``score_batch`` (sets per ``score_sets`` call that keeps memory modest).

Continuous flows (`DCContingencyModel.flows`). Branch susceptances scale by
s_l = max(1 - a_l, floor) and the DC power flow B(s) theta = P(p') is solved on the
non-reference buses (MATPOWER makeBdc/dcpf), F = B_f(s) theta + p_f_shift. torch
autograd differentiates it (the solve's backward is B^-T; no iteration involved).

Exact discrete flows (`DCContingencyModel.score_sets`). For an outage set M of branches
(Woodbury identity; Guler, Gross & Liu 2007, "Generalized line outage distribution
factors"): with H = PTDF A^T (n_branch x n_branch; H_lm = flow on l per MW sent from
from(m) to to(m)),

    x = (I - H_MM)^-1 f_M,   f'_l = f_l + sum_{m in M} H_lm x_m   (l not in M),   f'_M = 0,

where f are the pre-outage flows *after* generator redispatch, f = f_base + PTDF C_g (p' - p).
It is exact for the DC model as long as I - H_MM is invertible, which fails exactly when
removing M islands buses; such sets are flagged by a rank test and classified by the graph
(`outages.classify_islands`). A set that cuts off demand is reported with the load lost
and never scored. A set that cuts off only generators (or empty buses) is scored: the
stranded units' output is lost and picked up pro rata (the AGC rule above) by the units
of the main island, whose DC power flow is solved directly (`_split_state`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from gridlearn.errors import DataError
from gridlearn.grid import matrices
from gridlearn.grid.network import Network
from gridlearn.scopf.dcopf import solve_dispatch
from gridlearn.scopf.outages import ElementSpace, IslandSplit, classify_islands, classify_islands_batch
from gridlearn.scopf.pickup import picked_up
from gridlearn.scopf.violation import exact_violation, smooth_violation

# Status of one scored outage set (strings: they go straight into tables).
OK, ISLANDED, NO_GENERATION, NOT_CONVERGED = "ok", "islanded", "no_generation", "not_converged"
# I - H_MM with its smallest singular value below this is treated as singular (islanding).
_ISLAND_SV = 1e-8


def default_participation(network: Network) -> Tensor:
    w = network.gen.pmax_mw.detach().clone()
    if not bool(torch.isfinite(w).all()):
        bad = network.gen.labels[int(torch.nonzero(~torch.isfinite(w))[0])]
        raise DataError(f"generator {bad} has an infinite pmax, so it cannot set the default participation factor; pass participation=")
    return w.clamp_min(0.0)


@dataclass(frozen=True)
class DCContingencyModel:
    """DC post-contingency physics for one network and element space; dispatch is an argument.

    On case9, line 7 carries no flow once it is out, and the generation is unchanged (a
    branch outage needs no pick-up):

    >>> import torch
    >>> from gridlearn.grid import load_case
    >>> net = load_case("case9")
    >>> model = DCContingencyModel.build(net, ElementSpace.of(net, "branches"))
    >>> pg = model.base_dispatch()
    >>> flow, p_post = model.set_flows(pg, torch.tensor([[7]]))[:2]
    >>> float(flow[0, 7]), torch.allclose(p_post[0], pg), round(float(model.base_flows(pg)[0]), 4)
    (0.0, True, 86.5645)
    """

    network: Network
    space: ElementSpace
    participation: Tensor  # (n_gen,), >= 0
    ptdf: Tensor  # (n_branch, n_bus), slack column zero
    h: Tensor  # (n_branch, n_branch), PTDF A^T
    slack: int
    score_batch = 8192  # sets per score_sets call: (sets, n_branch) flows, cheap
    certifiable = True  # its violation has an LODF upper bound (branch_and_bound, certificate)
    securable = True  # post-outage flows are affine in the dispatch: the preventive SC-OPF is one QP (defend)

    @classmethod
    def build(cls, network: Network, space: ElementSpace, participation: Tensor | None = None) -> "DCContingencyModel":
        w = default_participation(network) if participation is None else torch.as_tensor(
            participation, dtype=network.dtype, device=network.device)
        if w.shape != (network.n_gen,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise DataError(f"participation must be finite, >= 0, of shape ({network.n_gen},); got {tuple(w.shape)}")
        if float(w.sum()) <= 0:
            raise DataError("participation factors sum to zero: no generator can pick up lost power")
        slack = int(network.ref_buses[0])
        ptdf = matrices.ptdf(network, slack=slack)
        cf, ct = matrices.incidence(network)
        h = ptdf @ (cf - ct).T
        return cls(network=network, space=space, participation=w, ptdf=ptdf, h=h, slack=slack)

    def base_dispatch(self) -> Tensor:
        """The insecure base dispatch (n_gen,) MW: the DC-OPF (`dcopf.solve_dispatch`)."""
        return solve_dispatch(self.network)[0]

    # ------------------------------------------------------------------ generators
    def redispatch(self, pg_mw: Tensor, a_gen: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(p', pmin', pmax', remaining participation sum) for generator outages a_gen (..., n_gen)."""
        g = self.network.gen
        keep = 1.0 - a_gen
        load = (self.network.bus.pd_mw + self.network.bus.gs_mw).sum()
        pg_post, w_sum = picked_up(self.participation, pg_mw, keep, load)
        return pg_post, keep * g.pmin_mw, keep * g.pmax_mw, w_sum

    def _injection_pu(self, pg_mw: Tensor, p_bus_shift: Tensor) -> Tensor:
        net = self.network
        p_mw = torch.einsum("bg,...g->...b", net.gen_incidence(), pg_mw) - net.bus.pd_mw - net.bus.gs_mw
        return p_mw / net.base_mva - p_bus_shift

    # ------------------------------------------------------------------ continuous
    def flows(self, pg_mw: Tensor, alpha: Tensor, floor: float = 1e-4) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Post-contingency (flow_mw (B, n_branch), p' (B, n_gen), pmin', pmax') for alpha (B, size).

        ``floor`` keeps B(s) invertible when a bridge is fully removed (the flow on a
        bridge does not depend on its susceptance, so the floor changes no other flow);
        pass 0 for exact indicator outages that do not island.
        """
        a_br, a_gen = self.space.split(alpha)
        scale = (1.0 - a_br).clamp_min(floor) if floor > 0 else 1.0 - a_br
        pg_post, pmin, pmax, _ = self.redispatch(pg_mw, a_gen)
        net = self.network
        n, f, t = net.n_bus, net.branch.from_bus, net.branch.to_bus
        # B(s) = A^T diag(b s) A assembled by scatter-add (as matrices.dc_matrices, which
        # forms it by dense einsum: 10x slower forward and backward for a batch of restarts).
        b = matrices.dc_susceptance(net, scale)  # (B, n_branch)
        shift_f = -b * net.branch.shift_rad  # p_f_shift (B, n_branch)
        flat = torch.cat([f * n + f, t * n + t, f * n + t, t * n + f])
        vals = torch.cat([b, b, -b, -b], dim=-1)
        b_bus = b.new_zeros(*b.shape[:-1], n * n).index_add(-1, flat, vals).reshape(*b.shape[:-1], n, n)
        p_bus_shift = b.new_zeros(*b.shape[:-1], n).index_add(-1, f, shift_f).index_add(-1, t, -shift_f)
        p = self._injection_pu(pg_post, p_bus_shift)
        keep = self._nonslack
        b_red = b_bus[..., keep[:, None], keep]
        theta_red = torch.linalg.solve(b_red, p[..., keep].unsqueeze(-1)).squeeze(-1)
        theta = p.new_zeros(*theta_red.shape[:-1], n).index_copy(-1, keep, theta_red)
        flow = (b * (theta[..., f] - theta[..., t]) + shift_f) * net.base_mva
        return flow, pg_post, pmin, pmax

    @property
    def _nonslack(self) -> Tensor:
        return torch.tensor([i for i in range(self.network.n_bus) if i != self.slack], device=self.h.device)

    def violation(self, pg_mw: Tensor, alpha: Tensor, temperature: float | None = None, floor: float = 1e-4) -> Tensor:
        """Total overload (B,) in MW; smooth at ``temperature`` (MW) when given, exact otherwise."""
        flow, pg, pmin, pmax = self.flows(pg_mw, alpha, floor=floor)
        rate = self.network.branch.rate_a_mva
        if temperature is None:
            return exact_violation(flow, rate, pg, pmin, pmax)
        return smooth_violation(flow, rate, pg, pmin, pmax, temperature)

    # ------------------------------------------------------------------ exact discrete
    def base_flows(self, pg_mw: Tensor) -> Tensor:
        """Intact-network flows (n_branch,) in MW at dispatch pg (n_gen,)."""
        dc = matrices.dc_matrices(self.network)
        p = self._injection_pu(pg_mw, dc.p_bus_shift)
        return (self.ptdf @ p + dc.p_f_shift) * self.network.base_mva

    def set_flows(self, pg_mw: Tensor, members: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Exact post-contingency state of outage sets ``members`` (C, k) (indices into the space).

        Returns flow_mw (C, n_branch), p' (C, n_gen), pmin', pmax', singular (C,) bool
        (I - H_MM rank-deficient: islanding) and no_gen (C,) bool (no participating
        generator left). Rows flagged singular hold pre-outage flows.
        """
        net, sp = self.network, self.space
        C, k = members.shape
        nb = sp.n_attack_branches
        dev, dt = self.h.device, self.h.dtype
        is_branch = members < nb
        br_pos = torch.as_tensor(sp.branch_pos + (0,), device=dev)[torch.where(is_branch, members, nb)]
        gen_pos = torch.as_tensor(sp.gen_pos + (0,), device=dev)[torch.where(is_branch, len(sp.gen_pos), members - nb)]
        a_gen = torch.zeros(C, net.n_gen, dtype=dt, device=dev)
        a_gen.scatter_add_(1, gen_pos, (~is_branch).to(dt))  # add: padded slots share index 0
        return self._woodbury(pg_mw, br_pos, is_branch.to(dt), a_gen)

    def _woodbury(self, pg_mw: Tensor, br_pos: Tensor, valid: Tensor, a_gen: Tensor):
        """`set_flows` for branch positions br_pos (C, k) (Network order; slots with valid 0
        are padding) and generator outage indicators a_gen (C, n_gen)."""
        net = self.network
        C, k = br_pos.shape
        dev, dt = self.h.device, self.h.dtype
        pg_post, pmin, pmax, w_left = self.redispatch(pg_mw, a_gen)
        f0 = self.base_flows(pg_mw) + (pg_post - pg_mw) @ self.ptdf[:, net.gen.bus].T
        h_mm = self.h[br_pos[:, :, None], br_pos[:, None, :]] * valid[:, :, None] * valid[:, None, :]
        a = torch.eye(k, dtype=dt, device=dev) - h_mm
        singular = torch.linalg.svdvals(a)[:, -1] < _ISLAND_SV
        a = torch.where(singular[:, None, None], torch.eye(k, dtype=dt, device=dev).expand(C, k, k), a)
        f_m = f0.gather(1, br_pos) * valid * (~singular)[:, None].to(dt)
        x = torch.linalg.solve(a, f_m.unsqueeze(-1)).squeeze(-1)
        h_cols = self.h.T[br_pos]  # (C, k, n_branch)
        flow = f0 + (x.unsqueeze(-1) * h_cols).sum(1)
        out = torch.zeros_like(flow).scatter_add_(1, br_pos, valid) > 0  # add: padded slots share index 0
        flow = torch.where(out & ~singular[:, None], torch.zeros_like(flow), flow)
        # "No generation" also when only zero-capacity units (synchronous condensers) remain.
        return flow, pg_post, pmin, pmax, singular, w_left <= 1e-6 * self.participation.sum()

    def score_sets(self, pg_mw: Tensor, members: Tensor) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Exact scores of outage sets (C, k): (violation_mw (C,), status per set, load_lost_mw (C,)).

        Sets that cut off demand ("islanded") and no-generation sets get violation NaN
        (never a score) and their status; islanded ones carry the load that loses supply.
        Sets that cut off only generators are scored with their pick-up (`split_violation`).
        """
        flow, pg, pmin, pmax, singular, no_gen = self.set_flows(pg_mw, members)
        v = exact_violation(flow, self.network.branch.rate_a_mva, pg, pmin, pmax).detach().cpu().numpy().copy()
        status = [OK] * len(v)
        lost = np.zeros(len(v))
        nb = self.space.n_attack_branches
        slow = self._dead_end_rows(pg_mw, members, singular & ~no_gen, v)
        rows = sorted(set(torch.nonzero(no_gen).flatten().tolist()) | slow)
        br_out = np.zeros((len(rows), self.network.n_branch), dtype=bool)
        gen_out = np.zeros((len(rows), self.network.n_gen), dtype=bool)
        for r, i in enumerate(rows):
            row = members[i].tolist()
            br_out[r, [self.space.branch_pos[m] for m in row if m < nb]] = True
            gen_out[r, [self.space.gen_pos[m - nb] for m in row if m >= nb]] = True
        splits = classify_islands_batch(self.network, br_out, gen_out) if rows else []
        for i, split, br, gn in zip(rows, splits, br_out, gen_out):
            if bool(no_gen[i]):
                status[i], v[i] = NO_GENERATION, np.nan
            elif split.cuts_load:
                status[i], v[i], lost[i] = ISLANDED, np.nan, split.load_lost_mw
            else:  # connected (rank test too strict), or only generators / empty buses cut off
                vi = self.split_violation(pg_mw, br, gn, split)
                status[i], v[i] = (NO_GENERATION, np.nan) if vi is None else (OK, vi)
        return v, status, lost

    @cached_property
    def _dead_ends(self) -> dict[int, np.ndarray]:
        """Bridges of the intact network whose cut-off side holds no demand: branch
        position -> the units stranded there (bool (n_gen,))."""
        out = {}
        net = self.network
        for b in torch.nonzero((1.0 - torch.diagonal(self.h)).abs() < 1e-6).flatten().tolist():
            mask = np.zeros(net.n_branch, dtype=bool)
            mask[b] = True
            split = classify_islands(net, mask)
            if split.islanded and not split.cuts_load:
                out[b] = split.stranded_gen
        return out

    def _dead_end_rows(self, pg_mw: Tensor, members: Tensor, rows: Tensor, v: np.ndarray) -> set[int]:
        """Score the rows (bool (C,)) whose islanding comes from dead-end bridges, in place
        in ``v``; return the rows left for the slow path. Why exact: the side a dead-end
        bridge cuts off has no demand, so once its units are out (stranded, their output
        picked up) it injects nothing and, hanging off the grid by that bridge alone,
        carries no flow; the set then scores as the same set with the bridge kept in
        service and those units out, which the Woodbury update handles in one batch."""
        idx = torch.nonzero(rows).flatten()
        if not len(idx) or not self._dead_ends:
            return set(idx.tolist())
        sp, net = self.space, self.network
        nb = sp.n_attack_branches
        dev, dt = self.h.device, self.h.dtype
        sub = members[idx]
        is_branch = sub < nb
        br_pos = torch.as_tensor(sp.branch_pos + (0,), device=dev)[torch.where(is_branch, sub, nb)]
        gen_pos = torch.as_tensor(sp.gen_pos + (0,), device=dev)[torch.where(is_branch, len(sp.gen_pos), sub - nb)]
        a_gen = torch.zeros(len(idx), net.n_gen, dtype=dt, device=dev)
        a_gen.scatter_add_(1, gen_pos, (~is_branch).to(dt))
        valid = is_branch.to(dt)
        touched = torch.zeros(len(idx), dtype=torch.bool, device=dev)
        for b, stranded in self._dead_ends.items():
            hit = (br_pos == b) & is_branch
            rows_b = hit.any(1)
            if bool(rows_b.any()):
                valid = valid.masked_fill(hit, 0.0)
                a_gen[rows_b] += torch.as_tensor(stranded, dtype=dt, device=dev)
                touched |= rows_b
        a_gen = a_gen.clamp(max=1.0)
        flow, pg, pmin, pmax, singular, no_gen = self._woodbury(pg_mw, br_pos, valid, a_gen)
        done = touched & ~singular & ~no_gen
        vals = exact_violation(flow, net.branch.rate_a_mva, pg, pmin, pmax).detach().cpu().numpy()
        d = done.cpu().numpy()
        v[idx.cpu().numpy()[d]] = vals[d]
        return set(idx[~done].tolist())

    def split_violation(self, pg_mw: Tensor, branch_out: np.ndarray, gen_out: np.ndarray,
                        split: IslandSplit) -> float | None:
        """Exact violation (MW) when ``branch_out`` / ``gen_out`` (bool masks in Network
        order) fail and ``split`` is their island classification without cut-off demand:
        stranded units go out with the outaged ones, the rest pick up their output pro rata
        (`redispatch`), and B theta = P is solved on the main island alone (its first bus
        is the angle reference when the slack bus was cut off; flows do not depend on it).
        None when no participating unit is left."""
        net = self.network
        dt, dev = self.h.dtype, self.h.device
        a_gen = torch.as_tensor(np.asarray(gen_out, dtype=bool) | split.stranded_gen, device=dev).to(dt)
        pg_post, pmin, pmax, w_left = self.redispatch(pg_mw, a_gen)
        if float(w_left) <= 1e-6 * float(self.participation.sum()):
            return None
        main = torch.as_tensor(split.main, device=dev)
        f, t = net.branch.from_bus, net.branch.to_bus
        live = torch.as_tensor(~np.asarray(branch_out, dtype=bool), device=dev) & main[f] & main[t]
        b = matrices.dc_susceptance(net) * live.to(dt)
        shift_f = -b * net.branch.shift_rad
        n = net.n_bus
        b_bus = torch.zeros(n, n, dtype=dt, device=dev)
        b_bus.index_put_((f, f), b, accumulate=True)
        b_bus.index_put_((t, t), b, accumulate=True)
        b_bus.index_put_((f, t), -b, accumulate=True)
        b_bus.index_put_((t, f), -b, accumulate=True)
        p_shift = torch.zeros(n, dtype=dt, device=dev).index_add(0, f, shift_f).index_add(0, t, -shift_f)
        p = self._injection_pu(pg_post, p_shift)
        buses = torch.nonzero(main).flatten()
        ref = self.slack if bool(main[self.slack]) else int(buses[0])
        keep = buses[buses != ref]
        theta = torch.zeros(n, dtype=dt, device=dev)
        theta[keep] = torch.linalg.solve(b_bus[keep[:, None], keep], p[keep])
        flow = (b * (theta[f] - theta[t]) + shift_f) * net.base_mva
        return float(exact_violation(flow, net.branch.rate_a_mva, pg_post, pmin, pmax))


__all__ = ["DCContingencyModel", "default_participation", "OK", "ISLANDED", "NO_GENERATION", "NOT_CONVERGED"]
