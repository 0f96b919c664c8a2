"""Audit tests run with one intra-op torch thread (see `tests.conftest.single_thread`)."""

import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    yield
