"""gridlearn.implicit is domain-free: importing it (or any of these modules) in a fresh
interpreter must not pull in pandapower or pyomo."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = [
    "gridlearn.implicit",
    "gridlearn.implicit.solvers",
    "gridlearn.implicit.adjoint",
    "gridlearn.implicit.fixed_points",
    "gridlearn.implicit.root",
    "gridlearn.implicit.deq",
    "gridlearn.implicit.ode",
    "gridlearn.implicit.ode_solvers",
]

PROBE = """
import importlib, sys
names = ["Picard", "Anderson", "Broyden", "Newton", "ImplicitAdjoint", "PhantomAdjoint",
         "UnrolledAdjoint", "fixed_point", "root_find", "DEQ", "NeuralODE", "odeint", "Solution", "Status"]
for mod in sys.argv[1:]:
    m = importlib.import_module(mod)
    if mod == "gridlearn.implicit":
        for name in names:
            getattr(m, name)
    bad = sorted(k for k in sys.modules if k.split(".")[0] in ("pandapower", "pyomo"))
    print(mod + " LOADED:" + ",".join(bad))
"""


def test_modules_do_not_import_pandapower_or_pyomo():
    # One fresh interpreter, checked after each import in turn (a subprocess per module
    # costs ~4 s of torch import each on this machine). The package comes first, so the
    # check of its lazy table runs before any submodule was imported explicitly.
    out = subprocess.run([sys.executable, "-c", PROBE, *MODULES], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if " LOADED:" in ln]
    assert len(lines) == len(MODULES)
    for ln in lines:
        mod, loaded = ln.split(" LOADED:")
        assert loaded == "", f"{mod} imported {loaded}"


@pytest.mark.slow  # ~5 s: a subprocess or many tight-tolerance solves
def test_probe_would_notice_pandapower():
    # the check above can fail: importing pandapower in the probe's interpreter is seen
    out = subprocess.run([sys.executable, "-c", PROBE, "pandapower"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        pytest.skip("pandapower not importable here")
    assert "pandapower" in out.stdout.split("LOADED:")[-1]


def test_public_names_resolve_to_callables_after_submodule_import():
    # the function `fixed_point` lives in fixed_points.py, so importing that module never shadows it.
    import gridlearn.implicit as gi
    import gridlearn.implicit.fixed_points  # noqa: F401  (must not shadow the function)
    from gridlearn.implicit import fixed_point

    import torch

    z = fixed_point(lambda z, x: 0.5 * z + x, torch.zeros(1, 2), torch.ones(1, 2))
    torch.testing.assert_close(z, torch.full((1, 2), 2.0), atol=1e-5, rtol=0)
    assert callable(gi.root_find) and callable(gi.odeint)
