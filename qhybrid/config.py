"""Typed, frozen experiment configs loaded from TOML and ``--set key=value`` overrides.

Config flows one way: dataclass defaults → a TOML file → ``--set`` overrides (each value parsed as a
TOML value, as Flower's ``--run-config`` does, so ``--set lr=3e-4`` is a float and ``--set name="a"``
a string) → a frozen dataclass instance → ``config.json`` in the run folder.

Nested dataclasses are TOML tables and dotted keys: ``--set train.lr=1e-3``.

Bounds are part of a field's type, as ``annotated_types`` metadata (the vocabulary pydantic uses):
``steps: Annotated[int, Ge(1)] = 100``; :data:`Unique` marks a list whose items must all differ.
Floats are finite (NaN and infinities are refused). Bounds are checked when a config is resolved,
with the user's dotted key in the message, and by :func:`check_fields` in a dataclass's
``__post_init__`` (``check_fields(self, strict=True)`` also checks every value's type, so the
Python API refuses what a TOML file would). A field's
trailing ``# comment`` is its help text: :func:`config_help` lists every key with type, default,
bounds and comment, which is what ``--help`` prints.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Exp:
    ...     lr: float = 1e-3  # learning rate
    ...     steps: int = 100  # optimizer steps
    >>> resolve_config(Exp, overrides=["steps=5"])
    Exp(lr=0.001, steps=5)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import io
import json
import math
import operator
import re
import tokenize
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import annotated_types as at

from qhybrid.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "Unique",
    "add_config_arguments",
    "check_fields",
    "config_from_args",
    "config_help",
    "config_to_dict",
    "from_dict",
    "load_toml",
    "parse_overrides",
    "preset_path",
    "presets",
    "resolve_config",
]


def _all_different(items: Sequence[Any]) -> bool:
    """all different"""
    return len(set(items)) == len(items)


Unique = at.Predicate(_all_different)  # a list field whose items must all differ


def presets() -> dict[str, str]:
    """``{name: first comment line}`` of the TOML presets shipped inside the package."""
    out = {}
    for entry in sorted(resources.files("qhybrid").joinpath("presets").iterdir(), key=str):
        if entry.name.endswith(".toml"):
            first = entry.read_text(encoding="utf-8").partition("\n")[0]
            out[entry.name.removesuffix(".toml")] = first.lstrip("# ").strip()
    return out


def preset_path(name: str) -> Path | None:
    """The shipped preset ``name`` (``llm_sim_quick`` or ``configs/llm_sim_quick.toml``), if any."""
    stem = Path(name).name.removesuffix(".toml")
    entry = resources.files("qhybrid").joinpath("presets", f"{stem}.toml")
    return Path(str(entry)) if entry.is_file() else None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file (or a shipped preset by name), with errors that name the file and the fix."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ConfigError(f"config file '{path}' is a folder or device, not a TOML file")
    if not path.is_file():
        shipped = preset_path(str(path))
        if shipped is None:
            raise ConfigError(
                f"config file '{path}' does not exist (nor is it a preset); pass the path of a "
                f"TOML file or one of the presets: {', '.join(presets())}"
            )
        path = shipped
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file '{path}' is not UTF-8 text (byte {err.start}); save it as UTF-8 TOML"
        ) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file '{path}' is not valid TOML: {err}") from err
    except OSError as err:
        raise ConfigError(f"config file '{path}' cannot be read: {err.strerror}") from err


# A value taken as a string without quotes: a word or a path, not something that looks like TOML.
_BARE_WORD = re.compile(r"[A-Za-z_.~/][\w.~/:+-]*")


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", 'name="x"']`` into the nested dict ``{"a": {"b": 1}, "name": "x"}``.

    Each value is parsed as a TOML value; a bare word or path that is not valid TOML
    (``--set name=quick``, ``--set dataset=data/grover``) is taken as a string, since that is what a
    user typing it means. Anything else that does not parse (``[1,``, ``3e-``, ``"a``) is an error.
    """
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"override '{item}' is not of the form key=value; e.g. --set lr=3e-4 --set name=\"run\""
            )
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError as err:
            if not _BARE_WORD.fullmatch(raw.strip()):
                raise ConfigError(
                    f"override '{item}': {raw.strip()!r} is not a TOML value ({err}); quote a "
                    f"string (--set '{key}=\"text\"'), write lists as [1, 2]"
                ) from err
            value = raw.strip()
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"override '{item}' sets a field inside '{p}', which is not a table"
                )
            node = child
        node[leaf] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = _merge(dict(merged[k]), v)
        else:
            merged[k] = v
    return merged


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert TOML shapes (list → tuple, int → float)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        inner, *meta = get_args(tp)
        value = _coerce(value, inner, where)
        _check_bounds(value, meta, where)
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):  # an instance checked itself in its __post_init__
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a table of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # an optional value: the one type's own message
            return _coerce(value, options[0], where)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"'{where}' = {value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"'{where}' = {value!r} is not one of {list(choices)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{where}' must be a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"'{where}' must have {len(args)} items, got {value!r}")
            items = [
                _coerce(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a table, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"'{where}' must be a float, got {value!r} ({type(value).__name__})")
        if isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"'{where}' is NaN; give a number")
        try:
            as_float = float(value)
        except OverflowError:
            as_float = math.inf
        if not math.isfinite(as_float):
            raise ConfigError(f"'{where}' = {value!r} is not a finite float; give a finite number")
        return as_float
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{where}' must be an int, got {value!r} ({type(value).__name__})")
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise ConfigError(
                f"'{where}' must be a {tp.__name__}, got {value!r} ({type(value).__name__})"
            )
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"'{where}' must be a {tp.__name__}, got {value!r}")
    return value


# annotated_types' numeric bounds: (attribute, how it reads, the test)
_NUMERIC_BOUNDS = (
    ("gt", ">", operator.gt),
    ("ge", ">=", operator.ge),
    ("lt", "<", operator.lt),
    ("le", "<=", operator.le),
)


def _bound_text(meta: Any) -> str:
    for attr, text, _ in _NUMERIC_BOUNDS:
        if getattr(meta, attr, None) is not None:
            return f"{text} {getattr(meta, attr)}"
    if isinstance(meta, at.MinLen):
        return f"at least {meta.min_length} items"
    if isinstance(meta, at.MaxLen):
        return f"at most {meta.max_length} items"
    if isinstance(meta, at.Predicate):
        return (meta.func.__doc__ or str(meta)).strip()
    return str(meta)


def _flat_bounds(meta: Sequence[Any]) -> list[Any]:
    return [m for item in meta for m in (item if isinstance(item, at.GroupedMetadata) else [item])]


def _check_bounds(value: Any, meta: Sequence[Any], where: str) -> None:
    """Check ``value`` against ``annotated_types`` bounds (Gt, Ge, Lt, Le, Interval, MinLen, MaxLen)."""
    for m in _flat_bounds(meta):
        ok = all(
            test(value, getattr(m, attr))
            for attr, _, test in _NUMERIC_BOUNDS
            if getattr(m, attr, None) is not None
        )
        if isinstance(m, at.MinLen):
            ok = len(value) >= m.min_length
        elif isinstance(m, at.MaxLen):
            ok = len(value) <= m.max_length
        elif isinstance(m, at.Predicate):
            ok = bool(m.func(value))
        if not ok:
            raise ConfigError(f"'{where}' = {value!r} must be {_bound_text(m)}")


def check_fields(config: Any, *, strict: bool = False) -> None:
    """Check every ``Annotated`` bound of a dataclass instance; call it from ``__post_init__``.

    With ``strict=True`` every value is also checked against its whole annotation, exactly as a TOML
    value is (type, ``Literal`` choices, finite floats, item bounds), and normalised the same way
    (a list becomes a tuple, an int a float); a nested dataclass instance is taken as it is (its
    own ``__post_init__`` checked it).
    """
    if strict:
        for name, tp in get_type_hints(type(config), include_extras=True).items():
            value = getattr(config, name, None)
            coerced = _coerce(value, tp, name)
            if coerced is not value:
                object.__setattr__(config, name, coerced)
        return
    for name, tp in get_type_hints(type(config), include_extras=True).items():
        value = getattr(config, name, None)
        if get_origin(tp) in (typing.Union, types.UnionType) and value is not None:
            tp = next((a for a in get_args(tp) if get_origin(a) is Annotated), tp)
        if get_origin(tp) is Annotated:
            _check_bounds(value, get_args(tp)[1:], name)
            tp = get_args(tp)[0]
        item = get_args(tp)[0] if get_origin(tp) in (tuple, list) and get_args(tp) else None
        if get_origin(item) is Annotated and isinstance(value, tuple | list):
            for i, v in enumerate(value):
                _check_bounds(v, get_args(item)[1:], f"{name}[{i}]")


@functools.cache
def _field_comments(cls: type) -> dict[str, str]:
    """``{field: trailing comment}`` from the class source (``x: int = 1  # comment``) and its
    dataclass bases."""
    comments: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            comments.update(_field_comments(base))
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return comments
    name, seen = None, set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and name is None:
            name = tok.string
        elif tok.type == tokenize.COMMENT and name is not None:
            text = tok.string.replace("fmt: skip", "").strip("# ").strip()
            if text and name not in seen:
                comments[name] = text
                seen.add(name)
        elif tok.type == tokenize.NEWLINE:
            name = None
    return comments


def config_help(config: Any, prefix: str = "") -> str:
    """One line per config key of a dataclass (type or instance): ``key (type, default): comment``.

    Nested dataclasses are listed with dotted keys; an instance's own values are the defaults shown;
    bounds from ``Annotated`` types are shown after the default.
    """
    cls = config if isinstance(config, type) else type(config)
    hints = get_type_hints(cls, include_extras=True)
    comments = _field_comments(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        default = _default_of(f) if isinstance(config, type) else getattr(config, f.name)
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            lines.append(config_help(default, f"{prefix}{f.name}."))
            continue
        meta = _flat_bounds(get_args(tp)[1:]) if get_origin(tp) is Annotated else []
        bounds = "".join(f", {_bound_text(m)}" for m in meta)
        comment = comments.get(f.name, "")
        lines.append(
            f"  {prefix}{f.name} ({_display_type(tp)}, default {_as_typed(default)}{bounds})"
            + (f": {comment}" if comment else "")
        )
    return "\n".join(lines)


def _display_type(tp: Any) -> str:
    """``tuple[str, ...]`` → ``list of str``, ``int | None`` → ``int or null``, for help text."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _display_type(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _display_type(a) for a in args)
    if origin is Literal:
        return "one of " + "/".join(_as_typed(a) for a in args)
    if origin in (tuple, list):
        inner = [a for a in args if a is not Ellipsis]
        return "list" + (f" of {_display_type(inner[0])}" if len(set(inner)) == 1 else "")
    if origin is dict:
        return "table"
    return _type_name(tp)


def _as_typed(value: Any) -> str:
    """A default as a user would type it after ``--set key=``."""
    try:
        return json.dumps(_jsonable(value))
    except TypeError:
        return repr(value)


def from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a (nested) mapping, checking every key and type.

    Raises:
        ConfigError: for an unknown key (the message lists the valid ones), a wrong type, or a value
            that the dataclass's ``__post_init__`` rejects.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        valid = ", ".join(prefix + name for name in fields)
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(prefix + k) for k in unknown)} for {cls.__name__}; valid keys: {valid}"
        )
    kwargs = {}
    for name, value in data.items():
        default = _default_of(fields[name])
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
            # A partial table overrides the field's own default instance, not the bare class defaults.
            value = _merge(config_to_dict(default), value)
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        where = f"'{prefix.rstrip('.')}' settings" if prefix else f"{cls.__name__} config"
        raise ConfigError(f"invalid {where}: {err}") from err


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as JSON-ready nested dicts (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"{config!r} is not a dataclass instance")
    return _jsonable(dataclasses.asdict(config))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def resolve_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    base: Mapping[str, Any] | None = None,
) -> T:
    """Resolve ``cls`` from defaults, an optional ``base`` mapping (a preset), a TOML file, then overrides.

    Args:
        cls: a frozen dataclass type whose defaults are the starting point.
        path: an optional TOML file whose keys are ``cls``'s fields (tables for nested configs).
        overrides: ``key=value`` strings; values parsed as TOML; dotted keys reach nested configs.
        base: an optional mapping applied before the file (used for named presets).
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        data = _merge(data, load_toml(path))
    data = _merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def add_config_arguments(parser: Any, config: str | type | None = None) -> None:
    """Add ``--config FILE.toml``, ``--set key=value`` (repeatable) and ``--out DIR`` to a parser.

    ``config`` (a dataclass or ``"module:Class"``, imported only when help is asked for) makes
    ``--help`` end with every config key, its type, default, bounds and comment.
    """
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="TOML file with config values, or the name of a preset shipped with qhybrid "
        "(see 'qhybrid presets')",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value; the value is parsed as TOML (repeatable)",
    )
    parser.add_argument(
        "--out", default="runs", metavar="DIR", help="folder for run folders (default: runs)"
    )
    if config is not None:
        _add_keys_to_help(parser, config)


def _add_keys_to_help(parser: Any, config: str | type) -> None:
    plain_help = parser.format_help

    def format_help() -> str:
        cls = config
        if isinstance(cls, str):
            module, _, name = cls.partition(":")
            cls = getattr(importlib.import_module(module), name)
        return (
            f"{plain_help()}\nconfig keys (--set KEY=VALUE, or the same keys in a TOML file):\n"
            f"{config_help(cls)}\n"
        )

    parser.format_help = format_help


def config_from_args(cls: type[T], args: Any, *, base: Mapping[str, Any] | None = None) -> T:
    """Resolve ``cls`` from the ``--config`` and ``--set`` values of parsed arguments."""
    return resolve_config(cls, args.config, args.overrides, base=base)
