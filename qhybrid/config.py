"""Typed, frozen experiment configs loaded from TOML and ``--set key=value`` overrides.

Config flows one way: dataclass defaults → a TOML file → ``--set`` overrides (each value parsed as a
TOML value, as Flower's ``--run-config`` does, so ``--set lr=3e-4`` is a float and ``--set name="a"``
a string) → a frozen dataclass instance → ``config.json`` in the run folder.

Nested dataclasses are TOML tables and dotted keys: ``--set train.lr=1e-3``.

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
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from qhybrid.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "add_config_arguments",
    "config_from_args",
    "config_to_dict",
    "from_dict",
    "load_toml",
    "parse_overrides",
    "resolve_config",
]


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, with an error that names the file and the line when it does not parse."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass the path of a TOML file")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file '{path}' is not valid TOML: {err}") from err


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", 'name="x"']`` into the nested dict ``{"a": {"b": 1}, "name": "x"}``.

    Each value is parsed as a TOML value; a bare word that is not valid TOML (``--set name=quick``)
    is taken as a string, since that is what a user typing it means.
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
        except tomllib.TOMLDecodeError:
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
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a table of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
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
        return float(value)
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


def from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a (nested) mapping, checking every key and type.

    Raises:
        ConfigError: for an unknown key (the message lists the valid ones), a wrong type, or a value
            that the dataclass's ``__post_init__`` rejects.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    hints = get_type_hints(cls)
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
        raise ConfigError(f"invalid {cls.__name__} config: {err}") from err


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


def add_config_arguments(parser: Any) -> None:
    """Add ``--config FILE.toml``, ``--set key=value`` (repeatable) and ``--out DIR`` to an argparse parser."""
    parser.add_argument("--config", metavar="FILE.toml", help="TOML file with config values")
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


def config_from_args(cls: type[T], args: Any, *, base: Mapping[str, Any] | None = None) -> T:
    """Resolve ``cls`` from the ``--config`` and ``--set`` values of parsed arguments."""
    return resolve_config(cls, args.config, args.overrides, base=base)
