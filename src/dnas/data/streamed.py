"""Datasets read lazily, decoded in ``DataLoader`` workers, and their resumable batch stream.

:class:`LazyImageDataset` is an image folder, zip or set of tar shards (a
:class:`~dnas.data.listing.Listing`) whose images are decoded only when a batch needs them, each
to ``image_size x image_size``:

* a plain image: resized (antialiased bilinear, as :meth:`ImageDataset.resized` does in memory),
  after a centred square crop of ``crop_fraction`` of its shorter side when that is below 1 (the
  evaluation crop of ImageNet training, 224 of 256 = 0.875);
* a training image with the Inception crop: the box is drawn on the *original* image (as DARTS'
  ImageNet script does with torchvision's ``RandomResizedCrop``) from a generator seeded with
  ``(seed, epoch, index)``, then resized.

Channels (1 when every image of a sample of the dataset is grayscale, else 3) and the native size
come from the headers of up to 32 images spread over the dataset; the per-channel mean and standard
deviation from up to 512 decoded images (all of them in a smaller dataset, which then gives the
exact statistics of the in-memory dataset).

:class:`StreamedBatches` has the interface of :class:`~dnas.data.stream.BatchStream` (``__next__``,
``batches_per_epoch``, ``state_dict``/``load_state_dict``). Epoch ``e`` visits its indices in the
order drawn from ``(seed, e)`` (the in-memory stream's order); ``workers`` processes decode whole
batches ahead (``prefetch`` each), into pinned memory when the device is a GPU, and the next batch
is copied to the device while the current one is used. Augmentation other than the Inception crop
(padded crop, flip, colour jitter, cutout) runs on the batch on the device, drawing from a generator
seeded with ``(seed, epoch, position)``. No randomness comes from a worker's state, so the batches
do not depend on the number of workers, and ``(epoch, position)`` is the whole state of the stream:
a resumed stream yields exactly the batches the interrupted one would have.

Workers ignore Ctrl-C (the main process saves, then stops them) and die with their parent (Linux:
``PR_SET_PDEATHSIG``; elsewhere PyTorch's watchdog stops them within seconds), so a killed run
leaves no orphans.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dnas.data.augment import Augment, inception_boxes
from dnas.data.datasets import GRAY_MODES, ChannelMoments, decode_image, resize_images
from dnas.data.limits import open_image
from dnas.data.listing import Listing
from dnas.data.stream import batching, derived_seed, epoch_order
from dnas.errors import DnasError

HEADER_SAMPLE = 32  # images whose headers decide the channels and the native size
STATS_SAMPLE = 512  # images decoded for the mean and standard deviation
PREFETCH = 2  # batches each worker decodes ahead


def _spread(count: int, length: int) -> list[int]:
    """``count`` positions spread evenly over ``range(length)`` (all of them when it is shorter)."""
    if length <= count:
        return list(range(length))
    return sorted({round(i * (length - 1) / (count - 1)) for i in range(count)})


class LazyImageDataset:
    """Labelled images read from a listing when needed (see the module docstring).

    ``split`` and ``loading`` as for :class:`~dnas.data.datasets.ImageDataset`.
    """

    def __init__(self, listing: Listing, *, entries: np.ndarray | None = None, image_size: int | None = None,
                 crop_fraction: float = 1.0, loading: dict[str, Any] | None = None):
        self.listing = listing
        self.entries = np.arange(len(listing), dtype=np.int64) if entries is None else entries
        self.labels = torch.from_numpy(listing.labels[self.entries])
        self.classes = list(listing.classes)
        self.name = listing.name
        self.source = listing.source
        self.crop_fraction = crop_fraction
        self.split: tuple[torch.Tensor, torch.Tensor] | None = None
        self.loading: dict[str, Any] = dict(loading or {"mode": "stream"})
        self._size = image_size
        self._probe: tuple[int, set[tuple[int, int]]] | None = None
        self._stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
        self._evaluation_loaders: dict[tuple, DataLoader] = {}  # kept for the next evaluation (persistent workers)

    # ----- what it holds -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _probed(self) -> tuple[int, set[tuple[int, int]]]:
        """Channels and the set of ``(width, height)`` of the sampled images' headers."""
        if self._probe is None:
            gray, sizes = True, set()
            for position in _spread(HEADER_SAMPLE, len(self)):
                name = self.describe(position)
                with open_image(self.listing.read(int(self.entries[position])), name) as img:
                    gray &= img.mode in GRAY_MODES
                    sizes.add(img.size)
            self._probe = (1 if gray else 3, sizes)
        return self._probe

    @property
    def channels(self) -> int:
        return self._probed()[0]

    @property
    def native_sizes(self) -> set[tuple[int, int]]:
        """The ``(width, height)`` of the sampled images."""
        return self._probed()[1]

    @property
    def image_size(self) -> int:
        """The side of every image it yields: the size it was resized to, else the images' own height
        when the sampled images share one size."""
        if self._size is None:
            sizes = self.native_sizes
            if len(sizes) > 1:
                shown = " and ".join(f"{w}x{h}" for w, h in sorted(sizes)[:2])
                raise DnasError(f"the images of {self.source} differ in size (e.g. {shown}): set image_size to the "
                                "side they should be resized to (224 for ImageNet)")
            self._size = next(iter(sizes))[1]
        return self._size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.statistics()[0]

    @property
    def std(self) -> tuple[float, ...]:
        return self.statistics()[1]

    def statistics(self, workers: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation of the images / 255 as yielded (without the Inception
        crop), from up to :data:`STATS_SAMPLE` images spread over the dataset."""
        if self._stats is None:
            positions = _spread(STATS_SAMPLE, len(self))
            keys = [(p, None) for p in positions]
            chunks = [keys[i:i + 64] for i in range(0, len(keys), 64)]
            loader = _loader(self, chunks, workers=min(workers, len(chunks)), pin=False, seed=0)
            moments = ChannelMoments(self.channels)
            for batch in loader:
                moments.add(_checked(batch)[0])
            self._stats = moments.stats()
        return self._stats

    def describe(self, position: int) -> str:
        """The name of image ``position`` (for messages)."""
        return self.listing.describe(int(self.entries[position]))

    def same_images(self, other: object) -> bool:
        """Whether ``other`` reads the same images of the same source."""
        return (isinstance(other, LazyImageDataset) and other.listing.source == self.listing.source
                and np.array_equal(other.entries, self.entries))

    # ----- derived datasets ----------------------------------------------------------------------
    def subset(self, keep: torch.Tensor) -> LazyImageDataset:
        """The images at positions ``keep`` (a predefined split does not carry over)."""
        return LazyImageDataset(self.listing, entries=self.entries[keep.cpu().numpy()], image_size=self._size,
                                crop_fraction=self.crop_fraction, loading=self.loading)

    def resized(self, size: int, crop_fraction: float = 1.0) -> LazyImageDataset:
        """The same images yielded at ``size x size`` (after a centred crop of ``crop_fraction``)."""
        if size <= 0:
            raise DnasError(f"Image size must be positive, got {size}: pick a size such as 32.")
        out = LazyImageDataset(self.listing, entries=self.entries, image_size=size, crop_fraction=crop_fraction,
                               loading=self.loading)
        out._probe, out.split = self._probe, self.split  # the same images: their headers need no second reading
        return out

    def with_split(self, split: tuple[torch.Tensor, torch.Tensor] | None) -> LazyImageDataset:
        """The same dataset with the predefined search split ``split`` (positions), or none."""
        out = LazyImageDataset(self.listing, entries=self.entries, image_size=self._size,
                               crop_fraction=self.crop_fraction, loading=self.loading)
        out._probe, out._stats, out.split = self._probe, self._stats, split
        return out

    # ----- decoding ------------------------------------------------------------------------------
    def load(self, position: int, crop_seed: int | None = None) -> torch.Tensor:
        """Image ``position`` as uint8 ``(C, S, S)``: resized (plain), or an Inception crop drawn from
        ``crop_seed`` and resized (see the module docstring)."""
        pixels, gray = decode_image(self.listing.read(int(self.entries[position])), self.describe(position))
        channels, size = self.channels, self.image_size
        if channels == 1 and not gray:
            pixels = (pixels.astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)
            gray = True
        image = torch.from_numpy(pixels)
        image = image.unsqueeze(0) if gray else image.permute(2, 0, 1)
        if gray and channels == 3:
            image = image.expand(3, -1, -1)
        height, width = image.shape[1:]
        if crop_seed is not None:
            generator = torch.Generator().manual_seed(crop_seed)
            x0, y0, cw, ch = (int(v) for v in (t.item() for t in inception_boxes(1, height, width, generator)))
            return resize_images(image[None, :, y0:y0 + ch, x0:x0 + cw], size)[0]
        if self.crop_fraction == 1 and (height, width) == (size, size):
            return image.contiguous()
        return resize_images(image[None], size, self.crop_fraction)[0]


# ------------------------------------------------------------------------------------------- workers


@dataclasses.dataclass
class _Failure:
    """A user error met in a worker, passed back as data so that it stays one sentence."""

    message: str


class _Decoder(Dataset):
    """The DataLoader's dataset: key ``(position, crop seed or None)`` -> ``(uint8 image, label)``."""

    def __init__(self, data: LazyImageDataset):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int | None]) -> tuple[torch.Tensor, int] | _Failure:
        position, crop_seed = key
        try:
            return self.data.load(position, crop_seed), int(self.data.labels[position])
        except DnasError as e:
            return _Failure(str(e))


def _collate(items: list[tuple[torch.Tensor, int] | _Failure]) -> tuple[torch.Tensor, torch.Tensor] | _Failure:
    images, labels = [], []
    for item in items:
        if isinstance(item, _Failure):
            return item
        images.append(item[0])
        labels.append(item[1])
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _checked(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, _Failure):
        raise DnasError(batch.message)
    return batch


def _worker_init(worker_id: int, parent: int) -> None:
    """Ignore Ctrl-C (it reaches the whole process group; the main process stops the run, then its
    workers) and die with the parent process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: killed when the parent dies
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _loader(data: LazyImageDataset, batches: Any, *, workers: int, pin: bool, seed: int,
            persistent: bool = False) -> DataLoader:
    """A DataLoader decoding ``batches`` (an iterable of key lists) of ``data`` in ``workers`` processes."""
    return DataLoader(
        _Decoder(data), batch_sampler=batches, num_workers=workers, collate_fn=_collate, pin_memory=pin,
        prefetch_factor=PREFETCH if workers else None, persistent_workers=persistent and workers > 0,
        worker_init_fn=functools.partial(_worker_init, parent=os.getpid()) if workers else None,
        # the loader's own seeds come from here, not from (and without advancing) the global generator
        generator=torch.Generator().manual_seed(seed),
    )


class _EpochBatches:
    """The key lists of the batches from ``(epoch, position)`` on, epoch after epoch, without end."""

    def __init__(self, indices: torch.Tensor, batch_size: int, per_epoch: int, seed: int, crop: bool,
                 epoch: int, position: int):
        self.indices, self.batch_size, self.per_epoch = indices, batch_size, per_epoch
        self.seed, self.crop, self.epoch, self.position = seed, crop, epoch, position

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        epoch, position = self.epoch, self.position
        while True:
            order = epoch_order(self.indices, self.seed, epoch).tolist()
            for b in range(position, self.per_epoch):
                chosen = order[b * self.batch_size:(b + 1) * self.batch_size]
                yield [(i, derived_seed(self.seed, "crop", epoch, i) if self.crop else None) for i in chosen]
            epoch, position = epoch + 1, 0


class StreamedBatches:
    """Endless stream of (images float normalized, labels) batches over ``indices`` of a lazy dataset,
    decoded by ``workers`` processes (see the module docstring)."""

    def __init__(self, data: LazyImageDataset, indices: torch.Tensor, batch_size: int, *, seed: int,
                 augment: Augment | None, device: torch.device | str = "cpu", drop_last: bool = True,
                 part: str = "selection", workers: int = 0):
        self.indices, self.batches_per_epoch = batching(indices, batch_size, drop_last, data.name, part)
        if workers < 0:
            raise DnasError(f"workers must be >= 0 (0: decode in the main process), got {workers}")
        self.data, self.batch_size, self.seed, self.workers = data, batch_size, seed, workers
        self.device = torch.device(device)
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0
        self.crop = augment is not None and augment.resized_crop  # drawn on the original image, in the worker
        self.augment = augment
        if augment is not None and self.crop:
            self.augment = dataclasses.replace(augment, resized_crop=False)
        mean, std = data.statistics(workers)
        shape = (1, -1, 1, 1)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(shape).clamp(min=1e-8)
        self._cuda = self.device.type == "cuda"
        self._iterator: Iterator[Any] | None = None
        self._ahead: tuple[torch.Tensor, torch.Tensor] | None = None
        self._copy_stream: Any = None

    # ----- the batches ---------------------------------------------------------------------------
    def _fetch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next decoded batch, on its way to the device (a side stream copies it on a GPU)."""
        if self._iterator is None:
            batches = _EpochBatches(self.indices, self.batch_size, self.batches_per_epoch, self.seed, self.crop,
                                    self.epoch, self.position)
            self._iterator = iter(_loader(self.data, batches, workers=self.workers, pin=self._cuda,
                                          seed=derived_seed(self.seed, "loader", self.epoch, self.position)))
        images, labels = _checked(next(self._iterator))
        if not self._cuda:
            return images.to(self.device), labels.to(self.device)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            images, labels = self._ahead if self._ahead is not None else self._fetch()
            self._ahead = None
            if self._cuda:  # wait for the copy, then let the next batch's copy run beside this step
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(self._copy_stream)
                images.record_stream(current)
                labels.record_stream(current)
                self._ahead = self._fetch()
        except BaseException:
            self.close()
            raise
        x = (images.float().div_(255) - self._mean).div_(self._std)
        if self.augment is not None:
            generator = torch.Generator().manual_seed(derived_seed(self.seed, "augment", self.epoch, self.position))
            x = self.augment(x, generator, self._mean, self._std)
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
        return x, labels

    def close(self) -> None:
        """Stop the workers (a later batch starts them again)."""
        self._iterator = None  # the DataLoader iterator shuts its workers down when it is dropped
        self._ahead = None

    # ----- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Epoch and position (ints only): all the randomness of a batch is derived from them."""
        return {"streamed": True, "epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_indices": len(self.indices), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where the stream that produced ``state`` stopped."""
        if not state.get("streamed"):
            raise DnasError("The saved batch stream held its images in memory but this run streams them: resume "
                            "with data_mode=memory, as the interrupted run chose.")
        for key, mine in (("seed", self.seed), ("num_indices", len(self.indices)), ("batch_size", self.batch_size)):
            if int(state[key]) != mine:
                raise DnasError(
                    f"The saved batch stream has {key}={int(state[key])} but this one has {mine}: "
                    "resume with the same data, seed and batch size as the interrupted run."
                )
        position = int(state["position"])
        if not 0 <= position < self.batches_per_epoch:
            raise DnasError(f"The saved batch stream position {position} is out of range: the state is corrupt.")
        self.close()
        self.epoch, self.position = int(state["epoch"]), position


def lazy_evaluation_batches(data: LazyImageDataset, first: int, last: int, batch_size: int, *, device: torch.device,
                      workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 images and labels of positions ``first .. last - 1`` in order, ``batch_size`` at a time, on
    ``device``. The loader (and its workers, persistent) is kept on the dataset for the next call."""
    key = (first, last, batch_size, workers, device.type == "cuda")
    cache = data._evaluation_loaders
    if key not in cache:
        chunks = [[(i, None) for i in range(s, min(last, s + batch_size))] for s in range(first, last, batch_size)]
        cache[key] = _loader(data, chunks, workers=min(workers, len(chunks)), pin=device.type == "cuda", seed=0,
                             persistent=True)
    for batch in cache[key]:
        images, labels = _checked(batch)
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
