"""`load_case`: networks by name or path.

- pandapower's bundled cases by name: ``case9`` ... ``case300``, ``case1354pegase``, and
  any other function of ``pandapower.networks`` that returns a net;
- MATPOWER/PGLib ``.m`` files from a path (parsed by pandapower's converter, with the
  branch angle-difference limits that converter drops carried over);
- a PGLib-OPF v23.07 case by name (``pglib_opf_case14_ieee``): read from
  ``$GRIDLEARN_DATA_DIR/pglib-opf/``, else from the download cache, else downloaded once
  from the PGLib-OPF repository's v23.07 tag;
- SimBench grids by code (``1-HV-mixed--0-sw``) when the ``simbench`` package is installed.
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
from gridlearn.grid.network import ANGMAX_COLUMN, ANGMIN_COLUMN, Network

log = logging.getLogger(__name__)

PGLIB_TAG = "v23.07"
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
    """The pandapower net behind `load_case` (for comparisons and pandapower's own tools)."""
    import pandapower.networks as pn

    s = str(name_or_path)
    if s.endswith(".m") or Path(s).suffix == ".m":
        return read_matpower(s)
    if s.startswith("pglib_opf_"):
        return read_matpower(pglib_path(s))
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


def _matpower_branch_rows(path: str | Path) -> np.ndarray:
    from pandapower.converter.matpower.from_mpc import _m2ppc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _m2ppc(str(path))


def with_matpower_branches(network: Network, path: str | Path) -> Network:
    """Replace the branch physics of a network read from ``path`` by the file's own rows.

    Why: pandapower's MATPOWER converter changes some branches. A branch between buses of
    different nominal voltage becomes a transformer, its line charging turned into
    magnetising admittance (T model, sign flipped: case118's 65-68, 68-81, 68-116, 86-87,
    +0.006% on the AC-OPF objective), and a transformer whose MATPOWER tap sits on the LV
    (from) bus gets its ratio moved to the HV side (PGLib case24: +0.05%). MATPOWER's rows
    are the case's definition, so gridlearn uses them; pandapower keeps the labels.
    """
    import torch
    from pandapower.converter.pypower.from_ppc import _branch_to_which

    ppc = _matpower_branch_rows(path)
    br = np.asarray(ppc["branch"], dtype=float)
    is_line, is_trafo, is_impedance, _ = _branch_to_which(ppc)
    on = br[:, 10] > 0
    # from_ppc creates lines, then transformers, then impedances, each in file order.
    order = np.concatenate([np.flatnonzero(m & on) for m in (is_line, is_trafo, is_impedance)])
    tables = [t for t, m in (("line", is_line), ("trafo", is_trafo), ("impedance", is_impedance)) for _ in range(int((m & on).sum()))]
    if len(order) != network.n_branch or tables != [t for t, _ in network.branch.labels]:
        raise DataError(f"cannot match {path}'s branch rows to pandapower's conversion of them")
    rows = br[order]
    pos = {label: i for i, label in enumerate(network.bus.labels)}
    try:
        from_bus = [pos[int(b)] for b in rows[:, 0]]
        to_bus = [pos[int(b)] for b in rows[:, 1]]
    except KeyError as exc:
        raise DataError(f"{path}: branch refers to bus {exc}, which is not in service") from exc
    tap = np.where(rows[:, 8] == 0, 1.0, rows[:, 8])
    rate = np.where(rows[:, 5] <= 0, np.inf, rows[:, 5])
    angmin = np.where(rows[:, 11] <= -360, -np.inf, np.deg2rad(rows[:, 11]))
    angmax = np.where(rows[:, 12] >= 360, np.inf, np.deg2rad(rows[:, 12]))
    f64 = dict(dtype=network.dtype, device=network.device)
    return network.with_(
        from_bus=torch.tensor(from_bus, device=network.device),
        to_bus=torch.tensor(to_bus, device=network.device),
        r_pu=torch.tensor(rows[:, 2], **f64),
        x_pu=torch.tensor(rows[:, 3], **f64),
        g_pu=torch.zeros(len(rows), **f64),
        b_pu=torch.tensor(rows[:, 4], **f64),
        tap=torch.tensor(tap, **f64),
        shift_rad=torch.tensor(np.deg2rad(rows[:, 9]), **f64),
        rate_a_mva=torch.tensor(rate, **f64),
        angmin_rad=torch.tensor(angmin, **f64),
        angmax_rad=torch.tensor(angmax, **f64),
    )


def load_case(name_or_path: str | Path) -> Network:
    """A `Network` by name or path (see the module docstring for what is accepted).

    For MATPOWER/PGLib files the branch physics come from the file's rows (see
    `with_matpower_branches`); pandapower's bundled cases are taken as pandapower has them.
    """
    s = str(name_or_path)
    path = pglib_path(s) if s.startswith("pglib_opf_") and not s.endswith(".m") else Path(s)
    if path.suffix == ".m":
        network = Network.from_pandapower(read_matpower(path), name=path.stem)
        return with_matpower_branches(network, path)
    net = load_pandapower_net(name_or_path)
    return Network.from_pandapower(net, name=Path(s).stem)
