"""SATNet on parity: training curves (with the curriculum length), final accuracies, config."""

from __future__ import annotations

from pathlib import Path

from dashboards.satnet_data import PARITY
from dashboards.satnet_page import render_satnet
from gridlearn.results import RunRecord

TITLE = "SATNet: parity"
STUDY = PARITY.study
ORDER = 40
ICON = ":material/function:"


def render(runs: list[RunRecord], results_dir: Path) -> None:
    render_satnet(TITLE, PARITY, "sp", runs, results_dir)
