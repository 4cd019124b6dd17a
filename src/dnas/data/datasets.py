"""Image datasets held in memory as one uint8 tensor, and the formats that are read whole.

The formats: the embedded ``digits``, CIFAR-10/100 python pickles (downloaded and verified on
request), MNIST-style IDX files, a ``.csv[.gz]`` of flattened square grayscale images followed by
their label, and :func:`decode_listing`, which decodes an image folder, zip or tar shards
(:mod:`dnas.data.listing`) into memory. :func:`dnas.data.loading.load_dataset` dispatches a name or
path to them (or to a streamed dataset). Every reader goes through the caps of
:mod:`dnas.data.limits`: regular files only, bounded reads and decompression, label ids below the
class cap, and an estimate of the decoded size checked against the memory before allocating.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.resources
import io
import logging
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dnas.data.limits import check_fits, check_labels, clip, open_gzip, open_image, read_file, read_gzip
from dnas.data.listing import Listing
from dnas.errors import DnasError
from dnas.runtime.reading import file_status

_log = logging.getLogger(__name__)
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_CACHE_VERSION = 1  # bump when the decoding of image folders changes, to invalidate old caches
_MAX_NAME = 200  # the longest class name a CIFAR meta file may hold


@dataclass
class ImageDataset:
    """A whole labelled image dataset in memory.

    ``split``: a predefined ``(train, val)`` pair of index tensors for a search (NAS-Bench-201's
    split files, PC-DARTS' per-class fractions), else None (the search draws its own split).
    ``loading``: how it was loaded (mode and why), for ``env.json``.
    """

    images: torch.Tensor  # uint8, (N, C, H, W), contiguous
    labels: torch.Tensor  # int64, (N,)
    classes: list[str]
    mean: tuple[float, ...]  # per-channel mean of images / 255
    std: tuple[float, ...]  # per-channel standard deviation of images / 255
    name: str
    split: tuple[torch.Tensor, torch.Tensor] | None = None
    loading: dict[str, Any] = field(default_factory=lambda: {"mode": "memory"})

    @classmethod
    def from_tensors(
        cls, images: torch.Tensor, labels: torch.Tensor, classes: list[str], name: str
    ) -> ImageDataset:
        """Build a dataset from uint8 ``(N, C, H, W)`` images and labels, computing mean and std."""
        images = images.contiguous()
        mean, std = channel_stats(images)
        return cls(images, labels.to(torch.int64), list(classes), mean, std, name)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """Height of the images (they are square for every built-in source but image folders)."""
        return self.images.shape[2]

    def __len__(self) -> int:
        return self.images.shape[0]

    def resized(self, size: int, crop_fraction: float = 1.0) -> ImageDataset:
        """A copy with images resized to ``size`` x ``size`` (bilinear, antialiased), or ``self``.

        ``crop_fraction < 1`` first keeps the centred square of that share of the shorter side (the
        evaluation crop of ImageNet training: 0.875 = 224 of 256)."""
        if size <= 0:
            raise DnasError(f"Image size must be positive, got {size}: pick a size such as 32.")
        if crop_fraction == 1 and self.images.shape[2] == size and self.images.shape[3] == size:
            return self
        chunks = []
        for chunk in self.images.split(4096):
            chunks.append(resize_images(chunk, size, crop_fraction))
        return dataclasses.replace(ImageDataset.from_tensors(torch.cat(chunks), self.labels, self.classes, self.name),
                                   split=self.split, loading=self.loading)


def centre_box(height: int, width: int, crop_fraction: float) -> tuple[int, int, int]:
    """``(top, left, side)`` of the centred square covering ``crop_fraction`` of the shorter side."""
    side = max(1, round(min(height, width) * crop_fraction))
    return (height - side) // 2, (width - side) // 2, side


def resize_images(images: torch.Tensor, size: int, crop_fraction: float = 1.0) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` images resized to ``size`` x ``size`` by antialiased bilinear interpolation
    (after a centred square crop of ``crop_fraction`` of the shorter side when it is below 1)."""
    if crop_fraction < 1:
        top, left, side = centre_box(images.shape[2], images.shape[3], crop_fraction)
        images = images[:, :, top:top + side, left:left + side]
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class ChannelMoments:
    """Running per-channel sums of uint8 pixel values and their squares (float64: exact for any realistic
    count, so the statistics do not depend on how the images are grouped)."""

    def __init__(self, channels: int):
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.squares = torch.zeros(channels, dtype=torch.float64)
        self.count = 0

    def add(self, images: torch.Tensor) -> None:
        """Add uint8 ``(N, C, H, W)`` images, a few at a time (about 32 MB of float64 each)."""
        per_image = max(images[0].numel(), 1) if len(images) else 1
        for chunk in images.split(max(1, (1 << 22) // per_image)):
            x = chunk.to(torch.float64)
            self.total += x.sum(dim=(0, 2, 3))
            self.squares += x.square().sum(dim=(0, 2, 3))
        self.count += images.numel() // max(images.shape[1], 1)

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and (population) standard deviation of the pixels / 255."""
        count = max(self.count, 1)
        mean = self.total / count
        var = (self.squares / count - mean.square()).clamp_(min=0)
        return tuple((mean / 255).tolist()), tuple((var.sqrt() / 255).tolist())


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``images / 255``, exact, in bounded memory."""
    moments = ChannelMoments(images.shape[1])
    moments.add(images)
    return moments.stats()


# ----------------------------------------------------------------------------------------- entry points


def resolve_root(root: str | None) -> Path:
    """The data root: ``root``, else ``$DNAS_DATA``, else ``~/.cache/dnas/data``."""
    if root is None:
        root = os.environ.get("DNAS_DATA") or "~/.cache/dnas/data"
    return Path(root).expanduser()


def load_named_cifar(name: str, split: str, download: bool, data_root: Path) -> ImageDataset:
    """``cifar10`` or ``cifar100`` from its folder under ``data_root``, downloaded first on request."""
    folder = data_root / DOWNLOADS[name].folder
    if not folder.is_dir():
        if not download:
            raise DnasError(
                f"{name} is not in {folder}: pass --download (download=True) to fetch it, or give "
                f"the path of a {DOWNLOADS[name].folder} folder instead."
            )
        _download(name, data_root)
    return load_cifar_folder(folder, name, split)


def cifar_folder(path: Path) -> tuple[Path, str] | None:
    """``(folder, name)`` when ``path`` or its standard child is a CIFAR python folder, else None."""
    for name, download in DOWNLOADS.items():
        for folder in (path, path / download.folder):
            marker = _CIFAR_FILES[name]["meta"] + _CIFAR_FILES[name]["test"]
            if folder.is_dir() and all((folder / f).exists() for f in marker):
                return folder, name
    return None


def is_idx_folder(path: Path) -> bool:
    """Whether ``path`` holds MNIST-style IDX files."""
    return bool(_idx_file(path, "train", "images") or _idx_file(path, "t10k", "images"))


# ---------------------------------------------------------------------------------- digits and csv


def _holdout_split(labels: torch.Tensor, split: str) -> torch.Tensor:
    """Indices of a fixed stratified 80/20 split: every 5th image of each class goes to ``test``."""
    rank = torch.empty_like(labels)
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        rank[members] = torch.arange(len(members))
    is_test = rank % 5 == 4
    return (is_test if split == "test" else ~is_test).nonzero().squeeze(1)


def _from_rows(rows: np.ndarray, pixel_max: int, name: str, split: str, source: str) -> ImageDataset:
    """Images from CSV rows of square-image pixels then the label, split 80/20 per class."""
    pixels = rows.shape[1] - 1
    side = math.isqrt(max(pixels, 0))
    if pixels < 1 or side * side != pixels:
        raise DnasError(
            f"{source} has {rows.shape[1]} columns, expected the pixels of a "
            "square image (e.g. 784 = 28x28) followed by the label: check the file format."
        )
    values, labels = rows[:, :-1], rows[:, -1]
    if values.min() < 0 or values.max() > pixel_max:
        raise DnasError(f"{source} has pixels outside 0..{pixel_max}: check the file format.")
    check_labels(int(labels.min()), int(labels.max()), source)
    scaled = np.rint(values * (255.0 / pixel_max)).astype(np.uint8)
    images = torch.from_numpy(scaled).reshape(-1, 1, side, side)
    labels_t = torch.from_numpy(labels.astype(np.int64))
    keep = _holdout_split(labels_t, split)
    classes = [str(i) for i in range(int(labels.max()) + 1)]
    return ImageDataset.from_tensors(images[keep], labels_t[keep], classes, name)


def _read_csv(handle: io.BufferedIOBase, source: str) -> np.ndarray:
    try:
        rows = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, OSError, EOFError) as e:
        raise DnasError(f"Cannot parse {source} as a CSV of integers ({clip(str(e))}): check the file.") from None
    if rows.size == 0:
        raise DnasError(f"{source} has no rows: check the file.")
    return rows


def load_digits(split: str) -> ImageDataset:
    resource = importlib.resources.files("dnas.data") / "assets" / "digits.csv.gz"
    with resource.open("rb") as raw, gzip.open(raw) as handle:
        rows = _read_csv(handle, "the embedded digits data")
    return _from_rows(rows, 16, "digits", split, "the embedded digits data")


def load_csv(path: Path, split: str) -> ImageDataset:
    """A ``.csv[.gz]`` of square grayscale images (pixels 0..255, then the label), split 80/20 per class.

    Parsing holds every value as an int64 and a value takes at least two characters (a digit and a
    comma), so the decoded rows take at most four times the text's size; that is checked first.
    """
    compressed = path.name.lower().endswith(".gz")
    name = path.name[: -len(".csv.gz")] if compressed else path.stem
    size = file_status(path, "CSV file").st_size
    if compressed:
        with open(path, "rb") as raw:
            raw.seek(max(size - 4, 0))
            size = max(size, int.from_bytes(raw.read(4), "little"))  # gzip's ISIZE: the text's size
    check_fits(4 * size, f"The CSV file {path}", streamable=False)
    try:
        handle = open_gzip(path, "CSV file") if compressed else open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise DnasError(f"Cannot read {path} ({e.strerror}): check the file.") from None
    with handle:
        rows = _read_csv(handle, str(path))
    return _from_rows(rows, 255, name, split, str(path))


# --------------------------------------------------------------------------------------------- CIFAR


@dataclass
class Download:
    """Where a named dataset's archive comes from and which folder it unpacks to."""

    url: str
    md5: str
    folder: str


DOWNLOADS: dict[str, Download] = {
    "cifar10": Download(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
    ),
    "cifar100": Download(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
    ),
}

_CIFAR_FILES = {
    "cifar10": {
        "meta": ["batches.meta"],
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
    },
    "cifar100": {"meta": ["meta"], "train": ["train"], "test": ["test"]},
}

# The only globals a CIFAR pickle needs (numpy arrays); anything else is refused, never executed.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]
        return super().find_class(module, name)


def read_pickle(path: Path, what: str = "CIFAR file", advice: str = "delete the folder and download it again"
                ) -> dict:
    """The dict of a pickle that holds only numpy arrays, numbers, strings and containers (anything
    else is refused, never executed), read within the file cap; keys as ``str``."""
    return unpickle(read_file(path, what), path, what, advice)


def unpickle(data: bytes, path: Path, what: str = "CIFAR file",
             advice: str = "delete the folder and download it again") -> dict:
    """The dict pickled in ``data`` (the bytes of ``path``), as :func:`read_pickle` reads it."""
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, MemoryError, RecursionError) as e:
        raise DnasError(f"Cannot read the {what} {path} ({clip(str(e))}): {advice}.") from None
    if not isinstance(obj, dict):
        raise DnasError(f"The {what} {path} does not hold a dict: {advice}.")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def class_names(names: object, what: str) -> list[str]:
    """Class names from a list of strings (or bytes), each printable and at most 200 characters long."""
    if not isinstance(names, (list, tuple)) or not names:
        raise DnasError(f"{what} holds no list of class names: the file is malformed.")
    out: list[str] = []
    for name in names:
        if isinstance(name, bytes):
            name = name.decode("latin1")
        if not isinstance(name, str) or not name.isprintable() or not 0 < len(name) <= _MAX_NAME:
            raise DnasError(f"{what} holds a malformed class name (class {len(out)}): names must be printable "
                            f"text of 1 to {_MAX_NAME} characters.")
        out.append(name)
    return out


def load_cifar_folder(folder: Path, name: str, split: str) -> ImageDataset:
    """The ``split`` of a CIFAR-10 / CIFAR-100 python folder: checked file by file (regular files,
    within the caps), images ``(N, 3, 32, 32)``, one label per image, each naming a class."""
    files = _CIFAR_FILES[name]
    for f in files["meta"] + files[split]:
        if not (folder / f).exists():
            raise DnasError(f"{folder} lacks the file {f}: delete the folder and download {name} again.")
        file_status(folder / f, "CIFAR file")
    check_fits(sum((folder / f).stat().st_size for f in files[split]), f"The {name} {split} split in {folder}",
               streamable=False)
    meta = read_pickle(folder / files["meta"][0])
    label_key, names_key = (
        ("labels", "label_names") if name == "cifar10" else ("fine_labels", "fine_label_names")
    )
    if names_key not in meta:
        raise DnasError(f"The CIFAR meta file in {folder} lacks {names_key!r}: download {name} again.")
    classes = class_names(meta[names_key], f"The CIFAR meta file in {folder}")
    images, labels = [], []
    for f in files[split]:
        batch = read_pickle(folder / f)
        try:
            data = np.asarray(batch["data"])
            label = np.asarray(batch[label_key])
        except KeyError as e:
            raise DnasError(f"The CIFAR file {folder / f} lacks {clip(str(e), 40)}: download {name} again.") from None
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DnasError(f"The CIFAR file {folder / f} does not hold uint8 rows of 3072 pixels: "
                            f"download {name} again.")
        if label.ndim != 1 or label.dtype.kind not in "iu" or len(label) != len(data):
            raise DnasError(f"The CIFAR file {folder / f} has {len(data)} images but not as many integer labels: "
                            f"download {name} again.")
        if len(label) and (label.min() < 0 or label.max() >= len(classes)):
            bad = int(label.min()) if label.min() < 0 else int(label.max())
            raise DnasError(f"The CIFAR file {folder / f} has the label {bad}, outside the {len(classes)} classes "
                            f"its meta file names: download {name} again.")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(label.astype(np.int64))
    return ImageDataset.from_tensors(
        torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes, name
    )


def _download(name: str, root: Path) -> None:
    """Download, verify (md5) and safely extract ``DOWNLOADS[name]`` into ``root``."""
    spec = DOWNLOADS[name]
    root.mkdir(parents=True, exist_ok=True)
    part = root / (Path(spec.url).name + ".part")
    digest = hashlib.md5()
    _log.info("Downloading %s from %s into %s", name, spec.url, root)
    try:
        with urllib.request.urlopen(spec.url) as response, open(part, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as e:  # URLError is an OSError
        part.unlink(missing_ok=True)
        raise DnasError(
            f"Cannot download {name} from {spec.url} ({e}): check the network or give a local path."
        ) from e
    if digest.hexdigest() != spec.md5:
        part.unlink(missing_ok=True)
        raise DnasError(
            f"The {name} archive from {spec.url} has md5 {digest.hexdigest()}, expected {spec.md5}: "
            "the download is corrupt, try again."
        )
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}-", dir=root))
    try:
        with tarfile.open(part) as archive:
            members = archive.getmembers()
            _check_members(members, staging, name)
            if hasattr(tarfile, "data_filter"):
                archive.extractall(staging, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters; members are checked above
                archive.extractall(staging, members=members)
        if not (staging / spec.folder).is_dir():
            raise DnasError(f"The {name} archive has no {spec.folder} folder: check DOWNLOADS[{name!r}].")
        os.replace(staging / spec.folder, root / spec.folder)
    except tarfile.TarError as e:
        raise DnasError(f"Cannot extract the {name} archive ({e}): try the download again.") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        part.unlink(missing_ok=True)


def _check_members(members: Iterable[tarfile.TarInfo], target: Path, name: str) -> None:
    base = target.resolve()
    for m in members:
        inside = (base / m.name).resolve()
        if not (m.isfile() or m.isdir()) or not inside.is_relative_to(base):
            raise DnasError(
                f"The {name} archive has an unsafe member {m.name!r} (link or path outside the target): "
                "refusing to extract it."
            )


# ----------------------------------------------------------------------------------------------- IDX


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    stem = f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    raw = read_gzip(path, "IDX file") if path.suffix == ".gz" else read_file(path, "IDX file")
    check_fits(len(raw), str(path), streamable=False)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic or len(raw) < header:
        shown = "none" if found is None else hex(found)
        raise DnasError(
            f"{path} is not an IDX file of the expected kind (magic {shown}, expected {magic:#x})."
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) - header != math.prod(dims):
        raise DnasError(
            f"{path} holds {len(raw) - header} bytes of data but its header announces {dims}: "
            "the file is truncated or corrupt, replace it."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_folder(folder: Path, split: str) -> ImageDataset:
    prefix = "train" if split == "train" else "t10k"
    images_path, labels_path = _idx_file(folder, prefix, "images"), _idx_file(folder, prefix, "labels")
    if images_path is None or labels_path is None:
        raise DnasError(
            f"{folder} lacks {prefix}-images-idx3-ubyte[.gz] or {prefix}-labels-idx1-ubyte[.gz] for the "
            f"{split} split: add the files or use the other split."
        )
    images = _read_idx(images_path, 0x803)
    labels = _read_idx(labels_path, 0x801)
    if len(images) != len(labels):
        raise DnasError(
            f"{images_path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels: "
            "the files do not belong together."
        )
    classes = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    return ImageDataset.from_tensors(
        torch.from_numpy(images.copy()).unsqueeze(1),
        torch.from_numpy(labels.astype(np.int64)),
        classes,
        folder.name,
    )


# ------------------------------------------------------------------------------- image folders and zip


def decode_image(data: bytes, name: str) -> tuple[np.ndarray, bool]:
    """The pixels of an encoded image as ``(H, W, 3)`` uint8 RGB, or ``(H, W)`` for a grayscale image,
    and whether it is grayscale; the header is checked against the pixel cap before decoding."""
    from PIL import UnidentifiedImageError

    with open_image(data, name) as img:
        try:
            img.load()
            gray = img.mode in GRAY_MODES
            pixels = np.array(img.convert("L" if gray else "RGB"))  # writable: tensors may be made of it
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            raise DnasError(f"Cannot decode the image {name} ({clip(str(e))}): remove or replace it.") from None
    return pixels, gray


def decode_listing(listing: Listing) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode every image of ``listing`` into ``(N, C, H, W)`` uint8 images and their labels.

    All images must share one size. ``C`` is 1 when every image is grayscale, else 3 (grayscale
    images repeated). The decoded size (``N x 3 x H x W`` bytes, from the first image's header) is
    checked against the memory budget before anything is allocated.
    """
    count = len(listing)
    with open_image(listing.read(0), listing.describe(0)) as first:
        width, height = first.size
    check_fits(count * 3 * width * height, f"The {count:,} images of {listing.source} ({width}x{height})",
               streamable=True)
    arrays = np.empty((count, height, width, 3), dtype=np.uint8)
    gray = np.ones(count, dtype=bool)
    for i in range(count):
        name = listing.describe(i)
        pixels, gray[i] = decode_image(listing.read(i), name)
        if pixels.shape[:2] != (height, width):
            raise DnasError(
                f"The image {name} is {pixels.shape[1]}x{pixels.shape[0]} but the first one is {width}x{height}: "
                "all images must share one size held in memory; resize them first, or stream them "
                "(data_mode=stream) at one image_size."
            )
        arrays[i] = pixels[..., None] if gray[i] else pixels
    images = torch.from_numpy(arrays[..., :1] if gray.all() else arrays).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(listing.labels.copy()), list(listing.classes)


def _cache_key(listing: Listing) -> str:
    """sha1 of the listing's source, and the path, modification time and size of every file it reads
    (every image of a folder; the archive or shards otherwise)."""
    parts = [f"v{_CACHE_VERSION}", listing.source]
    for f in listing.files():
        st = os.stat(f)
        parts.append(f"{os.path.relpath(f, listing.source) if f != listing.source else ''}|{st.st_mtime_ns}|"
                     f"{st.st_size}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def cache_file(listing: Listing, root: Path) -> Path:
    """Where the decoded copy of ``listing`` is kept (keyed by the files' paths, modification times and sizes)."""
    return root / "cache" / f"{_cache_key(listing)}.pt"


def decode_cached(listing: Listing, root: Path) -> ImageDataset:
    """Decode an image folder, zip or tar shards (:func:`decode_listing`), or reuse its decoded copy
    (:func:`cache_file`)."""
    name = listing.name
    cache = cache_file(listing, root)
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            return ImageDataset(
                saved["images"],
                saved["labels"],
                saved["classes"],
                tuple(saved["mean"]),
                tuple(saved["std"]),
                name,
            )
        except Exception as e:  # a corrupt or foreign cache file is rebuilt, never fatal
            warnings.warn(
                f"Ignoring the unreadable cache {cache} ({clip(str(e))}); decoding {listing.source} again.",
                stacklevel=3,
            )
    images, labels, classes = decode_listing(listing)
    data = ImageDataset.from_tensors(images, labels, classes, name)
    saved = {
        "images": data.images,
        "labels": data.labels,
        "classes": data.classes,
        "mean": list(data.mean),
        "std": list(data.std),
    }
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(saved, handle)
            os.replace(tmp, cache)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as e:
        warnings.warn(f"Cannot write the dataset cache {cache} ({e}); continuing without it.", stacklevel=3)
    return data
