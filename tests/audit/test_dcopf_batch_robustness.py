"""A DC-OPF scenario that converges alone but not inside a batch (found by the audit sweep).

case_RTS_GMLC at its own load converges alone in 16 steps at DCOPFLayer's tol 1e-11, but
batched with another scenario (or with a copy of itself) it stops at MAX_STEPS with a
residual of 2e-6 to 3e-4; in a batch of four copies it converges again. The batched BLAS
calls round differently, and this ill-conditioned problem (fixed units, piecewise-linear
epigraph) is sensitive to it at tol 1e-11; at tol 1e-10 both elements converge, and
kkt_solver="bordered_lu" converges in every arrangement tried. The status is honest
(MAX_STEPS, never a wrong CONVERGED), but the answer should not depend on the batch.
Not strict: the failure depends on rounding, so another BLAS may pass it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gridlearn.grid import DCOPFLayer, load_case


@pytest.mark.xfail(reason="batch-dependent MAX_STEPS on case_RTS_GMLC at tol 1e-11 (see module docstring)",
                   strict=False)
def test_rts_gmlc_nominal_load_converges_inside_a_batch():
    net = load_case("case_RTS_GMLC")
    pd0 = net.bus.pd_mw.numpy()
    pd = torch.tensor(np.stack([pd0, pd0]))
    assert DCOPFLayer().solve(net, pd_mw=pd[0]).statuses[0].name == "CONVERGED"
    assert [s.name for s in DCOPFLayer().solve(net, pd_mw=pd).statuses] == ["CONVERGED", "CONVERGED"]
