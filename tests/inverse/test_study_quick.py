"""studies/inverse_acopf.py --quick, the configuration `make demo` runs, end to end on the
cases `load_case` now reads (MATPOWER's own case14; the paper's setup on pandapower's copy)."""

from __future__ import annotations


import pytest

from gridlearn import results
from gridlearn.inverse import schema
from tests._studies import study_module



@pytest.fixture(scope="module")
def study():
    with study_module("inverse_acopf") as mod:
        yield mod


def test_quick_run_writes_every_table_its_schema_names(study, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "DEFAULT_ROOT", tmp_path / "results")
    study.run(quick=True)
    (run_dir,) = (tmp_path / "results" / schema.STUDY).iterdir()
    run = results.load_run(run_dir)
    recovery = schema.RECOVERY.check(run.table(schema.RECOVERY.name))
    paper = recovery[(recovery["case"] == "case14-paper") & (recovery["method"] == "gradient")]
    assert len(paper) and set(paper["status"]) <= {"converged", "stalled", "max_iter", "failed"}
    sweep = schema.SWEEP_SUMMARY.check(run.table(schema.SWEEP_SUMMARY.name))
    assert list(sweep["case"]) == ["case14"]
