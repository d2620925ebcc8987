"""Config parsing: TOML files, --set overrides, unknown keys, wrong types, nested tables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest
from annotated_types import Ge, Interval, MinLen

from qhybrid.config import (
    Unique,
    check_fields,
    config_help,
    config_to_dict,
    load_toml,
    parse_overrides,
    preset_path,
    presets,
    resolve_config,
)
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
        "a": 1,
        "b": 1.5,
        "c": True,
        "d": "x",
        "e": [1, 2],
        "f": {"g": "bare"},
    }


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


@dataclass(frozen=True)
class Bounded:
    steps: Annotated[int, Ge(1)] = 10  # optimizer steps
    share: Annotated[float, Interval(gt=0, lt=1)] = 0.5  # a fraction
    sizes: Annotated[tuple[int, ...], MinLen(1)] = (4,)  # layer sizes
    inner: Inner = field(default_factory=Inner)  # nested table

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("steps=0", r"'steps' = 0 must be >= 1"),
        ("steps=-3", r"'steps' = -3 must be >= 1"),
        ("share=1.0", r"'share' = 1.0 must be < 1"),
        ("share=0", r"'share' = 0.0 must be > 0"),
        ("share=nan", r"'share' is NaN"),
        ("inner.lr=nan", r"'inner.lr' is NaN"),
        ("sizes=[]", r"'sizes' = \(\) must be at least 1 items"),
    ],
)
def test_bounds_name_the_users_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        resolve_config(Bounded, overrides=[override])


def test_bounds_also_hold_for_the_python_api():
    with pytest.raises(ConfigError, match="'steps' = 0 must be >= 1"):
        Bounded(steps=0)
    assert Bounded(steps=3).steps == 3


@pytest.mark.parametrize("raw", ["[1,", "3e-", '"open', "{a=1", "1 2", "x y"])
def test_values_that_look_like_toml_but_do_not_parse_are_errors(raw):
    with pytest.raises(ConfigError, match="is not a TOML value"):
        parse_overrides([f"name={raw}"])


@pytest.mark.parametrize("raw", ["quick", "data/grover", "./runs/x-1", "~/models/llama", "a.b"])
def test_bare_words_and_paths_stay_strings(raw):
    assert parse_overrides([f"name={raw}"]) == {"name": raw}


def test_help_lists_every_key_with_type_default_bounds_and_comment():
    text = config_help(Bounded).splitlines()
    assert text == [
        "  steps (int, default 10, >= 1): optimizer steps",
        "  share (float, default 0.5, > 0, < 1): a fraction",
        "  sizes (list of int, default [4], at least 1 items): layer sizes",
        "  inner.lr (float, default 0.001): learning rate",
        "  inner.steps (int, default 10): optimizer steps",
    ]
    # an instance's own values are the defaults shown (Outer's inner has steps=20)
    assert "  inner.steps (int, default 20): optimizer steps" in config_help(Outer).splitlines()
    assert "  limit (float or null, default null): optional cap" in config_help(Outer).splitlines()


def test_config_files_that_are_not_utf8_or_not_files(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes("name = 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        resolve_config(Outer, latin)
    with pytest.raises(ConfigError, match="is a folder or device, not a TOML file"):
        resolve_config(Outer, tmp_path)
    unreadable = tmp_path / "locked.toml"
    unreadable.write_text("name = 'x'\n")
    unreadable.chmod(0)
    if not os.access(unreadable, os.R_OK):  # root reads anything
        with pytest.raises(ConfigError, match="cannot be read"):
            resolve_config(Outer, unreadable)


def test_presets_ship_inside_the_package_and_load_by_name():
    names = presets()
    assert "reproduce_quick" in names
    for name in names:
        assert preset_path(name) is not None
        assert isinstance(load_toml(name), dict)
    with pytest.raises(ConfigError, match="nor is it a preset"):
        load_toml("no_such_preset")


def test_bounds_on_list_items_hold_for_files_and_the_python_api():
    @dataclass(frozen=True)
    class Items:
        sizes: tuple[Annotated[int, Ge(1)], ...] = (1, 2)  # each >= 1

        def __post_init__(self) -> None:
            check_fields(self)

    with pytest.raises(ConfigError, match=r"'sizes\[1\]' = 0 must be >= 1"):
        resolve_config(Items, overrides=["sizes=[3, 0]"])
    with pytest.raises(ConfigError, match=r"'sizes\[1\]' = 0 must be >= 1"):
        Items(sizes=(3, 0))


@pytest.mark.parametrize("raw", ["inf", "-inf", "+inf", "1e400"])
def test_floats_are_finite(raw):
    with pytest.raises(ConfigError, match="'share' = .* is not a finite float"):
        resolve_config(Bounded, overrides=[f"share={raw}"])


@dataclass(frozen=True)
class Strict:
    names: Annotated[tuple[Literal["a", "b", "c"], ...], MinLen(1), Unique] = ("a",)  # names
    rate: float = 0.5  # a rate
    inner: Inner = field(default_factory=Inner)  # nested table

    def __post_init__(self) -> None:
        check_fields(self, strict=True)


def test_unique_lists_and_strict_types_hold_for_files_and_the_python_api():
    with pytest.raises(ConfigError, match=r"'names' = \('a', 'a'\) must be all different"):
        resolve_config(Strict, overrides=['names=["a", "a"]'])
    with pytest.raises(ConfigError, match=r"must be all different"):
        Strict(names=("b", "b"))
    with pytest.raises(ConfigError, match=r"'names\[0\]' = 'x' is not one of"):
        Strict(names=("x",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'rate' = inf is not a finite float"):
        Strict(rate=float("inf"))
    with pytest.raises(ConfigError, match=r"'rate' must be a float, got None"):
        Strict(rate=None)  # type: ignore[arg-type]
    cfg = Strict(names=["a", "b"], rate=1)  # type: ignore[arg-type]
    assert cfg.names == ("a", "b") and isinstance(cfg.rate, float)  # normalised as TOML values are
    assert "all different" in config_help(Strict)
