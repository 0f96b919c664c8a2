"""AC network physics written once for every backend: the polar formulation, branch-limit
strategies, pi-model admittances, the polynomial cost, and the array namespace they are written against."""

from gridlearn.grid.acphysics.admittance import pi_admittance_parts
from gridlearn.grid.acphysics.cost import QuadraticCost
from gridlearn.grid.acphysics.limits import APPARENT_POWER, CURRENT, LIMITS, ApparentPowerLimit, BranchLimit, CurrentLimit
from gridlearn.grid.acphysics.polar import ACPolar, EndJacobian, EndState

__all__ = ["ACPolar", "APPARENT_POWER", "ApparentPowerLimit", "BranchLimit", "CURRENT", "CurrentLimit", "EndJacobian",
           "EndState", "LIMITS", "QuadraticCost", "pi_admittance_parts"]
