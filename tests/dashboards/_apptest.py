"""Render the dashboard with Streamlit's AppTest, for the page tests."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

TIMEOUT_S = 30  # the first run imports plotly; later runs take a fraction of a second


def _entry(results_dir: str, default_page: str | None) -> None:
    # AppTest.from_function runs this function's source as a script: imports go inside.
    from dashboards.app import main

    main(results_dir=results_dir, default_page=default_page)


def run_app(results_dir: Path, page: str | None = "task_forecasting") -> AppTest:
    """The app run once on ``results_dir`` showing ``page``; fails on any page exception."""
    at = AppTest.from_function(_entry, kwargs={"results_dir": str(results_dir), "default_page": page}, default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def figures(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page, by element key, as the JSON Streamlit sends the browser."""
    return {el.key: json.loads(el.proto.spec) for el in at.get("plotly_chart")}
