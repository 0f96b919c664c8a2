"""AC polar physics and the two OPF conventions, written once for Pyomo, numpy and torch.

The functions here are elementwise over branches and take the math namespace (``cos``,
``sin``) as arguments, so the Pyomo model (`acopf_model`, one scalar expression per
branch) and the torch KKT residual (`acopf_kkt`, vectorised, differentiable) evaluate the
very same equations. Source: MATPOWER manual (Zimmerman & Murillo-Sanchez), sections 3.2
(branch pi model) and 6.1 (AC-OPF); pandapower's OPF for the current-limit convention
(``pandapower/optimal_powerflow.py`` sets ``OPF_FLOW_LIM = 2``; ``opf_consfcn`` then
limits ``|I_f|^2 = |Y_f V|^2 <= (RATE_A / baseMVA)^2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gridlearn.errors import ConfigError


@dataclass(frozen=True)
class Convention:
    """Which OPF problem is posed on the same network data.

    - ``branch_limit``: ``"apparent_power"`` limits ``|S| <= RATE_A`` at both branch ends
      (MATPOWER/PGLib); ``"current"`` limits ``|I| <= RATE_A / baseMVA`` in per unit
      (pandapower ``runopp``), written as ``|S|^2 <= RATE_A^2 vm_end^2`` (the same set,
      since ``|S_f| = vm_f |I_f|``).
    - ``fix_ext_grid_voltage``: pandapower fixes each ext_grid bus voltage at its setpoint;
      MATPOWER keeps the reference bus voltage free within [vmin, vmax].
    - ``angle_limits``: whether branch angle-difference limits are enforced (pandapower's
      runopp drops them).
    """

    name: str
    branch_limit: str
    fix_ext_grid_voltage: bool
    angle_limits: bool

    def __post_init__(self):
        if self.branch_limit not in ("apparent_power", "current"):
            raise ConfigError(f"branch_limit must be 'apparent_power' or 'current', got {self.branch_limit!r}")


MATPOWER = Convention("matpower", branch_limit="apparent_power", fix_ext_grid_voltage=False, angle_limits=True)
PANDAPOWER = Convention("pandapower", branch_limit="current", fix_ext_grid_voltage=True, angle_limits=False)
CONVENTIONS = {c.name: c for c in (MATPOWER, PANDAPOWER)}


def get_convention(convention: str | Convention) -> Convention:
    if isinstance(convention, Convention):
        return convention
    try:
        return CONVENTIONS[convention]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown AC-OPF convention {convention!r}; choose one of {sorted(CONVENTIONS)}") from None


def pi_admittance_parts(r, x, g, b, tap, shift, cos: Callable, sin: Callable) -> dict[str, Any]:
    """Real and imaginary parts of the branch pi-model admittances (MATPOWER makeYbus).

    ``y_s = 1/(r + j x)``, ``t = tap e^{j shift}``, ``Y_tt = y_s + (g + j b)/2``,
    ``Y_ff = Y_tt/tap^2``, ``Y_ft = -y_s/conj(t)``, ``Y_tf = -y_s/t``. Returns the keys
    ``g_ff, b_ff, g_ft, b_ft, g_tf, b_tf, g_tt, b_tt`` (per unit, elementwise). Written with
    real arithmetic so that torch.func can differentiate it twice.
    """
    z2 = r * r + x * x
    gs, bs = r / z2, -x / z2
    c, s = cos(shift), sin(shift)
    g_tt, b_tt = gs + g / 2, bs + b / 2
    return {
        "g_tt": g_tt,
        "b_tt": b_tt,
        "g_ff": g_tt / (tap * tap),
        "b_ff": b_tt / (tap * tap),
        "g_ft": -(gs * c - bs * s) / tap,
        "b_ft": -(gs * s + bs * c) / tap,
        "g_tf": -(gs * c + bs * s) / tap,
        "b_tf": -(bs * c - gs * s) / tap,
    }


def branch_end_power(vm_here, vm_there, dva, g_self, b_self, g_mut, b_mut, cos: Callable, sin: Callable):
    """(p, q) per unit leaving a branch end: ``S = conj(Y_self) vm_here^2 + conj(Y_mut) vm_here vm_there e^{j dva}``.

    ``dva = va_here - va_there``. For the from end use (Y_ff, Y_ft); for the to end (Y_tt, Y_tf).
    """
    c, s = cos(dva), sin(dva)
    vv = vm_here * vm_there
    p = g_self * vm_here * vm_here + vv * (g_mut * c + b_mut * s)
    q = -b_self * vm_here * vm_here + vv * (g_mut * s - b_mut * c)
    return p, q


def flow_limit_residual(p, q, vm_end, rate_pu, convention: Convention):
    """``h <= 0``: ``p^2 + q^2 - rate^2`` (apparent power) or ``p^2 + q^2 - rate^2 vm_end^2`` (current)."""
    if convention.branch_limit == "current":
        return p * p + q * q - rate_pu * rate_pu * vm_end * vm_end
    return p * p + q * q - rate_pu * rate_pu


def generation_cost(pg_pu, c2, c1, c0, base_mva):
    """Cost in $/h of ``pg_pu`` (per unit) for coefficients in $/MW^2h, $/MWh, $/h."""
    p_mw = pg_pu * base_mva
    return c2 * p_mw * p_mw + c1 * p_mw + c0
