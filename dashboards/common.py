"""What every dashboard page shares: where results live, run labels, safe table reads.

Nothing here computes a result; it only finds and reads what `gridlearn.results` wrote.
"""

from __future__ import annotations

import argparse
import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import streamlit as st

from gridlearn.errors import DataError
from gridlearn.results import RunRecord
from gridlearn.tables import TableSchema

RESULTS_ENV = "GRIDLEARN_RESULTS_DIR"
DEFAULT_RESULTS = Path("results")
MAKE_HINT = "Produce one with `make demo`, then reload this page."


@dataclass(frozen=True)
class LoadedRun:
    """A run directory read by a study's page: its `RunRecord` plus the page's tables (subclasses)."""

    record: RunRecord

    @property
    def run_id(self) -> str:
        return self.record.run_id


def resolve_results_dir(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Path:
    """The results root: ``--results DIR`` after ``--`` on the command line, else $GRIDLEARN_RESULTS_DIR, else ./results.

    Read at every script run (not at import) so that one process can serve, and tests
    can point it at, different directories.
    """
    argv = list(argv) if argv is not None else []
    environ = environ if environ is not None else dict(os.environ)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--results", default=None)
    # parse_known_args: Streamlit and pytest put their own arguments in sys.argv.
    known, _ = parser.parse_known_args(argv)
    if known.results:
        return Path(known.results).expanduser()
    if environ.get(RESULTS_ENV):
        return Path(environ[RESULTS_ENV]).expanduser()
    return DEFAULT_RESULTS


STUDIES_DIR = Path(__file__).resolve().parents[1] / "studies"


def study_command(study: str) -> str | None:
    """The `gridlearn run` command that writes runs of ``study``; None if no studies/<study>.py exists."""
    return f"gridlearn run {study}" if (STUDIES_DIR / f"{study}.py").is_file() else None


def produce_hint(study: str | None) -> str:
    """How to produce a run of ``study``: its `gridlearn run` command when there is a study file, else `make demo`."""
    command = study_command(study) if study is not None else None
    if command is None:
        return MAKE_HINT
    return f"Produce one with `{command}` (`{command} --help` lists its options), then reload this page."


def empty_state_message(results_dir: Path, runs: Sequence[RunRecord], study: str | None = None) -> str | None:
    """The message to show instead of a page when there is nothing to show; None when there is."""
    # The study's own command, where there is one, after the general hint.
    study_hint = f" A `{study}` run comes from `{study_command(study)}`." if study and study_command(study) else ""
    if not results_dir.is_dir():
        return f"No results directory at `{results_dir}`. {MAKE_HINT}{study_hint}"
    if not runs:
        return f"The results directory `{results_dir}` holds no runs yet. {MAKE_HINT}{study_hint}"
    if study is not None and not any(r.study == study for r in runs):
        return f"No `{study}` runs in `{results_dir}`. {produce_hint(study)}"
    return None


def run_label(rec: RunRecord) -> str:
    """One line naming a run: id, dataset, start date and git revision."""
    parts = [rec.run_id]
    dataset = rec.config.get("dataset") or rec.metrics.get("dataset")
    if dataset:
        parts.append(str(dataset))
    started = str(rec.meta.get("started_utc", ""))
    if started:
        parts.append(started[:16].replace("T", " ") + " UTC")
    rev = rec.meta.get("git_revision")
    if rev:
        parts.append(f"git {rev}{'-dirty' if rec.meta.get('git_dirty') else ''}")
    if not rec.readable:
        parts.append("UNREADABLE")
    return " · ".join(parts)


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> {"a.b": leaf}; lists stay leaves."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def config_hover_text(config: dict[str, Any], max_items: int = 12, max_chars: int = 60) -> str:
    """A config as HTML lines for a Plotly hover box (escaped: configs may hold '<')."""
    flat = flatten_config(config)
    lines = []
    for key in sorted(flat)[:max_items]:
        value = str(flat[key])
        if len(value) > max_chars:
            value = value[: max_chars - 1] + "…"
        lines.append(html.escape(f"{key}={value}"))
    if len(flat) > max_items:
        lines.append(f"… {len(flat) - max_items} more")
    return "<br>".join(lines)


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> pd.DataFrame:
    """Config keys whose values differ between two runs (columns: key, a, b)."""
    fa, fb = flatten_config(a), flatten_config(b)
    rows = [
        {"key": k, "a": str(fa.get(k, "—")), "b": str(fb.get(k, "—"))}
        for k in sorted(set(fa) | set(fb))
        if fa.get(k, object()) != fb.get(k, object())
    ]
    return pd.DataFrame(rows, columns=["key", "a", "b"])


@st.cache_data(show_spinner=False, max_entries=64)
def _read_csv_cached(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    # mtime and size are in the key so that a rewritten file is read again.
    del mtime_ns, size
    return pd.read_csv(path)


def read_table(rec: RunRecord, name: str, columns: Iterable[str] = ()) -> pd.DataFrame:
    """Table ``name`` of a run, checked to hold ``columns``; raises DataError saying what is wrong."""
    if name not in rec.tables:
        raise DataError(f"missing table {name}.csv")
    path = rec.tables[name]
    try:
        stat = path.stat()
        table = _read_csv_cached(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"corrupt table {name}.csv: {exc}") from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"table {name}.csv lacks columns {missing} (has {list(table.columns)})")
    return table


def read_schema_table(rec: RunRecord, schema: TableSchema, check_values: bool = True) -> pd.DataFrame:
    """Table ``schema.name`` of a run, checked against the study's schema (columns, and their kinds
    unless ``check_values`` is False); raises DataError saying what is wrong."""
    table = read_table(rec, schema.name, schema.required)
    return schema.check(table) if check_values else table


def require_numeric(table: pd.DataFrame, name: str, columns: Iterable[str]) -> pd.DataFrame:
    """Check ``columns`` of table ``name`` are numeric; a study writes numbers, text means corruption."""
    for col in columns:
        if not pd.api.types.is_numeric_dtype(table[col]):
            bad = table[col][pd.to_numeric(table[col], errors="coerce").isna() & table[col].notna()]
            example = bad.iloc[0] if len(bad) else table[col].iloc[0]
            raise DataError(f"table {name}.csv: column {col!r} is not numeric (e.g. {example!r})")
    return table


def show_unreadable(items: Sequence[tuple[RunRecord, str]], consequence: str | None = None) -> None:
    """List unreadable runs with the reason; the caller goes on to show the readable ones.

    ``consequence`` ends the warning's sentence (default: they are not shown).
    """
    if not items:
        return
    n = len(items)
    if consequence is None:
        consequence = "are not shown" if n != 1 else "is not shown"
    st.warning(f"{n} run{'s' if n != 1 else ''} could not be read and {consequence}.")
    with st.expander("Unreadable runs", expanded=True):
        st.markdown("\n".join(f"- `{rec.study}/{rec.run_id}`: {reason}" for rec, reason in items))


def csv_bytes(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode("utf-8")
