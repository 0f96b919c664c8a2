"""gridlearn's modules import one another without cycles (issue 17 step 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_import_cycles():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_cycles.py")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 import cycle(s)" in out.stdout


def test_network_from_pandapower_old_name_warns_and_converts():
    from gridlearn.grid import Network, network_from_pandapower
    from gridlearn.grid.cases import load_pandapower_net

    net = load_pandapower_net("case9")
    with pytest.warns(DeprecationWarning, match="network_from_pandapower"):
        old = Network.from_pandapower(net, name="case9")
    new = network_from_pandapower(net, name="case9")
    assert old.n_bus == new.n_bus == 9 and bool((old.bus.pd_mw == new.bus.pd_mw).all())
