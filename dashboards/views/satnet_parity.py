"""SATNet on parity: training curves (with the curriculum length), final accuracies, config."""

from dashboards.satnet_data import PARITY
from dashboards.satnet_page import satnet_render

TITLE = "SATNet: parity"
STUDY = PARITY.study
ORDER = 40
ICON = ":material/function:"
render = satnet_render(TITLE, PARITY, "sp")
