"""`gridlearn.study`: a study's command line built from its Config, and `gridlearn.tables` schemas."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pytest
from typer.testing import CliRunner

from gridlearn.errors import ConfigError, DataError
from gridlearn.study import study_app
from gridlearn.tables import TableSchema


@dataclass(frozen=True, kw_only=True)
class _Config:
    name: str = field(default="a", metadata={"help": "a name"})
    seeds: int = 2
    lr: float = 1e-3
    fast: bool = False
    methods: tuple[str, ...] = ("x", "y")
    ks: tuple[int, ...] = (1, 2)
    out: str | None = None

    def __post_init__(self):
        if self.seeds < 1:
            raise ConfigError("seeds must be >= 1")


def _app(seen, demo=None):
    def main(cfg):
        seen.append(cfg)

    return study_app(_Config, main, demo=demo)


def test_every_field_is_an_option_with_the_config_default():
    seen = []
    result = CliRunner().invoke(_app(seen), [])
    assert result.exit_code == 0, result.output
    assert seen == [_Config()]


def test_options_parse_into_the_config_types():
    seen = []
    args = ["--name", "b", "--seeds", "5", "--lr", "0.5", "--fast", "--methods", "p, q,r", "--ks", "3", "--out", "/tmp/o"]
    result = CliRunner().invoke(_app(seen), args)
    assert result.exit_code == 0, result.output
    assert seen == [_Config(name="b", seeds=5, lr=0.5, fast=True, methods=("p", "q", "r"), ks=(3,), out="/tmp/o")]


def test_demo_preset_overrides_and_help_lists_the_fields():
    seen = []
    app = _app(seen, demo={"seeds": 1, "methods": ("z",)})
    assert CliRunner().invoke(app, ["--demo", "--seeds", "9"]).exit_code == 0
    assert (seen[0].seeds, seen[0].methods) == (1, ("z",))
    help_text = CliRunner().invoke(app, ["--help"]).output
    assert "--methods" in help_text and "a name" in help_text and "--no-fast" in help_text


def test_a_config_error_is_a_usage_error_and_a_bad_preset_fails_at_build_time():
    result = CliRunner().invoke(_app([]), ["--seeds", "0"])
    assert result.exit_code == 2 and "seeds must be >= 1" in result.output
    with pytest.raises(ConfigError, match="demo preset names fields"):
        _app([], demo={"nope": 1})


SCHEMA = TableSchema("t", (("method", "text"), ("seed", "integer"), ("day", "date"), ("x", "number"), ("ok", "bool")))


def test_schema_round_trips_through_csv_and_names_a_bad_column(tmp_path):
    df = SCHEMA.frame([{"ok": True, "method": "a", "seed": 0, "day": "2016-10-20", "x": 1.5}])
    assert list(df.columns) == SCHEMA.names
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    back = SCHEMA.check(pd.read_csv(path))
    assert back.iloc[0].to_dict() == {"method": "a", "seed": 0, "day": "2016-10-20", "x": 1.5, "ok": True}
    with pytest.raises(DataError, match=r"column 'day' is not an ISO date .*'20'"):
        SCHEMA.check(back.assign(day=20))
    with pytest.raises(DataError, match=r"column 'x' is not numeric \(e.g. 'n/a'\)"):
        SCHEMA.check(back.assign(x="n/a"))
    with pytest.raises(DataError, match=r"column 'seed' is not integer"):
        SCHEMA.check(back.assign(seed=0.5))
    with pytest.raises(DataError, match="lacks columns"):
        SCHEMA.check(back.drop(columns="x"))
    with pytest.raises(ConfigError, match="not in the schema"):
        SCHEMA.frame(back.assign(extra=1))
