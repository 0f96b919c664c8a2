"""The DC-OPF that every SC-OPF dispatch solves: `grid.dcopf_problem.assemble`, plus rows.

The base (insecure) dispatch and the preventive SC-OPF are one QP: the grid's DC-OPF
assembly (generator bounds, fixed units, flow limits) with the SC-OPF's contingency rows
passed as ``extra_rows``. Two settings differ from `DCOPFLayer`'s, each on purpose:

- ``angle_limits=False``: the contingency model (`dc`, LODF) has post-outage flows and no
  angles, so the SC-OPF secures flow limits only; securing base-case angles but no
  post-contingency ones would be neither the N-0 nor the N-k problem.
- costs divided by ``scale`` (a pure change of cost unit, so x* is unchanged): the
  objective's gradient is then O(1) per unit whatever the case's cost level (1e5 $/h on
  case118), which the absolute ridge below and the interior point's absolute
  regularisation (`QPSettings.reg`) need in order to stay negligible.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gridlearn.grid.checks import check_costs
from gridlearn.grid.dcopf_problem import DCStructure, assemble
from gridlearn.grid.network import Network

# A ridge on Q keeps the interior point's Cholesky definite for linear-cost generators;
# relative to the cost scale it moves the optimum by well under 1e-6 MW.
_RIDGE = 1e-7


def solve_dispatch(network: Network, rows_mw: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, float]:
    """DC-OPF dispatch (n_gen,) in MW and its cost in $/h, with extra rows ``G p <= h``
    (``rows_mw``: G (r, n_gen) on the dispatch in MW, h (r,) in MW). Raises InfeasibleError
    when no dispatch satisfies every constraint, ConfigError for piecewise-linear costs."""
    from gridlearn.implicit.qp import QPLayer, QPSettings

    check_costs(network, convex=True)
    g = network.gen
    base = network.base_mva
    c2, c1 = g.cost_c2_usd_per_mw2h, g.cost_c1_usd_per_mwh
    scale = float(max(c1.abs().max(), (c2 * base).abs().max(), 1e-9) * base)  # $/h per cost unit
    # Rows in MW on p = base * x: G p <= h is G x <= h / base.
    extra = None if rows_mw is None else (rows_mw[0], rows_mw[1] / base)
    st = DCStructure.build(network)
    qp = assemble(network, st, network.bus.pd_mw.reshape(1, 1, -1), (c2 / scale)[None], (c1 / scale)[None],
                  None, None, 1.0, angle_limits=False, extra_rows=extra)
    Q = qp.Q + _RIDGE * torch.eye(qp.Q.shape[-1], dtype=qp.Q.dtype, device=qp.Q.device)
    x = QPLayer(settings=QPSettings(max_iter=100))(Q, qp.p, qp.G, qp.h, qp.A, qp.b)
    pg = x.reshape(-1)[: network.n_gen] * base
    cost = float((c2 * pg**2 + c1 * pg + g.cost_c0_usd_per_h).sum())
    return pg.detach(), cost


__all__ = ["solve_dispatch"]
