"""Pieces every benchmark script shares: peak memory and one measurement per subprocess.

Each configuration runs in a fresh interpreter (``script --worker SPEC_JSON``) so that its peak
resident memory is its own; the worker prints its result as the last line of JSON.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from typing import Any


def maxrss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def peak_memory_mb(device: str) -> float:
    """Peak memory of the measurement: max allocated on CUDA, peak RSS otherwise."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return maxrss_mb()


def run_worker(script: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``script --worker SPEC`` in a fresh interpreter and return its JSON result.

    Raises ``RuntimeError`` with the worker's last stderr line when it fails.
    """
    proc = subprocess.run([sys.executable, script, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"worker exited with {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
