"""SATNet on (visual) Sudoku: training curves, final accuracies of every run, config."""

from dashboards.satnet_data import SUDOKU
from dashboards.satnet_page import satnet_render

TITLE = "SATNet: Sudoku"
STUDY = SUDOKU.study
ORDER = 41
ICON = ":material/grid_on:"
render = satnet_render(TITLE, SUDOKU, "ss")
