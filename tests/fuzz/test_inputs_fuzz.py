"""Loaders and run directories under random corruption: a named DataError or ConfigError,
or a result that keeps its invariants; never another exception type."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gridlearn.data import PJM_FILES, load_pjm
from gridlearn.data.pjm import MIN_HOURS, TIMEZONE, _file_features
from gridlearn.errors import ConfigError, DataError
from gridlearn.results import list_runs, load_run, start_run
from tests.fuzz._budget import examples

T0 = 1199163600  # 2008-01-01 00:00 EST
DAYS = 8


def _good_lines(offset_days: int) -> list[str]:
    t0 = T0 + offset_days * 86400
    return [f"{t0 + 3600 * i:.8e} {1.5 + 0.5 * np.sin(i / 3.0):.6e} {30.0 + (i % 24):.6e}" for i in range(24 * DAYS)]


corruption = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 24 * DAYS - 1), st.integers(1, 30)),
    st.tuples(st.just("field"), st.integers(0, 24 * DAYS - 1), st.integers(0, 2),
              st.sampled_from(["nan", "inf", "-1", "1e30", "abc", "", "1e-300", "3 4", "-1e9"])),
    st.tuples(st.just("duplicate"), st.integers(0, 24 * DAYS - 1), st.integers(1, 5)),
    st.tuples(st.just("swap"), st.integers(0, 24 * DAYS - 2), st.integers(1, 30)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("garbage"), st.integers(0, 24 * DAYS - 1), st.text(max_size=20)),
)


def _apply(lines: list[str], op) -> tuple[list[str], str]:
    kind = op[0]
    lines = list(lines)
    end = "\n"
    if not lines:
        return lines, end
    if kind == "delete":
        _, i, n = op
        del lines[i:i + n]
    elif kind == "field":
        _, i, col, value = op
        i = min(i, len(lines) - 1)
        if len(lines[i].split()) == 3:
            parts = lines[i].split()
            parts[col] = value
            lines[i] = " ".join(parts)
    elif kind == "duplicate":
        _, i, n = op
        lines[i:i] = lines[i:i + n]
    elif kind == "swap":
        _, i, d = op
        i = min(i, len(lines) - 1)
        j = min(len(lines) - 1, i + d)
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "truncate":
        text = "\n".join(lines) + "\n"
        cut = op[1] % max(1, len(text))
        return text[:cut].split("\n"), ""
    elif kind == "garbage":
        _, i, text = op
        lines.insert(i, text.replace("\n", " "))
    return lines, end


@settings(max_examples=examples(3.0))
@given(st.lists(corruption, min_size=1, max_size=3), st.integers(0, 1))
def test_corrupt_pjm_files_raise_data_error_or_load_consistently(ops, which):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        files = {}
        for k, name in enumerate(PJM_FILES):
            lines, end = _good_lines(k * DAYS), "\n"
            if k == which:
                for op in ops:
                    lines, end = _apply(lines, op)
            (d / name).write_text("\n".join(lines) + end)
            files[name] = lines
        try:
            data = load_pjm(d)
        except (DataError, ConfigError) as exc:
            event(f"raised {type(exc).__name__}")
            return
        event("loaded")
        for part in (data.x_train, data.x_test, data.y_train, data.y_test):
            assert np.isfinite(part).all()
        assert 0 < data.y_train.min() and max(data.y_train.max(), data.y_test.max()) < 100
        # Within each file: every kept target day and the day before it were observed for at
        # least MIN_HOURS hours, and "yesterday" is the previous calendar day's target.
        for name in PJM_FILES:
            x, y, dates, _ = _file_features(d / name)
            raw = np.array([[float(v) for v in ln.split()] for ln in files[name] if ln.strip()])
            local = pd.to_datetime(raw[:, 0], unit="s", utc=True).tz_convert(TIMEZONE)
            hours = pd.DataFrame({"date": local.date, "hour": local.hour}).drop_duplicates().groupby("date").size()
            for i, day in enumerate(dates):
                day = pd.Timestamp(day).date()
                prev = (pd.Timestamp(day) - pd.Timedelta(days=1)).date()
                assert hours.get(day, 0) >= MIN_HOURS and hours.get(prev, 0) >= MIN_HOURS
                if i and (dates[i] - dates[i - 1]).astype(int) == 1:
                    np.testing.assert_allclose(x[i, :24], y[i - 1])


study_names = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["../x", "../../x", "/abs", ".", "..", "a/b", "a\\b", ".hidden", "ok-name", "ok_name.v2", "", "x" * 300]),
)


@settings(max_examples=examples(2.0))
@given(study_names)
def test_study_names_stay_inside_the_root_or_raise_config_error(name):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "root"
        try:
            with start_run(name, {"a": 1}, root=root) as run:
                run.log_metrics(x=1.0)
        except ConfigError:
            event("ConfigError")
            return
        event("accepted")
        inside = [p for p in Path(d).rglob("*") if p.is_file()]
        assert inside and all(root.resolve() in p.resolve().parents for p in inside)
        (rec,) = list_runs(root)
        assert rec.readable and rec.metrics == {"x": 1.0}


metric_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
              st.sampled_from([object(), {1, 2}, b"bytes", complex(1, 2)])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=6,
)


@settings(max_examples=examples(2.0))
@given(st.dictionaries(st.text(min_size=1, max_size=8), metric_values, min_size=1, max_size=3))
def test_a_failed_log_metrics_never_poisons_later_calls(metrics):
    with tempfile.TemporaryDirectory() as d:
        with start_run("fuzz", {}, root=d) as run:
            run.log_metrics(before=1)
            try:
                run.log_metrics(**metrics)
                event("written")
            except DataError:
                event("DataError")
            run.log_metrics(after=2)  # must work whatever happened above
        (rec,) = list_runs(d)
        assert rec.readable and rec.metrics["before"] == 1 and rec.metrics["after"] == 2


@settings(max_examples=examples(2.0))
@given(st.sampled_from(["config.json", "run.json", "metrics.json"]), st.binary(max_size=40))
def test_corrupt_run_files_are_reported_not_raised(which, blob):
    with tempfile.TemporaryDirectory() as d:
        with start_run("fuzz", {"k": 1}, root=d) as run:
            run.log_metrics(m=1)
        path = run.final_dir / which
        path.write_bytes(blob)
        (rec,) = list_runs(d)
        rec2 = load_run(run.final_dir)
        try:
            ok = isinstance(json.loads(blob.decode("utf-8")), dict)
        except (UnicodeDecodeError, ValueError):
            ok = False
        assert rec.readable == rec2.readable == ok
