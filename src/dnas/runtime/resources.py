"""Resources checked before they are taken: the memory there is (system, cgroup, CUDA device, and
``DNAS_MEMORY_LIMIT`` for datasets), memory for a network, and the limits of counts a user gives.

:func:`refuse_unless_fits` compares an estimate of the memory a run needs with what the device has
free and stops with one sentence naming both when the estimate does not fit. The estimates are
lower bounds (weights, their gradients and optimizer buffers, and the op outputs of one forward
pass that backward keeps), so that a run refused here could not have run; a run that passes may
still need more.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from dnas.errors import DnasError

MEMORY_ENV = "DNAS_MEMORY_LIMIT"
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
#: the largest seed: 32 bits, so that the seeds derived from it (a few times it, plus a few) fit in 64
MAX_SEED = 2**32 - 1
#: the largest thread count a process may ask for (more than this only thrashes: torch's own pools
#: are sized for the cores there are)
MAX_THREADS = 1024


def env_amount(name: str, default: int | None) -> int | None:
    """The amount an environment variable gives (bytes, pixels, ...: a number with an optional K, M, G
    or T suffix, powers of 1024), or ``default`` when it is unset."""
    text = os.environ.get(name, "").strip().upper().removesuffix("B").removesuffix("I")
    if not text:
        return default
    number, unit = (text[:-1], text[-1]) if text[-1] in _SUFFIXES else (text, "")
    try:
        value = int(float(number) * _SUFFIXES[unit])
    except ValueError:
        raise DnasError(f"{name} must be a number with an optional K, M, G or T suffix, "
                        f"got {os.environ[name][:40]!r}") from None
    if value < 1:
        raise DnasError(f"{name} must be positive, got {os.environ[name][:40]!r}")
    return value


def format_bytes(n: float) -> str:
    """``n`` bytes for people, in the units of the environment variables: ``1.9 GiB``, ``640.0 MiB``,
    ``12.0 KiB`` (powers of 1024)."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_room() -> int | None:
    """The memory left under this process's cgroup limit (v2 ``memory.max``, v1 ``limit_in_bytes``)."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and limit < 1 << 60:  # "max" or a huge number: no limit
            return max(limit - (usage or 0), 0)
    return None


def system_memory() -> tuple[int, str] | None:
    """The smaller of the system's available memory and the room left under this process's cgroup
    limit, in bytes, with its name (None when neither can be read)."""
    found = [(v, what) for v, what in ((_meminfo_available(), "available memory"),
                                       (_cgroup_room(), "room under the cgroup limit")) if v is not None]
    return min(found) if found else None


def available_memory() -> tuple[int, str]:
    """The memory this process may use for data, in bytes, and what says so: ``DNAS_MEMORY_LIMIT`` when
    set, else :func:`system_memory`."""
    limit = env_amount(MEMORY_ENV, None)
    if limit is not None:
        return limit, MEMORY_ENV
    return system_memory() or (1 << 62, "no known limit")


def available_bytes(device: torch.device) -> int | None:
    """The memory free for a new allocation on ``device`` (None when it cannot be told): on CUDA the
    device's free memory, on the CPU :func:`system_memory` (``DNAS_MEMORY_LIMIT`` bounds datasets only)."""
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    found = system_memory()
    return None if found is None else found[0]




def refuse_unless_fits(needed: float, what: str, advice: str, device: torch.device) -> None:
    """One sentence when ``needed`` bytes exceed what ``device`` has available."""
    free = available_bytes(device)
    if free is not None and needed > free:
        raise DnasError(f"{what} needs at least {format_bytes(needed)} of memory and {device.type} has "
                        f"{format_bytes(free)} available; {advice}")


def parameter_bytes(build: type[nn.Module] | object, *args: object, **kwargs: object) -> int:
    """Bytes of the float32 parameters of ``build(*args, **kwargs)``, built on the meta device (no
    memory taken, nothing random drawn)."""
    with torch.device("meta"):
        module = build(*args, **kwargs)  # type: ignore[operator]
    return 4 * sum(p.numel() for p in module.parameters())


def check_threads(threads: object, what: str = "--threads") -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise DnasError(f"{what} must be an integer from 1 to {MAX_THREADS}, got {str(threads)[:30]}")
