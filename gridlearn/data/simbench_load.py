"""SimBench 2016 load profiles as a day-ahead forecasting data set (offline, no download).

SimBench profiles are *standardised* profiles derived from measurements and synthesised
for the SimBench benchmark grids (Meinecke et al. 2020); they are not raw metered load of
any real place. They are, however, shipped with the installed ``simbench`` package, so
this data set works offline and is the default for the quick demo.

What is forecast: one aggregate profile (default ``hv_mixed1_pload``, the active-power
profile of a mixed high-voltage grid area), 15-minute values averaged to hours. It is
rescaled so that its training-period mean is 1.6, close to PJM's scaled load (about
1.0-3.05, mean 1.68), so the scheduling costs gamma_under=50, gamma_over=0.5 and
c_ramp=0.4 mean roughly the same thing on both data sets.

Features (34): yesterday's 24 hourly loads, a one-hot of the target day's weekday (7),
a weekend flag for yesterday, sin and cos of the day of year. There is no temperature.
2016 has 366 days, so 365 target days: 292 train, 73 test.

Reading the CSV takes a few seconds, so the derived hourly array is cached (an ``.npz``
under $GRIDLEARN_CACHE_DIR, else ``<repo>/.cache/gridlearn``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from gridlearn.data.features import DayAheadData, chronological_split, day_ahead_features
from gridlearn.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "hv_mixed1_pload"
TARGET_MEAN = 1.6  # PJM's scaled load has mean 1.68 over its training days
_REPO = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    env = os.environ.get("GRIDLEARN_CACHE_DIR")
    return Path(env) if env else _REPO / ".cache" / "gridlearn"


def _profile_csv(scenario: int) -> Path:
    try:
        import simbench
    except ImportError as exc:  # optional dependency
        raise DataError("the SimBench data set needs the `simbench` package (pip install 'gridlearn[simbench]')") from exc
    return Path(simbench.complete_data_path(scenario)) / "LoadProfile.csv"


def hourly_profile(profile: str = DEFAULT_PROFILE, scenario: int = 0) -> pd.Series:
    """Hourly means of one SimBench load profile over 2016 (index: naive local timestamps)."""
    try:  # the version comes from metadata: importing simbench (and pandapower) costs seconds
        version = importlib.metadata.version("simbench")
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataError("the SimBench data set needs the `simbench` package (pip install 'gridlearn[simbench]')") from exc
    cache = cache_dir() / f"simbench-{version}-s{scenario}-{profile}.npz"
    if cache.exists():
        z = np.load(cache)
        return pd.Series(z["values"], index=pd.DatetimeIndex(z["time"]), name=profile)
    path = _profile_csv(scenario)
    try:
        df = pd.read_csv(path, sep=";", usecols=["time", profile])
    except ValueError as exc:
        raise DataError(f"{path.name}: no profile column {profile!r}") from exc
    time = pd.to_datetime(df["time"], format="%d.%m.%Y %H:%M")
    values = pd.Series(df[profile].to_numpy(dtype=np.float64), index=time)
    if not np.isfinite(values.to_numpy()).all():
        raise DataError(f"{path.name}: profile {profile!r} contains NaN or inf")
    # Timestamps are local wall-clock time: the spring-forward hour has no samples (filled
    # by linear interpolation) and the autumn repeated hour averages both copies.
    hourly = values.resample("1h").mean().interpolate(limit=2)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, values=hourly.to_numpy(), time=hourly.index.to_numpy())
    tmp.replace(cache)  # atomic: a crash never leaves half a cache file
    log.info("cached hourly SimBench profile %s at %s", profile, cache)
    return hourly.rename(profile)


def load_simbench(profile: str = DEFAULT_PROFILE, scenario: int = 0, train_fraction: float = 0.8) -> DayAheadData:
    """SimBench 2016 hourly load of ``profile`` as a day-ahead data set (292 train / 73 test days).

    Offline (the profiles ship with the ``simbench`` package); loads rescaled to a training
    mean of 1.6, PJM's level:

    >>> data = load_simbench()
    >>> data.name, data.x_train.shape, data.y_test.shape, round(float(data.y_train.mean()), 2)
    ('simbench:hv_mixed1_pload', (292, 34), (73, 24), 1.6)
    >>> str(data.days_train[0]), str(data.days_test[-1]), data.feature_names[24]
    ('2016-01-02', '2016-12-31', 'weekday_0')
    """
    hourly = hourly_profile(profile, scenario)
    table = pd.DataFrame(
        {"date": hourly.index.date, "hour": hourly.index.hour, "v": hourly.to_numpy()}
    ).pivot(index="date", columns="hour", values="v")
    if table.shape[1] != 24 or table.isna().any().any():
        raise DataError(f"SimBench profile {profile!r} does not have 24 hourly values on every day")
    stamps = pd.DatetimeIndex(pd.to_datetime(table.index))
    n_train_days = int((len(table) - 1) * train_fraction) + 1  # target days + their first 'yesterday'
    scale = TARGET_MEAN / float(table.to_numpy()[:n_train_days].mean())
    table = table * scale
    weekday = np.eye(7)[stamps.dayofweek.to_numpy()]
    prev_weekend = np.r_[False, stamps.dayofweek.to_numpy()[:-1] >= 5]
    doy = stamps.dayofyear.to_numpy(dtype=np.float64)
    calendar = pd.DataFrame(
        np.column_stack([weekday, prev_weekend, np.cos(doy / 366 * 2 * np.pi), np.sin(doy / 366 * 2 * np.pi)]),
        index=table.index,
        columns=[f"weekday_{d}" for d in range(7)] + ["prev_weekend", "cos_doy", "sin_doy"],
    )
    x, y, dates, names = day_ahead_features(table, calendar)
    return chronological_split(f"simbench:{profile}", x, y, dates, names, train_fraction)
