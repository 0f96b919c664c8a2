"""Day-ahead features shared by the loaders: the day before, the target day's weather, the calendar.

The target of day ``d`` is its 24 hourly loads; its features come only from what is known
the day before (yesterday's loads and temperatures) plus forecastable inputs for day ``d``
(its temperatures, in the paper's setup, and its calendar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch is imported where the tensors are built, not for loading data
    import torch

from gridlearn.errors import DataError


@dataclass(frozen=True)
class DayAheadData:
    """A chronologically split day-ahead data set.

    Attributes:
        name: data set name ("pjm", "simbench").
        x_train, x_test: float64 ``(n_days, n_features)``, standardised with the
            *training* mean and std (so no test statistics leak into the features).
        y_train, y_test: float64 ``(n_days, 24)`` hourly load of the target day (scaled units,
            about 1-3 for both data sets).
        days_train, days_test: ``datetime64[D]`` target dates.
        feature_names: one name per feature column.

    From `chronological_split` (what every loader ends with), here via `synthetic_days`:

    >>> from gridlearn.data import synthetic_days
    >>> data = synthetic_days(n_train=8, n_test=4, n_features=3)
    >>> data.name, data.n_features, data.y_train.shape, str(data.days_train[-1]), str(data.days_test[0])
    ('synthetic', 3, (8, 24), '2020-01-08', '2020-01-09')
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    days_train: np.ndarray
    days_test: np.ndarray
    feature_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def tensors(self) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """(x_train, y_train, x_test, y_test) as float64 torch tensors, what the training loops take."""
        import torch  # here: the loaders themselves need only NumPy and pandas

        return tuple(torch.as_tensor(a, dtype=torch.float64) for a in (self.x_train, self.y_train, self.x_test, self.y_test))


def daily_table(time: pd.DatetimeIndex, values: np.ndarray) -> pd.DataFrame:
    """Pivot an hourly series to ``(date, hour 0..23)``; gaps filled within the day.

    Duplicate timestamps (the PJM files repeat 03:00 on spring-forward days) keep the first
    value; a missing hour (the skipped one on DST days, or the edge of the file) is
    back-filled from the next hour of the same day, else forward-filled.
    """
    df = pd.DataFrame({"date": time.date, "hour": time.hour, "v": values})
    df = df[~time.duplicated()]
    df = df.drop_duplicates(["date", "hour"])
    table = df.pivot(index="date", columns="hour", values="v").reindex(columns=range(24))
    return table.bfill(axis=1).ffill(axis=1)


def day_ahead_features(
    load: pd.DataFrame,
    calendar: pd.DataFrame,
    temperature: pd.DataFrame | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Build (x, y, target dates, names) from daily tables aligned on the same dates.

    Args:
        load: ``(n_dates, 24)`` hourly load per date.
        calendar: ``(n_dates, k)`` features of each date (flags, sin/cos of day of year).
        temperature: optional ``(n_dates, 24)`` hourly temperature per date.

    Returns ``x`` of shape ``(n_dates - 1, n_features)`` (unstandardised), in the paper's
    column order: yesterday's load; yesterday's temperature and its square; today's
    temperature, its square and cube; today's calendar. ``y`` is today's load.

    >>> import numpy as np, pandas as pd
    >>> days = pd.date_range("2020-01-01", periods=3, freq="D")
    >>> load = pd.DataFrame(np.arange(72.0).reshape(3, 24), index=days)
    >>> x, y, dates, names = day_ahead_features(load, pd.DataFrame({"weekend": [0, 0, 1]}, index=days))
    >>> x.shape, float(y[0, 0]), float(x[0, 0]), names[-1], str(dates[0])   # day 1 predicted from day 0's load
    ((2, 25), 24.0, 0.0, 'weekend', '2020-01-02')
    """
    if not load.index.equals(calendar.index):
        raise DataError("load and calendar tables must share their dates")
    blocks = [load.to_numpy()[:-1]]
    names = [f"load_prev_h{h}" for h in range(24)]
    if temperature is not None:
        t = temperature.to_numpy()
        blocks += [t[:-1], t[:-1] ** 2, t[1:], t[1:] ** 2, t[1:] ** 3]
        for tag in ["temp_prev", "temp_prev_sq", "temp", "temp_sq", "temp_cube"]:
            names += [f"{tag}_h{h}" for h in range(24)]
    blocks.append(calendar.to_numpy(dtype=np.float64)[1:])
    names += list(calendar.columns)
    x = np.hstack(blocks).astype(np.float64)
    y = load.to_numpy(dtype=np.float64)[1:]
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError("features contain NaN or inf after filling gaps (a whole day is missing?)")
    dates = np.array(load.index[1:], dtype="datetime64[D]")
    return x, y, dates, tuple(names)


def chronological_split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    dates: np.ndarray,
    names: tuple[str, ...],
    train_fraction: float = 0.8,
) -> DayAheadData:
    """First ``int(n * train_fraction)`` days train, the rest test; standardise on train.

    >>> import numpy as np
    >>> x, y = np.arange(10.0).reshape(10, 1), np.zeros((10, 24))
    >>> dates = np.arange("2020-01-01", "2020-01-11", dtype="datetime64[D]")
    >>> data = chronological_split("toy", x, y, dates, ("f",))
    >>> len(data.x_train), len(data.x_test), round(float(data.x_train.mean()), 12), str(data.days_test[0])
    (8, 2, 0.0, '2020-01-09')
    """
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    n_train = int(len(x) * train_fraction)
    if n_train < 2 or n_train >= len(x):
        raise DataError(f"{name}: {len(x)} days are too few to split {train_fraction:.0%} / rest")
    mean = x[:n_train].mean(axis=0)
    std = x[:n_train].std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant column (e.g. no holiday in a short span) stays 0
    xs = (x - mean) / std
    return DayAheadData(
        name=name,
        x_train=xs[:n_train],
        y_train=y[:n_train],
        x_test=xs[n_train:],
        y_test=y[n_train:],
        days_train=dates[:n_train],
        days_test=dates[n_train:],
        feature_names=names,
    )
