"""Shared fixtures: where the reference data lives, and seeded generators."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
