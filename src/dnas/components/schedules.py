"""Schedule slot: when the search loop takes an architecture step.

``take_arch_step`` is asked before every weight step; ``observe_weight_gradients`` sees the
weight gradients of the step (for informed schedules) without forcing a host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from dnas.components.base import Component
from dnas.errors import DnasError
from dnas.registry import Registry


class Schedule(Component):
    #: the train/val split this schedule wants (None: keep the configured one)
    train_portion: float | None = None

    def take_arch_step(self, step: int) -> bool:
        raise NotImplementedError

    def observe_weight_gradients(self, grads: Sequence[Tensor]) -> None:
        """Called after the weight backward pass, before clipping."""


SCHEDULES: Registry[type[Schedule]] = Registry("schedule")


@SCHEDULES.register("alternate")
class Alternate(Schedule):
    """DARTS: one architecture step before every weight step."""

    name = "alternate"

    def take_arch_step(self, step: int) -> bool:
        return True


@SCHEDULES.register("every-k")
class EveryK(Schedule):
    """A static schedule: an architecture step before every ``k``-th weight step (k=1 is DARTS)."""

    name = "every-k"

    def __init__(self, *, k: int = 10):
        if k < 1:
            raise DnasError(f"schedule every-k needs k >= 1, got {k}")
        self.k = k

    def take_arch_step(self, step: int) -> bool:
        return step % self.k == 0
