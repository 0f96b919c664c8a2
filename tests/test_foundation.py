"""The foundation: Ipopt through Pyomo, clear errors for a broken install, atomic runs, doctor."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gridlearn import errors
from gridlearn.doctor import HS071_OBJECTIVE
from gridlearn.results import list_runs, load_run, start_run


def test_ipopt_solves_hs071_through_pyomo():
    from gridlearn.solvers import solve_hs071

    assert solve_hs071() == pytest.approx(HS071_OBJECTIVE, rel=1e-8)


def test_missing_pynumero_library_gives_the_fix_not_a_traceback(tmp_path, monkeypatch):
    from pyomo.contrib.pynumero.asl import AmplInterface

    import gridlearn.solvers as solvers

    monkeypatch.setattr(AmplInterface, "available", classmethod(lambda cls: False))
    monkeypatch.setenv("PYOMO_CONFIG_DIR", str(tmp_path))
    with pytest.raises(errors.SolverUnavailable, match="scripts/setup.sh"):
        solvers.get_ipopt()


def test_missing_cyipopt_gives_the_fix(monkeypatch):
    import gridlearn.solvers as solvers

    monkeypatch.setitem(sys.modules, "cyipopt", None)  # makes `import cyipopt` raise ImportError
    with pytest.raises(errors.SolverUnavailable, match="cyipopt"):
        solvers.get_ipopt()


def test_error_hierarchy():
    assert issubclass(errors.InfeasibleError, errors.SolverFailure)
    assert issubclass(errors.SolverFailure, errors.GridlearnError)
    assert issubclass(errors.DataError, ValueError)
    exc = errors.SolverFailure("x", indices=[3], residuals=[0.1], steps=[7])
    assert exc.indices == [3] and exc.steps == [7]


def test_run_directory_is_complete_after_success(tmp_path):
    with start_run("toy", {"alpha": 1.5, "seeds": [0, 1]}, root=tmp_path) as run:
        run.log_metrics(rmse=0.25)
        import pandas as pd

        run.write_table("summary", pd.DataFrame({"method": ["a"], "rmse": [0.25]}))
    rec = load_run(run.dir)
    assert rec.readable, rec.error
    assert rec.config == {"alpha": 1.5, "seeds": [0, 1]}
    assert rec.metrics == {"rmse": 0.25}
    assert rec.meta["git_revision"] and rec.meta["study"] == "toy"
    assert rec.table("summary")["rmse"].tolist() == [0.25]
    assert run.dir.parent == tmp_path / "toy" and run.dir.name.count("-") >= 2


def test_a_study_that_raises_leaves_no_run(tmp_path):
    with pytest.raises(RuntimeError, match="halfway"):
        with start_run("toy", {"a": 1}, root=tmp_path) as run:
            run.log_metrics(partial=1)
            raise RuntimeError("halfway")
    assert list((tmp_path / "toy").iterdir()) == []
    assert list_runs(tmp_path) == []


def test_corrupt_run_is_listed_as_unreadable(tmp_path):
    with start_run("toy", {"a": 1}, root=tmp_path):
        pass
    with start_run("toy", {"a": 2}, root=tmp_path) as bad:
        pass
    (bad.dir / "metrics.json").write_text("{not json")
    runs = list_runs(tmp_path)
    assert len(runs) == 2
    broken = [r for r in runs if not r.readable]
    assert len(broken) == 1 and "corrupt metrics.json" in broken[0].error


def test_nan_metrics_are_written_as_null(tmp_path):
    with start_run("toy", {}, root=tmp_path) as run:
        run.log_metrics(x=float("nan"))
    assert json.loads((run.dir / "metrics.json").read_text()) == {"x": None}


def test_doctor_exits_zero_here():
    proc = subprocess.run(
        [sys.executable, "-m", "gridlearn.cli", "doctor"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "healthy" in proc.stdout and "17.0140173" in proc.stdout


def test_every_study_loads_through_the_cli_and_has_help():
    from typer.testing import CliRunner

    from gridlearn.cli import app, available_studies, load_study

    studies = available_studies()
    assert {"task-forecasting", "scopf", "inverse-acopf", "satnet-parity", "satnet-sudoku"} <= set(studies)
    for name in studies:
        assert hasattr(load_study(name), "app"), name
    result = CliRunner().invoke(app, ["run", "task-forecasting", "--help"])
    assert result.exit_code == 0 and "--demo" in result.output


def test_unknown_study_lists_the_available_ones():
    from typer.testing import CliRunner

    from gridlearn.cli import app

    result = CliRunner().invoke(app, ["run", "no-such-study"])
    assert result.exit_code == 2 and "task-forecasting" in result.output


def test_a_run_whose_name_was_taken_meanwhile_gets_the_next_suffix(tmp_path):
    with start_run("toy", {"a": 1}, root=tmp_path) as run:
        # another process finishes a run with the very name this one picked
        squatter = run.final_dir
        squatter.mkdir()
        (squatter / "config.json").write_text("{}")
    assert run.dir != squatter and run.dir.name.startswith(squatter.name + "-")
    assert load_run(run.dir).meta["run_id"] == run.dir.name


@pytest.mark.parametrize("options, match", [({"tol_x": 1.0}, "'tol_x'.*not a valid option"),
                                            ({"max_iter": "abc"}, "'max_iter'.*type"),
                                            ({"tol": -1.0}, "'tol'.*not a valid setting")])
def test_a_rejected_ipopt_option_is_a_config_error_naming_it(options, match):
    from gridlearn.errors import ConfigError
    from gridlearn.solvers import check_ipopt_options

    with pytest.raises(ConfigError, match=match):
        check_ipopt_options(options)
    check_ipopt_options({"tol": 1e-9, "max_iter": 50})  # good ones pass
