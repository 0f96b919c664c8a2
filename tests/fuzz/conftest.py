"""Property-based tests over the public layers (profiles are registered in tests/conftest.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Small dense kernels: extra threads only contend on a shared runner."""
    yield
