"""Process-level environment defaults set before any heavy import.

Why here: Pyomo reads ``PYOMO_CONFIG_DIR`` once, when ``pyomo.common.envvar`` is first
imported, and PyNumero looks for ``libpynumero_ASL.so`` under it. scripts/setup.sh builds
that library into ``<venv>/pyomo``; pointing Pyomo there at gridlearn's import means the
user never has to export anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def pynumero_config_dir() -> Path:
    """Where scripts/setup.sh puts PyNumero's ASL library: ``<sys.prefix>/pyomo``."""
    return Path(sys.prefix) / "pyomo"


def configure_pyomo_env() -> None:
    if "PYOMO_CONFIG_DIR" in os.environ:
        return
    candidate = pynumero_config_dir()
    if (candidate / "lib" / "libpynumero_ASL.so").exists():
        os.environ["PYOMO_CONFIG_DIR"] = str(candidate)
