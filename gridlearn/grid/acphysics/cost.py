"""Polynomial generation cost with its derivatives, in per-unit dispatch (any leading batch dims)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class QuadraticCost:
    """``cost_usd_per_h = sum_g c2 (B pg)^2 + c1 (B pg) + c0`` for ``pg`` in per unit (B = base MVA).

    Coefficients in $/MW^2h, $/MWh, $/h, each ``(..., n_gen)`` (a batch of scenarios may carry
    its own). Works on numpy, torch and Pyomo terms alike (arithmetic only).
    """

    c2_usd_per_mw2h: Any
    c1_usd_per_mwh: Any
    c0_usd_per_h: Any
    base_mva: float

    def per_generator(self, pg_pu):
        """$/h of each generator (..., n_gen)."""
        p_mw = pg_pu * self.base_mva
        return self.c2_usd_per_mw2h * p_mw * p_mw + self.c1_usd_per_mwh * p_mw + self.c0_usd_per_h

    def gradient(self, pg_pu):
        """d cost / d pg_pu (..., n_gen), $/h per pu."""
        b = self.base_mva
        return 2 * self.c2_usd_per_mw2h * b * b * pg_pu + self.c1_usd_per_mwh * b

    def hessian_diagonal(self, pg_pu=None):
        """d2 cost / d pg_pu^2 (..., n_gen); the Hessian is diagonal."""
        b = self.base_mva
        return 2 * self.c2_usd_per_mw2h * b * b
