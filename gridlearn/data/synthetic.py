"""A synthetic day-ahead data set: a few days whose hourly loads are linear in the features.

Why: the forecasting docstrings' examples (issue 17 step 6) and quick checks need a data
set that is tiny, offline and reproduced exactly from a seed; PJM needs its files and
SimBench reads a CSV. Loads sit around PJM's scaled level (about 1.7, an evening peak),
so the scheduling costs of `SchedulingParams` mean what they mean on the real data.
"""

from __future__ import annotations

import numpy as np

from gridlearn.data.features import DayAheadData
from gridlearn.errors import ConfigError


def synthetic_days(n_train: int = 8, n_test: int = 4, n_features: int = 3, n_hours: int = 24,
                   noise: float = 0.05, seed: int = 0) -> DayAheadData:
    """``n_train`` then ``n_test`` days (chronological), y = shape + 0.2 x W + noise eps.

    shape_h = 1.7 + 0.4 sin(2 pi (h - 12) / n_hours) (peak at 18:00 for 24 hours), x and W
    standard normal, eps i.i.d. N(0, 1), all from ``np.random.default_rng(seed)``. The
    features are standardised with the training days' statistics, as the real loaders do.

    >>> data = synthetic_days()
    >>> data.x_train.shape, data.y_test.shape, str(data.days_test[0]), round(float(data.y_train.mean()), 4)
    ((8, 3), (4, 24), '2020-01-09', 1.6837)
    """
    if n_train < 2 or n_test < 1 or n_features < 1 or n_hours < 2:
        raise ConfigError(f"need n_train >= 2, n_test >= 1, n_features >= 1, n_hours >= 2; got "
                          f"{n_train}, {n_test}, {n_features}, {n_hours}")
    if not noise >= 0:
        raise ConfigError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x = rng.normal(size=(n, n_features))
    shape = 1.7 + 0.4 * np.sin(2 * np.pi * (np.arange(n_hours) - 12) / n_hours)
    y = shape + 0.2 * x @ rng.normal(size=(n_features, n_hours)) + noise * rng.normal(size=(n, n_hours))
    mean, std = x[:n_train].mean(axis=0), x[:n_train].std(axis=0)
    xs = (x - mean) / np.where(std > 0, std, 1.0)
    dates = np.datetime64("2020-01-01") + np.arange(n)
    return DayAheadData(name="synthetic", x_train=xs[:n_train], y_train=y[:n_train], x_test=xs[n_train:],
                        y_test=y[n_train:], days_train=dates[:n_train], days_test=dates[n_train:],
                        feature_names=tuple(f"x{i}" for i in range(n_features)))


__all__ = ["synthetic_days"]
