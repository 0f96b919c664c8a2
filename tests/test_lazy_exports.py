"""Package exports are listed once, per module, and every listed name resolves."""

from __future__ import annotations

import importlib

import pytest

from gridlearn._lazy import lazy_exports

PACKAGES = ["gridlearn.implicit", "gridlearn.grid", "gridlearn.forecast", "gridlearn.data", "gridlearn.scopf",
            "gridlearn.inverse", "gridlearn.logic"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_export_resolves(package):
    pkg = importlib.import_module(package)
    assert pkg.__all__ == sorted(pkg.__all__) and pkg.__all__
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(pkg, "nope")


def test_star_takes_the_modules_own_all_without_importing_it():
    import gridlearn.logic
    from gridlearn.logic import sudoku

    assert gridlearn.logic.__all__ == sorted(sudoku.__all__)


def test_a_name_exported_twice_is_refused():
    with pytest.raises(ImportError, match="'Solution' exported from both"):
        lazy_exports("gridlearn.implicit", {"solution": "Solution", "qp": "Solution"})
