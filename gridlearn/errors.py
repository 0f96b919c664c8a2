"""The small error hierarchy every gridlearn module raises from.

Plain argument mistakes (wrong type, wrong shape of a Python argument) may still raise
the built-in ``ValueError``/``TypeError``; everything about solvers, data and
configuration raises one of these.
"""

from __future__ import annotations

from typing import Any, Sequence


class GridlearnError(Exception):
    """Base class of every error gridlearn raises on purpose."""


class ConfigError(GridlearnError, ValueError):
    """A solver, layer or study was configured with settings that cannot work."""


class DataError(GridlearnError, ValueError):
    """Input data is malformed: NaN/inf, wrong shape, broken case file, islanded bus..."""


class SolverUnavailable(GridlearnError, RuntimeError):
    """A numerical solver (e.g. Ipopt through Pyomo) is not installed or not usable."""


class SolverFailure(GridlearnError, RuntimeError):
    """A solver did not converge for some batch elements.

    ``indices`` lists the failed batch elements; ``statuses``, ``residuals`` and
    ``steps`` give, per failed element, why it failed, how far it was and how long it ran.
    """

    def __init__(
        self,
        message: str,
        *,
        indices: Sequence[int] = (),
        statuses: Sequence[Any] = (),
        residuals: Sequence[float] = (),
        steps: Sequence[int] = (),
    ):
        self.indices = list(indices)
        self.statuses = list(statuses)
        self.residuals = list(residuals)
        self.steps = list(steps)
        super().__init__(message)


class InfeasibleError(SolverFailure):
    """The problem has no feasible point (primal infeasible), for the listed elements."""


__all__ = [
    "GridlearnError",
    "ConfigError",
    "DataError",
    "SolverUnavailable",
    "SolverFailure",
    "InfeasibleError",
]
