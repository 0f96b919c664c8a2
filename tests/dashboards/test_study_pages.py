"""The SC-OPF, inverse AC-OPF and SATNet pages, rendered by Streamlit's AppTest from run
directories the real results helper wrote in the studies' column layout. Assertions are
on the plotted and tabulated numbers, and on the empty and broken states."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboards.common import empty_state_message, produce_hint
from dashboards.inverse_data import load_inverse_run, parameter_view
from dashboards.inverse_figures import highlight_unidentifiable
from dashboards.registry import discover_pages
from gridlearn.results import list_runs, load_run

from ._apptest import TIMEOUT_S, figures, run_app  # noqa: F401
from .conftest import KKT_NOT_APPLICABLE, SCOPF_CASES, write_other_run, write_scopf_run, write_sudoku_run

NEW_PAGES = {"scopf": "scopf", "inverse_acopf": "inverse_acopf", "satnet_parity": "satnet_parity",
             "satnet_sudoku": "satnet_sudoku"}


def traces(fig: dict, **match) -> dict[str, dict]:
    """Traces by name, optionally only those whose attributes equal ``match`` (e.g. xaxis="x2")."""
    return {t["name"]: t for t in fig["data"] if all(t.get(k, "x" if k == "xaxis" else None) == v for k, v in match.items())}


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    [table] = [d.value for d in at.dataframe if column in d.value.columns]
    return table


def short(case: str) -> str:
    return case.removeprefix("pglib_opf_")


# --------------------------------------------------------------------------- discovery


def test_study_pages_are_discovered_with_their_studies():
    specs, errors = discover_pages()
    assert errors == []
    found = {s.name: s.study for s in specs}
    assert {name: found.get(name) for name in NEW_PAGES} == NEW_PAGES
    # The landing page is the overview; the run browser stays last.
    names = [s.name for s in specs]
    assert names[0] == "overview" and names[-1] == "run_browser"


# --------------------------------------------------------------------------- SC-OPF


def test_scopf_recall_and_power_flow_ratio_per_case_and_k(study_root):
    at = run_app(study_root["root"], "scopf")
    fx = study_root["scopf"]
    summary = fx["summary"]
    assert at.title[0].value == "Security-constrained OPF"
    figs = figures(at)
    recall, ratio = traces(figs["sc_fig_recall"]), traces(figs["sc_fig_pf_ratio"])
    assert set(recall) == set(ratio) == {"N-1", "N-2"}
    for k in (1, 2):
        rows = summary[summary["k"] == k]
        assert recall[f"N-{k}"]["x"] == [short(c) for c in rows["case"]]
        assert recall[f"N-{k}"]["y"] == pytest.approx(rows["recall"].tolist())
        assert ratio[f"N-{k}"]["y"] == pytest.approx(rows["pf_ratio"].tolist())
    # The one miss (case 30, k=2, one of three scenarios) shows as recall 2/3.
    assert recall["N-2"]["y"][SCOPF_CASES.index("pglib_opf_case30_ieee")] == pytest.approx(2 / 3)
    assert figs["sc_fig_pf_ratio"]["layout"]["yaxis"]["type"] == "log"
    shown = table_with(at, "pf_ratio").set_index(["case", "k"])
    expected = summary.set_index(["case", "k"])
    for col in ["recall", "mean_rank", "pf_ratio", "time_ratio", "attack_pf", "enum_pf"]:
        assert shown[col].tolist() == pytest.approx(expected.loc[shown.index, col].tolist())
    assert "Download summary (CSV)" in [b.label for b in at.get("download_button")]


def test_scopf_attack_vs_enumeration_cost_and_per_scenario_violations(study_root):
    at = run_app(study_root["root"], "scopf")
    fx = study_root["scopf"]
    summary, attack = fx["summary"], fx["attack"]
    figs = figures(at)
    labels = [f"{short(c)} N-{k}" for c, k in zip(summary["case"], summary["k"])]
    left, right = traces(figs["sc_fig_search_cost"], xaxis="x"), traces(figs["sc_fig_search_cost"], xaxis="x2")
    assert left["attack"]["x"] == labels
    assert left["attack"]["y"] == pytest.approx(summary["attack_pf"].tolist())
    assert left["enumeration"]["y"] == pytest.approx(summary["enum_pf"].tolist())
    assert right["attack"]["y"] == pytest.approx(summary["attack_s"].tolist())
    assert right["enumeration"]["y"] == pytest.approx(summary["enum_s"].tolist())
    scatter = traces(figs["sc_fig_found_vs_worst"])
    miss = scatter["case30_ieee N-2"]
    rows = attack[(attack["case"] == "pglib_opf_case30_ieee") & (attack["k"] == 2)]
    assert miss["x"] == pytest.approx(rows["worst_mw"].tolist())
    assert miss["y"] == pytest.approx(rows["found_mw"].tolist())
    assert miss["marker"]["symbol"] == ["circle", "x", "circle"]  # scenario 1 is the miss
    # The per-scenario table is the study's table, row for row.
    shown = table_with(at, "found_outage")
    assert shown["found_mw"].tolist() == pytest.approx(attack["found_mw"].tolist())
    assert shown["recall"].tolist() == attack["recall"].tolist()


def test_scopf_defence_curve_per_method_and_saved_figures(study_root):
    at = run_app(study_root["root"], "scopf")
    defence = study_root["scopf"]["defence"]
    curve = traces(figures(at)["sc_fig_defence"])
    assert set(curve) == set(defence["method"])
    for method, rows in defence.groupby("method"):
        rows = rows.sort_values("step")
        assert curve[method]["x"] == pytest.approx(rows["cost_usd_per_h"].tolist())
        assert curve[method]["y"] == pytest.approx(rows["worst_violation_mw"].tolist())
        assert curve[method]["customdata"] == rows["step"].tolist()
    assert curve["constraint_generation (attack's view)"]["line"]["dash"] == "dash"
    assert curve["constraint_generation"]["line"]["dash"] == "solid"
    assert any("pglib_opf_case30_ieee, N-1, loads × 0.6" in c.value for c in at.caption)
    assert table_with(at, "cost_usd_per_h")["worst_violation_mw"].tolist() == pytest.approx(defence["worst_violation_mw"].tolist())
    assert len(at.get("image")) == 2


# --------------------------------------------------------------------------- inverse AC-OPF


def test_inverse_error_vs_samples_by_method_observation_and_noise(study_root):
    at = run_app(study_root["root"], "inverse_acopf")
    rec = study_root["inverse"]["recovery"]
    assert at.metric[0].value == f"{study_root['inverse']['best']:.3e}"
    fig = figures(at)["ia_fig_error"]
    assert fig["layout"]["yaxis"]["type"] == "log"
    panel = traces(fig, xaxis="x")  # observe pg+lmp
    assert set(panel) == {f"{m}, noise {n:g}" for m in ("gradient", "kkt_baseline") for n in (0.0, 0.01)}
    for (method, noise), rows in rec[rec["observe"] == "pg+lmp"].groupby(["method", "noise"]):
        t = panel[f"{method}, noise {noise:g}"]
        assert t["x"] == rows["n_samples"].tolist()
        assert t["y"] == pytest.approx(rows["max_rel_err_identifiable"].tolist())
    # Observing pg alone identifies nothing: no curve on this measure, and the page says why.
    assert traces(fig, xaxis="x2") == {}
    assert any("Nothing to plot for observe pg" in c.value and "no parameter is identifiable" in c.value for c in at.caption)
    # The baseline that does not apply is listed with the study's reason.
    [failed] = [d.value for d in at.dataframe if list(d.value.columns) == ["case", "observe", "noise", "n_samples", "method", "error"]]
    assert len(failed) == int(rec["error"].notna().sum())
    assert set(failed["method"]) == {"kkt_baseline"} and set(failed["observe"]) == {"pg"}
    assert (failed["error"] == KKT_NOT_APPLICABLE).all()

    # Over all parameters the pg panel has the gradient method's errors.
    at.radio(key="ia_measure").set_value("max_rel_err").run()
    pg = traces(figures(at)["ia_fig_error"], xaxis="x2")
    rows = rec[(rec["observe"] == "pg") & (rec["method"] == "gradient") & (rec["noise"] == 0.0)]
    assert pg["gradient, noise 0"]["y"] == pytest.approx(rows["max_rel_err"].tolist())


def test_inverse_parameter_table_flags_unidentifiable_parameters(study_root):
    at = run_app(study_root["root"], "inverse_acopf")
    params = study_root["inverse"]["parameters"]
    shown = table_with(at, "coefficient")
    assert len(shown) == len(params)
    assert shown["value"].tolist() == pytest.approx(params["value"].tolist())
    assert shown["identifiable"].tolist() == params["identifiable"].tolist()
    assert shown["rel_err"].tolist() == pytest.approx(((params["value"] - params["true"]).abs() / params["true"]).tolist())
    assert set(shown.loc[~shown["identifiable"], "reason"]) == {"common_scale"}
    assert any(f"6 of {len(params)} parameters identifiable" in c.value for c in at.caption)
    at.selectbox(key="ia_param_observe").set_value("pg").run()
    only_pg = table_with(at, "coefficient")
    assert set(only_pg["observe"]) == {"pg"} and not only_pg["identifiable"].any()
    assert any("0 of 6 parameters identifiable" in c.value for c in at.caption)
    # The admittance table is shown as written.
    adm = table_with(at, "branch")
    assert adm["max_rel_err"].tolist() == pytest.approx(study_root["inverse"]["admittance"]["max_rel_err"].tolist())


def test_inverse_highlight_shades_exactly_the_unidentifiable_rows(study_root):
    table = parameter_view(load_inverse_run(load_run(study_root["inverse"]["path"])))
    html = highlight_unidentifiable(table).to_html()
    shaded_rows = {int(m) for m in re.findall(r"_row(\d+)_col0[^{]*\{\s*background-color: rgba\(255, 75, 75", html)}
    # The CSS may group selectors: collect every row listed before a shaded rule.
    for block in re.findall(r"((?:#T_\w+_row\d+_col\d+,?\s*)+)\{\s*background-color: rgba\(255, 75, 75", html):
        shaded_rows |= {int(r) for r in re.findall(r"_row(\d+)_col", block)}
    assert shaded_rows == set(np.flatnonzero(~table["identifiable"].to_numpy()))
    # 4 significant digits: a true c2 of 2e-4 reads 0.0002, not pandas' default 0.000200.
    assert ">0.0002</td>" in html and ">0.000200</td>" not in html


# --------------------------------------------------------------------------- SATNet


def test_parity_page_curves_final_accuracy_and_config(study_root):
    at = run_app(study_root["root"], "satnet_parity")
    fx = study_root["parity"]
    t = fx["training"]
    final = table_with(at, "run")
    assert final["run"].tolist() == [fx["path"].name]
    assert final["test accuracy"].tolist() == pytest.approx([fx["metrics"]["test_accuracy"]])
    assert final["final length"].tolist() == [fx["metrics"]["final_level"]]
    assert final["length"].tolist() == [fx["config"]["length"]]
    figs = figures(at)
    acc = traces(figs["sp_fig_accuracy"])
    assert acc["train accuracy (current length)"]["y"] == pytest.approx(t["train_acc"].tolist())
    assert acc["test accuracy (full length)"]["y"] == pytest.approx(t["test_acc_full_length"].tolist())
    level = acc["curriculum length (bits)"]
    assert level["yaxis"] == "y2" and level["y"] == t["level"].tolist()
    assert traces(figs["sp_fig_loss"])["train loss (BCE)"]["y"] == pytest.approx(t["train_loss"].tolist())
    assert traces(figs["sp_fig_converged"])["test solves converged"]["y"] == pytest.approx(t["converged_test"].tolist())
    assert json.loads(at.json[0].value) == fx["config"]
    assert any("Only one readable run" in c.value for c in at.caption)


def test_sudoku_page_compares_runs_and_switches_run(study_root):
    at = run_app(study_root["root"], "satnet_sudoku")
    plain, visual = study_root["sudoku_plain"], study_root["sudoku_visual"]
    final = table_with(at, "run").set_index("run")
    assert set(final.index) == {plain["path"].name, visual["path"].name}
    assert final.loc[visual["path"].name, "test boards solved"] == pytest.approx(visual["metrics"]["test_board_acc"])
    assert np.isnan(final.loc[plain["path"].name, "digit accuracy (given cells)"])  # JSON null in metrics
    assert final.loc[visual["path"].name, "loss_on"] == "blanks"

    compare = traces(figures(at)["ss_fig_compare"])
    assert {n.split(" ")[0] for n in compare} == {plain["path"].name, visual["path"].name}
    vis_name = f"{visual['path'].name} (mode=visual, loss_on=blanks, box=2)"
    assert compare[vis_name]["y"] == pytest.approx(visual["training"]["test_board_acc"].tolist())

    newest = list_runs(study_root["root"], study="satnet_sudoku")[0].run_id
    first = visual if newest == visual["path"].name else plain
    other = plain if first is visual else visual
    assert len(traces(figures(at)["ss_fig_accuracy"])["test boards solved"]["y"]) == len(first["training"])
    at.selectbox(key="ss_run").set_value(1).run()
    acc = traces(figures(at)["ss_fig_accuracy"])
    assert acc["test blank cells right"]["y"] == pytest.approx(other["training"]["test_blank_cell_acc"].tolist())
    # The digit accuracy is a curve only for the visual run.
    assert ("digit classifier on given cells (visual)" in acc) == (other is visual)


# --------------------------------------------------------------------------- empty and broken


@pytest.mark.parametrize("page", sorted(NEW_PAGES))
def test_empty_states_name_the_command_that_makes_a_run(tmp_path, page):
    study = NEW_PAGES[page]
    at = run_app(tmp_path / "nowhere", page)
    assert "No results directory" in at.info[0].value and f"`gridlearn run {study}`" in at.info[0].value
    write_other_run(tmp_path)  # a run of another study only
    at = run_app(tmp_path, page)
    assert at.info[0].value.startswith(f"No `{study}` runs in `{tmp_path}`.")
    assert f"`gridlearn run {study}`" in at.info[0].value
    assert not at.get("plotly_chart")


def test_produce_hint_falls_back_to_make_demo_for_a_study_without_a_file(tmp_path):
    assert "make demo" in produce_hint("no_such_study") and "gridlearn run" not in produce_hint("no_such_study")
    write_other_run(tmp_path)
    assert "make demo" in empty_state_message(tmp_path, list_runs(tmp_path), "no_such_study")


def test_broken_runs_are_listed_and_the_good_one_still_shows(tmp_path):
    good = write_scopf_run(tmp_path, rng_seed=1)
    no_defence = write_scopf_run(tmp_path, rng_seed=2)
    (no_defence["path"] / "tables" / "defence.csv").unlink()
    text_k = write_scopf_run(tmp_path, rng_seed=3)
    summary = text_k["summary"].astype({"pf_ratio": object})
    summary.loc[0, "pf_ratio"] = "oops"
    summary.to_csv(text_k["path"] / "tables" / "summary.csv", index=False)
    at = run_app(tmp_path, "scopf")
    assert "2 runs could not be read" in at.warning[0].value
    listing = at.markdown[0].value
    assert f"{no_defence['path'].name}`: missing table defence.csv" in listing
    assert f"{text_k['path'].name}`: table summary.csv: column 'pf_ratio' is not numeric (e.g. 'oops')" in listing
    assert [o.split(" · ")[0] for o in at.selectbox(key="sc_run").options] == [good["path"].name]
    assert traces(figures(at)["sc_fig_recall"])["N-1"]["y"] == pytest.approx(good["summary"].query("k == 1")["recall"].tolist())


def test_every_run_broken_says_so_with_the_command(tmp_path, study_root):
    # Inverse: a recovery table without its error measure; SATNet: corrupt metrics.json.
    inv = tmp_path / "inverse_acopf" / study_root["inverse"]["path"].name
    shutil.copytree(study_root["inverse"]["path"], inv)
    pd.read_csv(inv / "tables" / "recovery.csv").drop(columns=["max_rel_err"]).to_csv(inv / "tables" / "recovery.csv", index=False)
    sud = write_sudoku_run(tmp_path, mode="plain", epochs=2)
    (sud["path"] / "metrics.json").write_text("{")
    at = run_app(tmp_path, "inverse_acopf")
    assert "lacks columns ['max_rel_err']" in at.markdown[0].value
    assert "No readable `inverse_acopf` run" in at.info[0].value and "`gridlearn run inverse_acopf`" in at.info[0].value
    at = run_app(tmp_path, "satnet_sudoku")
    assert f"{sud['path'].name}`: corrupt metrics.json" in at.markdown[0].value
    assert "`gridlearn run satnet_sudoku --box 2 --epochs 10`" in at.info[0].value
    assert not at.get("plotly_chart")
