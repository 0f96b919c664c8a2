"""SATNet on (visual) Sudoku: training curves, final accuracies of every run, config."""

from __future__ import annotations

from pathlib import Path

from dashboards.satnet_data import SUDOKU
from dashboards.satnet_page import render_satnet
from gridlearn.results import RunRecord

TITLE = "SATNet: Sudoku"
STUDY = SUDOKU.study
ORDER = 41
ICON = ":material/grid_on:"


def render(runs: list[RunRecord], results_dir: Path) -> None:
    render_satnet(TITLE, SUDOKU, "ss", runs, results_dir)
