"""The reference protocol's data handling and training rules (`gridlearn.forecast.reference_protocol`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.data import PJM_FILES, load_pjm
from gridlearn.data.features import chronological_split
from gridlearn.errors import ConfigError
from gridlearn.forecast.reference_protocol import ReferenceSettings, random_holdout, train_task_reference, whole_data_standardised


def _raw_pjm(shared_data):
    from gridlearn.data import pjm

    parts = [pjm._file_features(shared_data / "pjm" / n) for n in PJM_FILES]
    return np.concatenate([p[0] for p in parts])


@pytest.mark.needs_data
def test_whole_data_standardisation_on_the_shipped_pjm_data(shared_data):
    original = load_pjm(shared_data / "pjm")
    data = whole_data_standardised(original)
    raw = _raw_pjm(shared_data)
    # power_sched/main.py: X standardised with the mean and std of every day of both files
    std = raw.std(0)
    expected = (raw - raw.mean(0)) / np.where(std > 0, std, 1.0)
    got = np.concatenate([data.x_train, data.x_test])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    # 2552 training days: the reference's 2553 less 2016-09-28, which has 1 of its 24 hours
    # (the loader drops it rather than back-fill it; see tests/data/test_pjm.py)
    assert data.x_train.shape == (2552, 149) and data.x_test.shape == (639, 149)
    # the training split alone is then *not* centred: test-day statistics are in the features
    assert np.abs(data.x_train.mean(0)).max() > 0.05
    assert np.array_equal(data.y_train, original.y_train) and np.array_equal(data.days_test, original.days_test)


@pytest.mark.needs_data
def test_holdout_is_a_seeded_random_80_20_split_of_the_training_days(shared_data):
    n = len(load_pjm(shared_data / "pjm").x_train)
    fit, hold = random_holdout(n, 0.2, seed=3)
    assert (len(fit), len(hold)) == (int(n * 0.8), n - int(n * 0.8)) == (2041, 511)
    assert sorted(np.concatenate([fit, hold]).tolist()) == list(range(n))  # a partition
    assert not np.array_equal(np.sort(hold), np.arange(n - len(hold), n))  # random, not the last days
    again, _ = random_holdout(n, 0.2, seed=3)
    other, _ = random_holdout(n, 0.2, seed=4)
    assert np.array_equal(fit, again) and not np.array_equal(fit, other)


def test_whole_data_standardisation_keeps_a_constant_column_zero():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=50), np.ones(50)])
    data = whole_data_standardised(chronological_split("t", x, rng.normal(size=(50, 24)), np.arange(50).astype("datetime64[D]"), ("a", "b")))
    all_x = np.concatenate([data.x_train, data.x_test])
    np.testing.assert_allclose(all_x[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(), atol=1e-12)
    assert (all_x[:, 1] == 0).all()


class _FakeScheduler:
    """Schedule = mu, task loss = squared error: enough to test the stopping rule's bookkeeping."""

    class params:  # noqa: N801 - mimics SchedulingParams' fields used by realised_cost
        gamma_under, gamma_over, c_ramp = 0.0, 0.0, 1.0

    def forward_converged(self, mu, sigma, z0=None):
        return mu, torch.ones(len(mu), dtype=torch.bool), mu.detach()

    def __call__(self, mu, sigma):
        return mu


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(1, 24, dtype=torch.float64))

    def forward(self, x):
        mu = self.b.expand(len(x), -1)
        return mu, torch.ones_like(mu)


def _train_on_fake_days(net, settings, hold_out: float):
    """Task training on 8 featureless days whose fit targets are 1 and hold-out targets ``hold_out``."""
    x = torch.zeros(8, 3, dtype=torch.float64)
    return train_task_reference(net, _FakeScheduler(), x, torch.ones(8, 24, dtype=torch.float64), x,
                                torch.full((8, 24), hold_out, dtype=torch.float64), settings)


def test_task_training_stops_after_a_window_without_a_new_hold_out_minimum_and_keeps_the_best():
    # Fit days pull the bias to +1, hold-out days sit at 0: the hold-out cost only rises, so
    # the first window (steps 0..20) has its minimum at step 0, the next brings none, and
    # training stops at step 40 with the step-0 weights.
    net = _Net()
    hist = _train_on_fake_days(net, ReferenceSettings(task_steps=1000, task_lr=0.05, stop_window=20), hold_out=0.0)
    assert len(hist.val) == 41 and hist.best_epoch == 0
    assert torch.equal(net.b, torch.zeros(1, 24, dtype=torch.float64))  # the best weights, not the last


def test_task_training_runs_on_while_the_hold_out_cost_falls():
    hist = _train_on_fake_days(_Net(), ReferenceSettings(task_steps=60, task_lr=0.01, stop_window=20), hold_out=1.0)
    assert len(hist.val) == 60 and hist.best_epoch == 59


def test_bad_settings_raise_config_error():
    with pytest.raises(ConfigError, match="holdout_fraction"):
        ReferenceSettings(holdout_fraction=1.0)
    with pytest.raises(ConfigError, match="stop_window"):
        ReferenceSettings(stop_window=0)
