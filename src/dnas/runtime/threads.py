"""The torch thread count of a process (``--threads N``)."""

from __future__ import annotations

from dnas.errors import DnasError


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch threads in this process (None: keep torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise DnasError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
