"""Typed configs: documented dataclass fields, loaded from TOML/YAML/JSON, overridable by flags.

Every edgelam config is a frozen-free ``@dataclass`` whose fields are declared with
:func:`option`, which carries the help text shown by ``--help``. :func:`build_config` resolves a
config from (in increasing priority) the dataclass defaults, an optional file and explicit
overrides, coercing types and rejecting unknown or invalid fields with a :class:`ConfigError`
that names the field and what is allowed.

>>> from dataclasses import dataclass
>>> @dataclass
... class Toy:
...     rate: float = option(1.0, "learning rate")
...     mode: Literal["a", "b"] = option("a", "which mode")
>>> build_config(Toy, overrides={"rate": 2}).rate
2.0
>>> build_config(Toy, overrides={"mode": "c"})
Traceback (most recent call last):
...
edgelam.config.ConfigError: mode: 'c' is not one of ['a', 'b']
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

__all__ = ["ConfigError", "option", "build_config", "from_dict", "to_dict", "read_config_file"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A user-supplied configuration is malformed: unknown field, wrong type or invalid value."""


def option(default: Any, help: str, **metadata: Any) -> Any:
    """Declare a documented config field (``help`` appears in ``--help`` and the docs)."""
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple (immutable) default for sequence options")
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file into a dict.

    Raises:
        ConfigError: the file is missing, has an unknown suffix or does not parse to a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    text = path.read_text()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(
                f"{path}: unknown config format {suffix!r} (use .toml, .yaml or .json)"
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot parse: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a table/mapping, got {type(data).__name__}")
    return data


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` to the annotated type ``tp`` or raise a ConfigError naming ``name``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{name}: {value!r} matches none of {args}"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            value = [value] if args and args[-1] is Ellipsis else value
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list of {len(args)} values, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], name) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{name}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, name) for v, a in zip(value, args, strict=True))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a table of fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{name}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError as err:
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from err
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from err
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    if tp is Path:
        return Path(value)
    raise TypeError(f"{name}: unsupported config type {tp!r}")


def from_dict(cls: type[T], data: Mapping[str, Any], *, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and coercing types.

    Keys may use ``-`` or ``_``. Fields not in ``data`` keep their defaults. The dataclass's
    ``__post_init__`` then validates values (and may raise :class:`ConfigError`).
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"unknown field {prefix + str(key)!r}; allowed fields: {allowed}")
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if prefix and not str(err).startswith(prefix):
            raise ConfigError(f"{prefix}{err}") from err
        raise


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a config (tuples become lists, paths strings)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def build_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Any = None,
) -> T:
    """Resolve a config, lowest priority first: ``base`` (a config of ``cls``, e.g. a profile;
    else the dataclass defaults), the file at ``path`` (nested tables merge into nested
    sections), then ``overrides`` (``None`` values ignored)."""
    data: dict[str, Any] = to_dict(base) if base is not None else {}
    if path is not None:
        deep_update(data, read_config_file(path))
    deep_update(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(cls, data)


def deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``new`` into ``base`` in place, recursing into nested tables (``-`` -> ``_``).

    >>> deep_update({"a": 1, "fed": {"lr": 0.1, "rounds": 3}}, {"fed": {"lr": 0.5}})
    {'a': 1, 'fed': {'lr': 0.5, 'rounds': 3}}
    """
    for key, value in new.items():
        key = str(key).replace("-", "_")
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def field_help(cls: type) -> dict[str, str]:
    """Help text of every field of a config dataclass (for CLIs and docs)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
