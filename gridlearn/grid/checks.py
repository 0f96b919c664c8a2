"""Validation at the boundary: every rule raises `DataError` naming the element and the rule.

`check_network` runs when a `Network` is built; `check_costs` runs where an OPF needs
costs; `check_finite` guards tensors handed to a layer (loads, injections, costs).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gridlearn.errors import ConfigError, DataError
from gridlearn.grid.params import NetworkTables

# Fields where +-inf is a legitimate "no limit".
_MAY_BE_INFINITE = {"rate_a_mva", "angmin_rad", "angmax_rad", "pmax_mw", "pmin_mw", "qmin_mvar", "qmax_mvar"}
_COST_FIELDS = {"cost_c2_usd_per_mw2h", "cost_c1_usd_per_mwh", "cost_c0_usd_per_h"}


def check_finite(name: str, value: Tensor, labels=None) -> None:
    """Raise DataError if ``value`` has NaN or inf, naming the first offending element."""
    bad = ~torch.isfinite(value.detach())
    if bad.any():
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        where = f" ({labels[idx[-1]]})" if labels is not None and len(idx) else ""
        raise DataError(f"{name} has a non-finite value {float(value.detach()[idx])} at index {idx}{where}")


def check_inputs(named: dict[str, Tensor | None], posinf_ok: frozenset[str] = frozenset()) -> dict[str, Tensor]:
    """The given (not None) layer inputs, each checked to be a finite tensor; a name in
    ``posinf_ok`` may hold +inf ("no limit"). Raises TypeError or `DataError` naming it."""
    given = {name: t for name, t in named.items() if t is not None}
    for name, t in given.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        check_finite(name, torch.where(torch.isposinf(t), torch.zeros_like(t), t) if name in posinf_ok else t)
    return given


def _check_table(table_name: str, table, skip: set[str]) -> None:
    import dataclasses

    for f in dataclasses.fields(table):
        v = getattr(table, f.name)
        if not isinstance(v, Tensor) or not v.is_floating_point() or f.name in skip:
            continue
        if torch.isnan(v.detach()).any():
            i = int(torch.nonzero(torch.isnan(v.detach()))[0][-1])
            raise DataError(f"{table_name} {table.labels[i]}: {f.name} is NaN")
        if f.name not in _MAY_BE_INFINITE and torch.isinf(v.detach()).any():
            i = int(torch.nonzero(torch.isinf(v.detach()))[0][-1])
            raise DataError(f"{table_name} {table.labels[i]}: {f.name} is infinite")


def _check_order(table_name: str, labels, lo: Tensor, hi: Tensor, what: str) -> None:
    bad = (lo.detach() > hi.detach()).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{table_name} {labels[i]}: {what} minimum {float(lo[i]):g} exceeds maximum {float(hi[i]):g}")


def check_islands(network: NetworkTables) -> None:
    """Every bus must reach a reference bus through in-service branches."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = network.n_bus
    f = network.branch.from_bus.cpu().numpy()
    t = network.branch.to_bus.cpu().numpy()
    adj = coo_matrix((np.ones(len(f)), (f, t)), shape=(n, n))
    n_comp, comp = connected_components(adj, directed=False)
    refs = network.ref_buses.cpu().numpy()
    if len(refs) == 0:
        raise DataError("the network has no reference (slack) bus: add an ext_grid or a slack gen")
    powered = set(comp[refs].tolist())
    orphan = [i for i in range(n) if comp[i] not in powered]
    if orphan:
        shown = [network.bus.labels[i] for i in orphan[:10]]
        raise DataError(
            f"{len(orphan)} bus(es) have no path to a reference bus (an island), pandapower buses {shown}"
            f"{' ...' if len(orphan) > 10 else ''}: connect them, add a slack, or set them out of service"
        )


def check_network(network: NetworkTables) -> None:
    _check_table("bus", network.bus, skip=set())
    _check_table("gen", network.gen, skip=_COST_FIELDS)  # costs checked by check_costs
    _check_table("branch", network.branch, skip=set())
    br = network.branch
    zero_x = (br.x_pu.detach() == 0).nonzero().flatten()
    if len(zero_x):
        raise DataError(f"branch {br.labels[int(zero_x[0])]}: reactance x_pu is zero; it must be nonzero")
    nonpos_tap = (br.tap.detach() <= 0).nonzero().flatten()
    if len(nonpos_tap):
        raise DataError(f"branch {br.labels[int(nonpos_tap[0])]}: tap ratio must be positive")
    neg_rate = (br.rate_a_mva.detach() < 0).nonzero().flatten()
    if len(neg_rate):
        raise DataError(f"branch {br.labels[int(neg_rate[0])]}: rate_a_mva is negative")
    _check_order("bus", network.bus.labels, network.bus.vmin_pu, network.bus.vmax_pu, "voltage")
    _check_order("gen", network.gen.labels, network.gen.pmin_mw, network.gen.pmax_mw, "active power")
    _check_order("gen", network.gen.labels, network.gen.qmin_mvar, network.gen.qmax_mvar, "reactive power")
    _check_order("branch", br.labels, br.angmin_rad, br.angmax_rad, "angle difference")
    check_islands(network)


def check_costs(network: NetworkTables, convex: bool = True, pwl: bool = False, reactive: bool = False) -> None:
    """Every generator needs a polynomial cost; with ``convex``, c2 must be >= 0.

    ``pwl``/``reactive``: whether the caller models `Network.pwl_cost` / `Network.reactive_cost`
    (solve_acopf both, DCOPFLayer the first, reactive power having no DC counterpart). A
    caller that does not would price those generators at zero, so it gets a ConfigError.
    """
    if network.pwl_cost is not None and not pwl:
        gens = [network.gen.labels[i] for i in network.pwl_cost.generators()][:5]
        raise ConfigError(f"{network.name or 'the network'} has piecewise-linear costs (generators {gens}); only "
                          "solve_acopf, solve_acopf_batched, ACOPFLayer(backend='torch') and DCOPFLayer model "
                          "them (epigraph): use one of those, or give the generators polynomial costs")
    if network.reactive_cost is not None and not reactive:
        raise ConfigError(f"{network.name or 'the network'} prices reactive power (a second block of gencost rows); "
                          "only solve_acopf, solve_acopf_batched and ACOPFLayer(backend='torch') model that: use one of "
                          "those, or drop network.reactive_cost")
    g = network.gen
    for name in sorted(_COST_FIELDS):
        v = getattr(g, name).detach()
        bad = (~torch.isfinite(v)).nonzero().flatten()
        if len(bad):
            raise DataError(
                f"gen {g.labels[int(bad[0])]}: missing or non-finite cost ({name}); the case has no cost for it "
                "(a MATPOWER file without mpc.gencost, or no row in net.poly_cost): add one"
            )
    if convex:
        neg = (g.cost_c2_usd_per_mw2h.detach() < 0).nonzero().flatten()
        if len(neg):
            raise DataError(f"gen {g.labels[int(neg[0])]}: quadratic cost coefficient is negative (cost not convex)")
