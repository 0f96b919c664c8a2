"""SimBench loader: hourly aggregation, split sizes, scale, cache."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("simbench")

from gridlearn.data import load_simbench  # noqa: E402
from gridlearn.data.simbench_load import TARGET_MEAN, hourly_profile  # noqa: E402


def test_simbench_split_scale_and_features(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDLEARN_CACHE_DIR", str(tmp_path))
    data = load_simbench()
    assert data.x_train.shape == (292, 34) and data.x_test.shape == (73, 34)
    assert data.y_train.shape == (292, 24)
    assert data.days_train[0] == np.datetime64("2016-01-02") and data.days_test[-1] == np.datetime64("2016-12-31")
    assert 1.4 < data.y_train.mean() < 1.8 and 0.2 < data.y_train.min() and data.y_train.max() < 4
    hourly = hourly_profile()
    assert len(hourly) == 366 * 24 and np.isfinite(hourly.to_numpy()).all()
    assert list(tmp_path.glob("*.npz")), "the derived hourly array should be cached"
    # cached read gives the same data
    again = load_simbench()
    np.testing.assert_array_equal(again.y_test, data.y_test)
    assert TARGET_MEAN == pytest.approx(data.y_train[:, :].mean(), rel=0.01)
