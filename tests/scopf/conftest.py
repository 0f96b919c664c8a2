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


def write_matpower(path, buses, gens, branches):
    """A minimal MATPOWER case file for hand-made networks. buses: (pd_mw, bus type) per
    bus (3 = reference, 2 = PV, 1 = PQ); gens: (bus, pg_mw, pmax_mw); branches:
    (from, to, x_pu, rate_a_mva); 0-based buses; baseMVA 100, lossless branches."""
    lines = ["function mpc = handmade", "mpc.version = '2';", "mpc.baseMVA = 100;", "mpc.bus = ["]
    lines += [f"{i + 1} {typ} {pd} 0 0 0 1 1 0 100 1 1.1 0.9;" for i, (pd, typ) in enumerate(buses)]
    lines += ["];", "mpc.gen = ["]
    lines += [f"{b + 1} {pg} 0 100 -100 1 100 1 {pmax} 0 0 0 0 0 0 0 0 0 0 0 0;" for b, pg, pmax in gens]
    lines += ["];", "mpc.branch = ["]
    lines += [f"{f + 1} {t + 1} 0 {x} 0 {r} {r} {r} 0 0 1 -360 360;" for f, t, x, r in branches]
    lines += ["];", "mpc.gencost = ["] + ["2 0 0 3 0 10 0;"] * len(gens) + ["];"]
    path.write_text("\n".join(lines) + "\n")
    from gridlearn.grid import load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_case(path)
