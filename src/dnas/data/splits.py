"""Seeded index splits: a train/validation cut and small class-balanced subsets."""

from __future__ import annotations

import torch

from dnas.data.datasets import ImageDataset
from dnas.errors import DnasError


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


def class_balanced(data: ImageDataset, limit: int | None, seed: int) -> ImageDataset:
    """At most about ``limit`` images of ``data``, the same random share of every class (seeded);
    ``data`` itself when ``limit`` is None or not below its size."""
    if not limit or limit >= len(data):
        return data
    keep = stratified_subset(data.labels, fraction=limit / len(data), seed=seed)
    return ImageDataset.from_tensors(data.images[keep], data.labels[keep], data.classes, data.name)
