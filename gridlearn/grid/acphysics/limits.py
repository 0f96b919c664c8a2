"""Branch flow limits as strategies: one class per kind of limit, each with its derivatives.

Every kind is written as one residual at a branch end, per unit,

    h(p, q, vm) = p^2 + q^2 - rate^2 w(vm) <= 0,

with ``p, q`` the power leaving the end and ``vm`` its voltage magnitude; a kind is the
weight ``w`` and its first two derivatives. Apparent power (MATPOWER / PGLib,
``|S| <= RATE_A``): ``w = 1``. Current (pandapower ``runopp``, ``OPF_FLOW_LIM = 2``:
``|I| <= RATE_A / baseMVA`` in per unit): ``w = vm^2``, the same set since
``|S| = vm |I|``. Derivatives, for ``g = d(p, q)/d(any variable)``:

    grad h = 2 p grad p + 2 q grad q - rate^2 w'(vm) e_vm
    hess h = 2 (grad p grad p^T + p hess p + grad q grad q^T + q hess q) - rate^2 w''(vm) e_vm e_vm^T

To add a kind (say a limit on ``|S|`` with a voltage-dependent rating), subclass
`BranchLimit` here with its ``weight``/``weight_d1``/``weight_d2``; every backend
(Pyomo model, direct Ipopt path, KKT backward, SC-OPF's AC screening) then uses it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from gridlearn.grid.acphysics.namespace import ops_for


def _is_zero(w) -> bool:
    """A weight term given as the plain number 0 (a constant): its terms are skipped, not computed."""
    return isinstance(w, (int, float)) and w == 0


def _is_one(w) -> bool:
    return isinstance(w, (int, float)) and w == 1


class BranchLimit(ABC):
    """``h = p^2 + q^2 - rate^2 w(vm) <= 0`` at a branch end (per unit); see the module docstring."""

    name: ClassVar[str]

    @abstractmethod
    def weight(self, vm):
        """``w(vm)``: the squared rate is scaled by it."""

    @abstractmethod
    def weight_d1(self, vm):
        """``w'(vm)`` (the plain number 0 where it vanishes: its terms are then skipped)."""

    @abstractmethod
    def weight_d2(self, vm):
        """``w''(vm)`` (likewise)."""

    def residual(self, p, q, vm, rate_pu):
        """``h`` elementwise; ``<= 0`` where the limit holds."""
        w = self.weight(vm)
        return p * p + q * q - (rate_pu * rate_pu if _is_one(w) else rate_pu * rate_pu * w)

    def gradient(self, p, q, dp, dq, vm, rate_pu):
        """``dh/d(theta, vh, vo)`` from ``dp, dq`` = (d/dtheta, d/dvh, d/dvo) of the end's p and q."""
        g_theta = 2 * (p * dp[0] + q * dq[0])
        g_here = 2 * (p * dp[1] + q * dq[1])
        w1 = self.weight_d1(vm)
        if not _is_zero(w1):
            g_here = g_here - rate_pu * rate_pu * w1
        g_there = 2 * (p * dp[2] + q * dq[2])
        return g_theta, g_here, g_there

    def curvature(self, vm, rate_pu):
        """``d2h/dvh2`` beyond the ``p``/``q`` terms: ``-rate^2 w''(vm)``; None when ``w''`` is 0."""
        w2 = self.weight_d2(vm)
        return None if _is_zero(w2) else -(rate_pu * rate_pu) * w2

    def magnitude(self, p, q, vm, eps: float = 0.0):
        """The limited quantity in the rate's units: ``sqrt((p^2 + q^2 + eps) / w(vm))``.

        Apparent power gives ``|S|``; current gives ``|S| / vm`` (``|I|`` times the base).
        ``eps`` (in the squared units of ``p``) keeps sqrt's slope finite at zero flow.
        """
        return ops_for(p).sqrt((p * p + q * q + eps) / self.weight(vm))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True, repr=False)
class ApparentPowerLimit(BranchLimit):
    """``|S| <= RATE_A`` at both ends (MATPOWER ``OPF_FLOW_LIM = 0``, PGLib): ``w = 1``."""

    name: ClassVar[str] = "apparent_power"

    def weight(self, vm):
        return 1.0

    def weight_d1(self, vm):
        return 0.0

    def weight_d2(self, vm):
        return 0.0


@dataclass(frozen=True, repr=False)
class CurrentLimit(BranchLimit):
    """``|I| <= RATE_A / baseMVA`` per unit at both ends (pandapower ``runopp``): ``w = vm^2``."""

    name: ClassVar[str] = "current"

    def weight(self, vm):
        return vm * vm

    def weight_d1(self, vm):
        return 2 * vm

    def weight_d2(self, vm):
        return 2.0


APPARENT_POWER = ApparentPowerLimit()
CURRENT = CurrentLimit()
#: The kinds by name, for a `Convention` given ``branch_limit="current"`` as a string.
LIMITS: dict[str, BranchLimit] = {k.name: k for k in (APPARENT_POWER, CURRENT)}
