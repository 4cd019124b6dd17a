"""Plugins: modules of one's own that register ops, search spaces and components when imported.

dnas imports

* the modules named by ``dnas --plugin MODULE`` (repeatable, before or after the command) and by
  ``plugins=[...]`` of a search configuration, before any space, method or component name is looked
  up. A search records them in its ``config.yaml`` (``plugins: [MODULE, ...]``), so that a replay
  (``--config``), a resume, ``dnas report`` and the worker processes of ``dnas compare`` import them
  again;
* once per process, every entry point of the group ``dnas.plugins`` of the installed distributions
  (``[project.entry-points."dnas.plugins"] my_name = "my_package.dnas_plugin"``): a module, which
  registers on import, or a function, called without arguments.

A plugin that cannot be imported (missing, or failing as it registers) stops dnas with one
sentence: ``plugin MODULE could not be imported: REASON``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import types
from collections.abc import Iterable

from dnas.errors import DnasError
from dnas.runtime.reading import shorten

#: the entry-point group whose entries dnas imports in every process
ENTRY_POINT_GROUP = "dnas.plugins"
#: a dotted module name
MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

_entry_points_done = False
_entry_points_loaded: set[str] = set()


def plugin_names(value: object) -> list[str]:
    """The module names of a ``plugins`` setting: a list of names, or comma-separated text (None: none)."""
    if value is None:
        return []
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, list | tuple) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value]
    else:
        raise DnasError(f"plugins takes module names (a list, or comma-separated), got {shorten(value, 60)}")
    for name in names:
        if not MODULE.fullmatch(name):
            raise DnasError(f"plugin {shorten(name, 60)} is not a module name (such as my_package.my_plugin)")
    return list(dict.fromkeys(names))


def _reason(err: BaseException) -> str:
    """The first line of the error's message (at most 200 characters), or its type when it has none."""
    lines = str(err).strip().splitlines()
    if not lines:
        return type(err).__name__
    return lines[0] if len(lines[0]) <= 200 else lines[0][:197] + "..."


def load_plugin(name: str) -> None:
    """Import the plugin module ``name`` (nothing happens when it is imported already)."""
    try:
        importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - whatever the plugin raises is its import error
        raise DnasError(f"plugin {name} could not be imported: {_reason(err)}") from None


def load_entry_points() -> None:
    """Import (or call) every entry point of :data:`ENTRY_POINT_GROUP`, once per process."""
    global _entry_points_done
    if _entry_points_done:
        return
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _entry_points_loaded:
            continue
        try:
            loaded = entry.load()
            if callable(loaded) and not isinstance(loaded, types.ModuleType):
                loaded()
        except Exception as err:  # noqa: BLE001 - whatever the plugin raises is its import error
            raise DnasError(f"plugin {entry.name} (entry point {entry.value}) could not be imported: "
                            f"{_reason(err)}") from None
        _entry_points_loaded.add(entry.name)
    _entry_points_done = True


def load_plugins(names: str | Iterable[str] = ()) -> list[str]:
    """The entry points of :data:`ENTRY_POINT_GROUP` (once), then the modules ``names`` (a list, or
    comma-separated text), in order; returns the module names."""
    names = plugin_names(names if isinstance(names, str) else list(names))
    load_entry_points()
    for name in names:
        load_plugin(name)
    return names
