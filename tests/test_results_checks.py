"""Run directories: study names, ordering, failed metric writes, stale temporary dirs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gridlearn.errors import ConfigError, DataError
from gridlearn.results import OWNER_FILE, STALE_AFTER_S, TMP_PREFIX, clean_stale_tmp, list_runs, start_run


@pytest.mark.parametrize("name", ["../../x", "../x", "/tmp/x", "a/b", "..", ".", ".hidden", "", "a\x00b"])
def test_study_names_that_leave_the_root_are_config_errors(tmp_path, name):
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match="study name"):
        with start_run(name, {}, root=root):
            pass
    assert not (tmp_path / "x").exists() and not any(p.is_file() for p in tmp_path.rglob("*"))


def test_list_runs_is_newest_first_with_many_runs_in_one_second(tmp_path, monkeypatch):
    import gridlearn.results as results

    class Frozen(results._dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 3, 4, 5, tzinfo=tz)

    monkeypatch.setattr(results._dt, "datetime", Frozen)
    for i in range(12):
        with start_run("s", {"i": i}, root=tmp_path) as run:
            run.log_metrics(i=i)
    order = [r.metrics["i"] for r in list_runs(tmp_path)]
    assert order == list(range(11, -1, -1))  # "-10" used to sort before "-2"


def test_a_failed_log_metrics_does_not_poison_later_calls(tmp_path):
    with start_run("s", {}, root=tmp_path) as run:
        run.log_metrics(a=1)
        with pytest.raises(DataError, match="'bad'"):
            run.log_metrics(bad=object())
        run.log_metrics(b=2)
    (rec,) = list_runs(tmp_path)
    assert rec.metrics == {"a": 1, "b": 2}


def test_stale_tmp_dirs_of_dead_processes_are_cleaned(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # that process has exited
    import platform

    stale = study / f"{TMP_PREFIX}dead"
    stale.mkdir()
    (stale / OWNER_FILE).write_text(json.dumps({"pid": pid, "host": platform.node()}))
    alive = study / f"{TMP_PREFIX}alive"
    alive.mkdir()
    (alive / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": platform.node()}))
    orphan = study / f"{TMP_PREFIX}orphan"  # no owner file (older gridlearn): removed once a day old
    orphan.mkdir()
    old = orphan.stat().st_mtime - STALE_AFTER_S - 10
    os.utime(orphan, (old, old))
    with start_run("s", {}, root=tmp_path):
        pass
    left = sorted(p.name for p in study.iterdir() if p.name.startswith(TMP_PREFIX))
    assert left == [f"{TMP_PREFIX}alive"]
    assert clean_stale_tmp(study) == []
