"""gridlearn.logic: symbolic puzzles used to exercise the SATNet layer (Sudoku)."""

from gridlearn._lazy import lazy_exports

_EXPORTS = {
    name: "sudoku"
    for name in (
        "solve_sudoku",
        "is_valid_solution",
        "generate_puzzle",
        "generate_dataset",
        "SudokuSet",
        "one_hot",
        "input_mask",
        "decode",
        "digit_images",
        "render_boards",
    )
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
