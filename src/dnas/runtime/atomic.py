"""Atomic writes: a file is written to a temporary beside it, synced, then renamed over it.

Readers never see half a file, and a process killed at any instant leaves either the old file or
the new one (plus, at worst, a temporary ``.NAME.<random>.tmp`` that the next start removes). OS
errors become one sentence naming the file and leave it as it was.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dnas.errors import DnasError


def write_error(path: Path, err: BaseException) -> DnasError:
    """The one-sentence error of a failed write of ``path``."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif isinstance(err, OSError) and err.strerror:
        reason = err.strerror
    else:  # torch.save's RuntimeError names its C++ source, which tells a user nothing
        reason = "the write failed"
    return DnasError(f"could not write {path} ({reason}); check permissions and free disk space "
                     "(files already there were left as they were)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: files get the usual permissions (mkstemp alone would make them readable by their owner only)
_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary beside ``path``, fsync, rename over ``path``; OS errors
    become one sentence and leave ``path`` as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as RuntimeError
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise write_error(path, err) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: object, path: Path) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def is_temporary(name: str, own_files: Iterable[str]) -> bool:
    """``.NAME.<random>.tmp`` of one of ``own_files``: what a write killed half-way leaves."""
    return name.endswith(".tmp") and any(name.startswith(f".{own}.") for own in own_files)
