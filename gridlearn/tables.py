"""Typed table schemas: what a study writes and its dashboard page reads, declared once.

Each study has a schema module (``gridlearn/forecast/schema.py`` and the like) holding one
`TableSchema` per table of its run directory. The study builds its tables with
`TableSchema.frame` and the dashboard reads them back with `TableSchema.check`, so a
column's name or kind cannot drift between the two: the ``day`` column of the forecasting
study is an ISO date, and both sides now say so in one place.

Kinds: ``"text"`` (anything), ``"number"`` (numeric, NaN allowed; True/False count as 1/0), ``"integer"``,
``"bool"`` (true/false, as pandas writes and reads them) and ``"date"`` (ISO
``YYYY-MM-DD`` text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import pandas as pd

from gridlearn.errors import ConfigError, DataError

KINDS = ("text", "number", "integer", "bool", "date")


@dataclass(frozen=True)
class TableSchema:
    """One table: ``name`` (``tables/<name>.csv``), ``columns`` as ``(column, kind)`` pairs in order.

    ``optional`` names columns a study may leave out (e.g. an ``error`` column written only
    when something failed); they are checked when present. ``extra_columns``: the study may
    write further columns (diagnostics no page reads), kept after the declared ones.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    optional: tuple[str, ...] = ()
    extra_columns: bool = False

    def __post_init__(self):
        for col, kind in self.columns:
            if kind not in KINDS:
                raise ConfigError(f"table {self.name}: column {col!r} has kind {kind!r}, not one of {KINDS}")
        unknown = set(self.optional) - set(self.names)
        if unknown:
            raise ConfigError(f"table {self.name}: optional columns {sorted(unknown)} are not columns")

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]

    @property
    def required(self) -> list[str]:
        return [c for c in self.names if c not in self.optional]

    def of_kind(self, *kinds: str) -> list[str]:
        return [c for c, k in self.columns if k in kinds]

    @property
    def numeric(self) -> list[str]:
        return self.of_kind("number", "integer")

    def frame(self, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
        """The rows as a DataFrame in schema order, checked; a column outside the schema is an error."""
        df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        extra = [c for c in df.columns if c not in self.names]
        if extra and not self.extra_columns:
            raise ConfigError(f"table {self.name}: columns {extra} are not in the schema {self.names}")
        if df.empty:  # a header-only table still carries every declared column
            df = df.reindex(columns=[*self.required, *[c for c in df.columns if c not in self.required]])
        present = [c for c in self.names if c in df.columns]
        return self.check(df[present + extra])

    def check(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` if it has every required column with values of the declared kind; else DataError naming the column."""
        missing = [c for c in self.required if c not in df.columns]
        if missing:
            raise DataError(f"table {self.name}.csv lacks columns {missing} (has {list(df.columns)})")
        for col, kind in self.columns:
            if col not in df.columns or kind == "text" or df.empty:
                continue
            values = df[col]
            if kind in ("number", "integer"):
                bad = not pd.api.types.is_numeric_dtype(values)  # bools count as 0/1 (a recall per scenario)
                bad_values = values[pd.to_numeric(values, errors="coerce").isna() & values.notna()] if bad else values[:0]
                if len(bad_values):  # an object column of numbers and None (a metric undefined for a row) is fine
                    example = bad_values.iloc[0]
                    raise DataError(f"table {self.name}.csv: column {col!r} is not numeric (e.g. {example!r})")
                if kind == "integer":
                    finite = values.dropna()
                    frac = finite[(finite % 1) != 0]
                    if len(frac):
                        raise DataError(f"table {self.name}.csv: column {col!r} is not integer (e.g. {frac.iloc[0]!r})")
            elif kind == "bool":
                ok = values.dropna().map(lambda v: v in (True, False) or str(v).lower() in ("true", "false"))
                if not ok.all():
                    raise DataError(f"table {self.name}.csv: column {col!r} is not true/false (e.g. {values.dropna()[~ok].iloc[0]!r})")
            elif kind == "date":
                text = values.astype(str)
                parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
                if parsed.isna().any():
                    raise DataError(f"table {self.name}.csv: column {col!r} is not an ISO date YYYY-MM-DD (e.g. {text[parsed.isna()].iloc[0]!r})")
        return df
