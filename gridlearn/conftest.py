"""pytest settings for the docstring examples, which run from this testpath (``--doctest-modules``).

Why a conftest here: ``tests/conftest.py`` applies to ``tests/`` only.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread_per_example():
    """One intra-op torch thread for each example, restored after it (``tests/conftest.py``'s
    ``single_thread``, for every example). Why: the examples are tiny, and on a loaded 2-core
    machine two OpenMP threads made the whole example set take 81 s instead of 12-20 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
