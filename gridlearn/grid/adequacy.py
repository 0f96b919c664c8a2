"""Active-power adequacy: a proof from the data alone that an OPF scenario has no feasible point.

Summing the active-power balance rows of any AC (or DC) network gives

    sum pg = sum pd + sum gs vm^2 + losses,

and where every branch is passive (series resistance ``r >= 0`` and shunt conductance
``g >= 0``, so each branch's loss ``r |I_series|^2 + g-terms`` is >= 0; ideal transformers
lose nothing), ``losses >= 0``. The least the buses can withdraw is then ``sum pd`` plus each
shunt ``gs vm^2`` at its most favourable voltage bound, and if that exceeds the generators'
total ``pmax``, no dispatch balances the network: the scenario is infeasible whatever a solver
says. `active_power_shortfall_mw` is that excess (``-inf`` where a branch is not passive, so no
proof is claimed). `solve_acopf` and the torch interior point both use it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def active_power_shortfall_mw(network, pd_mw: Tensor | None = None, r_pu: Tensor | None = None,
                              g_pu: Tensor | None = None) -> Tensor:
    """Least possible withdrawal minus total generation capacity (MW), per scenario.

    Args:
        network: a `Network` (its bus shunts, voltage bounds, generator ``pmax_mw``).
        pd_mw: loads (n_bus,) or (B, n_bus); default the network's.
        r_pu, g_pu: branch series resistance and shunt conductance (n_branch,) or (B, n_branch);
            default the network's.

    Returns (B,) (or a 0-d tensor for unbatched inputs): > 0 proves the scenario infeasible;
    ``-inf`` where some branch has ``r < 0`` or ``g < 0`` (a branch may then generate power).
    """
    bus, br = network.bus, network.branch
    pd = (bus.pd_mw if pd_mw is None else pd_mw).detach()
    r = (br.r_pu if r_pu is None else r_pu).detach()
    g = (br.g_pu if g_pu is None else g_pu).detach()
    gs = bus.gs_mw.detach().to(pd)
    # gs > 0 consumes least at vmin, gs < 0 (a source) gives most at vmax.
    shunt = torch.where(gs > 0, gs * bus.vmin_pu.detach().to(pd) ** 2, gs * bus.vmax_pu.detach().to(pd) ** 2).sum()
    cap = network.gen.pmax_mw.detach().to(pd).sum()
    shortfall = pd.sum(-1) + shunt - cap
    passive = (r >= 0).all(-1) & (g >= 0).all(-1)
    return torch.where(passive, shortfall, torch.full_like(shortfall, -float("inf")))
