"""One intra-op thread for the implicit-core tests (solvers, fixed point, root, DEQ, ODE).

Why: on a loaded 2-core machine, batched LAPACK calls (cholesky/lu on (batch, m, m)) with 2
OpenMP threads took ~20 ms each instead of ~10 µs (threads waiting on a busy core). The
setting is restored after each test, and only these modules use it.
"""

import pytest
import torch

_MODULES = {"test_solvers", "test_fixed_point", "test_root", "test_deq", "test_ode", "test_import_isolation"}


@pytest.fixture(autouse=True)
def _single_thread(request):
    if request.module.__name__.rsplit(".", 1)[-1] not in _MODULES:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
