"""The contingency model of each physics, and the one place that chooses between them.

A contingency model (`dc.DCContingencyModel`, `ac.ACContingencyModel`) answers
``build(network, space, participation)``, ``base_dispatch()``, ``violation``, ``certifiable``,
``securable``, ``score_sets`` and ``score_batch`` (`dc` module docstring); the attack, the
enumeration, the base dispatch and the defence ask `contingency_model` (or `model_class`) for
one and never test the physics themselves. A new physics is one model class (a module of its own) and its name here.
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


def model_class(physics: str) -> type:
    """The contingency model class of ``physics``, unbuilt: its class attributes
    (``certifiable``, ``securable``, ``score_batch``) answer what the physics supports
    before anything is solved.

    >>> model_class("dc").securable, model_class("ac").securable
    (True, False)
    """
    check_physics(physics)
    # imported here: ac and dc import this module's siblings, and "ac" pulls in the power flow
    if physics == "ac":
        from gridlearn.scopf.ac import ACContingencyModel

        return ACContingencyModel
    from gridlearn.scopf.dc import DCContingencyModel

    return DCContingencyModel


def securable_physics() -> tuple[str, ...]:
    """The physics whose model a preventive SC-OPF (`defence.defend`) can secure."""
    return tuple(p for p in PHYSICS if model_class(p).securable)


def contingency_model(network: Network, space: ElementSpace, physics: str, participation: Tensor | None,
                      dc_model=None):
    """The post-contingency physics for ``physics`` ("dc" or "ac"); ``dc_model`` (a
    `DCContingencyModel` already built for this network and space) is returned as is for "dc"."""
    cls = model_class(physics)
    if dc_model is not None and isinstance(dc_model, cls):
        return dc_model
    return cls.build(network, space, participation)


__all__ = ["PHYSICS", "check_physics", "contingency_model", "model_class", "securable_physics"]
