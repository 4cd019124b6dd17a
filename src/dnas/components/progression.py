"""Progression slot: a search in stages that prune the candidate ops and widen the partial-channel
supernet between them (DrNAS' progressive learning; code: xiangning-chen/DrNAS
``201-space/train_search_progressive.py``, ``DARTS-space/train_search.py``).

Stage ``s`` runs ``stage_epochs[s]`` epochs on a supernet whose ops see ``1/partial[s]`` of each
edge's channels (PC-DARTS' partial channel connections) with ``keep[s]`` candidate ops per edge.
When a stage begins:

* **pruning** (when ``keep[s]`` is below the ops still in the competition): on every edge the
  ``keep[s]`` ops with the largest ``alpha`` among them stay; the others leave it (``utils.py``
  ``prune``: their alpha is set to 0 and masked, the kept alphas are unchanged);
* **widening**: every op is widened from ``C/partial[s-1]`` to ``C/partial[s]`` channels by
  net2wider's random duplication (:mod:`dnas.supernet.widen`), and the weight optimizer's momentum
  buffers with it;
* the architecture parameters stay frozen for the first ``frozen_epochs`` epochs of every stage
  (``if epoch >= 10: architect.step(...)`` with the stage's own epoch counter).

The learning rate follows one cosine over all stages. (Under PyTorch >= 1.4 the official code's
fresh optimizer restarts at the initial rate, from which its scheduler continues recursively; dnas
keeps the rate of the one schedule, as the code intends.)

Stage lengths are proportions: when ``sum(stage_epochs)`` differs from the search's epochs, the
stage boundaries and the frozen epochs scale with it (rounded to whole epochs), so that a preset's
stages fit any budget (DrNAS on NAS-Bench-201: 50 + 50 epochs of which 10 + 10 frozen; 30 epochs
give 15 + 15 with 3 + 3 frozen).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dnas.components.base import Component
from dnas.errors import DnasError
from dnas.registry import Registry


def integers(text: str | int, what: str) -> tuple[int, ...]:
    """``"50,50"`` -> ``(50, 50)``; a single integer is a one-stage list."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise DnasError(f"progression {what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise DnasError(f"progression {what} names no stage")
    return values


def prune_to_top(alpha: Tensor, keep: int, kept: Tensor | None) -> Tensor:
    """DrNAS' ``prune``: the mask of the ``keep`` largest entries of every row of ``alpha`` among those
    ``kept`` marks (all when None); ``alpha`` is set to 0 outside it (in place)."""
    with torch.no_grad():
        scores = alpha if kept is None else alpha.masked_fill(~kept.to(alpha.device), float("-inf"))
        index = scores.topk(keep, dim=-1).indices
        mask = torch.zeros_like(alpha, dtype=torch.bool).scatter_(-1, index, True)
        alpha.masked_fill_(~mask, 0.0)
    return mask


class Progression(Component):
    """How the search is staged; the default, ``none``, is one stage."""

    def partial_of(self, stage: int) -> int:
        return 1

    def stage_of(self, epoch: int, epochs: int) -> int:
        return 0

    def arch_frozen(self, epoch: int, epochs: int) -> bool:
        return False

    def keep_of(self, stage: int) -> int | None:
        """The ops per edge stage ``stage`` keeps (None: no pruning)."""
        return None


PROGRESSIONS: Registry[type[Progression]] = Registry("progression")


@PROGRESSIONS.register("none")
class NoProgression(Progression):
    """One stage: the supernet and its candidates stay as built."""


@PROGRESSIONS.register("stages")
class Stages(Progression):
    """DrNAS' progressive stages (module docstring); lists are comma-separated, one entry per stage."""

    def __init__(self, *, stage_epochs: str = "50,50", partial: str = "4,2", keep: str = "5,3",
                 frozen_epochs: int = 10):
        self.stage_epochs = integers(stage_epochs, "stage_epochs")
        self.partial = integers(partial, "partial")
        self.keep = integers(keep, "keep")
        n = len(self.stage_epochs)
        if len(self.partial) != n or len(self.keep) != n:
            raise DnasError(f"progression stages needs one partial and one keep per stage: {n} stage_epochs, "
                            f"{len(self.partial)} partial, {len(self.keep)} keep")
        if min(self.stage_epochs) < 1 or min(self.partial) < 1 or min(self.keep) < 1 or frozen_epochs < 0:
            raise DnasError("progression stages needs stage_epochs, partial and keep of at least 1 and "
                            f"frozen_epochs >= 0, got {stage_epochs!r}, {partial!r}, {keep!r}, {frozen_epochs}")
        if any(b > a for a, b in zip(self.partial, self.partial[1:], strict=False)) or \
                any(b > a for a, b in zip(self.keep, self.keep[1:], strict=False)):
            raise DnasError(f"progression stages only widens and prunes: partial ({partial}) and keep ({keep}) "
                            "must not increase from one stage to the next")
        if frozen_epochs >= min(self.stage_epochs):
            raise DnasError(f"progression stages: frozen_epochs ({frozen_epochs}) must be shorter than every "
                            f"stage ({stage_epochs})")
        self.frozen_epochs = int(frozen_epochs)

    def starts(self, epochs: int) -> list[int]:
        """The first epoch of every stage in a search of ``epochs`` epochs (module docstring)."""
        total = sum(self.stage_epochs)
        bounds, acc = [], 0
        for length in self.stage_epochs:
            bounds.append(round(acc * epochs / total))
            acc += length
        return bounds

    def check(self, epochs: int) -> None:
        starts = [*self.starts(epochs), epochs]
        if any(b - a <= self.frozen(epochs) for a, b in zip(starts, starts[1:], strict=False)):
            raise DnasError(f"progression stages {','.join(map(str, self.stage_epochs))} scaled to {epochs} epochs "
                            f"leave a stage without an unfrozen epoch; give the search more epochs")

    def frozen(self, epochs: int) -> int:
        return round(self.frozen_epochs * epochs / sum(self.stage_epochs))

    def stage_of(self, epoch: int, epochs: int) -> int:
        return sum(1 for start in self.starts(epochs)[1:] if epoch >= start)

    def arch_frozen(self, epoch: int, epochs: int) -> bool:
        start = self.starts(epochs)[self.stage_of(epoch, epochs)]
        return epoch - start < self.frozen(epochs)

    def partial_of(self, stage: int) -> int:
        return self.partial[stage]

    def keep_of(self, stage: int) -> int | None:
        return self.keep[stage]
