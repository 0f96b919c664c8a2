"""Run directories: the only way studies hand results to people and to the dashboard.

A run lives at ``<root>/<study>/<YYYYmmdd-HHMMSS>-<short-sha>/`` and holds:

- ``config.json``  the study's frozen config, as given;
- ``run.json``     study name, git revision (and whether the tree was dirty), start/end
  time, versions;
- ``metrics.json`` scalar and small nested metrics;
- ``tables/<name>.csv`` tables;  ``figures/<name>.png`` plots;  ``log.txt`` the run log.

It is written atomically: everything goes to a hidden temporary directory beside the
final one, renamed into place only when the study finishes. A study that raises leaves
nothing behind, so a reader never sees a half-written run. A process killed outright
(kill -9, power loss) cannot clean up: its temporary directory records the owner's pid
and host, and the next `start_run` of that study removes it once that process is gone
(or, if the owner cannot be told, once it is a day old).

Study names are one path component of letters, digits, ``.``, ``_`` and ``-`` (not
starting with ``.``), so a run can never be written outside the results root.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from gridlearn.errors import ConfigError, DataError

DEFAULT_ROOT = Path(os.environ.get("GRIDLEARN_RESULTS_DIR", "results"))
TMP_PREFIX = ".tmp-"
OWNER_FILE = ".owner.json"
STALE_AFTER_S = 24 * 3600  # a temporary dir whose owner cannot be checked is removed after this
_STUDY_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# <YYYYmmdd-HHMMSS>-<sha or nogit>[-dirty][-<n>]: n orders runs started in the same second.
_RUN_ID = re.compile(r"(?P<ts>\d{8}-\d{6})-(?P<rev>[0-9a-f]{8}|nogit)(?:-dirty)?(?:-(?P<n>\d+))?")


def check_study_name(study: Any) -> str:
    """Return ``study`` if it is a safe single path component, else raise `ConfigError`."""
    if not isinstance(study, str) or len(study) > 200 or not _STUDY_NAME.fullmatch(study):
        raise ConfigError(
            f"study name {study!r} is not allowed: use letters, digits, '.', '_' and '-' only, not starting "
            "with '.' (one directory name under the results root, at most 200 characters)"
        )
    return study


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 tests without sending anything)."""
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError among them: it exists, owned by another user
        return True


def clean_stale_tmp(study_dir: Path, now: float | None = None) -> list[Path]:
    """Remove temporary run dirs under ``study_dir`` whose writer is gone; return them.

    Gone: the pid in its owner file is not running on this host, or (no owner file, or
    another host) it has not been touched for `STALE_AFTER_S`.
    """
    import time

    now = time.time() if now is None else now
    removed = []
    if not study_dir.is_dir():
        return removed
    for d in study_dir.iterdir():
        if not (d.name.startswith(TMP_PREFIX) and d.is_dir()):
            continue
        stale = False
        try:
            owner = json.loads((d / OWNER_FILE).read_text())
            same_host = owner.get("host") == platform.node()
            stale = (same_host and not _pid_alive(int(owner["pid"]))) or (
                not same_host and now - d.stat().st_mtime > STALE_AFTER_S)
        except (OSError, ValueError, KeyError, TypeError):
            try:
                stale = now - d.stat().st_mtime > STALE_AFTER_S
            except OSError:
                continue
        if stale:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def git_revision(cwd: str | Path | None = None) -> tuple[str, bool]:
    """(short sha, dirty) of the repository holding ``cwd``; ("nogit", False) outside git."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=8", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
            ).stdout.strip()
        )
        return sha, dirty
    except (OSError, subprocess.CalledProcessError):
        return "nogit", False


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN; readers see null
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return _jsonable(obj.item())
        except (ValueError, RuntimeError):
            pass
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return obj


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


class Run:
    """An open run directory; use `start_run` rather than building one."""

    def __init__(self, study: str, tmp_dir: Path, final_dir: Path):
        self.study = study
        self.dir = tmp_dir
        self.final_dir = final_dir
        self._metrics: dict[str, Any] = {}

    @property
    def run_id(self) -> str:
        return self.final_dir.name

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log_metrics(self, **metrics: Any) -> None:
        """Merge metrics into metrics.json (rewritten each call, so a crash keeps nothing).

        A call that fails (a value JSON cannot hold) raises `DataError` naming the metric
        and changes nothing: the metrics logged before stay, and later calls work.
        """
        merged = {**self._metrics, **metrics}
        for key, value in metrics.items():
            try:
                json.dumps(_jsonable(value))
            except (TypeError, ValueError) as exc:
                raise DataError(f"metric {key!r} cannot be written as JSON ({type(value).__name__}): {exc}") from exc
        path = self.path("metrics.json")
        part = path.with_name(path.name + ".part")
        _write_json(part, merged)
        os.replace(part, path)  # atomic: metrics.json is never half-written
        self._metrics = merged

    def write_table(self, name: str, table: pd.DataFrame, index: bool = False) -> Path:
        p = self.path("tables", f"{name}.csv")
        table.to_csv(p, index=index)
        return p

    def save_figure(self, name: str, fig: Any) -> Path:
        p = self.path("figures", f"{name.removesuffix('.png')}.png")
        fig.savefig(p, dpi=110, bbox_inches="tight")
        return p

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path(f"{name}.json")
        _write_json(p, obj)
        return p


@contextmanager
def start_run(study: str, config: Any, root: str | Path | None = None) -> Iterator[Run]:
    """Open a run directory for ``study``; it appears under ``root`` only if the block succeeds.

    The run's log (``log.txt``) receives every ``gridlearn`` logger record while the block runs.
    """
    check_study_name(study)
    root = Path(root) if root is not None else DEFAULT_ROOT
    study_dir = root / study
    study_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(study_dir)
    sha, dirty = git_revision()
    started = _dt.datetime.now(_dt.timezone.utc)
    run_id = f"{started:%Y%m%d-%H%M%S}-{sha}{'-dirty' if dirty else ''}"
    final = study_dir / run_id
    n = 1
    while final.exists():  # two runs in the same second
        n += 1
        final = study_dir / f"{run_id}-{n}"
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=study_dir))
    _write_json(tmp / OWNER_FILE, {"pid": os.getpid(), "host": platform.node()})
    run = Run(study, tmp, final)
    _write_json(run.path("config.json"), config)
    meta = {
        "study": study,
        "run_id": final.name,
        "git_revision": sha,
        "git_dirty": dirty,
        "started_utc": started.isoformat(),
        "python": platform.python_version(),
        "host": platform.node(),
    }
    handler = logging.FileHandler(run.path("log.txt"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("gridlearn")
    logger.addHandler(handler)
    old_level = logger.level
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield run
    except BaseException:
        logger.removeHandler(handler)
        handler.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        logger.setLevel(old_level)
    logger.removeHandler(handler)
    handler.close()
    meta["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
    if not (tmp / "metrics.json").exists():
        _write_json(tmp / "metrics.json", {})
    (tmp / OWNER_FILE).unlink(missing_ok=True)
    # Another process may have taken the name since the start (same study, same second,
    # same revision): rename() refuses a non-empty target, so take the next suffix.
    while True:
        meta["run_id"] = final.name
        _write_json(tmp / "run.json", meta)
        try:
            os.rename(tmp, final)  # atomic on one filesystem
            break
        except OSError:
            if not final.exists():
                raise
            n += 1
            final = study_dir / f"{run_id}-{n}"
    run.final_dir = final
    run.dir = final


# --------------------------------------------------------------------------- reading


@dataclass
class RunRecord:
    """A run directory as read back. ``error`` is set (and the rest may be empty) if unreadable."""

    path: Path
    study: str
    run_id: str
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    error: str | None = None

    @property
    def readable(self) -> bool:
        return self.error is None

    def table(self, name: str) -> pd.DataFrame:
        if name not in self.tables:
            raise DataError(f"run {self.run_id} has no table {name!r}; it has {sorted(self.tables)}")
        return pd.read_csv(self.tables[name])


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DataError(f"missing {path.name}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"corrupt {path.name}: {exc}") from exc
    except OSError as exc:
        raise DataError(f"unreadable {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"corrupt {path.name}: expected a JSON object")
    return data


def load_run(path: str | Path) -> RunRecord:
    """Read one run directory; never raises for a broken run, sets ``error`` instead."""
    path = Path(path)
    rec = RunRecord(path=path, study=path.parent.name, run_id=path.name)
    try:
        rec.config = _read_json(path / "config.json")
        rec.meta = _read_json(path / "run.json")
        rec.metrics = _read_json(path / "metrics.json")
    except DataError as exc:
        rec.error = str(exc)
    rec.tables = {p.stem: p for p in sorted((path / "tables").glob("*.csv"))}
    rec.figures = {p.stem: p for p in sorted((path / "figures").glob("*.png"))}
    return rec


def list_runs(root: str | Path | None = None, study: str | None = None) -> list[RunRecord]:
    """Every run under ``root`` (newest first), readable or not; temporary dirs are skipped."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        return []
    if study is not None:
        check_study_name(study)
    studies = [root / study] if study else sorted(p for p in root.iterdir() if p.is_dir())
    runs = []
    for sdir in studies:
        if not sdir.is_dir():
            continue
        for rdir in sdir.iterdir():
            if rdir.is_dir() and not rdir.name.startswith(TMP_PREFIX):
                runs.append(load_run(rdir))
    runs.sort(key=_newest_first_key, reverse=True)
    return runs


def _newest_first_key(rec: RunRecord) -> tuple:
    """Start second, then the exact start time, then the same-second suffix as a number
    (so ``-10`` sorts after ``-9``, which plain string order got wrong)."""
    m = _RUN_ID.fullmatch(rec.run_id)
    if m is None:
        return ("", "", 0, rec.run_id)
    started = rec.meta.get("started_utc") if isinstance(rec.meta.get("started_utc"), str) else ""
    return (m["ts"], started, int(m["n"] or 1), rec.run_id)
