"""End to end: the real server (`dashboards.launch`) in front of headless Chromium.

Starts Streamlit on a free localhost port over a fixture results directory, loads the
page, waits for the Plotly chart, and checks the method names and plotted values that
the browser actually holds. The server is stopped in the fixture's teardown, always.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dashboards.launch import launch, stop, wait_until_healthy
from gridlearn.forecast.schema import STUDY
from gridlearn.results import list_runs

from .conftest import METHODS

CHROMIUM = Path("/usr/bin/chromium")
HOST = "127.0.0.1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
WAIT_MS = 60_000  # upper bounds, not expectations: two shared cores can be slow

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@pytest.fixture
def server(results_root, tmp_path):
    port = free_port()
    log_path = tmp_path / "streamlit.log"
    with log_path.open("wb") as log:
        process = launch(results_root["root"], port=port, host=HOST, headless=True, log=log)
        try:
            wait_until_healthy(HOST, port, timeout_s=60, process=process)
            yield f"http://{HOST}:{port}"
        except Exception:
            print(log_path.read_text(errors="replace"))  # shown by pytest on failure
            raise
        finally:
            stop(process)
    assert process.poll() is not None


def test_dashboard_in_headless_chromium(server, results_root, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    newest_id = list_runs(results_root["root"], study=STUDY)[0].run_id
    run = next(r for r in results_root["runs"] if r.run_id == newest_id)
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.goto(f"{server}/task_forecasting", wait_until="domcontentloaded", timeout=WAIT_MS)
            page.wait_for_selector(".js-plotly-plot .legendtext", timeout=WAIT_MS)
            page.get_by_text("Dispatch cost vs RMSE").wait_for(timeout=WAIT_MS)

            # What Plotly holds in the browser for the first chart (cost vs RMSE).
            plotted = page.evaluate(
                """() => {
                    const gd = document.querySelector('.js-plotly-plot');
                    return gd._fullData.map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}));
                }"""
            )
            by_name = {t["name"]: t for t in plotted}
            for method in METHODS:
                rows = run.summary[run.summary["method"] == method]
                assert by_name[method]["x"] == pytest.approx(rows["rmse"].tolist())
                assert by_name[method]["y"] == pytest.approx(rows["task_cost"].tolist())
            legend = page.locator(".js-plotly-plot").first.locator(".legendtext").all_text_contents()  # SVG text: no innerText
            assert set(METHODS) <= set(legend)
            # The run selector shows the dataset of the newest run, and the page raised nothing.
            assert page.get_by_text(run.dataset).count() >= 1
            assert page.locator('[data-testid="stException"]').count() == 0

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
        finally:
            context.close()


def test_forecasting_page_on_a_real_run_shows_no_error_box(real_forecast_root, tmp_path):
    """Headless Chromium on the forecasting page over a real (tiny) study run: every panel, no error box."""
    sync_api = pytest.importorskip("playwright.sync_api")
    port = free_port()
    with (tmp_path / "streamlit.log").open("wb") as log:
        process = launch(real_forecast_root, port=port, host=HOST, headless=True, log=log)
        try:
            wait_until_healthy(HOST, port, timeout_s=60, process=process)
            with sync_api.sync_playwright() as pw:
                context = pw.chromium.launch_persistent_context(
                    user_data_dir=str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
                    args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1000},
                )
                try:
                    page = context.new_page()
                    page.goto(f"http://{HOST}:{port}/task_forecasting", wait_until="domcontentloaded", timeout=WAIT_MS)
                    page.get_by_text("Forecast vs actual on one test day").wait_for(timeout=WAIT_MS)
                    # the scatter, the per-hour chart and the test-day chart (the comparison needs two runs)
                    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=WAIT_MS)
                    assert page.locator('[data-testid="stException"]').count() == 0
                    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
                finally:
                    context.close()
        finally:
            stop(process)
