"""Running the runs of a grid on this machine: one after the other in this process, or in worker processes.

**Workers** (``jobs > 1``): one ``spawn``-ed process per run, at most ``jobs`` at a time, each with
``threads`` torch threads. Nothing outlives the grid:

- every worker starts with SIGINT ignored and then puts itself in a process group of its own, so
  Ctrl-C at the terminal (or SIGTERM) reaches only the grid, which asks each running search to
  checkpoint and stop (SIGINT, sent again every half second until the worker has exited, since a
  worker that is still starting ignores it) and then stops with one sentence; the next call resumes
  the runs;
- every worker runs a watchdog thread that polls ``os.getppid()``: when the grid process dies,
  even by ``kill -9``, the worker interrupts its own search (which checkpoints) and exits, at the
  latest :data:`ORPHAN_GRACE` seconds later.

A worker reports its outcome through a pipe; one that dies without a word (killed, out of memory)
is a failed run named by its exit status. The workers take no pool machinery (no private
attributes of ``concurrent.futures``): processes, pipes and ``multiprocessing.connection.wait``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

from dnas.config.search import SearchConfig
from dnas.errors import Interrupted
from dnas.grid.run import Done, Run, execute

#: seconds between two looks of a worker's watchdog at its parent
WATCH_INTERVAL = 0.5
#: seconds an orphaned worker gives its search to checkpoint before it exits regardless
ORPHAN_GRACE = 60.0
STOP_INTERVAL = 0.5


def run_here(runs: Sequence[Run], threads: int | None, progress: bool, done: Done) -> None:
    """The runs one after the other in this process (``threads``: torch threads meanwhile)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for run in runs:
            done(run, execute(run.cfg, run.out, progress=progress))
    finally:
        torch.set_num_threads(before)


@dataclass
class _Worker:
    run: Run
    process: BaseProcess
    outcome: Connection


def run_workers(runs: Sequence[Run], jobs: int, threads: int, done: Done) -> None:
    """The runs in worker processes, ``jobs`` at a time (see the module docstring)."""
    import multiprocessing

    from dnas.runtime.signals import GracefulStop

    context = multiprocessing.get_context("spawn")
    queue = list(runs)
    workers: list[_Worker] = []
    with GracefulStop() as stop:
        try:
            while (queue or workers) and not stop.requested:
                while queue and len(workers) < jobs:
                    workers.append(_start(context, queue.pop(0), threads))
                # a bounded wait: the main thread wakes up to see a Ctrl-C or SIGTERM
                ended = wait([w.process.sentinel for w in workers], timeout=0.5)
                for worker in [w for w in workers if w.process.sentinel in ended]:
                    workers.remove(worker)
                    done(worker.run, _outcome(worker))
        finally:
            _stop(workers)
    if stop.requested:
        raise Interrupted("interrupted; finished runs are kept and unfinished ones resume from their checkpoints: "
                          "run the same command again")


def _start(context, run: Run, threads: int) -> _Worker:
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_work, args=(send, os.getpid(), threads, run.cfg, str(run.out)),
                              name=f"dnas-{run.name}")
    # the worker starts with SIGINT ignored (inherited, and kept by Python at start-up), so that a Ctrl-C
    # while it imports is not a KeyboardInterrupt traceback; _work takes SIGINT back once it can stop cleanly
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    send.close()  # the worker holds the sending end
    return _Worker(run, process, receive)


def _outcome(worker: _Worker) -> str | None:
    process = worker.process
    process.join()
    message = None
    with contextlib.suppress(EOFError, OSError):  # nothing sent: the worker died
        if worker.outcome.poll():
            message = worker.outcome.recv()
    worker.outcome.close()
    if message is None:
        code = process.exitcode or 0
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        return f"its worker process {how} before the run ended; the next call runs it again (from its checkpoint)"
    kind, reason = message
    if kind == "interrupted":
        return "interrupted by a signal from outside the grid; the next call runs it again (from its checkpoint)"
    return reason


def _stop(workers: list[_Worker]) -> None:
    """Ask the running searches to checkpoint and stop, until every worker has exited."""
    while any(w.process.is_alive() for w in workers):
        for worker in workers:
            if worker.process.is_alive():
                pid = worker.process.pid
                if pid is not None:
                    with contextlib.suppress(OSError):  # exited meanwhile
                        os.kill(pid, signal.SIGINT)
        time.sleep(STOP_INTERVAL)
    for worker in workers:
        worker.process.join()
        worker.outcome.close()


# ----- in the worker process -------------------------------------------------------------------------------
def _work(outcome: Connection, parent: int, threads: int, cfg: SearchConfig, out: str) -> None:
    """The body of a worker: its own process group, a watchdog on the grid process, one search."""
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored until here (see _start)
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="dnas-watchdog").start()
    try:
        import torch

        torch.set_num_threads(threads)
        message = ("done", execute(cfg, Path(out)))
    except (Interrupted, KeyboardInterrupt):
        message = ("interrupted", None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the search is over: further stop requests change nothing
    with contextlib.suppress(OSError):  # the grid is gone
        outcome.send(message)
    # every file of the run is written (atomically) and closed: skip the seconds of tearing torch down
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _watch(parent: int) -> None:
    """Once the grid process ``parent`` is gone: interrupt the search (it checkpoints), exit at the latest
    :data:`ORPHAN_GRACE` seconds later."""
    while os.getppid() == parent:
        time.sleep(WATCH_INTERVAL)
    deadline = time.monotonic() + ORPHAN_GRACE
    while time.monotonic() < deadline:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(STOP_INTERVAL)
    os._exit(1)
