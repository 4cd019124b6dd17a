"""Caps on what a dataset file may make dnas read, decompress, decode and hold in memory.

Every dataset reader goes through these checks, so that a hostile or broken file stops with one
sentence instead of blocking, exhausting memory or dumping its content:

* only regular files are opened (:func:`dnas.runtime.reading.file_status`): a FIFO or a device given as a dataset
  would block forever or never end;
* one file, archive member or decompressed stream yields at most ``max_file_bytes()`` bytes
  (``DNAS_MAX_FILE_BYTES``, default 4 GiB): the size a header declares is checked before reading
  and the bytes actually produced while reading (:func:`read_file`, :func:`open_gzip`,
  :func:`check_declared`);
* an image may have at most ``max_image_pixels()`` pixels (``DNAS_MAX_IMAGE_PIXELS``, default
  Pillow's own decompression-bomb limit, 89,478,485 = about 0.25 GB of RGB), checked on its header
  before its pixels are decoded (:func:`open_image`);
* a label id must lie below ``max_classes()`` (``DNAS_MAX_CLASSES``, default 1,000,000);
* a dataset decoded into memory may take at most half of the memory this process may use
  (:func:`memory_budget`: the smallest of the system's available memory, the cgroup's remaining
  limit and ``DNAS_MEMORY_LIMIT``); :func:`check_fits` refuses a larger one with the estimate and
  the memory it was compared with.

The environment variables take a number of bytes (or pixels, classes) with an optional K, M, G or T
suffix (powers of 1024), e.g. ``DNAS_MAX_FILE_BYTES=16G``.
"""

from __future__ import annotations

import gzip
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from dnas.errors import DnasError
from dnas.runtime.reading import file_status
from dnas.runtime.resources import MEMORY_ENV, available_memory, env_amount, format_bytes

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

FILE_BYTES_ENV = "DNAS_MAX_FILE_BYTES"
IMAGE_PIXELS_ENV = "DNAS_MAX_IMAGE_PIXELS"
CLASSES_ENV = "DNAS_MAX_CLASSES"
#: the defaults of the caps (the environment variables above override them)
DEFAULT_FILE_BYTES = 4 << 30
DEFAULT_IMAGE_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS: Pillow's own decompression-bomb limit
DEFAULT_CLASSES = 1_000_000
#: the share of the memory a process may use that a dataset held in memory may take
MEMORY_SHARE = 0.5
_CHUNK = 1 << 20


def max_file_bytes() -> int:
    """The most bytes one file, archive member or decompressed stream may yield."""
    value = env_amount(FILE_BYTES_ENV, DEFAULT_FILE_BYTES)
    assert value is not None
    return value


def max_image_pixels() -> int:
    """The most pixels (width x height) one image may have."""
    value = env_amount(IMAGE_PIXELS_ENV, DEFAULT_IMAGE_PIXELS)
    assert value is not None
    return value


def max_classes() -> int:
    """Label ids must lie below this."""
    value = env_amount(CLASSES_ENV, DEFAULT_CLASSES)
    assert value is not None
    return value


def _file_cap_advice() -> str:
    return f"{format_bytes(max_file_bytes())}, the cap on one file or member; set {FILE_BYTES_ENV} to allow more"


# ----------------------------------------------------------------------------------------- files


def check_declared(size: int, what: str) -> None:
    """Refuse ``what`` when the size its header declares exceeds the file cap."""
    if size > max_file_bytes():
        raise DnasError(f"{what} declares {format_bytes(size)}, more than {_file_cap_advice()}.")


def read_file(path: str | Path, what: str = "dataset file") -> bytes:
    """The bytes of the regular file ``path``, at most the file cap (checked before and while reading)."""
    size = file_status(path, what).st_size
    check_declared(size, str(path))
    cap = max_file_bytes()
    try:
        with open(path, "rb") as handle:
            parts = [handle.read(size + 1)]  # a byte more than measured shows a file that is growing
            total = len(parts[0])
            while total > size and total <= cap and (chunk := handle.read(_CHUNK)):
                parts.append(chunk)
                total += len(chunk)
    except OSError as e:
        raise DnasError(f"Cannot read {path} ({e.strerror}): check the file.") from None
    if total > cap:
        raise DnasError(f"{path} grew beyond {_file_cap_advice()}.")
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Capped(io.RawIOBase):
    """A raw stream that passes through at most ``cap`` bytes of ``inner`` and refuses more."""

    def __init__(self, inner: io.BufferedIOBase, cap: int, what: str):
        self.inner, self.cap, self.what, self.count = inner, cap, what, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.inner.read(min(len(view), _CHUNK))
        self.count += len(data)
        if self.count > self.cap:
            raise DnasError(f"{self.what} expands to more than {_file_cap_advice()}.")
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


def open_gzip(path: str | Path, what: str = "dataset file") -> io.BufferedReader:
    """A binary stream of the decompressed content of the gzip file ``path``.

    The size its trailer declares (ISIZE, the size modulo 2**32) is checked before reading and the
    bytes actually decompressed while reading: past the file cap the stream raises one sentence.
    """
    size = file_status(path, what).st_size
    try:
        with open(path, "rb") as handle:
            if size >= 18:
                handle.seek(size - 4)
                check_declared(int.from_bytes(handle.read(4), "little"), f"The gzip file {path}")
        inner = gzip.open(path, "rb")  # noqa: SIM115 - closed with the stream that wraps it
    except OSError as e:
        raise DnasError(f"Cannot read {path} ({e.strerror}): check the file.") from None
    return io.BufferedReader(_Capped(inner, max_file_bytes(), f"The gzip file {path}"))


def read_gzip(path: str | Path, what: str = "dataset file") -> bytes:
    """The decompressed bytes of the gzip file ``path``, within the file cap."""
    try:
        with open_gzip(path, what) as handle:
            return handle.read()
    except (OSError, EOFError) as e:  # a corrupt or truncated stream (BadGzipFile is an OSError)
        raise DnasError(f"Cannot decompress {path} ({clip(str(e))}): check or replace the file.") from None


def clip(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters on one line: messages quote errors, never the input."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------- images


def open_image(data: bytes, name: str) -> PILImage:
    """The Pillow image of encoded ``data`` with its header read and its size checked, pixels not yet
    decoded; a file that is not an image, or one larger than the pixel cap, is one sentence.

    Pillow's own decompression-bomb guard (a warning past ``PIL.Image.MAX_IMAGE_PIXELS``, an error
    past twice that) is replaced by the cap of :func:`max_image_pixels`.
    """
    from PIL import Image, UnidentifiedImageError

    cap = max_image_pixels()
    pillow_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if pillow_limit is not None and cap > 2 * pillow_limit:
                Image.MAX_IMAGE_PIXELS = cap  # the user allowed more than Pillow's own guard does
            try:
                img = Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = pillow_limit
    except Image.DecompressionBombError:
        limit = 2 * (pillow_limit or 0)
        raise DnasError(f"The image {name} has more than {limit:,} pixels, more than the cap of {cap:,} "
                        f"({IMAGE_PIXELS_ENV} sets it): remove or shrink it.") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise DnasError(f"Cannot decode the image {name} ({clip(str(e))}): remove or replace it.") from None
    width, height = img.size
    if width * height > cap:
        raise DnasError(f"The image {name} has {width}x{height} = {width * height:,} pixels, more than the cap of "
                        f"{cap:,} ({IMAGE_PIXELS_ENV} sets it): remove or shrink it.")
    return img


# ----------------------------------------------------------------------------------------- labels


def check_labels(low: int, high: int, what: str) -> None:
    """Refuse label ids outside ``[0, max_classes())`` (``low``/``high``: the smallest and largest id)."""
    if low < 0:
        raise DnasError(f"{what} has a negative label ({low}): labels are class ids 0, 1, 2, ...")
    cap = max_classes()
    if high >= cap:
        raise DnasError(f"{what} has the label {high}, beyond the cap of {cap:,} classes ({CLASSES_ENV} "
                        "sets it): check the label column or file.")


# ----------------------------------------------------------------------------------------- memory


def memory_budget() -> tuple[int, str]:
    """How many bytes a dataset held in memory may take (:data:`MEMORY_SHARE` of :func:`available_memory`),
    and a phrase that explains the figure."""
    memory, source = available_memory()
    budget = int(memory * MEMORY_SHARE)
    if source == MEMORY_ENV:
        return budget, f"half of the {format_bytes(memory)} {MEMORY_ENV} allows"
    return budget, f"half of the {format_bytes(memory)} this process may use: {source}; {MEMORY_ENV} sets it"


def fits(estimate: int) -> bool:
    """Whether ``estimate`` bytes fit the in-memory budget."""
    return estimate <= memory_budget()[0]


def check_fits(estimate: int, what: str, streamable: bool) -> None:
    """Refuse to decode ``what`` into memory when its ``estimate`` exceeds the budget, with both figures."""
    budget, explained = memory_budget()
    if estimate <= budget:
        return
    advice = ("stream it instead (data_mode=stream or auto)" if streamable
              else "use a smaller part of it or a machine with more memory")
    raise DnasError(f"{what} would take about {format_bytes(estimate)} in memory, more than the "
                    f"{format_bytes(budget)} a dataset may take ({explained}): {advice}.")
