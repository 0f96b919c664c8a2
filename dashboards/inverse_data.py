"""Reading inverse AC-OPF runs (`studies/inverse_acopf.py`), checked against the columns it writes.

Tables of a run:

- ``recovery``: one row per (case, observation setting, noise, number of samples, method):
  ``max_rel_err`` over every recovered parameter and ``max_rel_err_identifiable`` over the
  identifiable ones (empty when none is), timings, and ``error`` (only present when some
  method failed or did not apply; the row's numbers are then empty);
- ``parameters_paper`` (optional: written only when the gradient method succeeded): per
  parameter the recovered ``value``, the ``prior`` and the ``true`` value, ``identifiable``
  with the ``reason`` when not, and ``rel_std``;
- ``admittance``: per line tried, the same errors for a reactance recovered alone, its
  ``identifiable`` flag (or an ``error``).

Nothing is recomputed, except the per-parameter relative error |value − true| / |true|
shown beside each parameter (the study reports only its maximum).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dashboards.common import LoadedRun, read_table, require_numeric
from gridlearn.errors import DataError
from gridlearn.results import RunRecord

from gridlearn.inverse.schema import ADMITTANCE, PARAMETERS, RECOVERY, STUDY  # noqa: E402, F401 - the study's own schema (STUDY: re-exported for the page)

RECOVERY_TABLE, PARAMETERS_TABLE, ADMITTANCE_TABLE = RECOVERY.name, PARAMETERS.name, ADMITTANCE.name
RECOVERY_NUMERIC, RECOVERY_COLUMNS = RECOVERY.numeric, RECOVERY.required
PARAMETERS_NUMERIC, PARAMETERS_COLUMNS = PARAMETERS.numeric, PARAMETERS.names
ADMITTANCE_COLUMNS = ADMITTANCE.names

# The two error measures of the recovery table, as offered on the page.
ERROR_MEASURES = {
    "max_rel_err_identifiable": "max. relative error, identifiable parameters",
    "max_rel_err": "max. relative error, all parameters",
}


@dataclass(frozen=True)
class InverseRun(LoadedRun):
    """A readable inverse AC-OPF run. ``parameters`` is None when the run wrote no parameters table."""

    recovery: pd.DataFrame
    parameters: pd.DataFrame | None
    admittance: pd.DataFrame


def _flag(table: pd.DataFrame, name: str, column: str) -> pd.Series:
    """A True/False column as bools; pandas reads it as bool unless a cell is empty or odd."""
    col = table[column]
    if pd.api.types.is_bool_dtype(col):
        return col
    mapped = col.map({True: True, False: False, "True": True, "False": False})
    if mapped.isna().any():
        bad = col[mapped.isna()].iloc[0]
        raise DataError(f"table {name}.csv: column {column!r} is not True/False (e.g. {bad!r})")
    return mapped.astype(bool)


def load_inverse_run(rec: RunRecord) -> InverseRun:
    """Read and check one run's tables; DataError says what is wrong."""
    recovery = require_numeric(read_table(rec, RECOVERY_TABLE, RECOVERY_COLUMNS), RECOVERY_TABLE, RECOVERY_NUMERIC)
    if recovery.empty:
        raise DataError(f"table {RECOVERY_TABLE}.csv has no rows")
    if "error" not in recovery.columns:  # the study writes the column only when some row failed
        recovery = recovery.assign(error=pd.Series([None] * len(recovery), dtype=object))
    recovery = recovery.assign(
        case=recovery["case"].astype(str),
        observe=recovery["observe"].astype(str),
        method=recovery["method"].astype(str),
    )
    parameters = None
    if PARAMETERS_TABLE in rec.tables:
        parameters = read_table(rec, PARAMETERS_TABLE, PARAMETERS_COLUMNS)
        require_numeric(parameters, PARAMETERS_TABLE, PARAMETERS_NUMERIC)
        parameters = parameters.assign(identifiable=_flag(parameters, PARAMETERS_TABLE, "identifiable"))
    admittance = read_table(rec, ADMITTANCE_TABLE, ADMITTANCE_COLUMNS)
    if "identifiable" in admittance.columns and admittance["identifiable"].notna().all():
        admittance = admittance.assign(identifiable=_flag(admittance, ADMITTANCE_TABLE, "identifiable"))
    return InverseRun(record=rec, recovery=recovery, parameters=parameters, admittance=admittance)


def failed_rows(run: InverseRun) -> pd.DataFrame:
    """Recovery rows where a method failed or did not apply (non-empty ``error``)."""
    err = run.recovery["error"]
    bad = err.notna() & (err.astype(str).str.len() > 0)
    return run.recovery.loc[bad, ["case", "observe", "noise", "n_samples", "method", "error"]].reset_index(drop=True)


def curves(run: InverseRun, case: str, measure: str) -> pd.DataFrame:
    """Rows of ``case`` with a value of ``measure``, sorted for plotting error against samples."""
    if measure not in ERROR_MEASURES:
        raise ValueError(f"measure must be one of {list(ERROR_MEASURES)}, got {measure!r}")
    rows = run.recovery[(run.recovery["case"] == case) & run.recovery[measure].notna()]
    return rows.sort_values(["observe", "method", "noise", "n_samples"], kind="stable").reset_index(drop=True)


def parameter_view(run: InverseRun) -> pd.DataFrame:
    """The parameter table shown: settings first, then value / prior / truth, the relative error and the flags."""
    if run.parameters is None:
        raise DataError(f"run {run.run_id} has no {PARAMETERS_TABLE}.csv")
    p = run.parameters
    rel = (p["value"] - p["true"]).abs() / p["true"].abs()
    table = p.assign(rel_err=rel, reason=p["reason"].fillna(""))
    first = ["observe", "noise", "n_samples", "element", "coefficient", "value", "prior", "true", "rel_err",
             "identifiable", "reason"]
    rest = [c for c in table.columns if c not in first]
    return table[first + rest].reset_index(drop=True)
