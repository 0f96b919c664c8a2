"""Ipopt options are validated into a ConfigError that names the option, on both AC-OPF paths."""

from __future__ import annotations

import pytest

from gridlearn.errors import ConfigError
from gridlearn.grid import load_case, solve_acopf


@pytest.mark.parametrize("backend", ["pyomo", "direct"])
@pytest.mark.parametrize("bad", [
    {"no_such_option": 1},        # unknown name
    {"max_iter": "many"},         # wrong type (an integer option given a string)
    {"tol": -1.0},                # out of range (tol > 0)
    {"mu_strategy": "bogus"},     # not one of the option's words
    {"print_level": [1]},         # not a str, int or float at all
])
def test_bad_option_is_a_config_error_naming_it(backend, bad):
    name = next(iter(bad))
    with pytest.raises(ConfigError, match=name):
        solve_acopf(load_case("case9"), backend=backend, **bad)


@pytest.mark.parametrize("backend", ["pyomo", "direct"])
def test_good_options_pass(backend):
    res = solve_acopf(load_case("case9"), backend=backend, tol=1e-8, max_iter=200, mu_strategy="adaptive")
    assert res.cost_usd_per_h == pytest.approx(5296.68, rel=1e-4)
