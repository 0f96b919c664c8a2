"""A DC-OPF scenario that converged alone but not inside a batch (found by the audit sweep).

case_RTS_GMLC at its own load converged alone in 16 steps at DCOPFLayer's tol 1e-11, but
batched with a copy of itself (or another scenario) it stopped at MAX_STEPS: the iterate
came within 4.6e-10 of the tolerance at step 16 and then degraded to 3e-4, because the
Cholesky of H = Q + GᵀDG (D = λ/s spanning 1e-25..1e25 there) loses the digits the last
steps need, and the batched BLAS rounds differently from the single solve. The interior
point now re-solves an element that ends MAX_STEPS or NUMERICAL under another KKT solver
with the bordered LU (`qp_backward._run`), which converged in every arrangement tried.
"""

from __future__ import annotations

import numpy as np
import torch

from gridlearn.grid import DCOPFLayer, load_case
from gridlearn.grid.dcopf_problem import DCStructure, assemble
from gridlearn.implicit.qp import QPSettings, solve_qp


def _rts_qp(batch: int):
    net = load_case("case_RTS_GMLC")
    st = DCStructure.build(net)
    return assemble(net, st, net.bus.pd_mw.expand(batch, 1, -1), net.gen.cost_c2_usd_per_mw2h[None],
                    net.gen.cost_c1_usd_per_mwh[None], None, None, 1.0)


def test_rts_gmlc_nominal_load_converges_inside_a_batch():
    net = load_case("case_RTS_GMLC")
    pd0 = net.bus.pd_mw
    alone = DCOPFLayer().solve(net, pd_mw=pd0)
    both = DCOPFLayer().solve(net, pd_mw=torch.stack([pd0, pd0]))
    assert alone.statuses[0].name == "CONVERGED"
    assert [s.name for s in both.statuses] == ["CONVERGED", "CONVERGED"]
    np.testing.assert_allclose(both.value.cost_usd_per_h.numpy(), float(alone.value.cost_usd_per_h), rtol=1e-9)


def test_the_retried_elements_get_gradients_and_converged_ones_are_untouched():
    qp = _rts_qp(2)
    s = QPSettings(tol=1e-11)
    p = qp.p.clone().requires_grad_()
    sol = solve_qp(qp.Q, p, qp.G, qp.h, qp.A, qp.b, settings=s)
    assert [x.name for x in sol.statuses] == ["CONVERGED", "CONVERGED"]
    sol.value.sum().backward()
    assert torch.isfinite(p.grad).all()
    # a batch the first solver handles is not re-solved: identical to a run with the retry's solver never used
    one = solve_qp(qp.Q, qp.p, qp.G, qp.h[:1], qp.A, qp.b[:1], settings=s)
    four = solve_qp(qp.Q, qp.p, qp.G, qp.h[:1].expand(4, -1), qp.A, qp.b[:1].expand(4, -1), settings=s)
    assert one.statuses[0].name == "CONVERGED" and all(x.name == "CONVERGED" for x in four.statuses)
