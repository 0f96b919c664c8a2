"""Shared fixtures: where the reference data lives, and seeded generators."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def single_thread():
    """One intra-op torch thread for the test, restored after it.

    Why: on a loaded 2-core machine, batched LAPACK calls (cholesky/lu on (batch, m, m)) with
    2 OpenMP threads took ~20 ms each instead of ~10 µs (threads waiting on a busy core).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def data_dir() -> Path | None:
    """GRIDLEARN_DATA_DIR, else ../shared/data beside the checkout; None when absent."""
    env = os.environ.get("GRIDLEARN_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = data_dir()
    if d is None:
        pytest.skip("reference data not found: set GRIDLEARN_DATA_DIR or place shared/data beside the checkout")
    return d


# Hypothesis profiles for tests/fuzz. They are registered here, in the root conftest, because
# `--hypothesis-profile=NAME` is applied when pytest configures, before tests/fuzz/conftest.py
# is read. "ci" (the default) is small and derandomized, so CI is deterministic; "thorough"
# runs 10x the examples with fresh random draws: `pytest tests/fuzz --hypothesis-profile=thorough`.
try:
    from hypothesis import HealthCheck, settings as _hyp_settings

    _quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
    _hyp_settings.register_profile("ci", max_examples=20, derandomize=True, deadline=None,
                                   suppress_health_check=_quiet, print_blob=True)
    _hyp_settings.register_profile("thorough", max_examples=200, derandomize=False, deadline=None,
                                   suppress_health_check=_quiet, print_blob=True)
    _hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a dev dependency; without it only tests/fuzz is skipped
    pass
