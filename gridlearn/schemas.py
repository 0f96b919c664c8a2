"""Every study's schema module, by study name: where the dashboard's overview finds its headline.

A study's schema module names its tables (`gridlearn.tables.TableSchema`) and has a
``headline(metrics) -> (label, value) | None`` for the overview card. Imported lazily: a
page over one study must not import every application.
"""

from __future__ import annotations

import importlib
from typing import Callable

# study -> (schema module, name of its headline function)
SCHEMAS: dict[str, tuple[str, str]] = {
    "task_forecasting": ("gridlearn.forecast.schema", "headline"),
    "scopf": ("gridlearn.scopf.schema", "headline"),
    "inverse_acopf": ("gridlearn.inverse.schema", "headline"),
    "satnet_parity": ("gridlearn.logic.schema", "parity_headline"),
    "satnet_sudoku": ("gridlearn.logic.schema", "sudoku_headline"),
}


def headline_of(study: str) -> Callable[[dict], tuple[str, str] | None] | None:
    """The study's headline function, or None for a study without a schema module."""
    if study not in SCHEMAS:
        return None
    module, name = SCHEMAS[study]
    return getattr(importlib.import_module(module), name)
