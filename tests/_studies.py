"""Import a study script (`studies/NAME.py`) as a module, for tests that call its functions."""

from __future__ import annotations

import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

STUDIES = Path(__file__).resolve().parents[1] / "studies"


@contextmanager
def study_module(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_study", STUDIES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def config_from_cli(study, monkeypatch, args: list[str]):
    """The Config a study's command line builds from ``args`` (its ``main`` is not run)."""
    from typer.testing import CliRunner

    seen = {}
    monkeypatch.setattr(study, "main", lambda cfg: seen.setdefault("cfg", cfg))
    result = CliRunner().invoke(study.app, args)
    assert result.exit_code == 0, result.output
    return seen["cfg"]
