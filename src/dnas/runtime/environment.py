"""What a run records about the process it ran in, the device it asked for, and the random state."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dnas.errors import DnasError
from dnas.runtime.allocator import allocator_state


def environment() -> dict[str, Any]:
    """What ``env.json`` records: versions, platform, torch threads, host allocator policy, device, command line."""
    import dnas

    return {
        "dnas": dnas.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "host_allocator": allocator_state(),
        "cuda": torch.cuda.is_available(),
        "source": source_revision(Path(dnas.__file__).resolve().parent),
        "argv": sys.argv,
    }


def source_revision(package: Path) -> dict[str, Any] | None:
    """The git commit of the checkout ``package`` (dnas' own folder) lies in, and whether its tracked
    files differ from it, so that a run names the exact code that made it; None outside a git
    checkout (an installed wheel) or without git. Results can depend on code that changes no
    equation (the summation order of a kernel), which the version number does not capture."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--untracked-files=no", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "modified": modified}


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` (or ``mps``) as a device, or one sentence saying why not."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DnasError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DnasError("device cuda was requested but PyTorch sees no CUDA device; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise DnasError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")
    return device


def rng_state() -> dict[str, Any]:
    """The global random state of torch (CPU and every CUDA device), for checkpoints."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
