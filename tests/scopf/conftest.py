"""Fixtures for the SC-OPF tests: small networks and their DC-OPF dispatch, built once."""

from __future__ import annotations

import warnings

import pytest


@pytest.fixture(scope="session")
def case30():
    """pandapower's bundled case30 (realistic branch ratings; no data directory needed)."""
    from gridlearn.grid import load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_case("case30")


@pytest.fixture(scope="session")
def pglib14(shared_data):
    """PGLib case14 (its ratings make N-1 and N-2 outages overload lines)."""
    from gridlearn.grid import load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_case(shared_data / "pglib-opf" / "pglib_opf_case14_ieee.m")
