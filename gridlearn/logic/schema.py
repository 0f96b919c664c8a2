"""What the SATNet run directories hold (`studies/satnet_parity.py`, `studies/satnet_sudoku.py`).

Each writes one table, ``training``: one row per epoch, with columns that differ per study,
and its final numbers in metrics.json. The dashboard's `SatnetLayout`s label these columns.
"""

from gridlearn.tables import TableSchema

PARITY_STUDY = "satnet_parity"
SUDOKU_STUDY = "satnet_sudoku"
TRAINING_TABLE = "training"

PARITY_TRAINING = TableSchema(TRAINING_TABLE, (
    ("epoch", "integer"), ("level", "integer"), ("train_loss", "number"), ("train_acc", "number"),
    ("test_acc_full_length", "number"), ("converged_train", "number"), ("converged_test", "number"), ("epoch_s", "number"),
), extra_columns=True)
SUDOKU_TRAINING = TableSchema(TRAINING_TABLE, (
    ("epoch", "integer"), ("batches", "integer"), ("train_loss", "number"), ("train_converged", "number"),
    ("test_board_acc", "number"), ("test_blank_cell_acc", "number"), ("test_digit_acc_given_cells", "number"),
    ("test_converged", "number"),
), extra_columns=True)

# metrics.json key of each study's headline number
PARITY_HEADLINE_KEY = "test_accuracy"
SUDOKU_HEADLINE_KEY = "test_board_acc"


def _fraction(metrics: dict, key: str, label: str) -> tuple[str, str] | None:
    value = metrics.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        return None
    return label, f"{value:.1%}"


def parity_headline(metrics: dict) -> tuple[str, str] | None:
    return _fraction(metrics, PARITY_HEADLINE_KEY, "test accuracy (full length)")


def sudoku_headline(metrics: dict) -> tuple[str, str] | None:
    return _fraction(metrics, SUDOKU_HEADLINE_KEY, "test boards solved")
