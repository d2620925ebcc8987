"""Config parsing: TOML files, --set overrides, unknown keys, wrong types, nested tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from qhybrid.config import config_to_dict, parse_overrides, resolve_config
from qhybrid.errors import ConfigError, QHybridError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3  # learning rate
    steps: int = 10  # optimizer steps


@dataclass(frozen=True)
class Outer:
    name: str = "exp"  # run name
    sizes: tuple[int, ...] = (1, 2)  # layer sizes
    mode: Literal["a", "b"] = "a"  # a choice
    limit: float | None = None  # optional cap
    inner: Inner = field(default_factory=lambda: Inner(steps=20))  # nested table

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit={self.limit} must be >= 0")


def test_defaults_file_and_overrides_apply_in_order(tmp_path):
    # Prepare
    path = tmp_path / "exp.toml"
    path.write_text('name = "from-file"\nsizes = [3, 4, 5]\n[inner]\nlr = 0.5\n')
    # Execute
    cfg = resolve_config(Outer, path, ["inner.steps=7", "mode='b'", "limit=2"])
    # Assert
    assert cfg == Outer(name="from-file", sizes=(3, 4, 5), mode="b", limit=2.0, inner=Inner(0.5, 7))
    assert isinstance(cfg.limit, float)  # int TOML value widened to the declared float


def test_partial_nested_table_keeps_the_fields_own_default():
    cfg = resolve_config(Outer, overrides=["inner.lr=0.1"])
    assert cfg.inner == Inner(lr=0.1, steps=20)  # steps=20 from Outer's default, not Inner's 10


def test_override_values_are_parsed_as_toml():
    assert parse_overrides(["a=1", "b=1.5", "c=true", 'd="x"', "e=[1, 2]", "f.g=bare"]) == {
        "a": 1, "b": 1.5, "c": True, "d": "x", "e": [1, 2], "f": {"g": "bare"}
    }  # fmt: skip


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError) as err:
        resolve_config(Outer, overrides=["nmae=x"])
    msg = str(err.value)
    assert "'nmae'" in msg
    for key in ("name", "sizes", "mode", "limit", "inner"):
        assert key in msg


def test_unknown_nested_key_names_its_path():
    with pytest.raises(ConfigError, match=r"'inner\.lrr'.*valid keys: inner\.lr, inner\.steps"):
        resolve_config(Outer, overrides=["inner.lrr=1"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("inner.steps=1.5", r"'inner\.steps' must be an int, got 1\.5"),
        ("inner.steps=true", r"'inner\.steps' must be an int"),
        ("inner.lr='fast'", r"'inner\.lr' must be a float"),
        ("mode='c'", r"'mode' = 'c' is not one of \['a', 'b'\]"),
        ("sizes=[1, 'x']", r"'sizes\[1\]' must be an int"),
        ("name=3", r"'name' must be a str"),
    ],
)
def test_wrong_types_are_rejected(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        resolve_config(Outer, overrides=[override])


def test_post_init_rules_become_config_errors():
    with pytest.raises(ConfigError, match="limit=-1.0 must be >= 0"):
        resolve_config(Outer, overrides=["limit=-1"])


def test_malformed_inputs(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        resolve_config(Outer, overrides=["novalue"])
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(Outer, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(Outer, bad)
    assert issubclass(ConfigError, QHybridError) and issubclass(QHybridError, ValueError)


def test_config_round_trips_through_its_dict():
    cfg = resolve_config(Outer, overrides=["sizes=[7]", "inner.lr=0.25"])
    assert resolve_config(Outer, base=config_to_dict(cfg)) == cfg
