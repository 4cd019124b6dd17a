"""Listings of labelled images that are read one at a time: an image folder and a zip of one.

A listing knows every image's label and where its bytes are, but holds no pixels; ``read(i)``
returns the encoded bytes of image ``i`` (through the caps of :mod:`dnas.data.limits`). Both the
in-memory decoding (:mod:`dnas.data.datasets`) and the streamed datasets
(:mod:`dnas.data.streamed`) read images through a listing; WebDataset tar shards are the third kind
(:mod:`dnas.data.webdataset`).

Layouts::

    FOLDER/<class>/<image>            an image folder (torchvision's ImageFolder): classes are the
                                      sorted subfolder names, images sorted by name in each
    ARCHIVE.zip: <class>/<image>      the same inside a zip, optionally under one top-level folder
                 <top>/<class>/<image>

Images are files whose suffix is one of :data:`IMAGE_EXTENSIONS` (hidden files and ``__MACOSX/``
are skipped). A listing stores its names and offsets in flat numpy arrays, not Python lists, so
DataLoader workers forked from the main process share them instead of copying them page by page.

Zip members are read directly at their offsets (stored, deflate or bzip2), checked against the
sizes and CRC-32 the central directory declares; encrypted members and other compression methods
are refused when the archive is listed.
"""

from __future__ import annotations

import bz2
import os
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from dnas.data.limits import check_declared, check_labels, clip, max_file_bytes, read_file
from dnas.errors import DnasError
from dnas.runtime.reading import file_status

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
#: zip compression methods read: stored, deflate, bzip2
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2"}
_LOCAL_HEADER = 30
_LOCAL_SIGNATURE = b"PK\x03\x04"


def is_image(name: str) -> bool:
    """Whether a file name is an image by its suffix (hidden files are not)."""
    path = Path(name)
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


class Listing(Protocol):
    """Labelled images read one at a time (see the module docstring)."""

    name: str  # the dataset's name (the folder or archive name)
    source: str  # the absolute path it reads, for messages and identity
    classes: list[str]
    labels: np.ndarray  # int64, one per image

    def __len__(self) -> int: ...
    def read(self, index: int) -> bytes: ...
    def describe(self, index: int) -> str: ...
    def files(self) -> list[str]: ...  # the files it reads (for cache keys)


class PackedNames:
    """Strings in one bytes blob with offsets: compact, and shared by forked workers without copying."""

    def __init__(self, names: list[str]):
        encoded = [n.encode("utf-8", "surrogateescape") for n in names]
        self.offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=self.offsets[1:])
        self.blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8", "surrogateescape")


class FolderListing:
    """The images of a folder with one subfolder per class."""

    def __init__(self, path: Path):
        self.source = str(path)
        self.name = path.name
        try:
            classes = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
        except OSError as e:
            raise DnasError(f"Cannot list {path} ({e.strerror}): check the folder.") from None
        if not classes:
            raise DnasError(f"{path} has no class subfolders: put the images of each class in its own subfolder.")
        names: list[str] = []
        labels: list[int] = []
        for label, cls in enumerate(classes):
            try:
                files = sorted(e.name for e in os.scandir(path / cls) if e.is_file() and is_image(e.name))
            except OSError as e:
                raise DnasError(f"Cannot list {path / cls} ({e.strerror}): check the folder.") from None
            if not files:
                raise DnasError(f"The class folder {path / cls} has no images: remove it or add images.")
            names += [f"{cls}/{f}" for f in files]
            labels += [label] * len(files)
        self.classes = classes
        self._names = PackedNames(names)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._names)

    def describe(self, index: int) -> str:
        return os.path.join(self.source, self._names[index])

    def read(self, index: int) -> bytes:
        return read_file(self.describe(index), "image file")

    def files(self) -> list[str]:
        return [self.describe(i) for i in range(len(self))]


class ZipListing:
    """The images of a zip archive laid out as an image folder (see the module docstring)."""

    def __init__(self, path: Path):
        file_status(path, "zip file")
        self.source = str(path)
        self.name = path.name[: -len(".zip")] if path.name.lower().endswith(".zip") else path.stem
        try:
            with zipfile.ZipFile(path) as archive:
                infos = [m for m in archive.infolist()
                         if not m.is_dir() and is_image(m.filename) and not m.filename.startswith("__MACOSX/")]
        except (OSError, zipfile.BadZipFile, ValueError) as e:
            raise DnasError(f"Cannot open {path} as a zip file ({clip(str(e))}): check or replace the file.") from None
        if not infos:
            raise DnasError(f"{path} contains no images: expected <class>/<image> members.")
        for m in infos:
            shown = clip(m.filename, 80)
            if m.flag_bits & 0x1:
                raise DnasError(f"The member {shown!r} of {path} is encrypted: give an unencrypted zip.")
            if m.compress_type not in ZIP_METHODS:
                raise DnasError(f"The member {shown!r} of {path} uses zip compression method {m.compress_type}, "
                                "which is not read (stored, deflate or bzip2 are): repack the archive.")
            check_declared(m.file_size, f"The member {shown!r} of {path}")
            check_declared(m.compress_size, f"The member {shown!r} of {path}")
        parts = [m.filename.split("/") for m in infos]
        depths = {len(p) for p in parts}
        if depths == {3} and len({p[0] for p in parts}) == 1:
            parts = [p[1:] for p in parts]
        elif depths == {1}:
            raise DnasError(f"the images in {path} are not in class folders: expected <class>/<image> members, "
                            "optionally under one top-level folder")
        elif depths != {2}:
            odd = next((m.filename for m, p in zip(infos, parts, strict=True) if len(p) != len(parts[0])),
                       infos[0].filename)
            raise DnasError(f"{path} mixes layouts (e.g. member {clip(odd, 80)!r}): expected <class>/<image>, "
                            "optionally under one top-level folder.")
        self.classes = sorted({p[0] for p in parts})
        index = {c: i for i, c in enumerate(self.classes)}
        order = sorted(range(len(infos)), key=lambda i: (parts[i][0], parts[i][1]))
        chosen = [infos[i] for i in order]
        self.labels = np.asarray([index[parts[i][0]] for i in order], dtype=np.int64)
        self._names = PackedNames([m.filename for m in chosen])
        self._offset = np.asarray([m.header_offset for m in chosen], dtype=np.int64)
        self._packed = np.asarray([m.compress_size for m in chosen], dtype=np.int64)
        self._size = np.asarray([m.file_size for m in chosen], dtype=np.int64)
        self._method = np.asarray([m.compress_type for m in chosen], dtype=np.int16)
        self._crc = np.asarray([m.CRC for m in chosen], dtype=np.uint32)
        self._handle: BinaryIO | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self._names)

    def describe(self, index: int) -> str:
        return f"{self.source}:{self._names[index]}"

    def files(self) -> list[str]:
        return [self.source]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": -1}  # an open file does not travel to a worker

    def _file(self) -> BinaryIO:
        if self._handle is None or self._pid != os.getpid():  # a forked worker opens its own handle
            file_status(self.source, "zip file")
            self._handle = open(self.source, "rb")  # noqa: SIM115 - kept open for the next reads
            self._pid = os.getpid()
        return self._handle

    def read(self, index: int) -> bytes:
        name = self.describe(index)
        size, packed, method = int(self._size[index]), int(self._packed[index]), int(self._method[index])
        try:
            handle = self._file()
            handle.seek(int(self._offset[index]))
            header = handle.read(_LOCAL_HEADER)
            if len(header) < _LOCAL_HEADER or header[:4] != _LOCAL_SIGNATURE:
                raise DnasError(f"The zip member {name} has no valid local header: the archive is corrupt.")
            skip = int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
            handle.seek(skip, os.SEEK_CUR)
            raw = handle.read(packed)
        except OSError as e:
            raise DnasError(f"Cannot read {name} ({e.strerror}): check the archive.") from None
        if len(raw) < packed:
            raise DnasError(f"The zip member {name} is truncated: the archive is corrupt.")
        limit = min(size, max_file_bytes()) + 1
        try:
            if method == zipfile.ZIP_STORED:
                data = raw
            elif method == zipfile.ZIP_DEFLATED:
                data = zlib.decompressobj(-15).decompress(raw, limit)
            else:
                data = bz2.BZ2Decompressor().decompress(raw, max_length=limit)
        except (zlib.error, OSError, ValueError) as e:
            raise DnasError(f"Cannot decompress the zip member {name} ({clip(str(e))}): the archive is "
                            "corrupt.") from None
        if len(data) > size:
            raise DnasError(f"The zip member {name} expands beyond the {size} bytes its header declares: the "
                            "archive is corrupt or hostile.")
        if len(data) < size or zlib.crc32(data) != int(self._crc[index]):
            raise DnasError(f"The zip member {name} does not match its declared size or CRC: the archive is corrupt.")
        return data


def check_listing_labels(labels: np.ndarray, what: str) -> None:
    """Refuse label ids outside the class cap (see :func:`dnas.data.limits.check_labels`)."""
    if len(labels):
        check_labels(int(labels.min()), int(labels.max()), what)
