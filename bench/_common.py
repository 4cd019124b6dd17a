"""Pieces the benchmark scripts share: peak memory, one measurement per subprocess, a prepared search.

Each configuration runs in a fresh interpreter (``script --worker SPEC_JSON``) so that its peak
resident memory is its own; the worker prints its result as the last line of JSON.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from dnas.runtime.runner import Position

if TYPE_CHECKING:
    from dnas.bilevel.problem import Batch, BilevelProblem
    from dnas.bilevel.step import SearchStep


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


class LastEpoch:
    """A :class:`dnas.bilevel.step.SearchStep` in its last epoch, stepped through its public ``iterate``.

    Attributes of the search step (``problem``, ``cfg``, ``train_stream``, ...) are read through it.
    """

    def __init__(self, search: SearchStep):
        self.search = search
        self.global_step = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.search, name)

    def iterate(self) -> bool:
        """One iteration (the architecture step when the schedule takes one, and the weight step);
        returns whether it took an architecture step."""
        search = self.search
        spe, epochs = search.steps_per_epoch, search.epochs
        at = Position(epoch=epochs - 1, step=self.global_step % spe, global_step=self.global_step, epochs=epochs,
                      steps_per_epoch=spe)
        arch_steps = search.arch_steps
        search.iterate(at)
        self.global_step += 1
        return search.arch_steps > arch_steps


@contextmanager
def search_at_last_epoch(space: str, method: str, *, channels: int, layers: int, batch_size: int, image_size: int,
                         device: str = "cpu", overrides: Sequence[str] = ()) -> Iterator[LastEpoch]:
    """A :class:`dnas.bilevel.step.SearchStep` of ``method`` on random images, ready for ``iterate``.

    The data are ``24 * batch_size`` random 3-channel images (speed and operation counts do not
    depend on content; darts-prime keeps 1/11 of them for its architecture steps) and the search
    is put in its last epoch, where components with ramps are at their final values (Lambda-DARTS'
    lambda_t = lambda, PR-DARTS' final temperature) and past any warm-up (PC-DARTS: ``warmup_epochs=0``,
    so that two epochs validate). No run directory, logs or alignment diagnostics.
    """
    from dnas.bilevel.step import SearchStep
    from dnas.config.resolve import resolve_config
    from dnas.data import ImageDataset
    from dnas.runtime.allocator import retain_freed_memory

    if method == "drnas" and space != "nb201":
        # the preset's stages see 1/6 then 1/4 of its 36 channels; at the benchmark's 16 (or 8) the first stage
        # takes 1/8 so that the measured last stage is the preset's own, 1/4
        overrides = [*overrides, "progression.partial=8,4"]
    n = 24 * batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % 10
    synthetic = ImageDataset.from_tensors(images, labels, [str(i) for i in range(10)], "random")
    cfg = resolve_config(
        {"space": space, "method": method, "epochs": 2, "batch_size": batch_size, "device": device},
        [f"channels={channels}", f"layers={layers}", "alignment_every=0", "checkpoint_every=0",
         "log_every=1000000", "train_portion=0.5", "warmup_epochs=0", *overrides],
    )
    retain_freed_memory()  # as a search run does (dnas.runtime.allocator)
    search = SearchStep(cfg, data=synthetic, device=torch.device(device))
    search.begin_epoch(cfg.epochs - 1)
    yield LastEpoch(search)


def iterate(search: LastEpoch) -> bool:
    """One iteration of ``search`` in its last epoch (see :meth:`LastEpoch.iterate`)."""
    return search.iterate()


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
