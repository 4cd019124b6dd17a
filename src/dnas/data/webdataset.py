"""WebDataset tar shards, read one image at a time with the standard library's ``tarfile``.

The layout of the ``webdataset`` package (github.com/webdataset/webdataset, and what its writers
and ``tarp`` produce): a dataset is a list of uncompressed POSIX tar files ("shards"); the files of
one sample are consecutive and share a key, the member name up to the first dot of its last path
component::

    shard-000000.tar:  n01440764_10026.jpg   n01440764_10026.cls
                       n01440764_10029.jpg   n01440764_10029.cls   ...

A sample here is one image (any suffix of :data:`~dnas.data.listing.IMAGE_EXTENSIONS`) and its
class id as decimal text in a ``.cls`` (or ``.cls2``, ``.class``, ``.label``, ``.index``) member.
Classes are the ids ``0 .. max``. Shards are given as one ``.tar`` file, a folder of them (sorted
by name) or a brace pattern ``shards/train-{000000..000146}.tar``.

Listing a shard reads its member headers and label members once; an image is then read at its
offset, so samples can be drawn in any order (the ``webdataset`` package itself reads shards
sequentially with a shuffle buffer; random access keeps the stream exactly resumable and
independent of the number of workers). Compressed shards (``.tar.gz``) cannot be read at an offset
and are refused with that reason; members that are not regular files are skipped.
"""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from dnas.data.limits import check_declared, check_labels, clip
from dnas.data.listing import PackedNames, is_image
from dnas.errors import DnasError
from dnas.runtime.reading import file_status

LABEL_EXTENSIONS = ("cls", "cls2", "class", "label", "index")
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
_OPEN_SHARDS = 8  # file handles kept open per process


def expand_shards(spec: str) -> list[Path] | None:
    """The shard paths of a brace pattern (``a-{00..09}.tar``: zero-padded like its bounds), a ``.tar``
    file or a folder holding ``.tar`` files; None when ``spec`` is none of these."""
    match = _BRACE.search(spec)
    if match and spec.endswith(".tar"):
        first, last = match.group(1), match.group(2)
        if int(last) < int(first) or int(last) - int(first) > 1_000_000:
            raise DnasError(f"the shard pattern {clip(spec, 80)!r} has an empty or too large range")
        width = len(first) if first.startswith("0") else 0
        return [Path(spec[:match.start()] + str(i).zfill(width) + spec[match.end():]).expanduser()
                for i in range(int(first), int(last) + 1)]
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".tar" and not path.is_dir():
        return [path]
    if path.is_dir():
        try:
            shards = sorted(e.path for e in os.scandir(path) if e.name.endswith(".tar") and not e.is_dir())
        except OSError:
            return None
        return [Path(s) for s in shards] or None
    return None


def _split_key(name: str) -> tuple[str, str]:
    """``("dir/key", "ext")`` of a member name: the key ends at the first dot of the last component."""
    folder, _, base = name.rpartition("/")
    key, dot, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), (ext if dot else "")


class TarShardListing:
    """The labelled images of a list of WebDataset shards (see the module docstring)."""

    def __init__(self, shards: list[Path], name: str):
        if not shards:
            raise DnasError("no shards were given: give a .tar file, a folder of them or a pattern such as "
                            "train-{000..009}.tar")
        self.shards = [str(s.resolve()) for s in shards]
        self.source = self.shards[0] if len(shards) == 1 else str(Path(self.shards[0]).parent)
        self.name = name
        names: list[str] = []
        shard_of: list[int] = []
        offsets: list[int] = []
        sizes: list[int] = []
        labels: list[int] = []
        for number, shard in enumerate(self.shards):
            for key, offset, size, label in self._scan(Path(shard)):
                names.append(key)
                shard_of.append(number)
                offsets.append(offset)
                sizes.append(size)
                labels.append(label)
        if not names:
            raise DnasError(f"the shards at {self.source} hold no samples: expected KEY.jpg + KEY.cls members.")
        self.labels = np.asarray(labels, dtype=np.int64)
        check_labels(int(self.labels.min()), int(self.labels.max()), f"the shards at {self.source}")
        self.classes = [str(i) for i in range(int(self.labels.max()) + 1)]
        self._names = PackedNames(names)
        self._shard = np.asarray(shard_of, dtype=np.int32)
        self._offset = np.asarray(offsets, dtype=np.int64)
        self._size = np.asarray(sizes, dtype=np.int64)
        self._handles: dict[int, BinaryIO] = {}
        self._pid = -1

    @staticmethod
    def _scan(shard: Path) -> list[tuple[str, int, int, int]]:
        """``(member name, data offset, size, label)`` of every sample of one shard, in shard order."""
        file_status(shard, "tar shard")
        try:
            with open(shard, "rb") as handle:
                magic = handle.read(6)
        except OSError as e:
            raise DnasError(f"Cannot read {shard} ({e.strerror}): check the file.") from None
        for prefix, kind in _COMPRESSED.items():
            if magic.startswith(prefix):
                raise DnasError(f"The shard {shard} is {kind}-compressed: compressed shards cannot be read at an "
                                "offset; decompress them into plain .tar files.")
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(shard, "r:") as archive:
                for member in archive:
                    if not member.isreg():
                        continue
                    key, ext = _split_key(member.name)
                    check_declared(member.size, f"The member {clip(member.name, 80)!r} of {shard}")
                    samples.setdefault(key, {})[ext.lower()] = member
                out = []
                for key, files in samples.items():
                    image = next((m for ext, m in files.items() if is_image(f"x.{ext}")), None)
                    label_member = next((files[e] for e in LABEL_EXTENSIONS if e in files), None)
                    if image is None and label_member is None:
                        continue  # metadata of another kind (json, txt) without an image: not a sample
                    if image is None or label_member is None:
                        missing = "image" if image is None else "label (.cls)"
                        raise DnasError(f"The sample {clip(key, 80)!r} of {shard} has no {missing} member: each "
                                        "sample needs an image and its class id.")
                    label = _read_label(archive, label_member, key, shard)
                    out.append((image.name, image.offset_data, image.size, label))
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DnasError(f"Cannot read {shard} as a tar shard ({clip(str(e))}): check or replace it.") from None
        return out

    def __len__(self) -> int:
        return len(self._names)

    def describe(self, index: int) -> str:
        return f"{self.shards[int(self._shard[index])]}:{self._names[index]}"

    def files(self) -> list[str]:
        return list(self.shards)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}, "_pid": -1}

    def _file(self, shard: int) -> BinaryIO:
        if self._pid != os.getpid():  # a forked worker opens its own handles
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            if len(self._handles) >= _OPEN_SHARDS:
                self._handles.pop(next(iter(self._handles))).close()
            file_status(self.shards[shard], "tar shard")
            handle = self._handles[shard] = open(self.shards[shard], "rb")  # noqa: SIM115 - kept for the next reads
        return handle

    def read(self, index: int) -> bytes:
        size = int(self._size[index])
        try:
            handle = self._file(int(self._shard[index]))
            handle.seek(int(self._offset[index]))
            data = handle.read(size)
        except OSError as e:
            raise DnasError(f"Cannot read {self.describe(index)} ({e.strerror}): check the shard.") from None
        if len(data) < size:
            raise DnasError(f"The member {self.describe(index)} is truncated: the shard is corrupt.")
        return data


def _read_label(archive: tarfile.TarFile, member: tarfile.TarInfo, key: str, shard: Path) -> int:
    if member.size > 32:
        raise DnasError(f"The label member of sample {clip(key, 80)!r} in {shard} holds {member.size} bytes, not a "
                        "class id: write the id as decimal text.")
    handle = archive.extractfile(member)
    text = handle.read(32).decode("ascii", "replace").strip() if handle is not None else ""
    if not re.fullmatch(r"[+-]?\d{1,20}", text):
        raise DnasError(f"The label of sample {clip(key, 80)!r} in {shard} is not a class id "
                        f"({clip(text, 24)!r}): write the id as decimal text.")
    label = int(text)
    check_labels(label, label, f"The sample {clip(key, 80)!r} of {shard}")
    return label
