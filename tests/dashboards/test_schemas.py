"""One schema per study: what the study builds with `TableSchema.frame` is what its page reads back.

For each study: the tables are built through the study's schema, written by the real
`gridlearn.results.start_run`, read back from CSV, checked against the same schema, and
loaded by the page's own loader, which sees the same values.
"""

from __future__ import annotations

import pandas as pd
import pytest

from dashboards.inverse_data import load_inverse_run
from dashboards.satnet_data import PARITY, SUDOKU, load_satnet_run
from dashboards.scopf_data import load_scopf_run
from gridlearn.errors import DataError
from gridlearn.inverse import schema as inverse_schema
from gridlearn.logic import schema as satnet_schema
from gridlearn.results import list_runs, start_run
from gridlearn.schemas import SCHEMAS, headline_of
from gridlearn.scopf import schema as scopf_schema


def _round_trip(tmp_path, study, tables):
    """Write ``{schema: df}`` through the schemas, read them back checked; returns (record, read tables)."""
    with start_run(study, {"case": "demo"}, root=tmp_path) as run:
        for table_schema, df in tables.items():
            run.write_table(table_schema.name, table_schema.frame(df))
    (rec,) = list_runs(tmp_path, study)
    return rec, {s: s.check(rec.table(s.name)) for s in tables}


def test_scopf_schema_round_trip(study_root, tmp_path):
    src = study_root["scopf"]
    tables = {scopf_schema.ATTACK: src["attack"], scopf_schema.SUMMARY: src["summary"], scopf_schema.DEFENCE: src["defence"]}
    rec, back = _round_trip(tmp_path, scopf_schema.STUDY, tables)
    run = load_scopf_run(rec)
    pd.testing.assert_frame_equal(run.attack[scopf_schema.ATTACK.names], back[scopf_schema.ATTACK][scopf_schema.ATTACK.names], check_dtype=False)
    assert run.defence["cost_usd_per_h"].tolist() == pytest.approx(src["defence"]["cost_usd_per_h"].tolist())


def test_scopf_header_only_defence_table_keeps_every_column(tmp_path):
    df = scopf_schema.DEFENCE.frame(pd.DataFrame())
    assert list(df.columns) == scopf_schema.DEFENCE.names and df.empty


def test_inverse_schema_round_trip(study_root, tmp_path):
    src = study_root["inverse"]
    tables = {inverse_schema.RECOVERY: src["recovery"], inverse_schema.PARAMETERS: src["parameters"],
              inverse_schema.ADMITTANCE: src["admittance"]}
    rec, back = _round_trip(tmp_path, inverse_schema.STUDY, tables)
    run = load_inverse_run(rec)
    assert run.recovery["max_rel_err"].tolist() == pytest.approx(src["recovery"]["max_rel_err"].tolist(), nan_ok=True)
    assert run.parameters["identifiable"].tolist() == src["parameters"]["identifiable"].astype(bool).tolist()


@pytest.mark.parametrize("key, layout, table_schema, study", [
    ("parity", PARITY, satnet_schema.PARITY_TRAINING, satnet_schema.PARITY_STUDY),
    ("sudoku_visual", SUDOKU, satnet_schema.SUDOKU_TRAINING, satnet_schema.SUDOKU_STUDY),
])
def test_satnet_schema_round_trip(study_root, tmp_path, key, layout, table_schema, study):
    src = study_root[key]["training"]
    rec, back = _round_trip(tmp_path, study, {table_schema: src})
    run = load_satnet_run(rec, layout)
    assert set(layout.curve_columns) <= set(table_schema.names)  # the page reads only schema columns
    pd.testing.assert_frame_equal(run.training[layout.curve_columns].reset_index(drop=True),
                                  src[layout.curve_columns].reset_index(drop=True), check_dtype=False)


def test_a_study_writing_the_wrong_kind_fails_when_it_builds_the_table():
    bad = pd.DataFrame({"method": ["a"], "step": ["first"], "cost_usd_per_h": [1.0], "worst_violation_mw": [0.0]})
    with pytest.raises(DataError, match="column 'step' is not numeric"):
        scopf_schema.DEFENCE.frame(bad)


def test_every_study_with_a_page_has_a_schema_with_a_headline():
    from dashboards.registry import discover_pages

    specs, _ = discover_pages()
    studies = {s.study for s in specs if s.study is not None}
    assert studies <= set(SCHEMAS)
    for study in studies:
        assert headline_of(study)({}) is None  # no metrics, no headline, no crash
