"""Resources checked before they are taken: memory for a network, and the limits of counts a user gives.

:func:`refuse_unless_fits` compares an estimate of the memory a run needs with what the device has
free and stops with one sentence naming both when the estimate does not fit. The estimates are
lower bounds (weights, their gradients and optimizer buffers, and the op outputs of one forward
pass that backward keeps), so that a run refused here could not have run; a run that passes may
still need more.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from dnas.errors import DnasError

GB = 1 << 30
#: the largest seed: 32 bits, so that the seeds derived from it (a few times it, plus a few) fit in 64
MAX_SEED = 2**32 - 1
#: the largest thread count a process may ask for (more than this only thrashes: torch's own pools
#: are sized for the cores there are)
MAX_THREADS = 1024


def available_bytes(device: torch.device) -> int | None:
    """The memory free for a new allocation on ``device`` (None when it cannot be told)."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gigabytes(n: float) -> str:
    return f"{n / GB:,.1f} GB" if n >= GB / 10 else f"{n / (1 << 20):,.0f} MB"


def refuse_unless_fits(needed: float, what: str, advice: str, device: torch.device) -> None:
    """One sentence when ``needed`` bytes exceed what ``device`` has available."""
    free = available_bytes(device)
    if free is not None and needed > free:
        raise DnasError(f"{what} needs at least {gigabytes(needed)} of memory and {device.type} has "
                        f"{gigabytes(free)} available; {advice}")


def parameter_bytes(build: type[nn.Module] | object, *args: object, **kwargs: object) -> int:
    """Bytes of the float32 parameters of ``build(*args, **kwargs)``, built on the meta device (no
    memory taken, nothing random drawn)."""
    with torch.device("meta"):
        module = build(*args, **kwargs)  # type: ignore[operator]
    return 4 * sum(p.numel() for p in module.parameters())


def check_threads(threads: object, what: str = "--threads") -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise DnasError(f"{what} must be an integer from 1 to {MAX_THREADS}, got {str(threads)[:30]}")
