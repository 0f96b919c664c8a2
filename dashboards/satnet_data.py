"""Reading SATNet runs (`studies/satnet_parity.py`, `studies/satnet_sudoku.py`).

Both studies write one table, ``training``: one row per epoch. What its columns are, and
which metrics.json keys hold the final numbers, differ per study and are described by a
`SatnetLayout`. Nothing is recomputed: curves come from the training table, final numbers
from metrics.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from dashboards.common import LoadedRun, read_table, require_numeric
from gridlearn.errors import DataError
from gridlearn.results import RunRecord

from gridlearn.logic.schema import PARITY_STUDY, SUDOKU_STUDY, TRAINING_TABLE  # noqa: E402 - the studies' schema


@dataclass(frozen=True)
class SatnetLayout:
    """What one SATNet study writes. Every mapping is column (or key) -> label on the page.

    ``accuracy``/``loss``/``converged``: columns of the training table, per epoch;
    ``curriculum``: columns drawn on the accuracy chart's right axis (may be empty);
    ``final``: metrics.json keys of the final numbers; ``config_keys``: the config entries
    shown beside them; ``legend_keys``: the config entries that name a run in overlaid
    curves; ``example``: a command that writes a run.
    """

    study: str
    accuracy: dict[str, str]
    loss: dict[str, str]
    converged: dict[str, str]
    curriculum: dict[str, str]
    final: dict[str, str]
    config_keys: tuple[str, ...]
    legend_keys: tuple[str, ...]
    example: str

    @property
    def curve_columns(self) -> list[str]:
        return ["epoch", *self.accuracy, *self.loss, *self.converged, *self.curriculum]


PARITY = SatnetLayout(
    study=PARITY_STUDY,
    accuracy={"train_acc": "train accuracy (current length)", "test_acc_full_length": "test accuracy (full length)"},
    loss={"train_loss": "train loss (BCE)"},
    converged={"converged_train": "train solves converged", "converged_test": "test solves converged"},
    curriculum={"level": "curriculum length (bits)"},
    final={
        "test_accuracy": "test accuracy",
        "epochs": "epochs",
        "final_level": "final length",
        "converged_fraction_last_epoch": "converged (last epoch)",
        "wall_s": "wall time (s)",
    },
    config_keys=("length", "n_train", "n_test", "m", "aux", "lr", "max_epochs", "on_failure", "seed"),
    legend_keys=("length", "lr", "seed"),
    example="gridlearn run satnet_parity --length 20",
)

SUDOKU = SatnetLayout(
    study=SUDOKU_STUDY,
    accuracy={
        "test_board_acc": "test boards solved",
        "test_blank_cell_acc": "test blank cells right",
        "test_digit_acc_given_cells": "digit classifier on given cells (visual)",
    },
    loss={"train_loss": "train loss (BCE)"},
    converged={"train_converged": "train solves converged", "test_converged": "test solves converged"},
    curriculum={},
    final={
        "test_board_acc": "test boards solved",
        "test_blank_cell_acc": "test blank cells right",
        "test_digit_acc_given_cells": "digit accuracy (given cells)",
        "test_converged": "test solves converged",
        "train_loss": "final train loss",
    },
    config_keys=("mode", "loss_on", "box", "n_train", "n_test", "m", "aux", "lr", "epochs", "max_train_batches",
                 "max_test", "seed"),
    legend_keys=("mode", "loss_on", "box"),
    example="gridlearn run satnet_sudoku --box 2 --epochs 10",
)


@dataclass(frozen=True)
class SatnetRun(LoadedRun):
    """A readable SATNet run: its per-epoch training table (sorted by epoch)."""

    training: pd.DataFrame


def load_satnet_run(rec: RunRecord, layout: SatnetLayout) -> SatnetRun:
    """Read and check one run's training table; DataError says what is wrong."""
    cols = layout.curve_columns
    table = require_numeric(read_table(rec, TRAINING_TABLE, cols), TRAINING_TABLE, cols)
    if table.empty:
        raise DataError(f"table {TRAINING_TABLE}.csv has no rows")
    return SatnetRun(record=rec, training=table.sort_values("epoch", kind="stable").reset_index(drop=True))


def _number(value) -> float:
    """A metrics.json value as a float; JSON null (how results.py writes NaN) or absent -> NaN."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def final_table(runs: list[SatnetRun], layout: SatnetLayout) -> pd.DataFrame:
    """One row per run: its id, the final metrics, then the config entries of ``layout.config_keys``."""
    rows = []
    for run in runs:
        cfg, metrics = run.record.config, run.record.metrics
        row: dict[str, object] = {"run": run.run_id}
        row.update({k: _number(metrics.get(k)) for k in layout.final})
        row.update({k: cfg.get(k) for k in layout.config_keys})
        rows.append(row)
    return pd.DataFrame(rows, columns=["run", *layout.final, *layout.config_keys])


def legend_name(run: SatnetRun, layout: SatnetLayout) -> str:
    """A run's name in overlaid curves: its id and the config entries that tell runs apart."""
    cfg = run.record.config
    settings = ", ".join(f"{k}={cfg[k]}" for k in layout.legend_keys if k in cfg)
    return f"{run.run_id} ({settings})" if settings else run.run_id
