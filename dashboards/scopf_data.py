"""Reading SC-OPF runs (`studies/scopf.py`), checked against the columns that study writes.

Tables of a run:

- ``attack_vs_enumeration``: one row per (case, scenario, k): the true worst N-k violation
  (``worst_mw``, by enumeration), the attack's best (``found_mw``), ``recall`` (the attack
  found a set as bad as the worst), the enumeration ``rank`` of the attack's set, and the
  power flows and wall time of each search;
- ``summary``: per (case, k) means of those, and ``pf_ratio`` = enumeration / attack power
  flows, ``time_ratio`` likewise for wall time;
- ``defence``: per (method, step) the dispatch cost and its worst N-k violation.

Nothing is recomputed: every number shown comes from these tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dashboards.common import LoadedRun, read_table, require_numeric
from gridlearn.errors import DataError
from gridlearn.results import RunRecord

from gridlearn.scopf.schema import ATTACK, DEFENCE, STUDY, SUMMARY  # noqa: E402, F401 - the study's own schema (STUDY: re-exported for the page)

ATTACK_TABLE, SUMMARY_TABLE, DEFENCE_TABLE = ATTACK.name, SUMMARY.name, DEFENCE.name
ATTACK_NUMERIC, ATTACK_COLUMNS = ATTACK.numeric, ATTACK.names
SUMMARY_NUMERIC, SUMMARY_COLUMNS = SUMMARY.numeric, SUMMARY.names
DEFENCE_NUMERIC, DEFENCE_COLUMNS = DEFENCE.numeric, DEFENCE.names


def short_case(case: str) -> str:
    """``pglib_opf_case14_ieee`` -> ``case14_ieee`` (the axis labels of the study's own figure)."""
    return case.removeprefix("pglib_opf_")


@dataclass(frozen=True)
class ScopfRun(LoadedRun):
    """A readable SC-OPF run: its three tables, with ``case``/``method`` as strings and ``k`` as int."""

    attack: pd.DataFrame
    summary: pd.DataFrame
    defence: pd.DataFrame


def _checked(rec: RunRecord, name: str, columns: list[str], numeric: list[str], allow_empty: bool = False) -> pd.DataFrame:
    table = require_numeric(read_table(rec, name, columns), name, numeric)
    if table.empty and not allow_empty:
        raise DataError(f"table {name}.csv has no rows")
    return table


def load_scopf_run(rec: RunRecord) -> ScopfRun:
    """Read and check one run's tables; DataError says what is wrong."""
    attack = _checked(rec, ATTACK_TABLE, ATTACK_COLUMNS, ATTACK_NUMERIC)
    summary = _checked(rec, SUMMARY_TABLE, SUMMARY_COLUMNS, SUMMARY_NUMERIC)
    # a run made with --no-defence writes the defence table with its header only
    defence = _checked(rec, DEFENCE_TABLE, DEFENCE_COLUMNS, DEFENCE_NUMERIC, allow_empty=True)
    return ScopfRun(
        record=rec,
        attack=attack.assign(case=attack["case"].astype(str), k=attack["k"].astype(int)),
        summary=summary.assign(case=summary["case"].astype(str), k=summary["k"].astype(int)),
        defence=defence.assign(method=defence["method"].astype(str)),
    )


def summary_view(run: ScopfRun) -> pd.DataFrame:
    """The recall / speed-up table shown: one row per (case, k), in the study's order of cases."""
    cols = ["case", "k", "recall", "mean_rank", "pf_ratio", "time_ratio", "attack_pf", "enum_pf", "attack_s", "enum_s"]
    return run.summary[cols].reset_index(drop=True)
