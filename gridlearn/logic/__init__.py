"""gridlearn.logic: symbolic puzzles used to exercise the SATNet layer (Sudoku)."""

from gridlearn._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {"sudoku": "*"})
