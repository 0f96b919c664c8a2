"""Frozen, typed, per-element parameter tables of a `Network` (tensors with units in names).

Power quantities are kept in MW/MVAr/MVA (as pandapower and MATPOWER publish them);
impedances in per unit on the network's base MVA; angles in radians. Every tensor in a
table has the table's element count as its last dimension.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

Label = tuple[str, int]  # (pandapower table, index), e.g. ("line", 12), ("gen", 5)


def _map_tensors(obj: Any, fn) -> Any:
    changes = {f.name: fn(getattr(obj, f.name)) for f in dataclasses.fields(obj) if isinstance(getattr(obj, f.name), Tensor)}
    return dataclasses.replace(obj, **changes)


class _Table:
    def to(self, device=None, dtype=None):
        """Move tensors to ``device``; cast floating tensors to ``dtype`` (integer indices stay)."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)

        return _map_tensors(self, move)


@dataclass(frozen=True)
class BusParams(_Table):
    """Buses. ``kind``: 1 PQ, 2 PV, 3 reference (MATPOWER codes)."""

    kind: Tensor  # long (n_bus,)
    base_kv: Tensor
    vmin_pu: Tensor
    vmax_pu: Tensor
    gs_mw: Tensor  # shunt conductance, MW consumed at V = 1 pu
    bs_mvar: Tensor  # shunt susceptance, MVAr injected at V = 1 pu
    pd_mw: Tensor  # fixed demand (loads minus static generation), MW
    qd_mvar: Tensor
    vm0_pu: Tensor  # voltage magnitude setpoint / initial value
    va0_rad: Tensor
    labels: tuple[int, ...]  # pandapower bus index per bus

    @property
    def n(self) -> int:
        return int(self.kind.shape[-1])


@dataclass(frozen=True)
class GenParams(_Table):
    """Dispatchable generators (pandapower ext_grid, gen, controllable sgen/storage).

    Cost is the polynomial c2 p^2 + c1 p + c0 with p in MW, in $/h (pandapower's "eur"
    columns are read as the case's currency unit).
    """

    bus: Tensor  # long (n_gen,), bus position in the Network
    p_mw: Tensor  # setpoint (power flow) / initial guess (OPF)
    vg_pu: Tensor  # voltage setpoint
    q_mvar: Tensor  # reactive setpoint: a fixed injection for a unit at a PQ bus (MATPOWER's QG); OPF initial guess
    pmin_mw: Tensor
    pmax_mw: Tensor
    qmin_mvar: Tensor
    qmax_mvar: Tensor
    cost_c2_usd_per_mw2h: Tensor
    cost_c1_usd_per_mwh: Tensor
    cost_c0_usd_per_h: Tensor
    labels: tuple[Label, ...]

    @property
    def n(self) -> int:
        return int(self.bus.shape[-1])


@dataclass(frozen=True)
class BranchParams(_Table):
    """Lines and transformers alike, as MATPOWER pi models (pandapower's own conversion)."""

    from_bus: Tensor  # long (n_branch,)
    to_bus: Tensor
    r_pu: Tensor
    x_pu: Tensor
    g_pu: Tensor  # total shunt conductance of the pi model
    b_pu: Tensor  # total line charging susceptance
    tap: Tensor  # off-nominal turns ratio (1 for lines)
    shift_rad: Tensor
    rate_a_mva: Tensor  # inf = unlimited (MATPOWER RATE_A = 0)
    angmin_rad: Tensor  # -inf = no angle-difference limit
    angmax_rad: Tensor
    labels: tuple[Label, ...]

    @property
    def n(self) -> int:
        return int(self.from_bus.shape[-1])


@dataclass(frozen=True)
class PWLCost(_Table):
    """Convex piecewise-linear active-power costs (MATPOWER gencost model 1) as epigraph segments.

    A generator ``g`` listed in ``gen`` costs ``max_k slope_k p + intercept_k`` ($/h, p in
    MW) over its segments ``k``; an OPF models it as MATPOWER does (``opf_setup``): one
    variable ``y_g`` in the objective with ``y_g >= slope_k p_g + intercept_k`` for every
    segment. Its polynomial cost fields in `GenParams` are zero.
    """

    gen: Tensor  # long (n_segment,), generator position of each segment
    slope_usd_per_mwh: Tensor
    intercept_usd_per_h: Tensor

    @property
    def n(self) -> int:
        return int(self.gen.shape[-1])

    def generators(self) -> list[int]:
        """Positions of the generators that have a piecewise-linear cost, ascending."""
        return sorted(set(self.gen.tolist()))


@dataclass(frozen=True)
class ReactiveCost(_Table):
    """Polynomial reactive-power costs (MATPOWER's second block of ng gencost rows), $/h with q in MVAr."""

    c2_usd_per_mvar2h: Tensor  # (n_gen,)
    c1_usd_per_mvarh: Tensor
    c0_usd_per_h: Tensor

    @property
    def n(self) -> int:
        return int(self.c1_usd_per_mvarh.shape[-1])


def field_owner(name: str) -> type:
    """Which parameter table holds field ``name`` (for `Network.with_`)."""
    for cls in (BusParams, GenParams, BranchParams):
        if name in {f.name for f in dataclasses.fields(cls)}:
            return cls
    raise ValueError(f"no Network parameter named {name!r}")


def as_tensor(values, dtype=torch.float64) -> Tensor:
    return torch.as_tensor(values, dtype=dtype).clone()


class NetworkTables(Protocol):
    """What the checks and matrix builders read of a network: its tables and sizes.

    `gridlearn.grid.network.Network` satisfies it. Modules below `network` (`checks`,
    `matrices`) are written against this protocol rather than importing `Network`, so that
    `network` can use them without an import cycle.
    """

    base_mva: float
    bus: BusParams
    gen: GenParams
    branch: BranchParams
    name: str
    pwl_cost: PWLCost | None
    reactive_cost: ReactiveCost | None

    @property
    def n_bus(self) -> int: ...

    @property
    def n_gen(self) -> int: ...

    @property
    def n_branch(self) -> int: ...

    @property
    def ref_buses(self) -> Tensor: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...
