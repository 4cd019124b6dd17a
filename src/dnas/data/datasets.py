"""Image datasets held in memory as one uint8 tensor, and :func:`load_dataset` to get them.

A dataset is named (``digits``, ``cifar10``, ``cifar100``) or given by path: an image folder (one
subfolder per class), a ``.zip`` with that layout, a folder of MNIST-style IDX files or a
``.csv[.gz]`` of flattened square grayscale images followed by their label.
"""

from __future__ import annotations

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
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dnas.errors import DnasError

_log = logging.getLogger(__name__)
_SPLITS = ("train", "test")
_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_CACHE_VERSION = 1  # bump when the decoding of image folders changes, to invalidate old caches
_ACCEPTED = (
    "a dataset name (digits, cifar10, cifar100), or a path to an image folder with one subfolder per "
    "class, a .zip with that layout, a cifar-10-batches-py / cifar-100-python folder, a folder of MNIST "
    "IDX files, or a .csv/.csv.gz of pixel columns followed by the label"
)


@dataclass
class ImageDataset:
    """A whole labelled image dataset in memory."""

    images: torch.Tensor  # uint8, (N, C, H, W), contiguous
    labels: torch.Tensor  # int64, (N,)
    classes: list[str]
    mean: tuple[float, ...]  # per-channel mean of images / 255
    std: tuple[float, ...]  # per-channel standard deviation of images / 255
    name: str

    @classmethod
    def from_tensors(
        cls, images: torch.Tensor, labels: torch.Tensor, classes: list[str], name: str
    ) -> ImageDataset:
        """Build a dataset from uint8 ``(N, C, H, W)`` images and labels, computing mean and std."""
        images = images.contiguous()
        mean, std = _channel_stats(images)
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

    def resized(self, size: int) -> ImageDataset:
        """A copy with images resized to ``size`` x ``size`` (bilinear, antialiased), or ``self``."""
        if size <= 0:
            raise DnasError(f"Image size must be positive, got {size}: pick a size such as 32.")
        if self.images.shape[2] == size and self.images.shape[3] == size:
            return self
        chunks = []
        for chunk in self.images.split(4096):
            out = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True)
            chunks.append(out.round_().clamp_(0, 255).to(torch.uint8))
        return ImageDataset.from_tensors(torch.cat(chunks), self.labels, self.classes, self.name)


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``images / 255``, exact, in bounded memory."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for chunk in images.split(2048):
        x = chunk.to(torch.float64)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    count = max(images.numel() // max(channels, 1), 1)
    mean = total / count
    var = (squares / count - mean.square()).clamp_(min=0)
    return tuple((mean / 255).tolist()), tuple((var.sqrt() / 255).tolist())


# ----------------------------------------------------------------------------------------- entry point


def available_datasets() -> list[str]:
    """The dataset names :func:`load_dataset` accepts besides paths."""
    return ["digits", "cifar10", "cifar100"]


def load_dataset(
    spec: str, *, split: str = "train", download: bool = False, root: str | None = None
) -> ImageDataset:
    """Load a dataset by name or path (see the module docstring); ``split`` is ``train`` or ``test``.

    ``root`` (default ``$DNAS_DATA`` or ``~/.cache/dnas/data``) holds downloaded CIFAR folders and the
    cache of decoded image folders. ``split`` is ignored for image folders and zips.
    """
    if split not in _SPLITS:
        raise DnasError(f"Unknown split {split!r}: use 'train' or 'test'.")
    data_root = _resolve_root(root)
    if spec == "digits":
        return _load_digits(split)
    if spec in DOWNLOADS:
        folder = data_root / DOWNLOADS[spec].folder
        if not folder.is_dir():
            if not download:
                raise DnasError(
                    f"{spec} is not in {folder}: pass --download (download=True) to fetch it, or give "
                    f"the path of a {DOWNLOADS[spec].folder} folder instead."
                )
            _download(spec, data_root)
        return _load_cifar(folder, spec, split)

    path = Path(spec).expanduser()
    if not path.exists():
        raise DnasError(f"No dataset named or found at {spec!r}: give {_ACCEPTED}.")
    path = path.resolve()
    if path.is_dir():
        return _load_directory(path, split, data_root)
    lower = path.name.lower()
    if lower.endswith(".zip"):
        return _cached(path, data_root, lambda: _decode_zip(path))
    if lower.endswith((".csv", ".csv.gz")):
        return _load_csv(path, split)
    raise DnasError(f"Cannot read {path} as a dataset: give {_ACCEPTED}.")


def _resolve_root(root: str | None) -> Path:
    if root is None:
        root = os.environ.get("DNAS_DATA") or "~/.cache/dnas/data"
    return Path(root).expanduser()


def _load_directory(path: Path, split: str, data_root: Path) -> ImageDataset:
    """Dispatch a folder: CIFAR pickles (itself or a child), IDX files, or an image folder."""
    for name, download in DOWNLOADS.items():
        for folder in (path, path / download.folder):
            marker = _CIFAR_FILES[name]["meta"] + _CIFAR_FILES[name]["test"]
            if folder.is_dir() and all((folder / f).is_file() for f in marker):
                return _load_cifar(folder, name, split)
    if _idx_file(path, "train", "images") or _idx_file(path, "t10k", "images"):
        return _load_idx(path, split)
    return _cached(path, data_root, lambda: _decode_folder(path))


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
    if values.min() < 0 or values.max() > pixel_max or labels.min() < 0:
        raise DnasError(
            f"{source} has pixels outside 0..{pixel_max} or negative labels: check the file format."
        )
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
        raise DnasError(f"Cannot parse {source} as a CSV of integers ({e}): check the file.") from e
    if rows.size == 0:
        raise DnasError(f"{source} has no rows: check the file.")
    return rows


def _load_digits(split: str) -> ImageDataset:
    resource = importlib.resources.files("dnas.data") / "assets" / "digits.csv.gz"
    with resource.open("rb") as raw, gzip.open(raw) as handle:
        rows = _read_csv(handle, "the embedded digits data")
    return _from_rows(rows, 16, "digits", split, "the embedded digits data")


def _load_csv(path: Path, split: str) -> ImageDataset:
    name = path.name[: -len(".csv.gz")] if path.name.lower().endswith(".gz") else path.stem
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
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


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            obj = _SafeUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise DnasError(
            f"Cannot read the CIFAR file {path} ({e}): delete the folder and download it again."
        ) from e
    if not isinstance(obj, dict):
        raise DnasError(
            f"The CIFAR file {path} does not hold a dict: delete the folder and download it again."
        )
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _load_cifar(folder: Path, name: str, split: str) -> ImageDataset:
    files = _CIFAR_FILES[name]
    for f in files["meta"] + files[split]:
        if not (folder / f).is_file():
            raise DnasError(f"{folder} lacks the file {f}: delete the folder and download {name} again.")
    meta = _read_pickle(folder / files["meta"][0])
    label_key, names_key = (
        ("labels", "label_names") if name == "cifar10" else ("fine_labels", "fine_label_names")
    )
    images, labels = [], []
    for f in files[split]:
        batch = _read_pickle(folder / f)
        try:
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (KeyError, ValueError) as e:
            raise DnasError(f"The CIFAR file {folder / f} is malformed ({e}): download {name} again.") from e
    try:
        classes = [str(c) for c in meta[names_key]]
    except KeyError as e:
        raise DnasError(f"The CIFAR meta file in {folder} lacks {e}: download {name} again.") from e
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
        if candidate.is_file():
            return candidate
    return None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as e:
        raise DnasError(f"Cannot read {path} ({e}): check or replace the file.") from e
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


def _load_idx(folder: Path, split: str) -> ImageDataset:
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


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in _IMAGE_EXTENSIONS and not Path(name).name.startswith(".")


def _decode_folder(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DnasError(f"{path} has no class subfolders: put the images of each class in its own subfolder.")
    items = []
    for label, cls in enumerate(classes):
        files = sorted(f for f in (path / cls).iterdir() if f.is_file() and _is_image(f.name))
        if not files:
            raise DnasError(f"The class folder {path / cls} has no images: remove it or add images.")
        items += [(str(f), label, f.read_bytes) for f in files]
    return (*_decode_images(items), classes)


def _decode_zip(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DnasError(f"Cannot open {path} as a zip file ({e}): check or replace the file.") from e
    with archive:
        members = [
            m.filename
            for m in archive.infolist()
            if not m.is_dir() and _is_image(m.filename) and not m.filename.startswith("__MACOSX/")
        ]
        if not members:
            raise DnasError(f"{path} contains no images: expected <class>/<image> members.")
        parts = [m.split("/") for m in members]
        depths = {len(p) for p in parts}
        if depths == {3} and len({p[0] for p in parts}) == 1:
            parts = [p[1:] for p in parts]
        elif depths == {1}:
            raise DnasError(f"the images in {path} are not in class folders: expected <class>/<image> members, "
                            "optionally under one top-level folder")
        elif depths != {2}:
            odd = next((m for m, p in zip(members, parts, strict=True) if len(p) != len(parts[0])), members[0])
            raise DnasError(
                f"{path} mixes layouts (e.g. member {odd!r}): expected <class>/<image>, optionally under "
                "one top-level folder."
            )
        classes = sorted({p[0] for p in parts})
        index = {c: i for i, c in enumerate(classes)}
        order = sorted(range(len(members)), key=lambda i: (parts[i][0], parts[i][1]))
        items = [
            (f"{path}:{members[i]}", index[parts[i][0]], _zip_reader(archive, members[i])) for i in order
        ]
        return (*_decode_images(items), classes)


def _zip_reader(archive: zipfile.ZipFile, member: str) -> Callable[[], bytes]:
    return lambda: archive.read(member)


def _decode_images(items: list[tuple[str, int, Callable[[], bytes]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``(name, label, read_bytes)`` items into ``(N, C, H, W)`` uint8 images and labels."""
    from PIL import Image, UnidentifiedImageError

    arrays: np.ndarray | None = None
    gray = np.ones(len(items), dtype=bool)
    for i, (name, _, read) in enumerate(items):
        try:
            with Image.open(io.BytesIO(read())) as img:
                img.load()
                gray[i] = img.mode in _GRAY_MODES
                rgb = img.convert("L" if gray[i] else "RGB")
        except (OSError, UnidentifiedImageError, zipfile.BadZipFile) as e:
            raise DnasError(f"Cannot decode the image {name} ({e}): remove or replace it.") from e
        if arrays is None:
            arrays = np.empty((len(items), rgb.height, rgb.width, 3), dtype=np.uint8)
        elif arrays.shape[1:3] != (rgb.height, rgb.width):
            raise DnasError(
                f"The image {name} is {rgb.width}x{rgb.height} but the first one is "
                f"{arrays.shape[2]}x{arrays.shape[1]}: "
                "all images must share one size, resize them first."
            )
        pixels = np.asarray(rgb)
        arrays[i] = pixels[..., None] if gray[i] else pixels
    assert arrays is not None
    images = torch.from_numpy(arrays[..., :1] if gray.all() else arrays).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
    return images, labels


def _cache_key(path: Path) -> str:
    """sha1 of the absolute path, modification time and size (of every image, for a folder)."""
    path = path.resolve()
    parts = [f"v{_CACHE_VERSION}", str(path)]
    entries: Iterable[Path] = [path]
    if path.is_dir():
        entries = sorted(p for p in path.glob("*/*") if _is_image(p.name))
    for p in entries:
        st = p.stat()
        parts.append(f"{p.relative_to(path) if p != path else ''}|{st.st_mtime_ns}|{st.st_size}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _cached(
    path: Path, root: Path, decode: Callable[[], tuple[torch.Tensor, torch.Tensor, list[str]]]
) -> ImageDataset:
    """Decode an image folder or zip, or reuse its decoded copy in ``root/cache``."""
    name = path.name[: -len(".zip")] if path.name.lower().endswith(".zip") else path.name
    cache = root / "cache" / f"{_cache_key(path)}.pt"
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
                f"Ignoring the unreadable cache {cache} ({e}); decoding {path} again.", stacklevel=3
            )
    images, labels, classes = decode()
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
