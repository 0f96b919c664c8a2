"""One vocabulary (issue 17): unit-named costs and flows; old names still work, with a warning."""

from __future__ import annotations

import inspect

import pytest
import torch

from gridlearn.errors import ConfigError
from gridlearn.grid import load_case
from gridlearn.grid.acopf import ACOPFResult, solve_acopf, solve_acopf_status
from gridlearn.grid.dcopf import DCOPFLayer


@pytest.fixture(scope="module")
def case9():
    return load_case("case9")


def test_dcopf_old_cost_names_warn_and_give_the_same_dispatch(case9):
    c1 = case9.gen.cost_c1_usd_per_mwh * torch.tensor([1.0, 1.3, 0.7], dtype=torch.float64)
    c2 = case9.gen.cost_c2_usd_per_mw2h
    new = DCOPFLayer()(case9, cost_c2_usd_per_mw2h=c2, cost_c1_usd_per_mwh=c1)
    with pytest.warns(DeprecationWarning, match="cost_c1_usd_per_mwh"):
        old = DCOPFLayer()(case9, cost_c1=c1, cost_c2_usd_per_mw2h=c2)
    torch.testing.assert_close(old.pg_mw, new.pg_mw, atol=0, rtol=0)
    # The changed c1 moved the dispatch: the argument was not ignored.
    assert not torch.allclose(new.pg_mw, DCOPFLayer()(case9).pg_mw, atol=1e-3)
    with pytest.raises(ConfigError, match="given twice"), pytest.warns(DeprecationWarning):
        DCOPFLayer()(case9, cost_c1=c1, cost_c1_usd_per_mwh=c1)
    with pytest.raises(TypeError, match="cost_c3"):
        DCOPFLayer()(case9, cost_c3=c1)


def test_dcopf_flow_is_p_from_mw_and_flow_mw_warns(case9):
    res = DCOPFLayer()(case9)
    with pytest.warns(DeprecationWarning, match=r"\.p_from_mw"):
        old = res.flow_mw
    assert old is res.p_from_mw


def test_acopf_objective_is_cost_usd_per_h(case9):
    res = solve_acopf(case9, backend="direct")
    with pytest.warns(DeprecationWarning, match=r"\.cost_usd_per_h"):
        assert res.objective == res.cost_usd_per_h
    assert "objective" not in {f.name for f in ACOPFResult.__dataclass_fields__.values()}


def test_solve_acopf_status_has_solve_acopfs_default_backend():
    default = lambda f: inspect.signature(f).parameters["backend"].default  # noqa: E731
    assert default(solve_acopf_status) == default(solve_acopf) == "pyomo"
    with pytest.raises(ConfigError, match="backend"):
        solve_acopf_status(load_case("case9"), backend="gams")


def test_acopf_layer_output_old_name_warns():
    from gridlearn.grid.acopf_layer import ACOPFOutput

    t = torch.zeros(1, 1)
    out = ACOPFOutput(t, t, t, t, t, torch.tensor([5.0]))
    with pytest.warns(DeprecationWarning, match=r"\.cost_usd_per_h"):
        assert out.objective_usd_per_h is out.cost_usd_per_h
