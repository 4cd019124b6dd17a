"""The one way dnas reads the text files a user or a run gives it: regular files only, bounded in size,
strict UTF-8, JSON bounded in depth, YAML without anchors or aliases and bounded in values.

Every failure is a :class:`~dnas.errors.DnasError` of one sentence that names the file and what is
wrong with it, never its contents:

- a FIFO, device or folder where a file is expected (reading one could block forever or never end);
- a file larger than the limit of its kind (:data:`LIMITS`);
- bytes that are not UTF-8 (the offset of the first one);
- JSON that does not parse (line and column), or nests deeper than :data:`MAX_DEPTH`;
- YAML that does not parse, uses anchors or aliases (whose expansion can grow without bound), or
  holds more than :data:`MAX_YAML_VALUES` values.

:func:`shorten` cuts a user-given value for an error message.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from dnas.errors import DnasError

MB = 1 << 20
#: the largest file of each kind dnas reads (bytes)
LIMITS = {
    "config": 4 * MB,  # a configuration file (YAML)
    "genotype": 4 * MB,  # a genotype.json
    "json": 64 * MB,  # a run's results.json, env.json, a compare grid's records
    "metrics": 2048 * MB,  # a run's metrics.jsonl
    "table": 512 * MB,  # a benchmark table (CSV)
}
MAX_DEPTH = 64  # nesting of JSON and YAML containers: dnas' own files nest 6 levels at most
MAX_YAML_VALUES = 100_000


def shorten(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (for error messages that quote user input)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


def file_status(path: str | Path, what: str) -> os.stat_result:
    """The status of ``path`` (symbolic links followed) if it is a regular file; else one sentence (a
    FIFO or a device would block the reader or never end)."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise DnasError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise DnasError(f"cannot read {what} {path} ({err.strerror})") from None
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise DnasError(f"{what} {path} is a folder; give a file")
    if not stat.S_ISREG(mode):
        kind = ("FIFO (named pipe)" if stat.S_ISFIFO(mode) else "character device" if stat.S_ISCHR(mode)
                else "block device" if stat.S_ISBLK(mode) else "socket")
        raise DnasError(f"{what} {path} is a {kind}, not a regular file; dnas reads only regular files")
    return status


def regular_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a regular file (:func:`file_status`)."""
    file_status(path, what)
    return Path(path)


def read_bytes(path: str | Path, what: str, kind: str) -> bytes:
    """The bytes of the regular file ``path``, at most ``LIMITS[kind]`` of them."""
    path = regular_file(path, what)
    limit = LIMITS[kind]
    try:
        # O_NONBLOCK: were the file swapped for a FIFO after the check, opening it would not block
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise DnasError(f"{what} {path} is not a regular file; dnas reads only regular files")
            data = handle.read(limit + 1)
    except OSError as err:
        raise DnasError(f"cannot read {what} {path} ({err.strerror})") from None
    if len(data) > limit:
        raise DnasError(f"{what} {path} is larger than {limit // MB} MB, more than such a file can hold")
    return data


def decode(data: bytes, what: str, path: str | Path) -> str:
    """``data`` as UTF-8 (a byte order mark is dropped); else one sentence with the offset."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DnasError(f"{what} {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                        "save it as UTF-8") from None


def read_text(path: str | Path, what: str, kind: str) -> str:
    """The UTF-8 text of the regular file ``path`` (at most ``LIMITS[kind]`` bytes)."""
    return decode(read_bytes(path, what, kind), what, path)


def parse_json(text: str, what: str, path: str | Path) -> Any:
    """``text`` as JSON; one sentence when it does not parse or nests too deeply."""
    if _bracket_depth(text) > MAX_DEPTH:
        raise DnasError(f"{what} {path} nests more than {MAX_DEPTH} levels deep; it is not a dnas file")
    try:
        return json.loads(text)
    except RecursionError:
        raise DnasError(f"{what} {path} nests too deeply; it is not a dnas file") from None
    except ValueError as err:
        where = f" (line {err.lineno}, column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
        raise DnasError(f"{what} {path} is not valid JSON{where}") from None


def _bracket_depth(text: str) -> int:
    """An upper bound of the JSON nesting of ``text`` (brackets outside strings), in one pass."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def read_json(path: str | Path, what: str, kind: str = "json") -> Any:
    """The JSON value in the regular file ``path`` (see the module docstring)."""
    return parse_json(read_text(path, what, kind), what, path)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases, counting the values it composes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.values = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise _Refused("uses YAML aliases (*name), which dnas files do not support")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            raise _Refused("uses YAML anchors (&name), which dnas files do not support")
        self.values += 1
        if self.values > MAX_YAML_VALUES:
            raise _Refused(f"holds more than {MAX_YAML_VALUES} values, more than a dnas file has")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(f"nests more than {MAX_DEPTH} levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Refused(Exception):
    pass


def parse_yaml(text: str, what: str, path: str | Path) -> Any:
    """``text`` as YAML (see the module docstring)."""
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader refuses unprintable characters here already
        return loader.get_single_data()
    except _Refused as err:
        raise DnasError(f"{what} {path} {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise DnasError(f"{what} {path} is not valid YAML{where}") from None
    except RecursionError:
        raise DnasError(f"{what} {path} nests too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | Path, what: str, kind: str = "config") -> Any:
    """The YAML value in the regular file ``path`` (see the module docstring)."""
    return parse_yaml(read_text(path, what, kind), what, path)
