"""Bus-level day-ahead load data: SimBench 2016 load profiles spread over a grid's load buses.

The mapping (stated once, used by the network-aware study and its tests):

- The load buses are the network's buses with ``pd_mw > 0``, in bus order, j = 0..n_load-1.
- Load bus j gets SimBench profile ``profiles[j % K]`` (round robin over K profile types;
  default four: urban, commercial and rural MV aggregates and the G0 commercial
  standard profile, so neighbouring buses peak at different hours). A grid with fewer
  load buses than profiles uses the first n_load profiles only (one bus each).
- Each profile p_k (hourly means of the 15-minute SimBench values,
  `gridlearn.data.simbench_load.hourly_profile`) is divided by its maximum over the
  *training* days, so the case's own load pd_j is read as the bus's planning peak:

      y_dtj = load_scale · pd_j · p_k(j)(d, t) / max_train p_k(j) · (1 + eps_dtj),
      eps_dtj ~ N(0, noise²) i.i.d., from ``np.random.default_rng(seed)``.

  The noise is the bus-level, unforecastable part (metering, local events); the
  profile is what a forecaster can learn from yesterday and the calendar.

Features of target day d (standardised with training statistics by
`gridlearn.data.features.chronological_split`): yesterday's hourly *observed* relative load
of each profile type (the mean over that type's buses of y / (load_scale · pd)), 24 per
type; a one-hot of day d's weekday (7); a weekend flag for yesterday; sin and cos of d's
day of year. 2016 has 366 days, so 365 target days: 292 train, 73 test (default split).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridlearn.data.features import chronological_split
from gridlearn.data.simbench_load import hourly_profile
from gridlearn.errors import ConfigError, DataError

DEFAULT_PROFILES = ("mv_urban_pload", "mv_comm_pload", "mv_rural_pload", "G0-A_pload")
HOURS = 24


@dataclass(frozen=True)
class BusLoadData:
    """A chronologically split bus-level day-ahead data set.

    Attributes:
        name: data set name.
        load_bus: ``(n_load,)`` positions of the load buses in the `Network`.
        base_mw: ``(n_load,)`` load_scale · pd_mw of each load bus (its planning peak).
        profile_of_bus: the SimBench profile of each load bus.
        x_train, x_test: float64 ``(n_days, n_features)``, standardised on training days.
        y_train, y_test: float64 ``(n_days, 24, n_load)`` realised bus loads, MW.
        days_train, days_test: ``datetime64[D]`` target dates.
        feature_names: one name per feature column.
    """

    name: str
    load_bus: np.ndarray
    base_mw: np.ndarray
    profile_of_bus: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    days_train: np.ndarray
    days_test: np.ndarray
    feature_names: tuple[str, ...]

    @property
    def n_load(self) -> int:
        return len(self.load_bus)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def first_days(self, n_train: int, n_test: int) -> "BusLoadData":
        """The first ``n_train`` training and ``n_test`` test days (quick runs and tests).

        Features keep the full set's standardisation, so nothing else changes."""
        if not (2 <= n_train <= len(self.x_train) and 1 <= n_test <= len(self.x_test)):
            raise ValueError(f"need 2 <= n_train <= {len(self.x_train)} and 1 <= n_test <= {len(self.x_test)}")
        return BusLoadData(
            name=self.name, load_bus=self.load_bus, base_mw=self.base_mw, profile_of_bus=self.profile_of_bus,
            x_train=self.x_train[:n_train], y_train=self.y_train[:n_train], x_test=self.x_test[:n_test],
            y_test=self.y_test[:n_test], days_train=self.days_train[:n_train], days_test=self.days_test[:n_test],
            feature_names=self.feature_names,
        )


def profile_days(profile: str) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """One SimBench profile as ``(366, 24)`` hourly values of 2016 and its dates."""
    hourly = hourly_profile(profile)
    table = pd.DataFrame({"date": hourly.index.date, "hour": hourly.index.hour, "v": hourly.to_numpy()}).pivot(
        index="date", columns="hour", values="v"
    )
    if table.shape[1] != HOURS or table.isna().any().any():
        raise DataError(f"SimBench profile {profile!r} does not have 24 hourly values on every day")
    return table.to_numpy(dtype=np.float64), pd.DatetimeIndex(pd.to_datetime(table.index))


def _calendar(stamps: pd.DatetimeIndex) -> tuple[np.ndarray, list[str]]:
    weekday = np.eye(7)[stamps.dayofweek.to_numpy()]
    prev_weekend = np.r_[False, stamps.dayofweek.to_numpy()[:-1] >= 5]
    doy = stamps.dayofyear.to_numpy(dtype=np.float64)
    cal = np.column_stack([weekday, prev_weekend, np.cos(doy / 366 * 2 * np.pi), np.sin(doy / 366 * 2 * np.pi)])
    return cal, [f"weekday_{d}" for d in range(7)] + ["prev_weekend", "cos_doy", "sin_doy"]


def bus_load_data(
    pd_mw: np.ndarray,
    profiles: tuple[str, ...] = DEFAULT_PROFILES,
    noise: float = 0.05,
    load_scale: float = 1.0,
    seed: int = 0,
    train_fraction: float = 0.8,
    name: str = "simbench-bus",
) -> BusLoadData:
    """Bus loads for a grid whose nominal bus demand is ``pd_mw`` ``(n_bus,)`` (see the module docstring).

    case9's three load buses get the first three default profiles; 3 x 24 hours of each
    type yesterday plus 10 calendar columns make 82 features (needs the ``simbench`` package):

    >>> import numpy as np
    >>> from gridlearn.grid import load_case
    >>> data = bus_load_data(load_case("case9").bus.pd_mw.numpy())
    >>> data.load_bus.tolist(), data.base_mw.tolist(), data.profile_of_bus
    ([4, 6, 8], [90.0, 100.0, 125.0], ('mv_urban_pload', 'mv_comm_pload', 'mv_rural_pload'))
    >>> data.x_train.shape, data.y_test.shape, bool(np.isfinite(data.x_train).all())
    ((292, 82), (73, 24, 3), True)
    >>> round(float(data.y_train[:, :, 2].max() / data.base_mw[2]), 2)  # peak 1 on training days, x (1 + noise)
    1.1
    """
    pd_mw = np.asarray(pd_mw, dtype=np.float64)
    if pd_mw.ndim != 1 or not np.isfinite(pd_mw).all():
        raise DataError(f"pd_mw must be a finite (n_bus,) array, got shape {pd_mw.shape}")
    if not profiles:
        raise ConfigError("profiles must name at least one SimBench load profile")
    if noise < 0 or load_scale <= 0:
        raise ConfigError(f"need noise >= 0 and load_scale > 0, got {noise}, {load_scale}")
    load_bus = np.flatnonzero(pd_mw > 0)
    if len(load_bus) == 0:
        raise DataError("the network has no bus with positive pd_mw to spread profiles over")
    # A profile no bus gets would have as its 'yesterday' feature the mean over no buses
    # (NaN features for every day: case9 has 3 load buses, the default lists 4 profiles).
    profiles = tuple(profiles)[: len(load_bus)]
    tables, stamps = [], None
    for p in profiles:
        v, s = profile_days(p)
        if stamps is not None and not s.equals(stamps):
            raise DataError(f"SimBench profile {p!r} covers different dates than {profiles[0]!r}")
        tables.append(v)
        stamps = s
    prof = np.stack(tables)  # (K, n_dates, 24)
    n_dates = prof.shape[1]
    n_train = int((n_dates - 1) * train_fraction)  # target days, as chronological_split counts them
    # normalise by the peak over the training targets and their first 'yesterday' only: no test leakage
    prof = prof / prof[:, : n_train + 1].max(axis=(1, 2), keepdims=True)
    kind = np.arange(len(load_bus)) % len(profiles)
    base = load_scale * pd_mw[load_bus]
    rng = np.random.default_rng(seed)
    eps = rng.normal(0.0, noise, size=(n_dates, HOURS, len(load_bus)))
    rel = prof[kind].transpose(1, 2, 0) * (1.0 + eps)  # (n_dates, 24, n_load), observed load / base
    y = rel * base
    observed_kind = np.stack([rel[..., kind == k].mean(-1) for k in range(len(profiles))], axis=1)  # (n_dates, K, 24)
    cal, cal_names = _calendar(stamps)
    x = np.hstack([observed_kind[:-1].reshape(n_dates - 1, -1), cal[1:]])
    names = tuple(f"{p}_prev_h{h}" for p in profiles for h in range(HOURS)) + tuple(cal_names)
    dates = np.array(stamps[1:], dtype="datetime64[D]")
    split = chronological_split(name, x, y[1:].reshape(n_dates - 1, -1), dates, names, train_fraction)
    shape = (-1, HOURS, len(load_bus))
    return BusLoadData(
        name=name, load_bus=load_bus, base_mw=base, profile_of_bus=tuple(profiles[k] for k in kind),
        x_train=split.x_train, y_train=split.y_train.reshape(shape), x_test=split.x_test,
        y_test=split.y_test.reshape(shape), days_train=split.days_train, days_test=split.days_test,
        feature_names=names,
    )


__all__ = ["BusLoadData", "DEFAULT_PROFILES", "bus_load_data", "profile_days"]
