"""The dashboard on real study output (a tiny run of the study itself), not on a hand-made fixture.

A schema mismatch between study and page (the study writes ISO dates, the page once
expected day numbers) broke the "Forecast vs actual on one test day" panel on `make demo`
output while every fixture-based test passed.
"""

from __future__ import annotations


from gridlearn.forecast import schema
from gridlearn.results import list_runs

from .test_pages import figures, run_app


def test_forecasting_page_shows_every_panel_without_an_error_on_a_real_run(real_forecast_root):
    at = run_app(real_forecast_root, page="task_forecasting")
    assert not at.exception
    assert [e.value for e in at.error] == []
    assert {"tf_fig_scatter", "tf_fig_per_hour", "tf_fig_day"} <= set(figures(at))
    (rec,) = list_runs(real_forecast_root, schema.STUDY)
    days = sorted(rec.table(schema.FORECASTS.name)["day"].astype(str).unique())
    picker = at.selectbox(key=f"tf_fc_day_{rec.run_id}")
    assert list(picker.options) == days and days[0].startswith("2016-")  # ISO dates, chronological
    picker.set_value(days[-1]).run()
    assert not at.exception and [e.value for e in at.error] == []
    assert figures(at)["tf_fig_day"]["layout"]["title"]["text"].endswith(f"test day {days[-1]}")


def test_real_run_round_trips_through_the_schema(real_forecast_root):
    (rec,) = list_runs(real_forecast_root, schema.STUDY)
    for table in schema.TABLES:
        df = rec.table(table.name)
        assert list(df.columns) == table.names
        table.check(df)  # every column of the declared kind, as read back from disk
    assert set(rec.figures) == set(schema.FIGURES)


def test_overview_card_shows_the_real_runs_headline(real_forecast_root):
    at = run_app(real_forecast_root, page="overview")
    assert not at.exception and [e.value for e in at.error] == []
    (rec,) = list_runs(real_forecast_root, schema.STUDY)
    label, value = schema.headline(rec.metrics)
    assert [(m.label, m.value) for m in at.metric] == [(label, value)]
    assert value == f"{rec.metrics[schema.HEADLINE_KEY]:.1%}"
