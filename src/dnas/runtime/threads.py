"""The torch thread count of a process (``--threads N``)."""

from __future__ import annotations

from dnas.runtime.resources import check_threads


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch threads in this process (None: keep torch's default)."""
    if threads is None:
        return
    check_threads(threads)
    import torch

    torch.set_num_threads(threads)
