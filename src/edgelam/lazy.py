"""Lazy package exports (PEP 562): names resolve to their submodule on first access.

Some submodules pull in slow imports (Sionna, ``transformers``, ``peft``); a package built with
:func:`lazy_exports` stays cheap to import until one of those names is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` for ``package`` exporting ``name -> submodule``.

    Submodules are given relative to ``package`` (``"config"``) or absolute (``"edgelam.x.y"``).

    >>> names, getattr_ = lazy_exports("edgelam", {"option": "config"})
    >>> names, getattr_("option").__name__
    (['option'], 'option')
    """
    modules = {n: m if m.startswith("edgelam.") else f"{package}.{m}" for n, m in exports.items()}

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(import_module(modules[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return sorted(modules), __getattr__
