"""Pieces the benchmark scripts share: peak memory, one measurement per subprocess, a prepared search.

Each configuration runs in a fresh interpreter (``script --worker SPEC_JSON``) so that its peak
resident memory is its own; the worker prints its result as the last line of JSON.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from dnas.bilevel import Batch, BilevelProblem
    from dnas.search_loop import Search


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


@contextmanager
def search_at_last_epoch(space: str, method: str, *, channels: int, layers: int, batch_size: int, image_size: int,
                         device: str = "cpu", overrides: Sequence[str] = ()) -> Iterator[Search]:
    """A built :class:`dnas.search_loop.Search` of ``method`` on random images, ready for ``iterate``.

    The data are ``24 * batch_size`` random 3-channel images (speed and operation counts do not
    depend on content; darts-prime keeps 1/11 of them for its architecture steps) and the search
    is put in its last epoch, where components with ramps are at their final values (Lambda-DARTS'
    lambda_t = lambda, PR-DARTS' final temperature). No checkpoints, logs or alignment diagnostics.
    """
    import dnas.search_loop
    from dnas.data import ImageDataset
    from dnas.resolve import resolve_config

    n = 24 * batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    synthetic = ImageDataset.from_tensors(images, labels, [str(i) for i in range(10)], "random")
    cfg = resolve_config(
        {"space": space, "method": method, "epochs": 2, "batch_size": batch_size, "device": device},
        [f"channels={channels}", f"layers={layers}", "alignment_every=0", "checkpoint_every=0",
         "log_every=1000000", "train_portion=0.5", *overrides],
    )
    original_loader = dnas.search_loop.load_dataset
    dnas.search_loop.load_dataset = lambda *args, **kwargs: synthetic
    try:
        with tempfile.TemporaryDirectory() as tmp:
            search = dnas.search_loop.Search(cfg, Path(tmp) / "run", progress=False)
            search._build()
            search.global_step, search.arch_steps = 0, 0
            search._reset_meters()
            for component in search.components.values():
                component.on_epoch_start(cfg.epochs - 1, cfg.epochs)
            search.problem.weight_lr = cfg.w_lr
            yield search
    finally:
        dnas.search_loop.load_dataset = original_loader


def iterate(search: Search) -> bool:
    """One search iteration (the architecture step when the schedule takes one, then the weight
    step) in the last epoch, through the real loop; returns whether it took an architecture step."""
    epoch, step = search.cfg.epochs - 1, search.global_step
    search.problem.epochs_elapsed = epoch + step / search.steps_per_epoch
    arch_steps = search.arch_steps
    search._iteration(epoch, step)
    search.global_step += 1
    return search.arch_steps > arch_steps


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (CPU: no synchronisation)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# ----- reference passes ----------------------------------------------------------------------------
# One forward + backward of L(w, A) on a batch, differing only in what the backward is asked for:
#   "w":   weight gradients (the weight step; the HVPs w.r.t. weights), A without gradient
#   "a":   gradients w.r.t. alpha only (first-order architecture step; HVPs w.r.t. A): no conv
#          weight gradients, no input gradients before the first mixing
#   "wa":  both (second order's validation pass at w', amended's validation pass)
#   "wc":  weights and per-cell copies of A (the weight step when per-cell gradients are needed,
#          Lambda-DARTS)
PASS_KINDS = ("w", "a", "wa", "wc")


def reference_pass(problem: BilevelProblem, batch: Batch, wanted: str) -> None:
    net, weights = problem.net, problem.weights
    if wanted in ("w", "wc"):
        with torch.no_grad():
            activated = problem.activated()
        cells = [w.clone().requires_grad_(wanted == "wc") for w in net.per_cell(activated)]
        loss = problem.loss(batch, activated, cells)[0]
        inputs = [*weights, *cells] if wanted == "wc" else weights
    else:
        loss = problem.loss(batch)[0]
        inputs = problem.arch if wanted == "a" else [*problem.arch, *weights]
    torch.autograd.grad(loss, inputs, allow_unused=True)


# Passes of one iteration as (architecture step, weight step), each a list of reference passes
# (tests/test_speed_regression.py checks every method's iteration against these sums):
#   darts:         alpha: L_val w.r.t. alpha                                     weight step: L_train w.r.t. w
#   darts-2nd:     alpha: grad_w L_train (the virtual step, "w"), L_val at w' w.r.t. alpha and w ("wa"), and
#                  the finite-difference mixed HVP: two passes w.r.t. A ("a", "a")
#   amended-darts: alpha: L_val w.r.t. alpha and w ("wa"), the weight HVP H v (two "w"), the mixed HVP of
#                  u = H v (two "a")
#   lambda-darts:  weight step: L_train w.r.t. w and the per-cell A ("wc"), then the two perturbed passes
#                  w.r.t. w of the finite difference of grad_w R
#   darts-prime:   like darts, but the Fisher schedule takes an alpha step only on some iterations
PASSES = {
    "darts": (["a"], ["w"]),
    "darts-2nd": (["w", "wa", "a", "a"], ["w"]),
    "amended-darts": (["wa", "w", "w", "a", "a"], ["w"]),
    "lambda-darts": (["a"], ["wc", "w", "w"]),
    "darts-prime": (["a"], ["w"]),
    "darts-prime-v1": (["a"], ["w"]),
}
# amended-darts has these passes with the finite-difference products of the public implementation (its
# preset uses exact double backward, whose passes are not separate forward/backward passes)
FD = {"amended-darts": ["estimator.hvp=fd"]}
