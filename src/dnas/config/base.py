"""Typed run configurations: values checked by type, config files, ``key=value`` items.

One mechanism for every kind of run: a configuration is a dataclass deriving from :class:`Config`,
and every value that reaches it (a command-line flag, a ``key=value`` override, a key of a
``--config`` file, a keyword of the Python API) goes through :meth:`Config.set`, which checks it
against the field's type annotation before anything is written:

- numbers parse as users write them (``3e-4``, ``1E-3``, ``.5``, ``1_000``; :func:`parse_value`);
- integers must be whole (``epochs=1.5`` is refused), floats finite, booleans ``true``/``false``;
- ``None`` only where the field is optional (``null``, ``~`` or ``auto``).

Ranges are checked by each configuration's ``validate`` (:func:`dnas.config.resolve.validate`,
:func:`dnas.config.train.validate`). The resolved configuration is written to ``config.yaml`` in
the run directory, a run resumes only with the same configuration, and that file given back as
``--config`` replays the run.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from dnas.errors import DnasError
from dnas.runtime.files import CONFIG
from dnas.runtime.reading import read_yaml, shorten

_INT = re.compile(r"[+-]?\d(?:_?\d)*")
_FLOAT = re.compile(r"[+-]?(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d+)?")


def parse_value(text: str) -> Any:
    """A command-line value: a number in any usual spelling, else YAML (``true``, ``null``, lists),
    else the text itself. Only ``true``/``false`` are booleans: YAML 1.1's ``on``, ``off``, ``yes`` and
    ``no`` stay text (``guard=off`` names a component)."""
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text.replace("_", ""))
    if _FLOAT.fullmatch(text):
        return float(text.replace("_", ""))
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, bool) and text.lower() not in ("true", "false"):
        return text
    return value


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``(inner type, optional)`` of an annotation such as ``int | None``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return annotation, False


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """``value`` as the type ``annotation`` asks for, or a one-sentence :class:`DnasError`."""
    kind, optional = _optional(annotation)
    if isinstance(value, str) and kind in (int, float, bool):
        parsed = parse_value(value)
        value = parsed if not isinstance(parsed, str) else value
    if value is None or (optional and value == "auto"):
        if optional:
            return None
        raise DnasError(f"{name} needs a value, got nothing")
    if kind is bool:
        if not isinstance(value, bool):
            raise DnasError(f"{name} takes true or false, got {value!r}")
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DnasError(f"{name} takes a number, got {value!r}")
        if not math.isfinite(value):
            raise DnasError(f"{name} takes a finite number, got {value!r}")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise DnasError(f"{name} takes a whole number, got {value!r}")
            if abs(value) > 2**63 - 1:
                raise DnasError(f"{name} takes a whole number below 2**63, got {shorten(value, 30)}")
            return int(value)
        return float(value)
    if kind is str:
        if isinstance(value, (dict, list, bool)):
            raise DnasError(f"{name} takes a name or a path, got {value!r}")
        return str(value)
    return value


@dataclass
class Config:
    """Base of the run configurations: typed setting, dict/YAML round trip, config files."""

    #: what the configuration configures, for messages ("search", "training")
    kind: ClassVar[str] = "run"
    #: keys an older dnas wrote and this one no longer has: key -> (the value under which the saved
    #: configuration means what this dnas does without the key, why the key went); see :meth:`set`
    removed: ClassVar[dict[str, tuple[Any, str]]] = {}

    @classmethod
    def comparison_defaults(cls) -> dict[str, Any]:
        """The value of every key a saved configuration may lack or hold in excess, for
        :func:`dnas.runtime.rundir.config_differences`: today's defaults and the removed keys' neutral values."""
        return {**{k: value for k, (value, _) in cls.removed.items()}, **cls().to_dict()}

    @classmethod
    def comparable(cls, saved: dict[str, Any]) -> dict[str, Any]:
        """A saved configuration (this or an earlier dnas wrote it) as this dnas would write it, for
        :func:`dnas.runtime.rundir.config_differences` (configurations with parts beyond top-level keys
        complete those)."""
        return dict(saved)

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def set(self, key: str, value: Any) -> None:
        """Set the top-level field ``key`` to ``value``, checked against its type. A removed key is
        accepted at its neutral value (configurations saved before it went) and refused otherwise."""
        if key in self.removed:
            neutral, why = self.removed[key]
            if value != neutral:
                raise DnasError(f"{key}={value} is no longer available ({why}); remove the key")
            return
        if key not in self.field_names():
            raise DnasError(f"unknown {self.kind} key {shorten(key, 40)}{suggest(key, self.field_names())}")
        setattr(self, key, coerce(key, value, self.field_types()[key]))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise DnasError(f"unknown config key(s) {', '.join(shorten(k, 40) for k in unknown[:3])}"
                            f"{suggest(str(unknown[0]), cls.field_names())}")
        cfg = cls()
        for key, value in data.items():
            cfg.set(key, value)
        return cfg


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (a run's own ``config.yaml``, or a hand-written subset)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG  # a run directory
    data = read_yaml(path, "the config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DnasError(f"the config file {path} must hold a mapping of keys to values, not a {type(data).__name__}")
    return data


def suggest(key: str, keys: list[str]) -> str:
    """``"; did you mean X?"`` for the closest of ``keys`` (or where to find them all)."""
    import difflib

    close = difflib.get_close_matches(str(key), keys, n=2, cutoff=0.6)
    if close:
        return f"; did you mean {' or '.join(close)}?"
    return "; `dnas methods --show NAME` lists every key of a search, `dnas train --help` those of training"


def split_override(text: str) -> tuple[str, Any]:
    """``key=value`` as ``(key, parsed value)``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise DnasError(f"override {text!r} is not of the form key=value")
    return key.strip(), parse_value(value)
