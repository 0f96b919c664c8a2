"""The dispatch handed to `attack_contingencies` is validated before any attack runs."""

from __future__ import annotations

import pandas as pd
import pytest

from gridlearn.errors import DataError
from gridlearn.scopf import attack_contingencies
from gridlearn.scopf.dispatch import as_dispatch, base_dispatch, dispatch_series


@pytest.fixture(scope="module")
def pg30(case30):
    return base_dispatch(case30)


def test_duplicated_generator_label_is_rejected(case30, pg30):
    s = dispatch_series(case30, pg30)
    dup = pd.concat([s, s.iloc[:1] * 0 + 1.0])  # the last value used to win silently
    with pytest.raises(DataError, match="more than once"):
        attack_contingencies(case30, dispatch=dup, k=1)


def test_dispatch_far_above_pmax_is_rejected_naming_the_generator(case30, pg30):
    with pytest.raises(DataError, match=r"outside \[") as err:
        attack_contingencies(case30, dispatch=10 * case30.gen.pmax_mw, k=1)
    assert str(case30.gen.labels[0]) in str(err.value)


def test_dispatch_within_solver_round_off_of_its_limits_is_accepted(case30):
    hi = case30.gen.pmax_mw
    out = as_dispatch(case30, hi + 1e-6)
    assert out.shape == hi.shape
