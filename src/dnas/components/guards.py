"""Guard slot: label-free rules that stop a search before it collapses and say which cell to keep.

A guard reads the search's epoch records in order (the derived cell, its skip connections, the
decision margins, the dominant eigenvalue of ``grad^2_alpha L_val``) and never a benchmark
accuracy. When its rule fires it names the epoch after which the search stops and the epoch whose
derived cell the search returns; a guarded search then ends there, and ``results.json`` records
the guard, the two epochs and the reason. The same guard replays over the records of a finished
run (:func:`replay`): that is how a guard is evaluated without new searches.

``hessian``: RobustDARTS' early stopping (Zela et al., ICLR 2020; automl/RobustDARTS
``src/utils.py`` ``EVLocalAvg``, ``src/search/train_search.py``). With the eigenvalues
``lambda_1, lambda_2, ...`` measured every ``f`` epochs and their local means over ``window``
measurements (fewer at the start), the search stops at the first measurement ``i`` with

    mean(lambda_{i-w+1..i}) / mean(lambda_{i-w+1-d..i-d}) > factor          (w = window, d = delta)

whose earlier mean is centred at an epoch ``>= start_epoch``, and returns the cell of the epoch
that earlier mean is centred on. The official defaults: ``f = 2`` (the paper's scripts pass
``--report_freq_hessian 2``), ``window = 5``, ``delta = 4``, ``factor = 1.3`` (the paper writes
the ratio the other way round, ``< 0.75``), ``start_epoch = 10``; the rule is not tested at the last
epoch. Differences from the official code: the eigenvalue is that of power iteration on a fixed,
unaugmented validation batch (:mod:`dnas.diagnostics.hessian`), the official one the largest
eigenvalue of the full Hessian on the epoch's last validation batch plus the ``1e-3 I`` of the
architecture weight decay; RobustDARTS measures after epochs 1, 3, 5 (0-based 0, 2, 4), dnas after
epochs 2, 4, 6 (``hessian_every = 2``).

``skip``: DARTS+ (Liang et al. 2019, arXiv 1909.06035; no official code): stop when the derived
normal cell (NAS-Bench-201: the cell) has ``skips`` or more skip connections, and return that cell.

``margin``: stop when the decision margin (the smallest over the cell types, as
:func:`~dnas.diagnostics.convergence.least_decided` reads it) has stayed at or above ``threshold``
for ``epochs`` consecutive epochs, and return the cell of the last of them. Defaults: the
project's own "decided" threshold :data:`~dnas.diagnostics.convergence.UNDECIDED_MARGIN` (0.03) and
3 epochs, fixed before the guard was measured.

``off`` (the default) never stops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from dnas.components.base import Component
from dnas.diagnostics.convergence import UNDECIDED_MARGIN, least_decided
from dnas.errors import DnasError
from dnas.registry import Registry

#: the fields of an epoch record that describe its derived cell (what a guarded search returns)
CELL_FIELDS = ("genotype", "skip_connect", "parameter_free", "strengths", "entropy", "margin")


@dataclass(frozen=True)
class Decision:
    """A guard's verdict: stop after epoch ``stop_epoch``, return the cell of ``cell_epoch``."""

    guard: str
    stop_epoch: int
    cell_epoch: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Guard(Component):
    """Reads epoch records in order (:meth:`observe`); :attr:`decision` is set once its rule fired."""

    #: epochs between the eigenvalues the guard reads (0: it reads none)
    hessian_every: int = 0

    def __init__(self) -> None:
        self.decision: Decision | None = None
        self._cells: dict[int, dict[str, Any]] = {}

    def observe(self, record: Mapping[str, Any], last: bool = False) -> Decision | None:
        """Take the record of the next epoch (``last``: the search's final epoch); returns the decision
        when the rule fires now. After a decision, further records are ignored."""
        if self.decision is not None:
            return None
        epoch = int(record["epoch"])
        self._cells[epoch] = {k: record[k] for k in CELL_FIELDS if k in record}
        decision = self._rule(epoch, record, last)
        if decision is not None:
            self.decision = decision
            self._cells = {decision.cell_epoch: self._cells[decision.cell_epoch]}
        else:
            self._forget(epoch)
        return decision

    def cell(self) -> dict[str, Any]:
        """The record fields of the cell the decision returns."""
        if self.decision is None:
            raise DnasError(f"guard {self.name} has not stopped the search")
        return dict(self._cells[self.decision.cell_epoch])

    def _rule(self, epoch: int, record: Mapping[str, Any], last: bool) -> Decision | None:
        raise NotImplementedError

    def _forget(self, epoch: int) -> None:
        """Drop the cells no future decision can return (all but the current one by default)."""
        self._cells = {epoch: self._cells[epoch]}

    def state_dict(self) -> dict[str, Any]:
        return {"decision": None if self.decision is None else self.decision.to_dict(), "cells": dict(self._cells)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:  # a checkpoint from before guards existed: nothing observed
            return
        self.decision = None if state["decision"] is None else Decision(**state["decision"])
        self._cells = {int(k): v for k, v in state["cells"].items()}


GUARDS: Registry[type[Guard]] = Registry("guard")


@GUARDS.register("off")
class NoGuard(Guard):
    """Never stops."""

    def _rule(self, epoch: int, record: Mapping[str, Any], last: bool) -> Decision | None:
        return None


@GUARDS.register("hessian")
class HessianGuard(Guard):
    """RobustDARTS' early stopping on the dominant eigenvalue (see the module docstring)."""

    def __init__(self, *, every: int = 2, window: int = 5, delta: int = 4, factor: float = 1.3,
                 start_epoch: int = 10):
        super().__init__()
        if every < 1 or window < 1 or delta < 1 or not factor > 0 or start_epoch < 0:
            raise DnasError("guard hessian needs every, window, delta >= 1, factor > 0 and start_epoch >= 0")
        self.hessian_every, self.window, self.delta, self.factor = every, window, delta, float(factor)
        self.start_epoch = start_epoch
        self._values: list[float] = []
        self._epochs: list[int] = []  # the epoch of each measurement
        self._means: list[tuple[int, float]] = []  # (centre epoch, local mean), from the third measurement on

    def _rule(self, epoch: int, record: Mapping[str, Any], last: bool) -> Decision | None:
        value = record.get("hessian_eigenvalue")
        if value is None or last:  # official: no local mean and no test at the last epoch
            return None
        if not math.isfinite(value):
            return None
        self._values.append(float(value))
        self._epochs.append(epoch)
        n, half = len(self._values), self.window // 2
        if n < -(-self.window // 2):  # the official local mean starts at ceil(window / 2) measurements
            return None
        recent = self._values[max(0, n - self.window):]
        self._means.append((self._epochs[n - 1 - half], sum(recent) / len(recent)))
        if len(self._means) <= self.delta:
            return None
        (centre, current), (earlier_centre, earlier) = self._means[-1], self._means[-1 - self.delta]
        if earlier_centre < self.start_epoch or not earlier > 0:
            return None
        if current / earlier > self.factor:
            return Decision(self.name, epoch, earlier_centre,
                            f"the dominant eigenvalue's local mean grew {current / earlier:.2f}x (> {self.factor}) "
                            f"from epoch {earlier_centre} to epoch {centre}")
        return None

    def _forget(self, epoch: int) -> None:
        keep = {c for c, _ in self._means[-self.delta - 1:]} | set(self._epochs[-self.window:]) | {epoch}
        self._cells = {e: c for e, c in self._cells.items() if e in keep}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "values": list(self._values), "epochs": list(self._epochs),
                "means": [list(m) for m in self._means]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if not state:
            return
        self._values, self._epochs = list(state["values"]), list(state["epochs"])
        self._means = [(int(c), float(v)) for c, v in state["means"]]


@GUARDS.register("skip")
class SkipGuard(Guard):
    """DARTS+: stop at ``skips`` skip connections in the normal cell (see the module docstring)."""

    def __init__(self, *, skips: int = 2):
        super().__init__()
        if skips < 1:
            raise DnasError(f"guard skip needs skips >= 1, got {skips}")
        self.skips = skips

    def _rule(self, epoch: int, record: Mapping[str, Any], last: bool) -> Decision | None:
        genotype = record["genotype"]
        cell = "normal" if "normal" in genotype else "cell"
        count = sum(1 for op, _ in genotype[cell] if op == "skip_connect")
        if count >= self.skips:
            return Decision(self.name, epoch, epoch, f"the {cell} cell has {count} skip connections "
                            f"(>= {self.skips})")
        return None


@GUARDS.register("margin")
class MarginGuard(Guard):
    """Stop once the decision margin has stayed at or above ``threshold`` for ``epochs`` epochs."""

    def __init__(self, *, threshold: float = UNDECIDED_MARGIN, epochs: int = 3):
        super().__init__()
        if not threshold > 0 or epochs < 1:
            raise DnasError("guard margin needs threshold > 0 and epochs >= 1")
        self.threshold, self.epochs = float(threshold), epochs
        self._run = 0  # consecutive epochs at or above the threshold

    def _rule(self, epoch: int, record: Mapping[str, Any], last: bool) -> Decision | None:
        margin, _ = least_decided(record)
        self._run = self._run + 1 if margin is not None and margin >= self.threshold else 0
        if self._run >= self.epochs:
            return Decision(self.name, epoch, epoch, f"the decision margin stayed >= {self.threshold} for "
                            f"{self.epochs} epochs")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "run": self._run}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._run = int(state.get("run", 0))


def replay(guard: Guard, epochs: Iterable[Mapping[str, Any]], total: int | None = None) -> Decision | None:
    """Run ``guard`` over the epoch records of a search (``total``: its number of epochs, so that the
    final one is known); returns its decision, or None when the search would have run to its end."""
    for record in epochs:
        decision = guard.observe(record, last=total is not None and int(record["epoch"]) == total - 1)
        if decision is not None:
            return decision
    return None
