"""Seeded index splits: a train/validation cut, class-balanced subsets and per-class fractions, for
datasets in memory (:class:`ImageDataset`) and streamed ones (:class:`LazyImageDataset`) alike."""

from __future__ import annotations

import dataclasses

import torch

from dnas.data.datasets import ImageDataset
from dnas.data.streamed import LazyImageDataset
from dnas.errors import DnasError

#: a dataset in memory or streamed: both have labels, classes, channels, image_size, mean, std, split
Images = ImageDataset | LazyImageDataset


def split_indices(n: int, train_portion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into two disjoint random parts of ``round(n * train_portion)`` and the rest.

    The permutation comes from a ``torch.Generator`` seeded with ``seed``, so it is reproducible.
    """
    if not 0 < train_portion < 1:
        raise DnasError(
            f"train_portion must lie strictly between 0 and 1, got {train_portion}: use e.g. 0.5."
        )
    cut = round(n * train_portion)
    if cut == 0 or cut == n:
        raise DnasError(
            f"Splitting {n} samples with train_portion={train_portion} leaves one part empty: "
            "use more data or a portion closer to 0.5."
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    return order[:cut], order[cut:]


def stratified_subset(
    labels: torch.Tensor, *, per_class: int | None = None, fraction: float | None = None, seed: int = 0
) -> torch.Tensor:
    """Sorted indices of a random class-balanced subset of ``labels``.

    Give exactly one of ``per_class`` (that many samples of each class, or all of a smaller class) or
    ``fraction`` (that share of each class, at least one sample).
    """
    if (per_class is None) == (fraction is None):
        raise DnasError("Give exactly one of per_class or fraction to take a stratified subset.")
    if per_class is not None and per_class < 1:
        raise DnasError(f"per_class must be at least 1, got {per_class}.")
    if fraction is not None and not 0 < fraction <= 1:
        raise DnasError(f"fraction must lie in (0, 1], got {fraction}.")
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        if per_class is not None:
            take = per_class
        else:
            assert fraction is not None  # exactly one of the two is given (checked above)
            take = max(1, round(len(members) * fraction))
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(chosen).sort().values


def take(data: Images, keep: torch.Tensor, split: tuple[torch.Tensor, torch.Tensor] | None = None) -> Images:
    """The images of ``data`` at the sorted positions ``keep``, with the predefined ``split`` (positions in
    the result) or none."""
    if isinstance(data, LazyImageDataset):
        return data.subset(keep).with_split(split)
    out = ImageDataset.from_tensors(data.images[keep], data.labels[keep], data.classes, data.name)
    return dataclasses.replace(out, split=split, loading=data.loading)


def class_balanced(data: Images, limit: int | None, seed: int) -> Images:
    """At most about ``limit`` images of ``data``, the same random share of every class (seeded);
    ``data`` itself when ``limit`` is None or not below its size. A predefined split keeps the same
    share of each class in each of its two parts."""
    if not limit or limit >= len(data):
        return data
    fraction = limit / len(data)
    if data.split is None:
        return take(data, stratified_subset(data.labels, fraction=fraction, seed=seed))
    parts = [part[stratified_subset(data.labels[part], fraction=fraction, seed=seed)] for part in data.split]
    return with_parts(data, parts[0], parts[1])


def with_parts(data: Images, train: torch.Tensor, val: torch.Tensor) -> Images:
    """``data`` cut to the union of two disjoint index sets, which become its predefined split."""
    keep = torch.cat([train, val]).sort().values
    positions = (torch.searchsorted(keep, train.sort().values), torch.searchsorted(keep, val.sort().values))
    return take(data, keep, positions)


def class_fractions(data: Images, train_fraction: float, val_fraction: float, seed: int) -> Images:
    """PC-DARTS' ImageNet search subset: ``train_fraction`` of every class for the weights and a disjoint
    ``val_fraction`` for the architecture (each at least one image per class), drawn with ``seed``; the
    dataset cut to them, with them as its predefined split."""
    if not (0 < train_fraction < 1 and 0 < val_fraction < 1 and train_fraction + val_fraction <= 1):
        raise DnasError(f"train_fraction and val_fraction must be positive and sum to at most 1, got "
                        f"{train_fraction} and {val_fraction}")
    labels = data.labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        if len(members) < 2:
            raise DnasError(f"class {data.classes[int(c)]!r} of {data.name} has {len(members)} image; per-class "
                            "fractions need at least two images of every class")
        order = members[torch.randperm(len(members), generator=generator)]
        n_train = max(1, round(len(members) * train_fraction))
        n_val = max(1, min(round(len(members) * val_fraction), len(members) - n_train))
        train.append(order[:n_train])
        val.append(order[n_train:n_train + n_val])
    return with_parts(data, torch.cat(train), torch.cat(val))


def search_split(data: Images, train_portion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The weights' and the architecture's indices of a search: the dataset's predefined split, else a
    seeded random cut of ``train_portion`` (:func:`split_indices`)."""
    if data.split is not None:
        return data.split
    return split_indices(len(data.labels), train_portion, seed)
