"""A diagonal Q with a negative entry is nonconvex, whatever its size (audit finding).

Q = diag(1e8, −1e-6) with |x₂| ≤ 1000 was CONVERGED at x = 0 with objective 0, while the
minimum is −0.5 at x₂ = ±1000: the convexity test accepted eigenvalues down to
−δ = −100·n·eps·‖Q‖ = −4.4e-6 as rounding noise. For a dense Q that tolerance is what float64
can resolve; a diagonal Q's eigenvalues are its entries, exactly, so there a negative entry
is a nonconvex problem, not noise. Q = 0, and −0.0 entries, stay convex.
"""

from __future__ import annotations

import pytest
import torch

from gridlearn.implicit import solve_qp


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("neg", [-1e-6, -1e-12, -1e-300])
def test_negative_diagonal_entry_is_nonconvex(neg):
    Q = _t([[1e8, 0.0], [0.0, neg]])
    sol = solve_qp(Q, _t([0.0, 0.0]), _t([[0.0, 1.0], [0.0, -1.0]]), _t([1e3, 1e3]))
    assert sol.statuses[0].name == "NONCONVEX"


@pytest.mark.parametrize("diag", [[0.0, 0.0], [1.0, -0.0], [1e8, 0.0]])
def test_zero_and_positive_diagonals_stay_convex(diag):
    Q = torch.diag(_t(diag))
    sol = solve_qp(Q, _t([0.5, -1.0]), _t([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), _t([1.0, 1.0, 1.0, 1.0]))
    assert sol.statuses[0].name == "CONVERGED"
    assert sol.value.tolist() == pytest.approx([-1.0 if diag[0] == 0 else -0.5 / diag[0], 1.0], abs=1e-6)
