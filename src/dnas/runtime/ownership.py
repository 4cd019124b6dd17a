"""The one rule of every command that writes: dnas overwrites or removes only what it wrote itself.

- **Folders** of outputs (``dnas compare --out``, ``dnas report --out``) list what dnas wrote into
  them in ``.dnas-files`` (:class:`OutputFolder`). A name that exists there and is not listed is the
  user's: the command stops with one sentence before writing anything. A folder written by a dnas
  that kept no list is recognised by its own description file (a compare grid's ``compare.yaml``, a
  report's ``index.html`` made by dnas).
- **Single files** (``dnas draw --out``) carry a mark of their writer (:func:`marked_svg`,
  :func:`marked_png`); an existing file without it is the user's and is not replaced.
- **Run directories** follow the same rule through their ``config.yaml`` (:mod:`dnas.runtime.rundir`).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from dnas.errors import DnasError
from dnas.runtime.atomic import atomic_write_bytes
from dnas.runtime.reading import MB, shorten

MANIFEST = ".dnas-files"
SVG_MARK = "<!-- written by dnas -->"
PNG_KEYWORD = b"Software"
PNG_VALUE = b"dnas"


class OutputFolder:
    """A folder dnas writes outputs into (see the module docstring). ``legacy(folder)`` tells whether a
    folder without a list was written by an earlier dnas (then every name it writes counts as its own)."""

    def __init__(self, path: str | Path, what: str, legacy: Callable[[Path], bool] | None = None):
        self.path = Path(path)
        self.what = what
        self.legacy = legacy

    def _written(self) -> set[str]:
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            return set()
        try:
            if manifest.stat().st_size > MB:
                raise ValueError
            names = json.loads(manifest.read_text())
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError
        except (OSError, ValueError):
            raise DnasError(f"{manifest} is not the list of files dnas wrote; remove it or choose another "
                            f"--out for the {self.what}") from None
        return set(names)

    def check(self, names: Iterable[str]) -> None:
        """Stop with one sentence, writing nothing, unless every one of ``names`` (names in the folder) is
        absent or was written by dnas."""
        if self.path.exists() and not self.path.is_dir():
            raise DnasError(f"--out {self.path} is a file; give a folder for the {self.what}")
        if not self.path.is_dir():
            return
        written = self._written()
        if not written and self.legacy is not None and self.legacy(self.path):
            return
        for name in names:
            target = self.path / name
            if (target.exists() or target.is_symlink()) and name not in written:
                raise DnasError(f"--out {self.path} holds {shorten(name, 80)}, which dnas did not write; move it "
                                f"or choose another folder for the {self.what}")

    def reserve(self, names: Iterable[str]) -> None:
        """:meth:`check`, then create the folder and list ``names`` as dnas' own (before writing them)."""
        names = list(names)
        self.check(names)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DnasError(f"cannot create --out {self.path} ({err.strerror})") from None
        listed = self._written() | set(names)
        if not (self.path / MANIFEST).is_file() or listed != self._written():
            atomic_write_bytes(self.path / MANIFEST, (json.dumps(sorted(listed), indent=0) + "\n").encode())


def check_file_is_ours(path: Path, mine: Callable[[bytes], bool], what: str) -> None:
    """Stop with one sentence if ``path`` exists and ``mine(its first bytes)`` says dnas did not write it."""
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not path.is_file():
        raise DnasError(f"{path} exists and is not a file dnas wrote; move it or choose another --out for the {what}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(64 * 1024)
    except OSError as err:
        raise DnasError(f"cannot read {path} ({err.strerror})") from None
    if not mine(head):
        raise DnasError(f"{path} exists and was not written by dnas; move it or choose another --out for the {what}")


def marked_svg(svg: str) -> str:
    """An SVG document with dnas' mark after its prolog."""
    return f'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n{SVG_MARK}\n{svg}\n'


def is_marked_svg(head: bytes) -> bool:
    return SVG_MARK.encode() in head[:4096]


def marked_png(png: bytes) -> bytes:
    """A PNG with a ``tEXt`` chunk ``Software: dnas`` after its header chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        return png
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    data = PNG_KEYWORD + b"\x00" + PNG_VALUE
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def is_marked_png(head: bytes) -> bool:
    return b"tEXt" + PNG_KEYWORD + b"\x00" + PNG_VALUE in head[:4096]
