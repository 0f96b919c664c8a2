"""The contingency model of each physics, and the one place that chooses between them.

A contingency model (`dc.DCContingencyModel`, `ac.ACContingencyModel`) answers
``build(network, space, participation)``, ``base_dispatch()``, ``violation``, ``certifiable``,
``score_sets`` and ``score_batch`` (`dc` module docstring); the attack, the enumeration
and the base dispatch ask `contingency_model` for one and never test the physics
themselves. A new physics is one model class (a module of its own) and its name here.
"""

from __future__ import annotations

from torch import Tensor

from gridlearn.errors import ConfigError
from gridlearn.grid.network import Network
from gridlearn.scopf.outages import ElementSpace

PHYSICS = ("dc", "ac")


def check_physics(physics: str) -> None:
    if physics not in PHYSICS:
        raise ConfigError(f"physics must be one of {PHYSICS}, got {physics!r}")


def contingency_model(network: Network, space: ElementSpace, physics: str, participation: Tensor | None,
                      dc_model=None):
    """The post-contingency physics for ``physics`` ("dc" or "ac"); ``dc_model`` (a
    `DCContingencyModel` already built for this network and space) is returned as is for "dc"."""
    check_physics(physics)
    if physics == "ac":
        from gridlearn.scopf.ac import ACContingencyModel

        return ACContingencyModel.build(network, space, participation)
    from gridlearn.scopf.dc import DCContingencyModel

    return dc_model if dc_model is not None else DCContingencyModel.build(network, space, participation)


__all__ = ["PHYSICS", "check_physics", "contingency_model"]
