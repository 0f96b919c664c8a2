"""Lazy re-exports for package ``__init__`` files.

Why: ``import gridlearn.implicit`` should be cheap and should only pull in the module a
user actually touches (the QP layer doesn't need the ODE solver, and nothing in
``implicit`` may import pandapower or pyomo).
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, table: dict[str, str]) -> tuple[Callable, Callable]:
    """Return (``__getattr__``, ``__dir__``) resolving ``name -> package.module.name`` on access."""

    def __getattr__(name: str):
        try:
            module = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__():
        return sorted(table)

    return __getattr__, __dir__
