"""A guard replayed over the epoch records of searches that ran without it (``dnas guard``).

A guard reads only what every search logs (the derived cell per epoch, decision margins, and the
dominant eigenvalue when ``hessian_every`` was set), so it can be evaluated on finished runs
without searching again: :func:`guarded` says where it would have stopped each run and which
epoch's cell it would have returned, next to the cell the run ended with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnas.components.guards import GUARDS, Decision, Guard, replay
from dnas.config.base import parse_value
from dnas.config.search import ComponentConfig, build_component, resolve_component
from dnas.errors import DnasError
from dnas.report.run import RunHistory, read_run


@dataclass
class GuardedRun:
    """A run, the cell it ended with, and the guard's verdict on its records (None: it would not stop)."""

    run: RunHistory
    final: dict[str, Any]
    decision: Decision | None
    cell: dict[str, Any]  # the record of the cell the guarded search returns (the final one without a decision)


def make_guard(name: str, params: Mapping[str, Any] | None = None) -> Guard:
    """The guard ``name`` with ``params`` (strings are read as on the command line), checked as in a config."""
    given = {k: parse_value(v) if isinstance(v, str) else v for k, v in (params or {}).items()}
    return build_component(GUARDS, resolve_component(GUARDS, ComponentConfig(name, given)))


def guarded(path: str | Path, guard: Guard) -> GuardedRun:
    """Replay ``guard`` over the epoch records of the finished search in ``path``."""
    run = read_run(path)
    if not run.finished or not run.epochs:
        raise DnasError(f"{run.path} holds no finished search; a guard is replayed over a search's whole record")
    if guard.hessian_every and not any("hessian_eigenvalue" in r for r in run.epochs):
        raise DnasError(f"{run.path} logged no Hessian eigenvalue (hessian_every was 0), which guard {guard.name} "
                        "reads; search with hessian_every=2")
    decision = replay(guard, run.epochs, total=run.planned_epochs)
    final = run.epochs[-1]
    return GuardedRun(run, final, decision, guard.cell() if decision is not None else final)
