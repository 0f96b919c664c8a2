"""`Network`: an immutable, typed, per-unit view of a grid.

Built by `from_pandapower.network_from_pandapower` (a pandapower net, through its own
``to_ppc``), `from_matpower` (a MATPOWER case file) or `cases.load_case` (either, by
name). This module holds the tables only; it imports neither the builders nor the checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gridlearn._deprecation import warn_renamed
from gridlearn.grid import matrices
from gridlearn.grid.params import BranchParams, BusParams, GenParams, PWLCost, ReactiveCost, field_owner

@dataclass(frozen=True)
class Network:
    """A grid as per-unit tensors: ``bus``, ``gen`` and ``branch`` parameter tables.

    Build one with `gridlearn.grid.load_case` or `from_pandapower.network_from_pandapower`. Derive a
    variant (different loads, costs, admittances, possibly tensors requiring grad) with
    `with_`, and move it with `to`.

    >>> import torch
    >>> from gridlearn.grid import load_case
    >>> net = load_case("case9")
    >>> x = net.branch.x_pu.clone().requires_grad_()
    >>> net.with_(x_pu=x).branch.x_pu is x       # a variant whose reactances carry gradients
    True
    """

    base_mva: float
    bus: BusParams
    gen: GenParams
    branch: BranchParams
    name: str = ""
    # MATPOWER cost forms beyond a quadratic in p (None: none). Only solve_acopf and
    # DCOPFLayer read them; every other consumer of costs refuses such a network (check_costs).
    pwl_cost: PWLCost | None = None
    reactive_cost: ReactiveCost | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pandapower(cls, net: Any, name: str = "") -> "Network":
        """Deprecated: `gridlearn.grid.from_pandapower.network_from_pandapower` (or `load_case`)."""
        # deprecated shim, removed next release: the one deferred import network -> from_pandapower
        from gridlearn.grid.from_pandapower import network_from_pandapower

        warn_renamed("Network", "from_pandapower", "gridlearn.grid.from_pandapower.network_from_pandapower")
        return network_from_pandapower(net, name)

    # ------------------------------------------------------------------ variants
    def with_(self, **fields: Tensor) -> "Network":
        """A copy with some parameters replaced, e.g. ``net.with_(x_pu=x.requires_grad_())``.

        Field names are those of `BusParams`, `GenParams` and `BranchParams`; the new
        values keep the element count (and may carry autograd history).
        """
        tables = {"bus": self.bus, "gen": self.gen, "branch": self.branch}
        owner_name = {BusParams: "bus", GenParams: "gen", BranchParams: "branch"}
        changes: dict[str, dict[str, Any]] = {}
        for key, value in fields.items():
            table = owner_name[field_owner(key)]
            old = getattr(tables[table], key)
            if isinstance(old, Tensor):
                value = torch.as_tensor(value, dtype=old.dtype if not torch.is_tensor(value) else None)
                if value.shape[-1:] != old.shape[-1:]:
                    raise ValueError(f"{key}: expected last dimension {old.shape[-1]}, got shape {tuple(value.shape)}")
            changes.setdefault(table, {})[key] = value
        new_tables = {t: dataclasses.replace(tables[t], **c) for t, c in changes.items()}
        return dataclasses.replace(self, **new_tables)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Network":
        extras = {k: getattr(self, k).to(device, dtype) for k in ("pwl_cost", "reactive_cost") if getattr(self, k) is not None}
        return dataclasses.replace(
            self, bus=self.bus.to(device, dtype), gen=self.gen.to(device, dtype), branch=self.branch.to(device, dtype),
            **extras,
        )

    # ------------------------------------------------------------------ views
    @property
    def n_bus(self) -> int:
        return self.bus.n

    @property
    def n_gen(self) -> int:
        return self.gen.n

    @property
    def n_branch(self) -> int:
        return self.branch.n

    @property
    def ref_buses(self) -> Tensor:
        return torch.nonzero(self.bus.kind == 3).flatten()

    @property
    def dtype(self) -> torch.dtype:
        return self.bus.pd_mw.dtype

    @property
    def device(self) -> torch.device:
        return self.bus.pd_mw.device

    def gen_incidence(self) -> Tensor:
        """Dense (n_bus, n_gen) matrix with 1 where generator j sits at bus i."""
        cg = torch.zeros(self.n_bus, self.n_gen, dtype=self.dtype, device=self.device)
        cg[self.gen.bus, torch.arange(self.n_gen, device=self.device)] = 1.0
        return cg

    def ybus(self) -> Tensor:
        """Complex bus admittance matrix (n_bus, n_bus), per unit; see `matrices.ybus`."""
        return matrices.ybus(self)

    def dc_matrices(self) -> matrices.DCMatrices:
        return matrices.dc_matrices(self)

    def ptdf(self, slack: int | None = None) -> Tensor:
        return matrices.ptdf(self, slack=slack)

    def __repr__(self) -> str:
        return (
            f"Network({self.name!r}: {self.n_bus} buses, {self.n_gen} generators, {self.n_branch} branches, "
            f"base {self.base_mva:g} MVA, {self.dtype}, {self.device})"
        )


