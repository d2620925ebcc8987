"""Hostile values for every declared value (issue 21's fuzzer, not a list): the keys of a config
dataclass (dotted for nested ones) or the annotated arguments of a public function, and for each
key the values an attacker would try, derived from its annotation, so a new key is covered as soon
as it is declared."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

HUGE = "x" * 10_000


def leaves(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    """Every config key of the dataclass ``cls`` (dotted for nested configs) with its annotation."""
    out: list[tuple[str, Any]] = []
    hints = get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out += leaves(tp, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, tp))
    return out


def arguments(fn: Callable[..., Any], skip: Sequence[str]) -> list[tuple[str, Any]]:
    """The annotated keyword arguments of ``fn`` except ``skip`` (models, tensors, callables)."""
    hints = get_type_hints(fn, include_extras=True)
    return [(k, tp) for k, tp in hints.items() if k not in (*skip, "return", "self")]


def base(tp: Any) -> Any:
    """The annotation without ``Annotated`` bounds and without ``| None``."""
    while get_origin(tp) is Annotated or get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return tp


def hostile_toml(tp: Any) -> list[str]:
    """TOML spellings (``--set key=...``) of hostile values for a key of type ``tp``."""
    b = base(tp)
    common = ['"x"', "{a = 1}", "[[1]]"]
    if b is int:
        return [*common, "true", "1.5", '"3"', "nan", "0", "-1", "1180591620717411303424"]
    if b is float:
        return [*common, "true", "nan", "inf", "-inf", "-1.0", "0.0", "1e308"]
    if b is bool:
        return ['"yes"', "1", "[]", '""']
    if get_origin(b) is Literal:
        return ['"nope"', '""', "5", "[]", f'"{HUGE}"']
    if get_origin(b) in (tuple, list):
        item = base(get_args(b)[0])
        bad = '"nope"' if item is str or get_origin(item) is Literal else "-1"
        first = _toml(get_args(b)[0])
        return ["[]", f"[{bad}]", f"[{first}, {first}]", '"x"', "5", "[[1]]", "[nan]"]
    return ['""', "5", "[]", f'"{HUGE}"', '"/dev/zero"']


def hostile_python(tp: Any) -> list[Any]:
    """Python values of the same kinds, for the public API (a function's arguments)."""
    b = base(tp)
    if b is int:
        return ["x", True, 1.5, math.nan, 0, -1, 2**70, None]
    if b is float:
        return ["x", True, math.nan, math.inf, -math.inf, -1.0, 0.0, None]
    if b is bool:
        return ["yes", 1, None]
    if get_origin(b) is Literal:
        return ["nope", "", 5, None, HUGE]
    if get_origin(b) in (tuple, list):
        return [(), ("nope",), (-1,), (math.nan,), "x", 5]
    return ["", 5, None, HUGE]


def _toml(tp: Any) -> str:
    """A valid TOML value of the item type ``tp`` (for a duplicated list)."""
    b = base(tp)
    if get_origin(b) is Literal:
        return f'"{get_args(b)[0]}"'
    return {int: "2", float: "2.0", bool: "true"}.get(b, '"a"')


def declared_cases(cls: type, allowed: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every (key, hostile TOML value) of the config ``cls`` that its declaration must refuse
    (``allowed``: (last key part, value) pairs that are legitimately accepted)."""
    return [
        (key, raw)
        for key, tp in leaves(cls)
        for raw in hostile_toml(tp)
        if (key.rsplit(".", 1)[-1], raw) not in allowed
    ]


def assert_declaration_refuses(cls: type, allowed: set[tuple[str, str]]) -> None:
    """Each hostile value of each key raises a one-line ``QHybridError`` naming the key."""
    import pytest

    from qhybrid.config import resolve_config
    from qhybrid.errors import QHybridError

    cases = declared_cases(cls, allowed)
    assert len(cases) >= 4 * len(leaves(cls))
    for key, raw in cases:
        try:
            value = resolve_config(cls, overrides=[f"{key}={raw}"])
        except QHybridError as err:
            text = str(err)
            assert "\n" not in text and len(text) < 600 and key.split(".")[-1] in text, text
        else:
            pytest.fail(f"{cls.__name__}: {key}={raw[:40]} accepted ({value!r:.200})")


def run_cli(capsys: Any, argv: list[str]) -> tuple[int, str, float]:
    """``qhybrid argv`` in-process: (exit code, stderr, seconds)."""
    import time

    from qhybrid.cli import main

    t0 = time.perf_counter()
    rc = main(argv)
    return rc, capsys.readouterr().err, time.perf_counter() - t0
