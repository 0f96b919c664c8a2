"""Lazy re-exports for package ``__init__`` files.

Why: ``import gridlearn.implicit`` should be cheap and should only pull in the module a
user actually touches (the QP layer doesn't need the ODE solver, and nothing in
``implicit`` may import pandapower or pyomo).

Each package lists its exports once, per module: ``{"qp": "QPLayer QPSettings solve_qp"}``.
``"*"`` takes the module's own ``__all__`` (read from its source, without importing it),
so a module whose public names are all exported lists them in one place only.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from typing import Callable


def _module_all(qualified: str) -> list[str]:
    """The literal ``__all__`` of a module, parsed from its source (the module is not imported)."""
    spec = importlib.util.find_spec(qualified)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot find module {qualified!r} to read its __all__")
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), spec.origin)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise ImportError(f"{qualified} has no literal __all__ to export with '*'")


def lazy_exports(package: str, by_module: dict[str, str]) -> tuple[list[str], Callable, Callable]:
    """Return (``__all__``, ``__getattr__``, ``__dir__``) resolving ``name -> package.module.name`` on access.

    ``by_module`` maps a submodule to its exported names, space-separated, or ``"*"``.
    """
    table: dict[str, str] = {}
    for module, names in by_module.items():
        listed = _module_all(f"{package}.{module}") if names == "*" else names.split()
        for name in listed:
            if name in table:
                raise ImportError(f"{package}: {name!r} exported from both {table[name]!r} and {module!r}")
            table[name] = module

    def __getattr__(name: str):
        try:
            module = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__():
        return sorted(table)

    return sorted(table), __getattr__, __dir__
