"""Every public class and function has a runnable ``>>>`` example (issue 17 step 6).

The examples themselves run as doctests (``--doctest-modules`` on the ``gridlearn/``
testpath); this test keeps the step true: a name added to a subpackage's ``__all__``
without an example fails here, naming it.
"""

from __future__ import annotations

import importlib
import inspect


SUBPACKAGES = ("implicit", "grid", "scopf", "forecast", "inverse", "data", "logic")

def public_entry_points() -> list[tuple[str, object]]:
    """(qualified name, object) of every class and function in a subpackage's ``__all__``."""
    out = []
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"gridlearn.{sub}")
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                out.append((f"gridlearn.{sub}.{name}", obj))
    return out


def has_example(obj) -> bool:
    return ">>>" in (inspect.getdoc(obj) or "")


ENTRY_POINTS = public_entry_points()


def test_the_walk_sees_every_subpackage_and_decorated_functions():
    """Guards the guard: a walk that found nothing would pass vacuously."""
    names = {n for n, _ in ENTRY_POINTS}
    assert {n.split(".")[1] for n in names} == set(SUBPACKAGES)
    assert len(names) >= 100
    # torch.no_grad-decorated functions keep their docstring (functools.wraps) and are walked
    assert "gridlearn.forecast.evaluate" in names and has_example(dict(ENTRY_POINTS)["gridlearn.forecast.evaluate"])


def test_every_public_entry_point_has_an_example():
    missing = sorted(n for n, obj in ENTRY_POINTS if not has_example(obj))
    assert not missing, f"{len(missing)} public names lack a >>> example in their docstring: {missing}"
