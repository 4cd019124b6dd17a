"""Schedule slot: when the search loop takes an architecture step, and in which order.

``take_arch_step`` is asked before every weight step; ``observe_weight_gradients`` sees the
weight gradients of the step (for informed schedules) without forcing a host synchronisation.

``order`` places an iteration's architecture step relative to its weight step, both on the
iteration's training batch (the validation batch is drawn for the architecture step):

* ``arch-first``: the architecture step, then the weight step (DARTS' ``train_search.py``, AutoDL's
  NAS-Bench-201 DARTS-V2, Lambda-DARTS on the DARTS spaces, DARTS-PRIME);
* ``weight-first``: the weight step, then the architecture step (AutoDL's NAS-Bench-201 DARTS-V1,
  Lambda-DARTS on NAS-Bench-201, PR-DARTS' ``test_PRDARTS.py`` and its Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from dnas.components.base import Component
from dnas.errors import DnasError
from dnas.registry import Registry

ORDERS = ("arch-first", "weight-first")


class Schedule(Component):
    def __init__(self, *, order: str = "arch-first"):
        if order not in ORDERS:
            raise DnasError(f"schedule {self.name} order must be one of {', '.join(ORDERS)}, got {order!r}")
        self.order = order

    @property
    def train_portion(self) -> float | None:
        """The train/val split this schedule wants (None: keep the configured one)."""
        return None

    @property
    def weight_first(self) -> bool:
        """Whether an iteration takes its weight step before its architecture step."""
        return self.order == "weight-first"

    def take_arch_step(self, step: int) -> bool:
        raise NotImplementedError

    def observe_weight_gradients(self, grads: Sequence[Tensor]) -> None:
        """Called after the weight backward pass, before clipping."""


SCHEDULES: Registry[type[Schedule]] = Registry("schedule")


@SCHEDULES.register("alternate")
class Alternate(Schedule):
    """DARTS: one architecture step in every iteration."""


    def take_arch_step(self, step: int) -> bool:
        return True


@SCHEDULES.register("every-k")
class EveryK(Schedule):
    """A static schedule: an architecture step in every ``k``-th iteration (k=1 is DARTS)."""


    def __init__(self, *, k: int = 10, order: str = "arch-first"):
        super().__init__(order=order)
        if k < 1:
            raise DnasError(f"schedule every-k needs k >= 1, got {k}")
        self.k = k

    def take_arch_step(self, step: int) -> bool:
        return step % self.k == 0
