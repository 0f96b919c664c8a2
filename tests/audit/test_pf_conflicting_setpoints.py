"""Conflicting |V| set-points of several units at one bus are resolved silently (audit finding).

`PowerFlowLayer._problem` (gridlearn/grid/powerflow.py, outside the audit's files) takes the
FIRST unit's vg_pu at a bus and drops the others without a word; its comment says "as in
MATPOWER", but MATPOWER's runpf assigns ``V0(gbus(k)) = gen(on(k), VG)`` with repeated
indices, so the LAST in-service unit's VG wins (lib/runpf.m, the "initial state" block),
and pandapower refuses such a net ("Generators with different voltage setpoints connected
to the same bus"). The loaded corpus is unaffected (no file has conflicting VG at one bus:
benchmarks/results/audit_pf_corpus.json, dv_first = dv_last); a user's vg_pu is not.
Fixed: powerflow.py raises DataError naming the bus, the units and the scenario.
"""

from __future__ import annotations

import pytest

from gridlearn.errors import DataError
from gridlearn.grid import PowerFlowLayer, load_case


def test_conflicting_voltage_setpoints_at_one_bus_raise():
    net = load_case("case24_ieee_rts")  # bus 1 (index 0) holds four units
    units = (net.gen.bus == 0).nonzero().flatten()
    assert len(units) > 1
    vg = net.gen.vg_pu.clone()
    vg[units[-1]] += 0.05
    with pytest.raises(DataError, match=r"bus .*generators .* different voltage set-points"):
        PowerFlowLayer()(net, vg_pu=vg)


def test_conflict_in_one_scenario_of_a_batch_names_it():
    net = load_case("case24_ieee_rts")
    units = (net.gen.bus == 0).nonzero().flatten()
    vg = net.gen.vg_pu.repeat(3, 1)
    vg[2, units[1]] += 0.01
    with pytest.raises(DataError, match=r"scenario 2"):
        PowerFlowLayer()(net, vg_pu=vg)


def test_equal_setpoints_at_one_bus_still_solve():
    net = load_case("case24_ieee_rts")
    res = PowerFlowLayer()(net, vg_pu=net.gen.vg_pu.repeat(2, 1))
    assert res.vm_pu.shape[0] == 2
