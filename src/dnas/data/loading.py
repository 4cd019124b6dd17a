"""From a dataset name or path to a dataset in memory or streamed, and to its batches.

:func:`load_dataset` reads a name (``digits``, ``cifar10``, ``cifar100``, ``imagenet16-120``) or a
path: an image folder (one subfolder per class), a folder with ``train/`` and ``val/`` (or
``test/``) image folders (ImageNet's layout; the split picks one), a ``.zip`` of an image folder,
WebDataset tar shards (a ``.tar``, a folder of them or ``name-{000..009}.tar``), a CIFAR python
folder, an ImageNet16 folder, a folder of MNIST-style IDX files or a ``.csv[.gz]``.

``mode`` decides where the images live:

* ``memory``: decoded once into one uint8 tensor (cached on disk for folders, zips and shards); the
  fastest, and the only mode for the formats read whole (CIFAR, ImageNet16, IDX, CSV, digits);
* ``stream``: image folders, zips and shards are read lazily and decoded in ``DataLoader``
  workers (:mod:`dnas.data.streamed`); memory is bounded by the batches in flight;
* ``auto`` (the runs' default): memory when the decoded images (``N x 3 x H x W`` bytes, from the
  first image's header) fit half of the memory this process may use
  (:func:`dnas.data.limits.memory_budget`) and the sampled images share one size, else stream.

The choice and its reason are kept in the dataset's ``loading`` (written to ``env.json``).
:func:`batch_stream` builds the resumable stream of either kind, :func:`evaluation_batches`
iterates a test set in order, :func:`load_search_data` builds a search's data with its split (NAS-Bench-201's
split files, PC-DARTS' per-class fractions, or none).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from dnas.data.augment import Augment
from dnas.data.datasets import (
    DOWNLOADS,
    ImageDataset,
    cache_file,
    cifar_folder,
    decode_cached,
    is_idx_folder,
    load_cifar_folder,
    load_csv,
    load_digits,
    load_idx_folder,
    load_named_cifar,
    resolve_root,
)
from dnas.data.imagenet16 import FOLDER as IMAGENET16_FOLDER
from dnas.data.imagenet16 import imagenet16_classes, is_imagenet16_folder, load_imagenet16
from dnas.data.limits import check_fits, memory_budget
from dnas.data.listing import FolderListing, Listing, ZipListing, check_listing_labels
from dnas.data.nb201_splits import check_range, find_split_file
from dnas.data.splits import Images, class_balanced, class_fractions, with_parts
from dnas.data.stream import BatchStream
from dnas.data.streamed import LazyImageDataset, StreamedBatches, lazy_evaluation_batches
from dnas.data.webdataset import TarShardListing, expand_shards
from dnas.errors import DnasError
from dnas.runtime.reading import file_status
from dnas.runtime.resources import format_bytes

MODES = ("auto", "memory", "stream")
SPLITS = ("train", "test")
_ACCEPTED = (
    "a dataset name (digits, cifar10, cifar100, imagenet16-120), or a path to an image folder with one subfolder "
    "per class (or train/ and val/ folders of them), a .zip with that layout, WebDataset .tar shards, a "
    "cifar-10-batches-py / cifar-100-python folder, an ImageNet16 folder, a folder of MNIST IDX files, or a "
    ".csv/.csv.gz of pixel columns followed by the label"
)


def available_datasets() -> list[str]:
    """The dataset names :func:`load_dataset` accepts besides paths."""
    return ["digits", "cifar10", "cifar100", "imagenet16-120"]


def default_workers() -> int:
    """Decoding processes when none are asked for: one fewer than the cores this process may use, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(4, cores - 1))


def load_dataset(spec: str, *, split: str = "train", download: bool = False, root: str | None = None,
                 mode: str = "memory") -> Images:
    """Load a dataset by name or path (see the module docstring); ``split`` is ``train`` or ``test``
    (image folders, zips and shards without ``train/``/``val/`` folders are one split and ignore it).

    ``root`` (default ``$DNAS_DATA`` or ``~/.cache/dnas/data``) holds downloaded CIFAR folders, the
    ``ImageNet16`` folder and the cache of decoded image folders.
    """
    if split not in SPLITS:
        raise DnasError(f"Unknown split {split!r}: use 'train' or 'test'.")
    if mode not in MODES:
        raise DnasError(f"data_mode must be one of {', '.join(MODES)}, got {mode!r}")
    data_root = resolve_root(root)
    if spec == "digits":
        return _whole(lambda: load_digits(split), mode, spec)
    if spec in DOWNLOADS:
        return _whole(lambda: load_named_cifar(spec, split, download, data_root), mode, spec)
    classes = imagenet16_classes(spec)
    if classes is not None:
        folder = data_root / IMAGENET16_FOLDER
        if not is_imagenet16_folder(folder):
            raise DnasError(f"{spec} is not in {folder}: ImageNet16 (train_data_batch_1 .. 10 and val_data, the files "
                            "NAS-Bench-201 uses) cannot be downloaded automatically; put them there or give the "
                            "folder's path as the dataset")
        return _whole(lambda: load_imagenet16(folder, split, classes), mode, spec)
    if "{" in spec:
        shards = expand_shards(spec)
        if shards is not None:
            name = Path(spec).name.split("{")[0].rstrip("-_.") or Path(spec).parent.name
            return _from_listing(TarShardListing(shards, name), data_root, mode)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DnasError(f"No dataset named or found at {spec!r}: give {_ACCEPTED}.")
    if path.is_dir():
        return _load_directory(path.resolve(), split, data_root, mode)
    file_status(path, "dataset file")  # a FIFO or a device would block or never end
    path = path.resolve()
    lower = path.name.lower()
    if lower.endswith(".zip"):
        return _from_listing(ZipListing(path), data_root, mode)
    if lower.endswith(".tar"):
        return _from_listing(TarShardListing([path], path.stem), data_root, mode)
    if lower.endswith((".csv", ".csv.gz")):
        return _whole(lambda: load_csv(path, split), mode, str(path))
    raise DnasError(f"Cannot read {path} as a dataset: give {_ACCEPTED}.")


def _has_subfolders(path: Path) -> bool:
    try:
        return any(e.is_dir() or e.name.endswith(".tar") for e in os.scandir(path))
    except OSError:
        return False


def _load_directory(path: Path, split: str, data_root: Path, mode: str) -> Images:
    """Dispatch a folder: CIFAR pickles (itself or a child), ImageNet16, IDX files, train/ + val/ folders,
    tar shards, or an image folder."""
    found = cifar_folder(path)
    if found is not None:
        return _whole(lambda: load_cifar_folder(found[0], found[1], split), mode, str(path))
    if is_imagenet16_folder(path):
        return _whole(lambda: load_imagenet16(path, split, 120), mode, str(path))
    if is_idx_folder(path):
        return _whole(lambda: load_idx_folder(path, split), mode, str(path))
    if (path / "train").is_dir() and _has_subfolders(path / "train"):
        names = ("train",) if split == "train" else ("val", "test")
        part = next((path / n for n in names if (path / n).is_dir()), None)
        if part is None:
            raise DnasError(f"{path} has a train/ folder but no val/ or test/ folder for the test split: add one or "
                            "give the test images with --test-dataset")
        return _load_directory(part, "train", data_root, mode)
    shards = expand_shards(str(path))
    if shards is not None and not any(e.is_dir() for e in os.scandir(path)):
        return _from_listing(TarShardListing(shards, path.name), data_root, mode)
    return _from_listing(FolderListing(path), data_root, mode)


def _whole(read: Callable[[], ImageDataset], mode: str, what: str) -> ImageDataset:
    """A format read whole: in memory, whatever ``auto`` would pick; refused when streaming is forced."""
    if mode == "stream":
        raise DnasError(f"{what} is in a format read whole into memory (CIFAR, ImageNet16, IDX, CSV, digits); "
                        "data_mode=stream applies to image folders, zips and tar shards: use data_mode=auto or memory")
    data = read()
    data.loading = {"mode": "memory", "reason": "a format read whole", "images": len(data),
                    "bytes": data.images.numel()}
    return data


def _from_listing(listing: Listing, data_root: Path, mode: str) -> Images:
    """An image folder, zip or shards in memory or streamed, as ``mode`` says (see the module docstring)."""
    check_listing_labels(listing.labels, listing.source)
    lazy = LazyImageDataset(listing)
    budget, explained = memory_budget()
    facts: dict[str, Any] = {"images": len(listing), "memory_budget_bytes": budget}
    if mode == "stream":
        lazy.loading = {"mode": "stream", "reason": "data_mode=stream", **facts}
        return lazy
    cache = cache_file(listing, data_root)
    if cache.is_file():  # decoded before: its copy's size is the estimate, no header needs reading
        estimate, shape = cache.stat().st_size, "decoded before"
    else:
        sizes = lazy.native_sizes
        width, height = next(iter(sizes))
        estimate, shape = len(listing) * 3 * width * height, f"{width}x{height}"
        if mode == "auto" and len(sizes) > 1:
            lazy.loading = {"mode": "stream", "reason": "the images differ in size", **facts}
            return lazy
    facts["estimated_bytes"] = estimate
    if mode == "auto" and estimate > budget:
        lazy.loading = {"mode": "stream", "reason": f"about {format_bytes(estimate)} decoded, more than the "
                                                    f"{format_bytes(budget)} a dataset may take ({explained})", **facts}
        return lazy
    check_fits(estimate, f"The {len(listing):,} images of {listing.source} ({shape})", streamable=True)
    data = decode_cached(listing, data_root)
    reason = "data_mode=memory" if mode == "memory" else (
        f"about {format_bytes(estimate)} decoded, within the {format_bytes(budget)} a dataset may take ({explained})")
    data.loading = {"mode": "memory", "reason": reason, **facts}
    return data


def same_images(a: Images, b: Images) -> bool:
    """Whether two datasets hold the same images (a folder given as both the training and the test set)."""
    if isinstance(a, LazyImageDataset) or isinstance(b, LazyImageDataset):
        return isinstance(a, LazyImageDataset) and a.same_images(b)
    return a.images.shape == b.images.shape and torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)


# ----------------------------------------------------------------------------------------- batches


class Batches(Protocol):
    """What a run draws its batches from: :class:`BatchStream` or :class:`StreamedBatches`."""

    batches_per_epoch: int

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def batch_stream(data: Images, indices: torch.Tensor, batch_size: int, *, seed: int, augment: Augment | None,
                 device: torch.device | str = "cpu", drop_last: bool = True, part: str = "selection",
                 workers: int | None = 0) -> Batches:
    """The resumable batch stream over ``indices`` of ``data``: in memory (:class:`BatchStream`) or decoded
    by ``workers`` processes (:class:`StreamedBatches`, None: :func:`default_workers`)."""
    if isinstance(data, LazyImageDataset):
        return StreamedBatches(data, indices, batch_size, seed=seed, augment=augment, device=device,
                               drop_last=drop_last, part=part,
                               workers=default_workers() if workers is None else workers)
    return BatchStream(data, indices, batch_size, seed=seed, augment=augment, device=device, drop_last=drop_last,
                       part=part)


def evaluation_batches(data: Images, first: int, last: int, batch_size: int, *, device: torch.device,
                 workers: int | None = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 images and labels of positions ``first .. last - 1`` of ``data``, in order, on ``device``."""
    if isinstance(data, LazyImageDataset):
        yield from lazy_evaluation_batches(data, first, last, batch_size, device=device,
                                     workers=default_workers() if workers is None else workers)
        return
    for start in range(first, last, batch_size):
        end = min(last, start + batch_size)
        yield data.images[start:end].to(device), data.labels[start:end].to(device)


def describe_loading(data: Images, workers: int | None = None) -> dict[str, Any]:
    """What ``env.json`` records of a dataset: where its images live, why, and how they are read."""
    info = {"dataset": data.name, **data.loading}
    if isinstance(data, LazyImageDataset):
        info["workers"] = default_workers() if workers is None else workers
    return info


# ----------------------------------------------------------------------------------------- search data


def load_search_data(dataset: str, *, download: bool = False, root: str | None = None, mode: str = "auto",
                     max_images: int | None = None, image_size: int | None = None, seed: int = 0,
                     nb201_splits: str | None = None, train_fraction: float | None = None,
                     val_fraction: float | None = None) -> Images:
    """The images a search uses, with its split when one is predefined.

    ``nb201_splits``: a NAS-Bench-201 split file (or AutoDL-Projects' folder of them) for cifar10,
    cifar100 or imagenet16-120 (:mod:`dnas.data.nb201_splits`); ``train_fraction`` and ``val_fraction``:
    PC-DARTS' per-class shares (:func:`dnas.data.splits.class_fractions`); then the class-balanced
    ``max_images`` subset (each part alike) and the resize to ``image_size``.
    """
    data = load_dataset(dataset, split="train", download=download, root=root, mode=mode)
    if nb201_splits is not None:
        data = _nb201_search_data(data, nb201_splits, lambda: load_dataset(dataset, split="test", download=download,
                                                                           root=root, mode=mode))
    elif train_fraction is not None and val_fraction is not None:
        data = class_fractions(data, train_fraction, val_fraction, seed)
    data = class_balanced(data, max_images, seed)
    if image_size and image_size != data.image_size:
        data = data.resized(image_size)
    return data


def _nb201_search_data(train: Images, spec: str, load_test: Callable[[], Images]) -> Images:
    """``train`` with the search split of NAS-Bench-201's split file (see :mod:`dnas.data.nb201_splits`)."""
    split = find_split_file(spec, train.name)
    if not isinstance(train, ImageDataset):
        raise DnasError("NAS-Bench-201's split files apply to its datasets (CIFAR-10, CIFAR-100, ImageNet16-120), "
                        "which are held in memory")
    data: Images
    if not split.uses_test_set:
        assert split.train is not None and split.valid is not None
        what = f"the training set of {train.name}"
        data = with_parts(train, check_range(split.train, len(train), what, split.path),
                          check_range(split.valid, len(train), what, split.path))
        protocol = "weights on its train part, the architecture on its valid part of the training set"
    else:
        test = load_test()
        assert split.xvalid is not None and isinstance(test, ImageDataset)
        xvalid = check_range(split.xvalid, len(test), f"the test set of {train.name}", split.path)
        images = torch.cat([train.images, test.images[xvalid]])
        labels = torch.cat([train.labels, test.labels[xvalid]])
        data = ImageDataset.from_tensors(images, labels, train.classes, train.name)
        data.split = (torch.arange(len(train)), len(train) + torch.arange(len(xvalid)))
        protocol = "weights on the training set, the architecture on the xvalid part of the test set"
    data.loading = {**train.loading, "split": f"NAS-Bench-201 {split.path.name}: {protocol}"}
    if not split.published:
        warnings.warn(f"{split.path} differs from NAS-Bench-201's published {split.path.name} (md5): the search is "
                      "not NAS-Bench-201's protocol", stacklevel=3)
    return data
