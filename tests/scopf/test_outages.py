"""Capped-simplex projection, element spaces, and argument validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.errors import ConfigError, DataError
from gridlearn.scopf.outages import ElementSpace, project_capped_simplex


def _cvxpy_projection(v: np.ndarray, k: float) -> np.ndarray:
    import cvxpy as cp

    a = cp.Variable(len(v))
    prob = cp.Problem(cp.Minimize(cp.sum_squares(a - v)), [a >= 0, a <= 1, cp.sum(a) <= k])
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return a.value


@pytest.mark.parametrize("k", [1, 2, 3.5])
def test_projection_matches_cvxpy(k):
    rng = np.random.default_rng(7)
    v = rng.normal(0.3, 1.0, size=(6, 12))
    v[0] = rng.uniform(0, 1, 12) * (k / 12)  # already feasible: must come back unchanged
    v[1, :3] = 5.0  # several entries clipped at 1
    got = project_capped_simplex(torch.tensor(v), k).numpy()
    for row, g in zip(v, got):
        ref = _cvxpy_projection(row, k)
        np.testing.assert_allclose(g, ref, atol=1e-7)
    np.testing.assert_allclose(got[0], v[0])
    assert (got >= 0).all() and (got <= 1).all() and (got.sum(-1) <= k + 1e-9).all()


def test_projection_is_idempotent_and_batched_over_leading_dims():
    g = torch.Generator().manual_seed(3)
    v = torch.randn(2, 3, 9, generator=g, dtype=torch.float64) * 2
    p = project_capped_simplex(v, 2)
    assert p.shape == v.shape
    torch.testing.assert_close(project_capped_simplex(p, 2), p)
    torch.testing.assert_close(p[1, 2], project_capped_simplex(v[1, 2], 2))


def test_projection_rejects_bad_input():
    with pytest.raises(ConfigError, match="k must be"):
        project_capped_simplex(torch.zeros(4, dtype=torch.float64), 5)
    with pytest.raises(DataError, match="NaN"):
        project_capped_simplex(torch.tensor([0.1, float("nan")]), 1)


def test_element_space_labels_and_split(case30):
    sp = ElementSpace.of(case30, "all")
    assert sp.size == case30.n_branch + case30.n_gen
    assert sp.labels[: case30.n_branch] == case30.branch.labels
    assert ElementSpace.of(case30, "generators").labels == case30.gen.labels
    alpha = torch.zeros(sp.size, dtype=torch.float64)
    alpha[3] = 1.0
    alpha[case30.n_branch + 2] = 0.5
    a_br, a_gen = sp.split(alpha)
    assert a_br[3] == 1 and a_br.sum() == 1 and a_gen[2] == 0.5 and a_gen.sum() == 0.5
    assert sp.indices_of(sp.set_labels([5, 1])) == (1, 5)
    with pytest.raises(ConfigError, match="elements must be"):
        ElementSpace.of(case30, "lines")


def test_bad_arguments_raise_clear_errors(case30):
    from gridlearn.scopf import attack_contingencies, enumerate_contingencies

    pg = torch.full((case30.n_gen,), 30.0, dtype=torch.float64)
    with pytest.raises(ConfigError, match="k must be >= 1"):
        attack_contingencies(case30, pg, 0)
    with pytest.raises(ConfigError, match="exceeds"):
        enumerate_contingencies(case30, pg, case30.n_gen + 1, elements="generators")
    with pytest.raises(DataError, match="shape"):
        attack_contingencies(case30, pg[:-1], 1)
    bad = pg.clone()
    bad[2] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        enumerate_contingencies(case30, bad, 1)
    with pytest.raises(ConfigError, match="physics"):
        enumerate_contingencies(case30, pg, 1, physics="ac-polar")
    import pandas as pd

    with pytest.raises(DataError, match="not a generator"):
        enumerate_contingencies(case30, pd.Series({("gen", 999): 1.0}), 1)

