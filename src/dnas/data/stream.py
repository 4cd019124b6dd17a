"""A persistent, exactly resumable stream of training batches."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch

from dnas.data.augment import Augment
from dnas.data.datasets import ImageDataset
from dnas.errors import DnasError


def derived_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (stable across runs and platforms)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_order(indices: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """``indices`` in the order epoch ``epoch`` of a stream seeded with ``seed`` visits them."""
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
    return indices[torch.randperm(len(indices), generator=generator)]


def batching(indices: torch.Tensor, batch_size: int, drop_last: bool, name: str, part: str) -> tuple[torch.Tensor, int]:
    """``indices`` as a flat int64 CPU tensor and the number of batches of ``batch_size`` per epoch over them;
    one sentence when they hold fewer images than one batch (``name``: the dataset, ``part``: what they select)."""
    flat = torch.as_tensor(indices, dtype=torch.int64).flatten().cpu()
    if batch_size < 1:
        raise DnasError(f"batch_size must be at least 1, got {batch_size}.")
    if batch_size > len(flat):
        raise DnasError(f"the {part} holds {len(flat)} images of {name}, fewer than batch_size {batch_size}: "
                        "lower the batch size or use more data (max_images).")
    return flat, len(flat) // batch_size if drop_last else math.ceil(len(flat) / batch_size)


class BatchStream:
    """Endless stream of (images float normalized, labels) batches over `indices` of a dataset.

    Epoch ``e`` visits ``indices`` in an order drawn from a generator seeded with ``(seed, e)``; the
    augmentation draws from one persistent generator. :meth:`state_dict` captures the epoch, the
    position in it and that generator, so a restored stream yields exactly the batches the original
    would have. After the last batch of an epoch the stream rolls over to the next epoch.
    """

    def __init__(
        self,
        data: ImageDataset,
        indices: torch.Tensor,
        batch_size: int,
        *,
        seed: int,
        augment: Augment | None,
        device: torch.device | str = "cpu",
        drop_last: bool = True,
        part: str = "selection",
    ) -> None:
        """``part`` names what ``indices`` select, for error messages (e.g. "val part of the search split")."""
        self.indices, self.batches_per_epoch = batching(indices, batch_size, drop_last, data.name, part)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0
        self._images = data.images.to(self.device)
        self._labels = data.labels.to(self.device)
        shape = (1, -1, 1, 1)
        self._mean = torch.tensor(data.mean, dtype=torch.float32, device=self.device).view(shape)
        self._std = (
            torch.tensor(data.std, dtype=torch.float32, device=self.device).view(shape).clamp(min=1e-8)
        )
        self._generator = torch.Generator().manual_seed(derived_seed(seed, "augment"))
        self._order: torch.Tensor | None = None
        self._order_epoch = -1

    def _epoch_order(self) -> torch.Tensor:
        if self._order_epoch != self.epoch:
            self._order = epoch_order(self.indices, self.seed, self.epoch).to(self.device)
            self._order_epoch = self.epoch
        assert self._order is not None
        return self._order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.position * self.batch_size
        idx = self._epoch_order()[start : start + self.batch_size]
        images = (self._images[idx].float().div_(255) - self._mean).div_(self._std)
        if self.augment is not None:
            images = self.augment(images, self._generator, self._mean, self._std)
        labels = self._labels[idx]
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
        return images, labels

    def state_dict(self) -> dict:
        """Epoch, position and augmentation generator state (ints and tensors only)."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "generator": self._generator.get_state(),
            "seed": self.seed,
            "num_indices": len(self.indices),
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where the stream that produced ``state`` stopped."""
        if state.get("streamed"):
            raise DnasError("The saved batch stream read its images lazily (streamed) but this run holds them in "
                            "memory: resume with data_mode=stream, as the interrupted run chose.")
        for key, mine in (
            ("seed", self.seed),
            ("num_indices", len(self.indices)),
            ("batch_size", self.batch_size),
        ):
            if key in state and int(state[key]) != mine:
                raise DnasError(
                    f"The saved batch stream has {key}={int(state[key])} but this one has {mine}: "
                    "resume with the same data, seed and batch size as the interrupted run."
                )
        position = int(state["position"])
        if not 0 <= position < self.batches_per_epoch:
            raise DnasError(
                f"The saved batch stream position {position} is out of range: the state is corrupt."
            )
        self.epoch = int(state["epoch"])
        self.position = position
        self._generator.set_state(state["generator"])
