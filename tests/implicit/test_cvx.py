"""QPLayer against cvxpylayers (through the CvxpyLayer adapter), and the adapter's failure mapping."""

from __future__ import annotations

import pytest
import torch

from gridlearn.errors import ConfigError, DataError, InfeasibleError
from gridlearn.implicit.cvx import CvxpyLayer
from gridlearn.implicit.qp import QPLayer
from gridlearn.implicit.solution import Status

from .test_qp import random_qp

F64 = torch.float64
MOREAU_TIGHT = {"ipm_settings": {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12}}
SCS_TIGHT = {"eps_abs": 1e-11, "eps_rel": 1e-11, "max_iters": 200000}



def _outputs_and_grads(layer, data, seed):
    ins = [t.clone().requires_grad_() for t in data]
    x, lam, nu = layer(*ins)
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=F64)).sum() for o in (x, lam, nu))
    loss.backward()
    return [x.detach(), lam.detach(), nu.detach()] + [t.grad for t in ins]


CASES = {
    # name: (random_qp kwargs, which cvxpylayers solver can take that Q)
    "dense": (dict(seed=11, B=3, n=5, m=7, k=2), "DIFFCP"),
    "no_equalities": (dict(seed=12, B=3, n=6, m=9, k=0), "DIFFCP"),
    "psd_only_q": (dict(seed=13, B=3, n=5, m=8, k=1, psd_rank=4), "MOREAU"),
    "dense_moreau": (dict(seed=14, B=3, n=6, m=10, k=2), "MOREAU"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_solution_duals_and_gradients_match_cvxpylayers(case):
    kw, solver = CASES[case]
    data = list(random_qp(**kw))
    if case == "no_equalities":
        data[4] = data[5] = None
    n, m, k = data[1].shape[-1], data[2].shape[-2], 0 if data[4] is None else data[4].shape[-2]
    if data[4] is None:
        data = data[:4]
    args = MOREAU_TIGHT if solver == "MOREAU" else SCS_TIGHT
    ref_layer = CvxpyLayer(n, m, k, solver=solver, solver_args=args, return_duals=True)
    ours = _outputs_and_grads(QPLayer(return_duals=True), data, seed=kw["seed"])
    ref = _outputs_and_grads(ref_layer, data, seed=kw["seed"])
    names = ["x", "lam", "nu", "dQ", "dp", "dG", "dh", "dA", "db"]
    # Sparse-ish data: some constraints are active (else the test would not test them).
    slack = data[3] - (data[2] @ ours[0].unsqueeze(-1)).squeeze(-1)
    assert int((slack.abs() < 1e-7).sum()) > 0
    # Solutions and duals agree to 1e-6 with either peer. Gradients: SCS at eps 1e-11
    # (DIFFCP) agrees to 1e-6; Moreau's gradients we measured 2e-6..5e-6 away from
    # central finite differences (ours: <1e-7, see test_qp gradchecks), hence 2e-5 there.
    grad_tol = 1e-6 if solver == "DIFFCP" else 2e-5
    for i, (name, a, r) in enumerate(zip(names, ours, ref)):
        tol = 1e-6 if i < 3 else grad_tol
        torch.testing.assert_close(a, r, atol=tol, rtol=1e-5, msg=lambda s: f"{case} {name}: {s}")


def test_sparse_constraint_rows_match_cvxpylayers():
    Q, p, G, h, A, b = random_qp(15, B=2, n=8, m=12, k=1)
    mask = torch.rand(G.shape, generator=torch.Generator().manual_seed(15), dtype=F64) < 0.3
    G = G * mask
    x = QPLayer()(Q, p, G, h, A, b)
    ref = CvxpyLayer(8, 12, 1, solver="MOREAU", solver_args=MOREAU_TIGHT)(Q, p, G, h, A, b)
    torch.testing.assert_close(x, ref, atol=1e-6, rtol=1e-5)


def test_adapter_reports_infeasible_elements():
    Q, p, _, _, _, _ = random_qp(16, B=3, n=3, m=0, k=0)
    G = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]], dtype=F64)
    h = torch.tensor([[1.0, 1.0], [1.0, -2.0], [1.0, 1.0]], dtype=F64)
    layer = CvxpyLayer(3, 2, 0, solver="DIFFCP", solver_args=SCS_TIGHT)
    sol = layer.solve(Q, p, G, h)
    assert sol.statuses == [Status.CONVERGED, Status.INFEASIBLE, Status.CONVERGED]
    assert QPLayer().solve(Q, p, G, h).statuses == sol.statuses
    with pytest.raises(InfeasibleError, match="#1: INFEASIBLE"):
        layer(Q, p, G, h)


def test_adapter_rejects_bad_configuration_and_data():
    with pytest.raises(ConfigError):
        CvxpyLayer(3, 2, solver="ECOS")
    with pytest.raises(ConfigError):
        CvxpyLayer(3, 0, 0)
    Q, p, G, h, A, b = random_qp(17, B=1, n=3, m=2, k=0, psd_rank=1)
    with pytest.raises(DataError, match="positive definite"):
        CvxpyLayer(3, 2, 0, solver="DIFFCP")(Q, p, G, h)
    with pytest.raises(DataError, match="shape"):
        CvxpyLayer(3, 2, 0, solver="MOREAU")(Q, p, G[:, :2], h)
