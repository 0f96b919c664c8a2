"""Property-based tests over the public layers (profiles are registered in tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("hypothesis")


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """Small dense kernels: extra threads only contend on a shared runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
