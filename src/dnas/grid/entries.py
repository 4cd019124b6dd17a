"""The lines and seeds of a comparison grid.

An **entry** is a method preset, optionally with component overrides (a combination of methods):

    --methods darts,pr-darts                entries named after the presets, no overrides
    --entry NAME:METHOD[:key=value,...]     e.g. prl:pr-darts:weight_regularizers=lambda,estimator=amended

In the ``key=value`` list of ``--entry`` a comma-separated item without ``=`` continues the
previous value, so list slots work as on the command line of ``dnas search``:
``prx:darts:arch_regularizers=pr-darts,prox`` sets ``arch_regularizers=pr-darts,prox``.
In ``compare.yaml`` an entry is the mapping ``{name: NAME, method: METHOD, overrides: [key=value, ...]}``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dnas.errors import DnasError
from dnas.runtime.reading import shorten
from dnas.runtime.resources import MAX_SEED

#: the presets ``dnas compare`` runs when no entry is given
DEFAULT_METHODS = ("darts", "pr-darts", "lambda-darts", "darts-prime", "amended-darts")
#: keys the grid sets itself; overrides may not change them
GRID_KEYS = ("space", "method", "seed")
ENTRY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class Entry:
    """One line of the comparison: a method preset plus ``key=value`` overrides."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()

    @property
    def setup(self) -> str:
        return self.method + (" + " + " ".join(self.overrides) if self.overrides else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "overrides": list(self.overrides)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Entry:
        """An entry of ``compare.yaml``, checked as ``--entry`` is."""
        if not isinstance(data, dict) or not {"name", "method"} <= set(data) <= {"name", "method", "overrides"}:
            raise DnasError(f"{where}: an entry is a mapping {{name: NAME, method: METHOD, overrides: [key=value, "
                            f"...]}}, got {data!r}")
        name, method, overrides = data["name"], data["method"], data.get("overrides") or []
        if not isinstance(name, str) or not isinstance(method, str) or not isinstance(overrides, list) \
                or not all(isinstance(o, str) for o in overrides):
            raise DnasError(f"{where}: entry {data!r} needs a name, a method and a list of key=value strings")
        check_name(name, where)
        check_method(method)
        check_overrides(overrides, f"{where}, entry {name}")
        return cls(name, method, tuple(overrides))


def check_overrides(items: Sequence[str], where: str) -> None:
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise DnasError(f"{where}: {item!r} is not of the form key=value")
        if key.strip() in GRID_KEYS:
            raise DnasError(f"{where}: {key.strip()} is set by the grid (--space, --methods/--entry, --seeds), "
                            f"not by a key=value override")


def check_method(name: str) -> None:
    from dnas.bilevel.methods import METHODS

    METHODS.get(name)  # DnasError naming the known methods


def check_name(name: str, where: str) -> None:
    if not ENTRY_NAME.fullmatch(name):
        raise DnasError(f"entry name {name!r} in {where} must start with a letter or digit and use only letters, "
                        "digits and _ . + -")


def parse_entry(text: str) -> Entry:
    """``NAME:METHOD[:key=value,key=value,...]`` (see the module docstring for the comma rule)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        raise DnasError(f"--entry {text!r} is not of the form NAME:METHOD[:key=value,...], "
                        "e.g. prl:pr-darts:weight_regularizers=lambda,estimator=amended")
    name, method = parts[0].strip(), parts[1].strip()
    check_name(name, repr(text))
    check_method(method)
    overrides: list[str] = []
    for item in (parts[2].split(",") if len(parts) == 3 else []):
        item = item.strip()
        if not item:
            continue
        if "=" not in item and overrides:
            overrides[-1] += "," + item  # a list-slot value: arch_regularizers=pr-darts,prox
        else:
            overrides.append(item)
    check_overrides(overrides, f"--entry {text!r}")
    return Entry(name, method, tuple(overrides))


def parse_methods(text: str) -> list[Entry]:
    """``darts,pr-darts,...``: one entry per preset, named after it (an empty string: none)."""
    entries = []
    for name in (n.strip() for n in text.split(",")):
        if name:
            check_method(name)
            entries.append(Entry(name, name))
    return entries


def parse_seeds(text: str) -> list[int]:
    """``0,1,2``: distinct non-negative integers."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise DnasError(f"--seeds takes comma-separated integers such as 0,1,2, got {shorten(text, 40)}") from None
    check_seeds(seeds, repr(text))
    return seeds


def check_seeds(seeds: Sequence[int], shown: str) -> None:
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise DnasError(f"--seeds takes distinct integers from 0 to 2**32-1 such as 0,1,2, got {shorten(shown, 40)}")
