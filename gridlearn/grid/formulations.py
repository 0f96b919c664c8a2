"""The two AC-OPF conventions, and the physics' entry points kept for existing callers.

The physics itself (balances, branch flows, limits and their derivatives) lives in
`gridlearn.grid.acphysics`: `ACPolar` and the `BranchLimit` strategies, written once for
Pyomo, numpy and torch. A `Convention` says which OPF is posed on the same network data.
Source: MATPOWER manual (Zimmerman & Murillo-Sanchez), sections 3.2 and 6.1; pandapower's
OPF for the current-limit convention (``pandapower/optimal_powerflow.py`` sets
``OPF_FLOW_LIM = 2``; ``opf_consfcn`` then limits ``|I_f|^2 = |Y_f V|^2 <= (RATE_A / baseMVA)^2``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gridlearn.errors import ConfigError
from gridlearn.grid.acphysics.admittance import pi_admittance_parts
from gridlearn.grid.acphysics.cost import QuadraticCost
from gridlearn.grid.acphysics.limits import APPARENT_POWER, CURRENT, LIMITS, BranchLimit

__all__ = ["Convention", "MATPOWER", "PANDAPOWER", "CONVENTIONS", "get_convention", "pi_admittance_parts",
           "flow_limit_residual", "generation_cost"]


@dataclass(frozen=True)
class Convention:
    """Which OPF problem is posed on the same network data.

    - ``branch_limit``: a `BranchLimit` strategy. `APPARENT_POWER` limits ``|S| <= RATE_A``
      at both branch ends (MATPOWER/PGLib); `CURRENT` limits ``|I| <= RATE_A / baseMVA``
      in per unit (pandapower ``runopp``). A kind's name (``"apparent_power"``,
      ``"current"``) is accepted and replaced by its strategy.
    - ``fix_ext_grid_voltage``: pandapower fixes each ext_grid bus voltage at its setpoint;
      MATPOWER keeps the reference bus voltage free within [vmin, vmax].
    - ``angle_limits``: whether branch angle-difference limits are enforced (pandapower's
      runopp drops them).
    """

    name: str
    branch_limit: BranchLimit
    fix_ext_grid_voltage: bool
    angle_limits: bool

    def __post_init__(self):
        limit = self.branch_limit
        if isinstance(limit, str):
            if limit not in LIMITS:
                raise ConfigError(f"branch_limit must be one of {sorted(LIMITS)} or a BranchLimit, got {limit!r}")
            object.__setattr__(self, "branch_limit", LIMITS[limit])
        elif not isinstance(limit, BranchLimit):
            raise ConfigError(f"branch_limit must be a BranchLimit strategy (gridlearn.grid.acphysics), got {limit!r}")


MATPOWER = Convention("matpower", branch_limit=APPARENT_POWER, fix_ext_grid_voltage=False, angle_limits=True)
PANDAPOWER = Convention("pandapower", branch_limit=CURRENT, fix_ext_grid_voltage=True, angle_limits=False)
CONVENTIONS = {c.name: c for c in (MATPOWER, PANDAPOWER)}


def get_convention(convention: str | Convention) -> Convention:
    if isinstance(convention, Convention):
        return convention
    try:
        return CONVENTIONS[convention]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown AC-OPF convention {convention!r}; choose one of {sorted(CONVENTIONS)}") from None


def flow_limit_residual(p, q, vm_end, rate_pu, convention: Convention):
    """``h <= 0`` of the convention's branch-limit strategy (`BranchLimit.residual`)."""
    return convention.branch_limit.residual(p, q, vm_end, rate_pu)


def generation_cost(pg_pu, c2, c1, c0, base_mva):
    """Cost in $/h of ``pg_pu`` (per unit) for coefficients in $/MW^2h, $/MWh, $/h (`QuadraticCost`)."""
    return QuadraticCost(c2, c1, c0, base_mva).per_generator(pg_pu)
