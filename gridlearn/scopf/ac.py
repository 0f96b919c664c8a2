"""Post-contingency AC physics on `gridlearn.grid.PowerFlowLayer` (Newton, implicit adjoint).

For an outage vector alpha: branch pi models scale by s = max(1 - a_branch, floor);
generator setpoints become (1 - a_g) p_g and the distributed slack (which absorbs the lost
generation and the change in losses) is shared by participation w_g (1 - a_g), the AC
analogue of the DC model's AGC pick-up. Gradients w.r.t. alpha come from the layer's
implicit-function-theorem adjoint (no unrolling). Violation (MVA-equivalent):

    sum_l max(0, max(|S_from,l|, |S_to,l|) - rate_l) + generator P-limit excess (MW)
    + base_mva * voltage-magnitude excess (p.u.)

A scenario whose Newton iteration does not converge gets status "not_converged" and
no score. Every set that splits the network is reported "islanded" with its lost load
(`outages.classify_islands`), including generator-only islands, which the DC model scores. Known simplification: an outaged generator's bus keeps its voltage setpoint
(reactive limits are not enforced by the layer either), so its reactive support remains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gridlearn.grid.acphysics.limits import APPARENT_POWER, BranchLimit
from gridlearn.grid.network import Network
from gridlearn.scopf.dc import ISLANDED, NO_GENERATION, NOT_CONVERGED, OK, default_participation
from gridlearn.scopf.outages import ElementSpace, classify_islands
from gridlearn.scopf.pickup import pickup_weights
from gridlearn.scopf.violation import exact_violation, smooth_violation


@dataclass(frozen=True)
class ACContingencyModel:
    """Post-contingency AC physics (module docstring): the AC-OPF base dispatch, then one
    batched Newton power flow per outage set, scored in MVA-equivalent.

    case9 with its ratings at 60 %: the AC-OPF generates 315 MW plus the losses, and line 7's
    outage overloads by 42.15 MVA there (the DC model, at the DC-OPF dispatch: 38.44 MW):

    >>> import torch
    >>> from gridlearn.grid import load_case
    >>> from gridlearn.scopf import ElementSpace
    >>> net = load_case("case9")
    >>> net = net.with_(rate_a_mva=0.6 * net.branch.rate_a_mva)
    >>> model = ACContingencyModel.build(net, ElementSpace.of(net, "branches"))
    >>> pg = model.base_dispatch()
    >>> round(float(pg.sum()) - 315.0, 1)   # losses, MW
    3.3
    >>> violation, status, load_lost_mw = model.score_sets(pg, torch.tensor([[7], [2]]))
    >>> violation.round(2).tolist(), status, model.certifiable, model.securable
    ([42.15, 5.79], ['ok', 'ok'], False, False)
    """

    network: Network
    space: ElementSpace
    participation: Tensor
    layer: object  # PowerFlowLayer
    limit: BranchLimit = APPARENT_POWER  # what `rate_a_mva` limits at each branch end
    score_batch = 256  # sets per score_sets call: a batched Newton solve is dense per set
    certifiable = False  # no bound on an AC violation: results say "best found, no bound"
    securable = False  # no AC SC-OPF here: `defend` refuses it; score a DC defence's dispatch with the AC attack

    @classmethod
    def build(cls, network: Network, space: ElementSpace, participation: Tensor | None = None) -> "ACContingencyModel":
        from gridlearn.grid.pf_newton import NewtonRaphson
        from gridlearn.grid.powerflow import PowerFlowLayer

        w = default_participation(network) if participation is None else torch.as_tensor(
            participation, dtype=network.dtype, device=network.device)
        # retry=False: a contingency whose Newton fails is scored "not_converged", as before the
        # power flow's per-scenario rescue (pf_robust) existed; relaxed attacks produce many
        # such scenarios, and a continuation for each would dominate the search's cost.
        layer = PowerFlowLayer(solver=NewtonRaphson(retry=False))
        return cls(network=network, space=space, participation=w, layer=layer)

    def base_dispatch(self) -> Tensor:
        """The insecure base dispatch (n_gen,) MW: the AC-OPF (direct Ipopt path)."""
        from gridlearn.grid.acopf import solve_acopf

        res = solve_acopf(self.network, backend="direct")
        return torch.as_tensor(res.pg_mw, dtype=self.network.dtype, device=self.network.device).detach()

    def state(self, pg_mw: Tensor, alpha: Tensor, floor: float = 1e-4):
        """(converged (B,), branch MVA (B, n_branch), p' (B, n_gen), pmin', pmax', vm (B, n_bus))."""
        a_br, a_gen = self.space.split(alpha)
        scale = (1.0 - a_br).clamp_min(floor) if floor > 0 else 1.0 - a_br
        keep = 1.0 - a_gen
        # The same floor on the participation as on the branch scale: a relaxed attack that outages
        # every generator with a share (PGLib case30: the rest are condensers with Pmax = 0) would
        # otherwise leave the slack with no one to pick it up. Exact scoring (floor 0) sets such sets
        # apart as NO_GENERATION before solving.
        weights = pickup_weights(self.participation, keep, floor)
        sol = self.layer.solve(self.network, pg_mw=keep * pg_mw, scale=scale, participation=weights)
        r = sol.value
        # The limited quantity (|S| in MVA for APPARENT_POWER) from the same strategy the AC-OPF uses;
        # +1e-18 MVA^2: a branch with exactly zero flow would give sqrt's infinite slope (NaN gradients).
        br = self.network.branch
        s_from = self.limit.magnitude(r.p_from_mw, r.q_from_mvar, r.vm_pu[..., br.from_bus], eps=1e-18)
        s_to = self.limit.magnitude(r.p_to_mw, r.q_to_mvar, r.vm_pu[..., br.to_bus], eps=1e-18)
        g = self.network.gen
        return sol.converged, torch.maximum(s_from, s_to), r.pg_mw, keep * g.pmin_mw, keep * g.pmax_mw, r.vm_pu

    def violation(self, pg_mw: Tensor, alpha: Tensor, temperature: float | None = None, floor: float = 1e-4) -> Tensor:
        """Total overload (B,), MVA-equivalent; NaN where the power flow did not converge."""
        ok, s, pg, pmin, pmax, vm = self.state(pg_mw, alpha, floor)
        net = self.network
        args = (s, net.branch.rate_a_mva, pg, pmin, pmax)
        kw = dict(vm_pu=vm, vmin_pu=net.bus.vmin_pu, vmax_pu=net.bus.vmax_pu, base_mva=net.base_mva)
        v = exact_violation(*args, **kw) if temperature is None else smooth_violation(*args, temperature, **kw)
        return torch.where(ok, v, torch.full_like(v, float("nan")))


    def score_sets(self, pg_mw: Tensor, members: Tensor) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Exact AC scores of outage sets (C, k), as `dc.DCContingencyModel.score_sets`."""
        return score_sets_ac(self, pg_mw, members)


def score_sets_ac(model: ACContingencyModel, pg_mw: Tensor, members: Tensor) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Exact AC scores of outage sets (C, k): a graph check first (islanded sets are not
    solved), then one batched Newton power flow for the rest."""
    net, sp = model.network, model.space
    nb = sp.n_attack_branches
    C = members.shape[0]
    v = np.full(C, np.nan)
    status = [OK] * C
    lost = np.zeros(C)
    w_total = float(model.participation.sum())
    solve_rows = []
    for i, row in enumerate(members.tolist()):
        br_out = np.zeros(net.n_branch, dtype=bool)
        br_out[[sp.branch_pos[m] for m in row if m < nb]] = True
        gen_out = np.zeros(net.n_gen, dtype=bool)
        gen_out[[sp.gen_pos[m - nb] for m in row if m >= nb]] = True
        split = classify_islands(net, br_out, gen_out)
        if float(model.participation[torch.as_tensor(~gen_out)].sum()) <= 1e-6 * w_total:
            status[i] = NO_GENERATION
        elif split.islanded:
            # The Newton layer solves one connected network, so AC does not score
            # generator-only islands (DC does): every split is reported, never scored.
            status[i], lost[i] = ISLANDED, split.load_lost_mw
        else:
            solve_rows.append(i)
    if solve_rows:
        alpha = torch.zeros(len(solve_rows), sp.size, dtype=net.dtype, device=net.device)
        alpha.scatter_(1, members[solve_rows], 1.0)
        vals = model.violation(pg_mw, alpha, floor=0.0).detach().cpu().numpy()
        for j, i in enumerate(solve_rows):
            if np.isfinite(vals[j]):
                v[i] = vals[j]
            else:
                status[i] = NOT_CONVERGED
    return v, status, lost


__all__ = ["ACContingencyModel", "score_sets_ac"]
