"""Regularizer slots.

* Weight regularizers act on the lower level: after the ordinary weight backward pass they add
  their gradient to ``w.grad`` (before clipping and the SGD step).
* Architecture regularizers act on the upper level: they return named terms that are added to
  the validation loss of the architecture step.

Both receive the iteration's :class:`~dnas.bilevel.problem.StepContext` (epoch, progress through
the search) for ramps; an architecture regularizer called outside a search gets None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from dnas.bilevel.problem import Batch, BilevelProblem, StepContext
from dnas.components.base import Component
from dnas.registry import Registry


class WeightRegularizer(Component):
    #: the weight step must expose per-cell copies of the activated weights and their gradients
    needs_cell_gradients: bool = True

    def add_gradient(self, problem: BilevelProblem, batch: Batch, cell_weights: Sequence[Tensor],
                     cell_grads: Sequence[Tensor], ctx: StepContext) -> None:
        raise NotImplementedError


class ArchRegularizer(Component):
    def __call__(self, problem: BilevelProblem, activated: Mapping[str, Tensor],
                 ctx: StepContext | None = None) -> dict[str, Tensor]:
        raise NotImplementedError


class LoggedArchRegularizer(ArchRegularizer):
    """An architecture regularizer that logs the scalars of its last call (``self._last``) and keeps
    them in its checkpoint state, so that a resumed log is identical."""

    def __init__(self) -> None:
        self._last: dict[str, float | Tensor] = {}

    def metrics(self) -> dict[str, float | Tensor]:
        return dict(self._last)

    def state_dict(self) -> dict[str, Any]:
        return {"last": dict(self._last)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last = dict(state.get("last", {}))


WEIGHT_REGULARIZERS: Registry[type[WeightRegularizer]] = Registry("weight regularizer")
ARCH_REGULARIZERS: Registry[type[ArchRegularizer]] = Registry("architecture regularizer")
