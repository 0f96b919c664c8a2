"""PJM hourly load and temperature, 2008-2016: the data of Donti, Amos & Kolter (2017).

Two whitespace-separated files with columns ``unix_time load temperature`` (load scaled to
about 1.0-3.05, temperature in deg F). The features are the paper's 149: yesterday's 24
loads, 24 temperatures and their squares; today's 24 temperatures, squares and cubes;
weekend, US federal holiday and daylight-saving flags; sin and cos of the day of year.
Features are built per file (the day before a file's first day is not in it), the two
files are concatenated and split 80/20 chronologically: 2552 training and 639 test days
(the paper had 3192 days; 2016-09-28, with 1 of 24 hours observed, is dropped here).

Differences from the original code (locuslab/e2e-model-learning, power_sched/main.py),
on purpose: features are standardised with training-split statistics (the original used
each file's full mean/std, test days included), and holidays cover the whole data span
(the original's calendar stopped at 2014-12-31, so 2015-16 holidays were not flagged).
"""

from __future__ import annotations

import logging
import os
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from pandas.tseries.holiday import USFederalHolidayCalendar

from gridlearn.data.features import DayAheadData, chronological_split, daily_table, day_ahead_features
from gridlearn.errors import DataError

log = logging.getLogger(__name__)

PJM_FILES = ("pjm_load_data_2008-11.txt", "pjm_load_data_2012-16.txt")
SOURCE_URL = "https://raw.githubusercontent.com/locuslab/e2e-model-learning/2bf4384/power_sched/{name}"
TIMEZONE = "America/New_York"
_REPO = Path(__file__).resolve().parents[2]

# A day counts as observed when at least this many of its hours are in the file.
MIN_HOURS = 20
# Plausible ranges: loads are scaled to about 1.0-3.05; temperatures are in deg F. A
# value outside is a corrupt row, not weather (1e30 used to be accepted).
LOAD_RANGE = (0.0, 100.0)
TEMPERATURE_RANGE_F = (-100.0, 150.0)
TIME_RANGE_S = (0.0, 4.1e9)  # 1970 to 2099


def pjm_data_dir(data_dir: str | Path | None = None) -> Path:
    """The directory holding the PJM files: the argument, else $GRIDLEARN_DATA_DIR/pjm, else ../shared/data/pjm.

    >>> import os
    >>> from unittest import mock
    >>> pjm_data_dir("/data/pjm").as_posix()
    '/data/pjm'
    >>> with mock.patch.dict(os.environ, {"GRIDLEARN_DATA_DIR": "/srv/gridlearn"}):
    ...     print(pjm_data_dir().as_posix())
    /srv/gridlearn/pjm
    """
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("GRIDLEARN_DATA_DIR")
    if env:
        return Path(env) / "pjm"
    return _REPO.parent / "shared" / "data" / "pjm"


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (fixed https URL)
        return response.read()


def download_pjm(target_dir: str | Path, fetch: Callable[[str], bytes] = _fetch) -> Path:
    """Download the two files from the public source into ``target_dir`` (kept if present).

    Each file is validated (parsed) before it is moved into place, so a truncated download
    never lands in the cache.

    Offline, with ``fetch`` standing in for the network: a good payload is kept, a
    truncated one is refused and leaves nothing behind:

    >>> import tempfile
    >>> from pathlib import Path
    >>> good = "".join(f"{1451883600 + 3600 * h} 1.5 40.0\\n" for h in range(48)).encode()
    >>> tmp = tempfile.TemporaryDirectory(); folder = Path(tmp.name)
    >>> sorted(p.name for p in download_pjm(folder, fetch=lambda url: good).iterdir())
    ['pjm_load_data_2008-11.txt', 'pjm_load_data_2012-16.txt']
    >>> download_pjm(folder / "cut", fetch=lambda url: good[:-10])
    Traceback (most recent call last):
    ...
    gridlearn.errors.DataError: pjm_load_data_2008-11.part, line 48: truncated (file does not end with a newline)
    >>> list((folder / "cut").iterdir())
    []
    >>> tmp.cleanup()
    """
    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    for name in PJM_FILES:
        dest = target / name
        if dest.exists():
            continue
        url = SOURCE_URL.format(name=name)
        log.info("downloading %s", url)
        tmp = dest.with_suffix(".part")
        tmp.write_bytes(fetch(url))
        try:
            read_pjm_file(tmp)
        except DataError:
            tmp.unlink()
            raise
        tmp.replace(dest)
    return target


def read_pjm_file(path: str | Path) -> np.ndarray:
    """Parse one file into a float64 ``(n_hours, 3)`` array; DataError names the bad line.

    Two days of hourly rows ``unix_time load temperature_F`` from 2016-01-04 00:00 New York time:

    >>> import tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory(); folder = Path(tmp.name)
    >>> rows = [f"{1451883600 + 3600 * h} {1.5 + 0.01 * h:.2f} {30 + h / 2}" for h in range(48)]
    >>> _ = (folder / "two_days.txt").write_text("\\n".join(rows) + "\\n")
    >>> data = read_pjm_file(folder / "two_days.txt")
    >>> data.shape, data[1].tolist(), data[-1].tolist()
    ((48, 3), [1451887200.0, 1.51, 30.5], [1452052800.0, 1.97, 53.5])
    >>> _ = (folder / "bad.txt").write_text("1451883600 1.5\\n")
    >>> read_pjm_file(folder / "bad.txt")
    Traceback (most recent call last):
    ...
    gridlearn.errors.DataError: bad.txt, line 1: expected 3 columns (unix_time load temperature), got 2: '1451883600 1.5'
    >>> tmp.cleanup()
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    text = path.read_text()
    if text and not text.endswith("\n"):
        # Both published files end with a newline; a last line without one was cut off.
        raise DataError(f"{path.name}, line {len(text.splitlines())}: truncated (file does not end with a newline)")
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise DataError(f"{path.name}, line {lineno}: expected 3 columns (unix_time load temperature), got {len(parts)}: {line!r}")
        try:
            row = [float(p) for p in parts]
        except ValueError:
            raise DataError(f"{path.name}, line {lineno}: not a number: {line!r}") from None
        if not all(np.isfinite(row)):
            raise DataError(f"{path.name}, line {lineno}: NaN or inf: {line!r}")
        for what, v, (lo, hi) in (("unix time", row[0], TIME_RANGE_S), ("load", row[1], LOAD_RANGE),
                                  ("temperature (deg F)", row[2], TEMPERATURE_RANGE_F)):
            if not lo < v < hi:
                raise DataError(f"{path.name}, line {lineno}: {what} {v:g} is outside the plausible range ({lo:g}, {hi:g}): {line!r}")
        rows.append(row)
    if len(rows) < 48:
        raise DataError(f"{path.name}: only {len(rows)} hourly rows; need at least two days")
    data = np.asarray(rows, dtype=np.float64)
    back = np.nonzero(np.diff(data[:, 0]) < 0)[0]
    if back.size:
        raise DataError(f"{path.name}, line {back[0] + 2}: time goes backwards")
    return data


def _calendar(dates: pd.Index) -> pd.DataFrame:
    stamps = pd.DatetimeIndex(pd.to_datetime(dates))
    holidays = USFederalHolidayCalendar().holidays(start=stamps.min(), end=stamps.max())
    midnight = stamps.tz_localize(TIMEZONE, ambiguous=False, nonexistent="shift_forward")
    dst = np.array([bool(t.dst()) for t in midnight])
    doy = stamps.dayofyear.to_numpy(dtype=np.float64)
    return pd.DataFrame(
        {
            "weekend": stamps.dayofweek >= 5,
            "holiday": stamps.isin(holidays),
            "dst": dst,
            "cos_doy": np.cos(doy / 365 * 2 * np.pi),
            "sin_doy": np.sin(doy / 365 * 2 * np.pi),
        },
        index=dates,
    )


def _file_features(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features of one file. A target day is kept only if it and the day before are both
    *complete*: at least `MIN_HOURS` of their 24 hours observed (a DST day has 23). A day
    with fewer, or with no rows at all, is not back-filled: it and the day after it (whose
    "yesterday" features it would be) are dropped, and the drop is logged. Without this a
    missing calendar day made the next day's "yesterday" come from two days earlier, and
    a day with one hour left was back-filled from that hour (2016-09-28, the last day of
    the 2012-16 file, is such a day and is dropped)."""
    data = read_pjm_file(path)
    # The files were written from local (US Eastern) wall-clock hours.
    time = pd.to_datetime(data[:, 0], unit="s", utc=True).tz_convert(TIMEZONE)
    load = daily_table(time, data[:, 1])
    temp = daily_table(time, data[:, 2])
    hours = pd.DataFrame({"date": time.date, "hour": time.hour}).drop_duplicates().groupby("date").size()
    dates = pd.date_range(min(load.index), max(load.index), freq="D").date
    complete = hours.reindex(dates, fill_value=0).to_numpy() >= MIN_HOURS
    keep = complete[1:] & complete[:-1]  # per target day (dates[1:])
    if not keep.any():
        raise DataError(f"{path.name}: no two consecutive days with at least {MIN_HOURS} of 24 hours observed")
    dropped = [str(d) for d, k in zip(dates[1:], keep) if not k]
    if dropped:
        log.warning("%s: %d target day(s) dropped (the day or the day before has under %d hours observed): %s",
                    path.name, len(dropped), MIN_HOURS, ", ".join(dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
    # Incomplete days get placeholder zeros only so the tables are aligned day by day;
    # every row that would read one is dropped below.
    mask = np.repeat(complete[:, None], 24, axis=1)
    load = load.reindex(dates).where(mask, 0.0)
    temp = temp.reindex(dates).where(mask, 0.0)
    x, y, target_dates, names = day_ahead_features(load, _calendar(load.index), temperature=temp)
    return x[keep], y[keep], target_dates[keep], names


def load_pjm(data_dir: str | Path | None = None, download: bool = False, train_fraction: float = 0.8) -> DayAheadData:
    """Load PJM with the paper's 149 features, split 80/20 chronologically (2552/639 days).

    Args:
        data_dir: directory with the two files (see `pjm_data_dir` for the default).
        download: fetch missing files from the public source into ``data_dir`` first.

    Two tiny files of 5 and 6 days: 4 + 5 target days (each file's first day has no
    "yesterday"), split 80/20; the paper's 149 features:

    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> def write_pjm(path, t0_s, n_days):      # hourly rows: unix_time load temperature_F
    ...     h = np.arange(24 * n_days)
    ...     rows = np.column_stack([t0_s + 3600 * h, 1.6 + 0.4 * np.sin(2 * np.pi * h / 24), 40 + 10 * np.cos(2 * np.pi * h / 24)])
    ...     np.savetxt(path, rows, fmt="%.4f")
    >>> tmp = tempfile.TemporaryDirectory(); folder = Path(tmp.name)
    >>> write_pjm(folder / "pjm_load_data_2008-11.txt", 1230786000, 5)   # 2009-01-01 00:00 New York
    >>> write_pjm(folder / "pjm_load_data_2012-16.txt", 1451883600, 6)   # 2016-01-04
    >>> data = load_pjm(folder)
    >>> data.x_train.shape, data.x_test.shape, str(data.days_train[0]), str(data.days_test[-1])
    ((7, 149), (2, 149), '2009-01-02', '2016-01-09')
    >>> data.feature_names[:2], data.feature_names[-5:]
    (('load_prev_h0', 'load_prev_h1'), ('weekend', 'holiday', 'dst', 'cos_doy', 'sin_doy'))
    >>> load_pjm(folder / "empty")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gridlearn.errors.DataError: PJM files [...] not found in ...
    >>> tmp.cleanup()
    """
    directory = pjm_data_dir(data_dir)
    missing = [n for n in PJM_FILES if not (directory / n).exists()]
    if missing and download:
        download_pjm(directory)
    elif missing:
        raise DataError(
            f"PJM files {missing} not found in {directory}; pass data_dir, set GRIDLEARN_DATA_DIR, "
            "or call load_pjm(download=True)"
        )
    parts = [_file_features(directory / n) for n in PJM_FILES]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    dates = np.concatenate([p[2] for p in parts])
    return chronological_split("pjm", x, y, dates, parts[0][3], train_fraction)
