"""Turn a config dataclass into click options, so every field is a documented flag.

Each field ``some_name`` becomes ``--some-name`` (plus any ``aliases`` in the field metadata);
``Literal`` fields become choices, ``tuple[float, float]`` fields take two values, booleans
become ``--x/--no-x``; nested config sections (dataclass fields) are set in the ``--config``
file. Options default to ``None`` so that only flags the user gave override the
``--config FILE`` values and the dataclass defaults (whose values ``--help`` shows).
"""

from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click

from edgelam.config import build_config

__all__ = ["command_line", "config_options", "config_from_cli"]


def _click_type(tp: Any) -> tuple[Any, int, bool]:
    """(click type, nargs, is_flag) for a field annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _click_type(inner[0])
    if origin is Literal:
        return click.Choice([str(a) for a in args]), 1, False
    if origin is tuple:
        if args and args[-1] is Ellipsis:
            return _click_type(args[0])[0], -1, False  # repeated option
        return _click_type(args[0])[0], len(args), False
    if tp is bool:
        return bool, 1, True
    if tp in (int, float, str):
        return tp, 1, False
    if tp is Path:
        return click.Path(path_type=Path), 1, False
    raise TypeError(f"no CLI mapping for {tp!r}")


def config_options(cls: type) -> Callable[[Callable], Callable]:
    """Decorator adding ``--config FILE`` and one option per field of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)

    def decorate(fn: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            if dataclasses.is_dataclass(hints[f.name]) or f.metadata.get("cli") is False:
                continue  # nested sections are set in the --config file
            ctype, nargs, is_flag = _click_type(hints[f.name])
            flag = "--" + f.name.replace("_", "-")
            decls = [flag, *f.metadata.get("aliases", ())]
            default = f.default
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            help_text = f"{f.metadata.get('help', '')} [default: {shown}]"
            if is_flag:
                decls = [f"{flag}/--no-{flag[2:]}", *f.metadata.get("aliases", ())]
                fn = click.option(*decls, f.name, default=None, help=help_text)(fn)
            elif nargs == -1:
                fn = click.option(
                    *decls, f.name, type=ctype, multiple=True, default=None,
                    help=help_text + " (repeat the option for several values)",
                )(fn)  # fmt: skip
            else:
                fn = click.option(
                    *decls, f.name, type=ctype, nargs=nargs, default=None, help=help_text
                )(fn)
        fn = click.option(
            "--config",
            "config_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="TOML/YAML/JSON file of config fields; flags given here override it",
        )(fn)
        return fn

    return decorate


def config_from_cli(cls: type, kwargs: dict[str, Any], base: Any = None) -> Any:
    """Pop the config fields (and ``config_file``) out of a command's kwargs and build ``cls``.

    Priority, lowest first: ``base`` (e.g. a profile's config; else the dataclass defaults), the
    ``--config`` file, then the flags given (see :func:`~edgelam.config.build_config`).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    overrides = {k: v for k, v in overrides.items() if v != ()}  # unused repeated option
    return build_config(cls, kwargs.pop("config_file", None), overrides, base=base)


def command_line(command: list[str], params: dict[str, Any]) -> str:
    """The command as given, rebuilt from its parsed options (recorded with a run's outputs).

    >>> command_line(["edgelam", "pretrain"], {"steps": 10, "quiet": True, "seed": None})
    'edgelam pretrain --steps 10 --quiet'
    """
    words = list(command)
    for name, value in params.items():
        if value is None or value is False or value == ():
            continue
        flag = "--" + name.replace("_", "-").removesuffix("-file")
        if value is True:
            words.append(flag)
        elif isinstance(value, tuple):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)
