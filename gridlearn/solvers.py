"""The one place that finds Ipopt for Pyomo, or says exactly how to fix the install.

Route: the ``cyipopt-wheels`` package bundles Ipopt 3.14 (MUMPS, OpenBLAS) as the
``cyipopt`` module; Pyomo's ``cyipopt`` interface drives it through PyNumero, whose ASL
library scripts/setup.sh builds against Debian's libamplsolver into ``<venv>/pyomo``.
"""

from __future__ import annotations

import os
from typing import Any

from gridlearn._env import configure_pyomo_env, pynumero_config_dir
from gridlearn.errors import ConfigError, SolverUnavailable

_FIX = (
    "Run `bash scripts/setup.sh` (it installs libamplsolver-dev and builds the PyNumero "
    "library into .venv/pyomo), or set PYOMO_CONFIG_DIR to a directory whose lib/ holds "
    "libpynumero_ASL.so, and make sure the `cyipopt-wheels` package is installed."
)

# Ipopt defaults for every gridlearn solve. honor_original_bounds: without it Ipopt may
# return a point a hair outside a variable bound (seen on HS071: 17.0140171 < optimum).
DEFAULT_IPOPT_OPTIONS: dict[str, Any] = {
    "honor_original_bounds": "yes",
    "print_level": 0,
    "sb": "yes",
}


def _sync_pyomo_config_dir() -> None:
    """Point an already-imported Pyomo at the config dir, since it read the env var early."""
    configure_pyomo_env()
    wanted = os.environ.get("PYOMO_CONFIG_DIR")
    if not wanted:
        return
    import pyomo.common.envvar as envvar

    if envvar.PYOMO_CONFIG_DIR != wanted:
        envvar.PYOMO_CONFIG_DIR = wanted


def ipopt_version() -> str | None:
    try:
        import cyipopt  # noqa: F401
    except ImportError:
        return None
    try:
        from cyipopt import IPOPT_VERSION  # type: ignore[attr-defined]

        return ".".join(str(v) for v in IPOPT_VERSION)
    except ImportError:
        return "unknown"


class _Tiny:
    """min x² on [-1, 1]: the smallest problem Ipopt accepts, to try options on."""

    def objective(self, x):
        return float(x @ x)

    def gradient(self, x):
        return 2 * x

    def constraints(self, x):
        import numpy as np

        return np.zeros(0)

    def jacobian(self, x):
        import numpy as np

        return np.zeros(0)


def _captured_stdout(fn) -> str:
    """Run fn() with the C-level stdout sent to a temporary file; return what was written.

    Ipopt explains a rejected option only on stdout, not in the exception.
    """
    import ctypes
    import sys
    import tempfile

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            fn()
        finally:
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode("utf-8", "replace")


def check_ipopt_options(options: dict[str, Any]) -> None:
    """Raise `ConfigError` naming the first option Ipopt rejects (unknown name, wrong type or
    out of range), with Ipopt's own explanation. Tries each on a one-variable problem."""
    try:
        import cyipopt
    except ImportError as exc:
        raise SolverUnavailable(f"Ipopt is not installed: cannot import cyipopt ({exc}). {_FIX}") from exc
    import numpy as np

    for key, value in options.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"Ipopt option {key!r}={value!r}: names are strings and values str, int or float")
        if (key, type(value), value) in _ACCEPTED:
            continue
        problem = cyipopt.Problem(n=1, m=0, problem_obj=_Tiny(), lb=np.array([-1.0]), ub=np.array([1.0]),
                                  cl=np.zeros(0), cu=np.zeros(0))
        failed: list[Exception] = []

        def attempt():
            try:
                problem.add_option(key, value)
            except (TypeError, ValueError) as exc:
                failed.append(exc)

        try:
            said = _captured_stdout(attempt)
        except OSError:  # no usable file descriptor 1: try without Ipopt's explanation
            said = ""
            attempt()
        if failed:
            why = " ".join(line.strip() for line in said.strip().splitlines()[:2]) or "unknown option, or a value of the wrong type or range"
            raise ConfigError(f"Ipopt rejected option {key!r}={value!r}: {why} "
                              "(see https://coin-or.github.io/Ipopt/OPTIONS.html)") from failed[0]
        _ACCEPTED.add((key, type(value), value))


# Options already accepted once: layers solving many AC-OPFs check each only once.
_ACCEPTED: set[tuple[str, type, Any]] = set()


def get_ipopt(**options: Any):
    """Return a ready Pyomo ``cyipopt`` solver with gridlearn's default options merged in.

    Raises:
        ConfigError: naming an option Ipopt does not accept (misspelt, wrong type, out of range).
        SolverUnavailable: with the steps that fix the install, if cyipopt or the
            PyNumero ASL library cannot be loaded.
    """
    try:
        import cyipopt  # noqa: F401
    except ImportError as exc:
        raise SolverUnavailable(f"Ipopt is not installed: cannot import cyipopt ({exc}). {_FIX}") from exc
    _sync_pyomo_config_dir()
    try:
        from pyomo.contrib.pynumero.asl import AmplInterface
    except ImportError as exc:  # pragma: no cover - pyomo itself broken
        raise SolverUnavailable(f"Pyomo's PyNumero is not importable ({exc}). {_FIX}") from exc
    if not AmplInterface.available():
        where = os.environ.get("PYOMO_CONFIG_DIR", str(pynumero_config_dir()))
        raise SolverUnavailable(
            f"PyNumero's ASL library (libpynumero_ASL.so) was not found under {where}/lib. {_FIX}"
        )
    import pyomo.environ as pyo

    solver = pyo.SolverFactory("cyipopt")
    if not solver.available(exception_flag=False):
        raise SolverUnavailable(f"Pyomo's cyipopt interface reports Ipopt unavailable. {_FIX}")
    merged = {**DEFAULT_IPOPT_OPTIONS, **options}
    check_ipopt_options(options)
    for key, value in merged.items():
        solver.config.options[key] = value
    return solver


def solve_hs071() -> float:
    """Solve Hock-Schittkowski problem 71 with Ipopt through Pyomo; return the objective.

    min x1 x4 (x1+x2+x3) + x3  s.t.  x1 x2 x3 x4 >= 25,  sum xi^2 = 40,  1 <= xi <= 5.
    Known optimum 17.0140173 at (1, 4.743, 3.821, 1.379).
    """
    import pyomo.environ as pyo

    solver = get_ipopt()
    m = pyo.ConcreteModel()
    m.x = pyo.Var(range(4), bounds=(1, 5), initialize=dict(enumerate([1, 5, 5, 1])))
    x = m.x
    m.obj = pyo.Objective(expr=x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2])
    m.ineq = pyo.Constraint(expr=x[0] * x[1] * x[2] * x[3] >= 25)
    m.eq = pyo.Constraint(expr=sum(x[i] ** 2 for i in range(4)) == 40)
    result = solver.solve(m)
    term = str(result.solver.termination_condition)
    if term != "optimal":
        from gridlearn.errors import SolverFailure

        raise SolverFailure(f"Ipopt did not solve HS071: termination {term}")
    return float(pyo.value(m.obj))
