"""Unknown parameters of an inverse problem: what they are, and how they appear in pandapower units.

An unknown is a `Unknown(kind, position)`: a generator cost coefficient (``"c2"``,
``"c1"``, ``"c0"``) of the generator at ``position`` in the `Network`, or a branch
parameter (``"x"``, ``"r"``) of the branch at ``position``. Internally the inverse methods
work in the Network's units ($/MW^2h, $/MWh, $/h; per unit for r and x); the tables
they return use pandapower's: costs as ``poly_cost`` holds them (``cp2_eur_per_mw2``,
``cp1_eur_per_mw``, ``cp0_eur``: the Network reads those columns unchanged), line
impedances in ohm (``x_pu * base_kv^2 / base_mva``, the line's whole length), transformer
and impedance elements in per unit on the network base (pandapower stores those as
percentages on the element's own rating, which this table does not convert to).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd
import torch
from torch import Tensor

from gridlearn.errors import ConfigError

COST_KINDS = {"c2": "cost_c2_usd_per_mw2h", "c1": "cost_c1_usd_per_mwh", "c0": "cost_c0_usd_per_h"}
BRANCH_KINDS = {"x": "x_pu", "r": "r_pu"}
COST_UNITS = {"c2": "cp2_eur_per_mw2", "c1": "cp1_eur_per_mw", "c0": "cp0_eur"}


@dataclass(frozen=True)
class Unknown:
    """One unknown parameter: ``kind`` in c2/c1/c0 (generator) or x/r (branch), at ``position``.

    >>> Unknown("c1", 0).field, Unknown("c1", 0).is_cost, Unknown("x", 3).field
    ('cost_c1_usd_per_mwh', True, 'x_pu')
    >>> Unknown("b", 0)
    Traceback (most recent call last):
    ...
    gridlearn.errors.ConfigError: unknown parameter kind 'b'; choose from ['c0', 'c1', 'c2', 'r', 'x']
    """

    kind: str
    position: int

    def __post_init__(self):
        if self.kind not in COST_KINDS and self.kind not in BRANCH_KINDS:
            raise ConfigError(f"unknown parameter kind {self.kind!r}; choose from {sorted(COST_KINDS) + sorted(BRANCH_KINDS)}")

    @property
    def is_cost(self) -> bool:
        return self.kind in COST_KINDS

    @property
    def field(self) -> str:
        return COST_KINDS[self.kind] if self.is_cost else BRANCH_KINDS[self.kind]


def cost_unknowns(network, gens: Iterable[int] | None = None, coefficients: Sequence[str] = ("c2", "c1")) -> list[Unknown]:
    """Cost coefficients of the generators at ``gens`` (positions; all when None)."""
    gens = range(network.n_gen) if gens is None else list(gens)
    out = []
    for g in gens:
        if not 0 <= int(g) < network.n_gen:
            raise ConfigError(f"generator position {g} is out of range 0..{network.n_gen - 1}")
        out += [Unknown(c, int(g)) for c in coefficients]
    return out


def branch_position(network, label) -> int:
    """Position of the branch with pandapower label ``(table, index)`` (or a position, passed through)."""
    if isinstance(label, int):
        if not 0 <= label < network.n_branch:
            raise ConfigError(f"branch position {label} is out of range 0..{network.n_branch - 1}")
        return label
    label = (str(label[0]), int(label[1]))
    try:
        return network.branch.labels.index(label)
    except ValueError:
        raise ConfigError(f"no in-service branch labelled {label} in {network.name}") from None


def parse_unknowns(network, unknown) -> list[Unknown]:
    """Normalise ``unknown`` (see `recover`) to a list of `Unknown`, checked against ``network``.

    Accepts ``"costs"`` (c2 and c1 of every generator), a list of `Unknown`, or a dict
    ``{"costs": gens or "all", "coefficients": (...), "branches": [labels or positions], "branch_kinds": ("x",)}``.
    """
    if unknown == "costs":
        out = cost_unknowns(network)
    elif isinstance(unknown, dict):
        allowed = {"costs", "coefficients", "branches", "branch_kinds"}
        extra = set(unknown) - allowed
        if extra:
            raise ConfigError(f"unknown keys {sorted(extra)} in `unknown`; allowed: {sorted(allowed)}")
        gens = unknown.get("costs", ())
        coeffs = tuple(unknown.get("coefficients", ("c2", "c1")))
        out = cost_unknowns(network, None if gens == "all" else gens, coeffs) if gens else []
        for b in unknown.get("branches", ()):
            pos = branch_position(network, b)
            out += [Unknown(k, pos) for k in unknown.get("branch_kinds", ("x",))]
    else:
        out = list(unknown)
        for u in out:
            if not isinstance(u, Unknown):
                raise TypeError(f"`unknown` entries must be Unknown, got {type(u).__name__}")
            limit = network.n_gen if u.is_cost else network.n_branch
            if not 0 <= u.position < limit:
                raise ConfigError(f"{u} is out of range (0..{limit - 1})")
    if not out:
        raise ConfigError("no unknown parameters given")
    if len(set(out)) != len(out):
        raise ConfigError("`unknown` lists a parameter twice")
    return out


def current_values(network, unknowns: Sequence[Unknown]) -> Tensor:
    """(n_unknown,) values of ``unknowns`` in ``network`` (Network units)."""
    vals = [getattr(network.gen if u.is_cost else network.branch, u.field)[u.position] for u in unknowns]
    return torch.stack(vals).detach().clone()


def substitute(network, unknowns: Sequence[Unknown], theta: Tensor):
    """``network`` with the unknowns set to ``theta`` (keeps autograd history of ``theta``)."""
    fields: dict[str, Tensor] = {}
    for k, u in enumerate(unknowns):
        if u.field not in fields:
            table = network.gen if u.is_cost else network.branch
            fields[u.field] = getattr(table, u.field).detach().to(dtype=theta.dtype, device=theta.device)
        onehot = torch.zeros_like(fields[u.field])
        onehot[u.position] = 1.0
        fields[u.field] = fields[u.field] * (1 - onehot) + theta[k] * onehot
    return network.with_(**fields)


def label_of(network, u: Unknown) -> tuple[tuple[str, int], str]:
    """The table index: ``(pandapower label, coefficient name)``."""
    if u.is_cost:
        return network.gen.labels[u.position], u.kind
    table = network.branch.labels[u.position][0]
    suffix = "_ohm" if table == "line" else "_pu"
    return network.branch.labels[u.position], u.kind + suffix


def to_pandapower_units(network, u: Unknown, value: float) -> tuple[float, str]:
    """(value, unit) of a Network-unit ``value`` in pandapower's units (see module docstring)."""
    if u.is_cost:
        return float(value), COST_UNITS[u.kind]
    if network.branch.labels[u.position][0] == "line":
        kv = float(network.bus.base_kv[int(network.branch.from_bus[u.position])])
        return float(value) * kv * kv / float(network.base_mva), "ohm"
    return float(value), "pu"


def parameter_table(network, unknowns: Sequence[Unknown], columns: dict[str, Sequence[float]]) -> pd.DataFrame:
    """One row per unknown, indexed by (label, coefficient); numeric columns converted to pandapower units."""
    index = pd.MultiIndex.from_tuples([label_of(network, u) for u in unknowns], names=["element", "coefficient"])
    data: dict[str, list] = {}
    for name, values in columns.items():
        data[name] = [to_pandapower_units(network, u, float(v))[0] for u, v in zip(unknowns, values)]
    data["unit"] = [to_pandapower_units(network, u, 0.0)[1] for u in unknowns]
    return pd.DataFrame(data, index=index)
