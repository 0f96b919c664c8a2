"""The defence's inner oracle: the attack, checked by the DC enumeration when that is small."""

from __future__ import annotations

import warnings

import pytest

from gridlearn.errors import ConfigError
from gridlearn.scopf import defend, enumerate_contingencies


@pytest.fixture(scope="module")
def pglib30_light(shared_data):
    from gridlearn.grid import load_case

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_case(shared_data / "pglib-opf" / "pglib_opf_case30_ieee.m")
    return net.with_(pd_mw=net.bus.pd_mw * 0.6, qd_mvar=net.bus.qd_mvar * 0.6)


@pytest.mark.slow
def test_n2_defence_is_not_declared_secure_on_the_attacks_word_alone(pglib30_light):
    """At 60 % load on PGLib case30 no preventive dispatch secures every N-2 pair (the pair
    (line 9, line 33), whose outages matter only together, was the one the attack used to
    miss and the enumeration check caught), so the status is "infeasible", not "secure"."""
    # exact="never": C(41, 2) is within the search budget, so by default the attack would
    # enumerate. Since the near-cut candidates and the budget-driven polish, the search
    # itself finds the pair (it used to need the enumeration check: oracle "enumeration").
    opts = {"restarts": 8, "steps": 15, "seed": 0, "exact": "never"}
    res = defend(pglib30_light, 2, max_steps=6, attack_options=opts)
    assert res.status == "infeasible"
    h = res.history
    assert h["oracle"].iloc[-1] in ("attack", "enumeration")
    # (its last worst set is no longer (line 9, line 33): generator-only islands such as
    # (line 0, line 1) are now scored, with the pick-up, and no preventive dispatch secures them)
    enum = enumerate_contingencies(pglib30_light, res.dispatch_mw, 2, elements="branches")
    ok = enum[enum["status"] == "ok"]
    assert float(ok["violation_mw"].iloc[0]) == pytest.approx(float(h["worst_violation_mw"].iloc[-1]), abs=1e-9)
    # without the check, the attack's view alone now also refuses to call it secure
    blind = defend(pglib30_light, 2, max_steps=6, attack_options=opts, verify_limit=0)
    assert blind.status == "infeasible"
    assert (blind.history["oracle"] == "attack").all()


def test_defence_rejects_a_bad_verify_limit(pglib30_light):
    with pytest.raises(ConfigError, match="verify_limit"):
        defend(pglib30_light, 1, verify_limit=-1)


def test_defend_asks_the_contingency_model_whether_it_can_secure():
    """The DC-only guard lives on the models (issue 17): every physics' model says
    ``securable``, and `defend` refuses exactly the physics whose model says False."""
    from gridlearn.grid import load_case
    from gridlearn.scopf.models import PHYSICS, model_class, securable_physics

    assert all(isinstance(model_class(p).securable, bool) for p in PHYSICS)
    assert securable_physics() == ("dc",)
    net = load_case("case9")
    for p in PHYSICS:
        if not model_class(p).securable:
            with pytest.raises(ConfigError, match="physics='dc' only"):
                defend(net, 1, p)
    with pytest.raises(ConfigError, match="physics must be one of"):
        defend(net, 1, "dcx")
