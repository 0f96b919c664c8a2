"""Dashboard pages rendered by Streamlit's AppTest from run directories the real results
helper wrote; assertions are on the numbers the pages show, not on their presence alone."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboards.common import csv_bytes, resolve_results_dir
from dashboards.forecast_data import load_forecast_run, stats_table
from dashboards.launch import streamlit_command
from dashboards.registry import discover_pages
from gridlearn.errors import DataError
from gridlearn.forecast.schema import STUDY
from gridlearn.results import list_runs, load_run

from ._apptest import TIMEOUT_S, figures, run_app  # noqa: F401
from .conftest import METHODS, OTHER_STUDY, day_iso

APP = Path(__file__).resolve().parents[2] / "dashboards" / "app.py"


def traces(fig: dict) -> dict[str, dict]:
    return {t["name"]: t for t in fig["data"]}


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    """The one dataframe on the page with ``column`` (AppTest does not keep dataframe keys)."""
    [table] = [d.value for d in at.dataframe if column in d.value.columns]
    return table


def newest(root: Path, study: str = STUDY):
    return list_runs(root, study=study)[0]


def fixture_for(results_root: dict, run_id: str):
    return next(r for r in results_root["runs"] if r.run_id == run_id)


# --------------------------------------------------------------------------- task forecasting


def test_real_entry_script_reads_results_from_environment(results_root, monkeypatch):
    monkeypatch.setenv("GRIDLEARN_RESULTS_DIR", str(results_root["root"]))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert at.title[0].value == "gridlearn results"  # the landing page: the overview
    assert f"`{results_root['root']}` · 3 run(s)" in at.sidebar.caption[0].value
    # its forecasting card shows the newest forecasting run
    assert any(newest(results_root["root"]).run_id in c.value for c in at.caption)


def test_scatter_plots_every_method_and_seed_with_mean_and_std(results_root):
    at = run_app(results_root["root"])
    run = fixture_for(results_root, newest(results_root["root"]).run_id)
    assert at.selectbox(key="tf_run").value == run.run_id
    tr = traces(figures(at)["tf_fig_scatter"])
    for method in METHODS:
        seeds = run.summary[run.summary["method"] == method]
        points = tr[method]
        assert points["x"] == seeds["rmse"].tolist()
        assert points["y"] == seeds["task_cost"].tolist()
        # Hover names the run and seed of each point, and the run's config.
        assert [c[0] for c in points["customdata"]] == [run.run_id] * len(seeds)
        assert [c[1] for c in points["customdata"]] == seeds["seed"].tolist()
        assert f"train.lr={run.config['train']['lr']}" in points["hovertemplate"]
        assert f"dataset={run.dataset}" in points["hovertemplate"]
        mean = tr[f"{method} mean ± std"]
        stats = run.methods_metrics[method]
        assert mean["x"] == pytest.approx([stats["rmse_mean"]])
        assert mean["y"] == pytest.approx([stats["task_cost_mean"]])
        assert mean["error_x"]["array"] == pytest.approx([stats["rmse_std"]])
        assert mean["error_y"]["array"] == pytest.approx([stats["task_cost_std"]])


def test_cost_table_shows_metrics_and_is_offered_as_csv(results_root):
    at = run_app(results_root["root"])
    run = fixture_for(results_root, newest(results_root["root"]).run_id)
    shown = at.dataframe[0].value.set_index("method")
    assert set(shown.index) == set(METHODS)
    for method, stats in run.methods_metrics.items():
        for key, value in stats.items():
            assert shown.loc[method, key] == pytest.approx(value)
    assert list(shown["task_cost_mean"]) == sorted(shown["task_cost_mean"])  # best first
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download cost/RMSE table (CSV)", "Download per-seed summary (CSV)"]
    # The bytes the button serves parse back to the same table.
    served = pd.read_csv(io.BytesIO(csv_bytes(stats_table(load_forecast_run(load_run(run.path))))))
    pd.testing.assert_frame_equal(served.set_index("method"), shown, check_dtype=False)


def test_per_hour_curves_are_seed_means_by_method(results_root):
    at = run_app(results_root["root"])
    run = fixture_for(results_root, newest(results_root["root"]).run_id)
    tr = traces(figures(at)["tf_fig_per_hour"])
    expected = run.per_hour.groupby(["method", "hour"])["task_cost"].mean()
    for method in METHODS:
        assert tr[method]["x"] == list(range(24))
        np.testing.assert_allclose(tr[method]["y"], expected.loc[method].to_numpy(), rtol=1e-12)
        assert f"{method} seed range" in tr  # three seeds: a min-max band


def test_forecast_day_follows_the_selected_method_seed_and_day(results_root):
    at = run_app(results_root["root"])
    run = fixture_for(results_root, newest(results_root["root"]).run_id)
    key = f"tf_fc_{{}}_{run.run_id}"
    at.selectbox(key=key.format("method")).set_value("task_net").run()
    at.selectbox(key=key.format("seed")).set_value(1).run()
    at.selectbox(key=key.format("day")).set_value(day_iso(2)).run()
    assert not at.exception
    fig = figures(at)["tf_fig_day"]
    assert fig["layout"]["title"]["text"] == f"task_net, seed 1, test day {day_iso(2)}"
    day2 = day_iso(2)
    rows = run.forecasts.query("method == 'task_net' and seed == 1 and day == @day2").sort_values("hour")
    tr = traces(fig)
    np.testing.assert_allclose(tr["actual"]["y"], rows["actual"], rtol=1e-12)
    np.testing.assert_allclose(tr["forecast μ"]["y"], rows["mu"], rtol=1e-12)
    np.testing.assert_allclose(tr["schedule"]["y"], rows["schedule"], rtol=1e-12)
    np.testing.assert_allclose(tr["μ + 2σ"]["y"], rows["mu"] + 2 * rows["sigma"], rtol=1e-12)
    np.testing.assert_allclose(tr["μ ± 2σ"]["y"], rows["mu"] - 2 * rows["sigma"], rtol=1e-12)


def test_run_selector_and_side_by_side_comparison(results_root):
    at = run_app(results_root["root"])
    runs = list_runs(results_root["root"], study=STUDY)
    a, b = (fixture_for(results_root, r.run_id) for r in runs)
    selector = at.selectbox(key="tf_run")
    assert selector.options[0].startswith(a.run_id) and a.dataset in selector.options[0] and "git " in selector.options[0]
    selector.set_value(b.run_id).run()
    assert b.dataset in at.caption[0].value
    assert traces(figures(at)["tf_fig_scatter"])["task_net"]["x"] == b.summary.query("method == 'task_net'")["rmse"].tolist()

    at.selectbox(key="tf_compare").set_value(a.run_id).run()
    assert not at.exception
    delta = table_with(at, "Δ task_cost_mean (B − A)").set_index("method")
    for method in METHODS:
        change = a.methods_metrics[method]["task_cost_mean"] - b.methods_metrics[method]["task_cost_mean"]
        assert delta.loc[method, "Δ task_cost_mean (B − A)"] == pytest.approx(change)
    config_diff = table_with(at, "key")
    assert set(config_diff["key"]) == {"dataset", "train.lr"}
    both = traces(figures(at)["tf_fig_compare"])
    assert {"task_net [A]", "task_net [B]", "task_net mean ± std [A]", "task_net mean ± std [B]"} <= set(both)


# --------------------------------------------------------------------------- run browser


def test_run_browser_shows_config_metrics_tables_and_figures_of_any_study(results_root):
    at = run_app(results_root["root"], page="run_browser")
    assert at.title[0].value == "Run browser"
    study = at.selectbox(key="rb_study")
    assert study.options == sorted([OTHER_STUDY, STUDY])
    study.set_value(OTHER_STUDY).run()
    assert json.loads(at.json[1].value) == {"case": "case9", "contingencies": 4}
    assert json.loads(at.json[2].value) == {"worst_overload_pct": 12.5}
    assert json.loads(at.json[0].value)["study"] == OTHER_STUDY
    table = at.dataframe[0].value
    assert table["max_overload_pct"].tolist() == [12.5, 3.25]
    assert len(at.get("image")) == 1


# --------------------------------------------------------------------------- empty and broken


def test_missing_results_directory_says_how_to_make_one(tmp_path):
    for page in ["task_forecasting", "run_browser"]:
        at = run_app(tmp_path / "nowhere", page=page)
        assert "No results directory" in at.info[0].value and "make demo" in at.info[0].value


def test_empty_results_directory_says_how_to_make_one(tmp_path):
    at = run_app(tmp_path)
    assert "holds no runs yet" in at.info[0].value and "make demo" in at.info[0].value


def test_forecast_page_without_forecast_runs(tmp_path):
    from .conftest import write_other_run

    write_other_run(tmp_path)
    at = run_app(tmp_path)
    assert f"No `{STUDY}` runs" in at.info[0].value
    assert not at.get("plotly_chart")


def test_broken_runs_are_listed_with_reasons_and_the_good_one_shows(broken_root):
    at = run_app(broken_root["root"])
    assert "3 runs could not be read" in at.warning[0].value
    listing = at.markdown[0].value
    broken = broken_root["broken"]
    assert f"{broken['corrupt'].run_id}`: corrupt metrics.json" in listing
    assert f"{broken['no_summary'].run_id}`: missing table summary.csv" in listing
    assert f"{broken['text_rmse'].run_id}`: table summary.csv: column 'rmse' is not numeric (e.g. 'oops')" in listing
    good = broken_root["good"]
    assert [o.split(" · ")[0] for o in at.selectbox(key="tf_run").options] == [good.run_id]
    assert traces(figures(at)["tf_fig_scatter"])["mse_net"]["x"] == good.summary.query("method == 'mse_net'")["rmse"].tolist()


def test_run_browser_lists_unreadable_run_and_still_shows_its_files(broken_root):
    at = run_app(broken_root["root"], page="run_browser")
    corrupt = broken_root["broken"]["corrupt"].run_id
    assert "1 run could not be read" in at.warning[0].value  # only metrics.json breaks a run for every study
    assert f"{corrupt}`: corrupt metrics.json" in at.markdown[0].value
    at.selectbox(key="rb_run").set_value(corrupt).run()
    assert "This run is unreadable: corrupt metrics.json" in at.error[0].value
    assert len(at.dataframe) == 3  # its tables are still there to inspect


def test_forecast_run_with_metrics_missing_a_method_is_unreadable(tmp_path):
    from .conftest import write_forecast_run

    fx = write_forecast_run(tmp_path, dataset="x", rng_seed=7)
    metrics = json.loads((fx.path / "metrics.json").read_text())
    del metrics["methods"]["task_net"]
    (fx.path / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(DataError, match=r"lacks statistics for methods \['task_net'\]"):
        load_forecast_run(load_run(fx.path))


# --------------------------------------------------------------------------- plumbing


def test_pages_are_discovered_and_a_broken_page_does_not_hide_the_others(tmp_path, monkeypatch):
    specs, errors = discover_pages()
    pages = [(s.name, s.study) for s in specs]
    # Later studies add pages in between; the landing page and the run browser stay put.
    assert pages[0] == ("overview", None) and pages[-1] == ("run_browser", None)
    assert ("task_forecasting", STUDY) in pages
    assert errors == []

    pkg = tmp_path / "plugged_views"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("TITLE = 'Good'\nSTUDY = 'scopf'\ndef render(runs, results_dir):\n    pass\n")
    (pkg / "crashes.py").write_text("raise RuntimeError('boom at import')\n")
    (pkg / "no_render.py").write_text("TITLE = 'Half'\nSTUDY = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    specs, errors = discover_pages("plugged_views")
    assert [(s.name, s.title, s.study) for s in specs] == [("good", "Good", "scopf")]
    assert {e.name: e.reason for e in errors} == {
        "crashes": "RuntimeError: boom at import",
        "no_render": "TypeError: render(runs, results_dir) is missing",
    }


def test_results_directory_resolution_order(tmp_path):
    env = {"GRIDLEARN_RESULTS_DIR": str(tmp_path / "env")}
    assert resolve_results_dir(["-q", "--results", str(tmp_path / "arg")], env) == tmp_path / "arg"
    assert resolve_results_dir(["-q"], env) == tmp_path / "env"
    assert resolve_results_dir([], {}) == Path("results")


def test_launch_command_binds_localhost_and_passes_results(tmp_path):
    cmd = streamlit_command(tmp_path, port=8765)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8765"
    assert cmd[-3:] == ["--", "--results", str(tmp_path.resolve())]
    with pytest.raises(ValueError, match="port"):
        streamlit_command(tmp_path, port=70000)


def test_single_seed_run_with_null_std_renders(tmp_path):
    from .conftest import write_forecast_run

    fx = write_forecast_run(tmp_path, dataset="one-seed", rng_seed=8, seeds=(0,))
    assert json.loads((fx.path / "metrics.json").read_text())["methods"]["task_net"]["rmse_std"] is None
    at = run_app(tmp_path)
    shown = at.dataframe[0].value.set_index("method")
    assert shown["rmse_std"].isna().all() and (shown["n_seeds"] == 1).all()
    tr = traces(figures(at)["tf_fig_scatter"])
    assert tr["task_net"]["x"] == fx.summary.query("method == 'task_net'")["rmse"].tolist()
    assert "over 1 seeds" in tr["task_net mean ± std"]["hovertemplate"]
