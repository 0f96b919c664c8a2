"""Network: conversion from pandapower, matrices against pandapower's, boundary checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from gridlearn.errors import DataError
from gridlearn.grid import load_case, network_from_pandapower
from gridlearn.grid.cases import load_pandapower_net


def _pp_ybus(net):
    import pandapower as pp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, calculate_voltage_angles=True, init="flat")
    return net._ppc["internal"]["Ybus"].toarray()


@pytest.mark.parametrize("case", ["case9", "case30", "case118", "case300"])
def test_ybus_matches_pandapower(case):
    net = load_pandapower_net(case)
    network = network_from_pandapower(net)
    y_pp = _pp_ybus(net)
    # pandapower's internal ordering equals the ppc bus order on these cases (no fused buses)
    assert network.n_bus == y_pp.shape[0]
    np.testing.assert_allclose(network.ybus().numpy(), y_pp, atol=1e-9)


def test_ptdf_matches_pandapower_makeptdf():
    from pandapower.pypower.makePTDF import makePTDF
    from pandapower.converter.pypower.to_ppc import to_ppc

    net = load_pandapower_net("case30")
    network = network_from_pandapower(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ppc = to_ppc(net, init="flat", calculate_voltage_angles=True)
    slack = int(network.ref_buses[0])
    ref = makePTDF(ppc["baseMVA"], ppc["bus"], ppc["branch"], slack=slack)
    np.testing.assert_allclose(network.ptdf(slack=slack).numpy(), ref, atol=1e-10)


def test_dc_matrices_give_balanced_flows():
    network = load_case("case118")
    dc = network.dc_matrices()
    theta = torch.randn(network.n_bus, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    p_bus = dc.b_bus @ theta
    # every branch flow leaves one bus and enters another: injections sum to zero
    assert float(p_bus.sum().abs()) < 1e-9


def test_labels_trace_back_to_pandapower():
    network = load_case("pandapower:case118")
    assert network.gen.labels[0] == ("ext_grid", 0)
    # MATPOWER's own file: labels name the element pandapower makes of each row, in pandapower's order
    mp = load_case("case118")
    assert mp.gen.labels[0] == ("ext_grid", 0) and mp.gen.labels[1] == ("gen", 0)
    assert mp.bus.labels[int(mp.gen.bus[0])] == 69  # case118's reference bus
    assert {t for t, _ in network.branch.labels} == {"line", "trafo"}
    assert network.n_branch == 186 and network.n_gen == 54


def test_pglib_angle_limits_survive_conversion(shared_data):
    network = load_case(shared_data / "pglib-opf" / "pglib_opf_case5_pjm.m")
    np.testing.assert_allclose(network.branch.angmin_rad.numpy(), -np.deg2rad(30.0))
    np.testing.assert_allclose(network.branch.angmax_rad.numpy(), np.deg2rad(30.0))
    # the file's linear costs, in pandapower's generator order (ext_grid, gen, sgen)
    assert sorted(network.gen.cost_c1_usd_per_mwh.tolist()) == [10.0, 14.0, 15.0, 30.0, 40.0]


def test_with_replaces_parameters_and_keeps_grad():
    network = load_case("case9")
    x = network.branch.x_pu.clone().requires_grad_(True)
    variant = network.with_(x_pu=x, pd_mw=network.bus.pd_mw * 1.1)
    variant.ybus().abs().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.allclose(variant.bus.pd_mw, network.bus.pd_mw * 1.1)
    with pytest.raises(ValueError, match="no Network parameter"):
        network.with_(nonsense=x)


def test_to_float32_keeps_indices_integer():
    network = load_case("case9").to(dtype=torch.float32)
    assert network.bus.pd_mw.dtype == torch.float32 and network.gen.bus.dtype == torch.int64
    assert network.ybus().dtype == torch.complex64


def test_island_raises_data_error():
    net = load_pandapower_net("case9")
    # cut bus 4 (pandapower index) off: take out both lines that touch it
    touching = net.line.index[(net.line.from_bus == 4) | (net.line.to_bus == 4)]
    net.line.loc[touching, "in_service"] = False
    with pytest.raises(DataError, match="no path to a reference bus"):
        network_from_pandapower(net)


def test_nan_load_raises_data_error():
    net = load_pandapower_net("case9")
    net.load.loc[net.load.index[0], "p_mw"] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        network_from_pandapower(net)


def test_inverted_limits_raise_data_error():
    net = load_pandapower_net("case9")
    net.gen.loc[0, "min_p_mw"] = 500.0
    with pytest.raises(DataError, match="active power minimum"):
        network_from_pandapower(net)


def test_zero_reactance_raises_data_error():
    net = load_pandapower_net("case9")
    net.line.loc[0, "x_ohm_per_km"] = 0.0
    with pytest.raises(DataError, match="reactance"):
        network_from_pandapower(net)


def test_missing_cost_is_reported_when_costs_are_needed():
    from gridlearn.grid.checks import check_costs

    net = load_pandapower_net("case9")
    net.poly_cost = net.poly_cost.iloc[1:]
    network = network_from_pandapower(net)
    with pytest.raises(DataError, match="missing or non-finite cost"):
        check_costs(network)


def test_unknown_case_name_says_what_is_accepted():
    with pytest.raises(DataError, match="pandapower case name"):
        load_case("case_does_not_exist")


def test_pglib_download_path_is_used_when_not_local(tmp_path, monkeypatch):
    import gridlearn.grid.cases as cases

    monkeypatch.delenv("GRIDLEARN_DATA_DIR", raising=False)
    monkeypatch.setenv("GRIDLEARN_CACHE_DIR", str(tmp_path))
    fetched = []

    def fake_download(url, dest):
        fetched.append(url)
        raise OSError("network closed")

    monkeypatch.setattr(cases, "_download", fake_download)
    with pytest.raises(DataError, match="downloading"):
        cases.pglib_path("pglib_opf_case14_ieee")
    assert fetched and "v23.07/pglib_opf_case14_ieee.m" in fetched[0]


def test_controllable_sgens_are_labelled(shared_data):
    network = load_case(shared_data / "pglib-opf" / "pglib_opf_case24_ieee_rts.m")
    tables = [t for t, _ in network.gen.labels]
    assert "unknown" not in tables and tables.count("sgen") == 22 and network.n_gen == 33
